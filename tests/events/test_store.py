"""Appending to and reading from the event store."""

from __future__ import annotations

import datetime
import threading

import pytest
from django.db import connection, transaction
from django.db.transaction import TransactionManagementError

from events import store
from events.errors import VersionConflict
from events.models import ImmutableEventError, StoredEvent
from events.records import CommandMetadata, NewEvent
from events.store import (
    append_to_stream,
    head_position,
    read_all,
    read_stream,
    stream_version,
)

pytestmark = pytest.mark.django_db

# A stream type no projection handles, so these tests see the store alone.
STREAM_TYPE = "test"


def numbered(count: int, start: int = 1) -> list[NewEvent]:
    return [NewEvent("Counted", {"n": n}) for n in range(start, start + count)]


def append(stream_id: str, expected_version: int, events: list[NewEvent]) -> list:
    return append_to_stream(stream_id, STREAM_TYPE, expected_version, events)


# Appending and reading.


def test_append_returns_the_events_recorded_after_the_expected_version():
    recorded = append("s-1", 0, numbered(2))

    assert [(e.stream_id, e.stream_version, e.type) for e in recorded] == [
        ("s-1", 1, "Counted"),
        ("s-1", 2, "Counted"),
    ]
    assert [e.data for e in recorded] == [{"n": 1}, {"n": 2}]
    assert all(e.stream_type == STREAM_TYPE for e in recorded)


def test_read_stream_returns_what_was_appended_in_version_order():
    recorded = append("s-1", 0, numbered(3))

    read = list(read_stream("s-1"))

    assert read == recorded


def test_versions_run_from_one_without_gaps_across_appends():
    append("s-1", 0, numbered(1))
    append("s-1", 1, numbered(2, start=2))
    append("s-1", 3, numbered(1, start=4))

    versions = [e.stream_version for e in read_stream("s-1")]

    assert versions == [1, 2, 3, 4]
    assert stream_version("s-1") == 4


def test_streams_are_numbered_independently():
    append("s-1", 0, numbered(2))
    append("s-2", 0, numbered(1))

    assert (stream_version("s-1"), stream_version("s-2")) == (2, 1)


def test_positions_rise_strictly_in_append_order_across_streams():
    appended = []
    for stream_id, expected in [("s-1", 0), ("s-2", 0), ("s-1", 2), ("s-2", 2)]:
        appended += append(stream_id, expected, numbered(2))

    positions = [e.position for e in appended]

    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    assert [e.position for e in read_all()] == positions
    assert head_position() == positions[-1]


def test_an_unknown_stream_is_at_version_zero_and_reads_empty():
    assert stream_version("nobody") == 0
    assert list(read_stream("nobody")) == []


def test_an_empty_store_has_head_position_zero():
    assert head_position() == 0


def test_read_stream_after_a_version_skips_the_earlier_events():
    append("s-1", 0, numbered(4))

    versions = [e.stream_version for e in read_stream("s-1", after_version=2)]

    assert versions == [3, 4]


def test_read_stream_reads_a_long_stream_in_batches_of_the_given_size(
    django_assert_num_queries,
):
    append("s-1", 0, numbered(5))

    # Batches of 2, 2 and 1 events: three queries.
    with django_assert_num_queries(3):
        read = list(read_stream("s-1", batch_size=2))

    assert [e.data["n"] for e in read] == [1, 2, 3, 4, 5]


def test_read_stream_ends_with_an_empty_batch_when_batches_fill_exactly(
    django_assert_num_queries,
):
    append("s-1", 0, numbered(4))

    with django_assert_num_queries(3):
        read = list(read_stream("s-1", batch_size=2))

    assert [e.stream_version for e in read] == [1, 2, 3, 4]


def test_read_stream_takes_its_batch_size_from_the_events_settings(
    settings, django_assert_num_queries
):
    settings.EVENTS = {"READ_BATCH_SIZE": 3}
    append("s-1", 0, numbered(7))

    with django_assert_num_queries(3):
        read = list(read_stream("s-1"))

    assert len(read) == 7


def test_read_all_filters_by_stream_and_type_and_stops_at_the_limit():
    append("s-1", 0, numbered(3))
    append("s-2", 0, [NewEvent("Other", {}), *numbered(1)])
    first = read_all()[0].position

    by_stream = read_all(stream_id="s-2")
    by_type = read_all(types=["Other"])
    limited = read_all(after_position=first, limit=2)

    assert [(e.stream_id, e.type) for e in by_stream] == [
        ("s-2", "Other"),
        ("s-2", "Counted"),
    ]
    assert [e.type for e in by_type] == ["Other"]
    assert [e.data for e in limited] == [{"n": 2}, {"n": 3}]


def test_appending_no_events_appends_nothing():
    recorded = append("s-1", 0, [])

    assert recorded == []
    assert StoredEvent.objects.count() == 0


def test_events_carry_their_command_metadata():
    metadata = CommandMetadata(actor="alice", correlation_id="req-1")

    recorded = append_to_stream("s-1", STREAM_TYPE, 0, numbered(1), metadata)

    stored = StoredEvent.objects.get(event_id=recorded[0].id)
    assert stored.metadata == {
        "actor": "alice",
        "correlation_id": "req-1",
        "causation_id": "req-1",
        "schema_version": 1,
    }
    assert recorded[0].metadata == stored.metadata


def test_a_long_batch_keeps_versions_and_positions_in_order():
    # More events than one INSERT carries on SQLite.
    recorded = append("s-1", 0, numbered(450))

    read = list(read_stream("s-1"))

    assert read == recorded
    assert [e.stream_version for e in read] == list(range(1, 451))
    assert [e.data["n"] for e in read] == list(range(1, 451))
    positions = [e.position for e in read]
    assert positions == sorted(set(positions))


def test_event_data_is_stored_as_given():
    data = {
        "text": 'caf\u00e9 \u2603 "quoted" back\\slash',
        "nested": {"list": [1, 2.5, None, True], "empty": {}},
        "big": 2**53 + 1,
    }

    recorded = append("s-1", 0, [NewEvent("Noted", data)])

    assert recorded[0].data == data
    assert StoredEvent.objects.get().data == data
    assert next(read_stream("s-1")).data == data


def test_events_of_one_append_keep_their_own_schema_versions():
    events = [NewEvent("Counted", {"n": 1}), NewEvent("Counted", {"n": 2}, 2)]

    append("s-1", 0, events)

    stored = StoredEvent.objects.order_by("stream_version")
    assert [e.metadata["schema_version"] for e in stored] == [1, 2]


def test_recorded_at_is_an_aware_utc_time_equal_in_memory_and_stored():
    recorded = append("s-1", 0, numbered(1))[0]

    (read,) = read_stream("s-1")

    assert recorded.recorded_at.utcoffset() == datetime.timedelta(0)
    assert read.recorded_at == recorded.recorded_at
    assert recorded.summary()["recorded_at"].endswith("Z")


# Stored events are immutable.


def test_a_stored_event_cannot_be_saved_again():
    append("s-1", 0, numbered(1))
    stored = StoredEvent.objects.get()
    stored.data = {"n": 99}

    with pytest.raises(ImmutableEventError):
        stored.save()

    assert StoredEvent.objects.get().data == {"n": 1}


def test_stored_events_cannot_be_updated_through_a_queryset():
    append("s-1", 0, numbered(1))

    with pytest.raises(ImmutableEventError):
        StoredEvent.objects.filter(stream_id="s-1").update(data={"n": 99})

    assert StoredEvent.objects.get().data == {"n": 1}


def test_a_stored_event_cannot_be_deleted():
    append("s-1", 0, numbered(1))

    with pytest.raises(ImmutableEventError):
        StoredEvent.objects.get().delete()

    assert StoredEvent.objects.count() == 1


def test_stored_events_cannot_be_deleted_through_a_queryset():
    append("s-1", 0, numbered(2))

    with pytest.raises(ImmutableEventError):
        StoredEvent.objects.all().delete()

    assert StoredEvent.objects.count() == 2


# Optimistic concurrency.


def test_append_with_a_stale_expected_version_raises_version_conflict():
    append("s-1", 0, numbered(2))

    with pytest.raises(VersionConflict) as raised:
        append("s-1", 1, numbered(1, start=3))

    conflict = raised.value
    assert (conflict.stream_id, conflict.expected, conflict.actual) == ("s-1", 1, 2)
    assert not conflict.precondition
    assert "s-1" in str(conflict)


def test_append_with_a_stale_expected_version_appends_nothing():
    append("s-1", 0, numbered(2))

    with pytest.raises(VersionConflict):
        append("s-1", 1, numbered(3, start=3))

    assert [e.data["n"] for e in read_stream("s-1")] == [1, 2]


def test_append_expecting_a_version_the_stream_has_not_reached_is_refused():
    append("s-1", 0, numbered(1))

    with pytest.raises(VersionConflict) as raised:
        append("s-1", 5, numbered(1))

    assert raised.value.actual == 1
    assert stream_version("s-1") == 1


def test_appending_to_a_new_stream_expecting_a_version_is_refused():
    with pytest.raises(VersionConflict):
        append("s-new", 1, numbered(1))

    assert StoredEvent.objects.count() == 0


def test_a_version_conflict_leaves_the_callers_transaction_usable():
    append("s-1", 0, numbered(1))

    with transaction.atomic():
        with pytest.raises(VersionConflict):
            append("s-1", 0, numbered(1))
        recorded = append("s-1", 1, numbered(1, start=2))

    assert [e.stream_version for e in recorded] == [2]
    assert [e.data["n"] for e in read_stream("s-1")] == [1, 2]


@pytest.mark.django_db(transaction=True)
def test_an_append_hook_failing_inside_a_callers_transaction_spoils_it(
    monkeypatch,
):
    def failing_hook(events):
        raise RuntimeError("projection failed")

    monkeypatch.setattr(store, "_append_hooks", [failing_hook])

    with transaction.atomic():
        StoredEvent.objects.count()
        with pytest.raises(RuntimeError, match="projection failed"):
            append("s-1", 0, numbered(1))
        with pytest.raises(TransactionManagementError):
            StoredEvent.objects.count()

    assert StoredEvent.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_an_exception_in_an_append_hook_rolls_the_append_back(monkeypatch):
    def failing_hook(events):
        raise RuntimeError("projection failed")

    append("s-1", 0, numbered(1))
    monkeypatch.setattr(store, "_append_hooks", [*store._append_hooks, failing_hook])

    with pytest.raises(RuntimeError, match="projection failed"):
        append("s-1", 1, numbered(2, start=2))

    assert [e.stream_version for e in read_stream("s-1")] == [1]
    assert StoredEvent.objects.count() == 1
    assert stream_version("s-1") == 1


def test_append_hooks_see_the_recorded_events_inside_the_transaction(monkeypatch):
    seen = []

    def hook(events):
        seen.append(
            [
                (e.stream_version, StoredEvent.objects.filter(event_id=e.id).exists())
                for e in events
            ]
        )

    monkeypatch.setattr(store, "_append_hooks", [hook])

    append("s-1", 0, numbered(2))

    assert seen == [[(1, True), (2, True)]]


def test_a_hook_hears_only_of_appends_to_the_stream_types_it_asked_for(
    monkeypatch,
):
    heard = []
    monkeypatch.setattr(store, "_append_hooks", [])
    monkeypatch.setattr(store, "_hook_stream_types", {})

    store.on_append(lambda events: heard.extend(e.stream_id for e in events), ["a"])
    append_to_stream("x-1", "a", 0, numbered(1))
    append_to_stream("y-1", "b", 0, numbered(1))

    assert heard == ["x-1"]


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_an_append_with_no_hook_commits_or_refuses_alone(
    monkeypatch,
):
    # No hook reads this stream type, so each append is one statement that
    # commits by itself; the version check must hold all the same.
    monkeypatch.setattr(store, "_append_hooks", [])
    append("s-1", 0, numbered(2))

    with pytest.raises(VersionConflict) as stale:
        append("s-1", 1, numbered(1, start=3))
    with pytest.raises(VersionConflict) as ahead:
        append("s-1", 5, numbered(1, start=3))
    seen_elsewhere = []
    reader = threading.Thread(
        target=lambda: (
            seen_elsewhere.extend(e.data["n"] for e in read_stream("s-1")),
            connection.close(),
        )
    )
    reader.start()
    reader.join(timeout=30)

    assert (stale.value.expected, stale.value.actual) == (1, 2)
    assert (ahead.value.expected, ahead.value.actual) == (5, 2)
    assert seen_elsewhere == [1, 2]
    assert not connection.in_atomic_block


@pytest.mark.django_db(transaction=True)
def test_commit_listeners_hear_of_each_committed_append_only(monkeypatch):
    heard = []
    monkeypatch.setattr(
        store, "_commit_listeners", [lambda: heard.append(stream_version("s-1"))]
    )

    append("s-1", 0, numbered(1))
    with pytest.raises(VersionConflict):
        append("s-1", 0, numbered(1))
    append("s-1", 1, numbered(1, start=2))

    assert heard == [1, 2]


@pytest.mark.django_db(transaction=True)
def test_two_connections_appending_at_the_same_version_let_exactly_one_win():
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def append_as(name: str) -> None:
        try:
            barrier.wait(timeout=10)
            append("race", 0, [NewEvent("Claimed", {"by": name})])
            outcomes[name] = "appended"
        except Exception as exc:
            outcomes[name] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=append_as, args=(n,)) for n in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    winners = [name for name, outcome in outcomes.items() if outcome == "appended"]
    losers = [o for o in outcomes.values() if isinstance(o, VersionConflict)]
    assert len(winners) == 1, outcomes
    assert len(losers) == 1, outcomes
    assert (losers[0].expected, losers[0].actual) == (0, 1)
    events = list(read_stream("race"))
    assert [(e.stream_version, e.data["by"]) for e in events] == [(1, winners[0])]
