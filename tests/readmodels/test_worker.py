"""The projection worker: checkpoints, exactly-once application, leases,
failures, and gap-safe tailing."""

from __future__ import annotations

import io
import json
import threading
import time
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from events.models import StoredEvent
from events.records import NewEvent, RecordedEvent
from events.store import append_to_stream, head_position
from readmodels import topics
from readmodels.models import Change, Checkpoint, Dashboard, Topic
from readmodels.projections.dashboard import (
    DashboardProjection,
    dashboard_representation,
)
from readmodels.topics import UPSERT, Publisher
from readmodels.worker import ProjectionWorker
from tests.conftest import place_order

pytestmark = pytest.mark.django_db(transaction=True)


class CounterProjection:
    """Counts events: its count is its topic's version, and each count is
    a Change row, so an event applied twice shows as a repeat."""

    name = "counter"
    topic = "counter"
    models = ()
    crash_after: int | None = None

    def apply_batch(self, events: list[RecordedEvent], publisher: Publisher) -> None:
        for event in events:
            version = publisher.next_version(self.topic)
            publisher.publish(self.topic, version, UPSERT, "counter", {}, event)
            if self.crash_after is not None and version == self.crash_after:
                # A kill between applying an event and saving the checkpoint.
                raise SystemExit("worker killed")


def append_events(count: int, stream: str = "s") -> None:
    for n in range(count):
        append_to_stream(f"{stream}-{n}", "thing", 0, [NewEvent("Happened", {"n": n})])


def position_of(stream_id: str) -> int:
    return StoredEvent.objects.get(stream_id=stream_id).position


def counter_versions() -> list[int]:
    changes = Change.objects.filter(topic="counter").order_by("id")
    return list(changes.values_list("version", flat=True))


def test_worker_applies_async_projections_and_saves_the_checkpoint(alice_client):
    order = place_order(alice_client)
    alice_client.post(
        f"/api/v1/orders/{order['id']}/pay", {"amount": "12.30"}, format="json"
    )
    worker = ProjectionWorker()

    while worker.step():
        pass

    dashboard = Dashboard.objects.get()
    assert (dashboard.order_count, dashboard.revenue) == (1, Decimal("12.30"))
    assert dashboard.by_status == {"placed": 0, "paid": 1}
    # One batch changed the dashboard once; the feed has a change per event.
    assert dashboard.version == Topic.objects.get(name="dashboard").version == 1
    assert Topic.objects.get(name="events").version == 2
    checkpoints = dict(Checkpoint.objects.values_list("name", "position"))
    assert checkpoints == {"dashboard": head_position(), "events": head_position()}


def test_c04_a_worker_killed_mid_batch_resumes_and_counts_each_event_once():
    append_events(50)
    counter = CounterProjection()
    counter.crash_after = 20
    first = ProjectionWorker([counter], owner="first", batch_size=100, lease_secs=0.2)

    with pytest.raises(SystemExit):
        first.step()
    after_crash = counter_versions()
    counter.crash_after = None
    time.sleep(0.3)
    second = ProjectionWorker([counter], owner="second", batch_size=100)
    while second.step():
        pass
    append_events(10, stream="late")
    while second.step():
        pass

    assert after_crash == []
    versions = counter_versions()
    assert versions == list(range(1, 61))
    assert Topic.objects.get(name="counter").version == 60
    assert Checkpoint.objects.get(name="counter").position == head_position()


def test_only_one_worker_applies_a_projection_until_its_lease_runs_out():
    append_events(5)
    counter = CounterProjection()
    first = ProjectionWorker([counter], owner="first", lease_secs=0.5)
    second = ProjectionWorker([counter], owner="second", lease_secs=0.5)

    assert first.step() == 5
    append_events(3, stream="more")
    assert second.step() == 0
    time.sleep(0.6)
    taken_over = second.step()

    assert taken_over == 3
    assert Checkpoint.objects.get(name="counter").owner == "second"
    assert counter_versions() == list(range(1, 9))


def test_a_worker_that_lost_its_lease_cannot_apply_a_batch_twice():
    append_events(4)
    counter = CounterProjection()
    stalled = ProjectionWorker([counter], owner="stalled", lease_secs=0.1)
    stalled.claim("counter")
    time.sleep(0.2)
    ProjectionWorker([counter], owner="fresh").step()

    applied = stalled.advance(counter)

    assert applied == 0
    assert counter_versions() == [1, 2, 3, 4]


class FailingProjection(CounterProjection):
    name = "fragile"
    fail_at_n = 2

    def apply_batch(self, events, publisher) -> None:
        for event in events:
            if event.data.get("n") == self.fail_at_n:
                raise ValueError("cannot apply this event")
        super().apply_batch(events, publisher)


def test_an_event_that_fails_stops_its_projection_only_and_can_be_skipped(caplog):
    append_events(5)
    fragile = FailingProjection()
    counter = CounterProjection()
    worker = ProjectionWorker([fragile, counter])

    while worker.step():
        pass
    stopped = Checkpoint.objects.get(name="fragile")
    status = io.StringIO()
    call_command("projection_status", stdout=status)
    call_command("skip_event", "fragile", "--position", str(stopped.failed_position))
    while worker.step():
        pass

    bad = position_of("s-2")
    assert stopped.state == Checkpoint.FAILED
    assert stopped.position == position_of("s-1")
    assert stopped.failed_position == bad
    assert "ValueError: cannot apply this event" in stopped.last_error
    assert "stream s-2 version 1" in stopped.last_error
    assert f"fragile: position {position_of('s-1')}" in status.getvalue()
    assert f"stopped at position {bad}" in status.getvalue()
    assert Checkpoint.objects.get(name="counter").position == head_position()
    resumed = Checkpoint.objects.get(name="fragile")
    assert (resumed.state, resumed.position) == (Checkpoint.RUNNING, head_position())
    assert [s["position"] for s in resumed.skipped_positions] == [bad]
    assert counter_versions() == list(range(1, 10))
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert f"projection fragile stopped at position {bad}" in errors[0].getMessage()


def test_a_rolled_back_append_leaves_a_hole_the_worker_passes_without_waiting():
    append_events(1)
    with pytest.raises(RuntimeError), transaction.atomic():
        append_to_stream("doomed", "thing", 0, [NewEvent("Happened", {})])
        raise RuntimeError("roll back")
    append_events(1, stream="after")
    counter = CounterProjection()

    while ProjectionWorker([counter]).step():
        pass

    last = json.loads(Change.objects.order_by("-id").first().message)["position"]
    assert counter_versions() == [1, 2]
    assert last == position_of("after-0") > position_of("s-0")
    assert Checkpoint.objects.get(name="counter").position == last


def test_an_append_in_flight_is_never_passed_by_a_worker():
    """A later append waits for the one in flight; the worker, looking in
    between, sees neither (PostgreSQL) or waits for both (SQLite), and in
    the end applies all in commit order, once."""
    append_events(1)
    holding = threading.Event()
    release = threading.Event()
    seen = []

    def slow_append() -> None:
        with transaction.atomic():
            append_to_stream("slow", "thing", 0, [NewEvent("Happened", {})])
            holding.set()
            release.wait(5)

    def quick_append() -> None:
        append_to_stream("quick", "thing", 0, [NewEvent("Happened", {})])

    counter = CounterProjection()
    worker = ProjectionWorker([counter])
    threads = [in_thread(slow_append)]
    holding.wait(5)
    threads.append(in_thread(quick_append))
    threads.append(in_thread(lambda: seen.append(worker.step())))
    time.sleep(0.5)
    release.set()
    for thread in threads:
        thread.join(10)
    while worker.step():
        pass

    if connection.vendor == "postgresql":
        assert seen == [1]
    messages = Change.objects.filter(topic="counter").order_by("version")
    streams = [
        json.loads(message)["event"]["stream_id"]
        for message in messages.values_list("message", flat=True)
    ]
    assert streams == ["s-0", "slow", "quick"]


def in_thread(target) -> threading.Thread:
    def run() -> None:
        try:
            target()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_the_dashboard_sums_revenue_exactly_past_any_column_width():
    # 150 orders of the largest total one order may have: 1.5e14, more
    # digits than a float keeps or a numeric(16, 2) column holds.
    largest = "999999999999.99"
    for n in range(150):
        order_id = f"whale-{n}"
        item = {"sku": "gold", "quantity": 1, "unit_price": largest}
        placed = {"order_id": order_id, "customer_id": "whale", "items": [item]}
        paid = {"amount": largest, "method": "card"}
        append_to_stream(
            order_id,
            "order",
            0,
            [NewEvent("OrderPlaced", placed), NewEvent("OrderPaid", paid, 2)],
        )

    while ProjectionWorker([DashboardProjection()]).step():
        pass
    applied = Dashboard.objects.get().revenue
    call_command("replay_projections", "dashboard", stdout=io.StringIO())
    rebuilt = Dashboard.objects.get()

    assert applied == Decimal(largest) * 150 == Decimal("149999999999998.50")
    assert dashboard_representation(rebuilt)["revenue"] == "149999999999998.50"


def test_the_dashboard_refunds_a_cancelled_paid_order(alice_client):
    paid = place_order(alice_client)
    alice_client.post(
        f"/api/v1/orders/{paid['id']}/pay", {"amount": "12.30"}, format="json"
    )
    alice_client.post(
        f"/api/v1/orders/{paid['id']}/cancel", {"reason": "x"}, format="json"
    )
    place_order(alice_client)

    while ProjectionWorker([DashboardProjection()]).step():
        pass

    dashboard = Dashboard.objects.get()
    assert dashboard.revenue == Decimal("0")
    assert dashboard.by_status == {"placed": 1, "paid": 0, "cancelled": 1}
    assert dashboard.order_count == 2


class NamedCounter(CounterProjection):
    def __init__(self, name: str) -> None:
        self.name = self.topic = name


def wait_for(condition, timeout_secs: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def checkpoint_at_head(name: str) -> bool:
    row = Checkpoint.objects.filter(name=name).first()
    return row is not None and row.position == head_position()


def start_running(worker: ProjectionWorker) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    return stop, in_thread(lambda: worker.run(stop))


def test_a_running_worker_moves_a_projection_while_another_waits_on_its_send(
    monkeypatch,
):
    """One projection's changes take long to send; the other projection's
    changes go out meanwhile."""
    sending = threading.Event()
    release = threading.Event()
    sent_topics: list[str] = []

    def slow_send_of_stuck(changes) -> None:
        if changes[0].topic == "stuck":
            sending.set()
            release.wait(10)
        sent_topics.extend(change.topic for change in changes)

    monkeypatch.setattr(topics, "_committed_hooks", [slow_send_of_stuck])
    worker = ProjectionWorker(
        [NamedCounter("stuck"), NamedCounter("counter")], poll_secs=30
    )
    stop, running = start_running(worker)
    try:
        append_events(1)
        stuck_sending = sending.wait(5)
        append_events(2, stream="more")
        # However the counter batches them, its three changes go out.
        counted_meanwhile = wait_for(lambda: sent_topics.count("counter") == 3)
    finally:
        release.set()
        stop.set()
        running.join(10)

    assert stuck_sending
    assert counted_meanwhile
    assert "stuck" not in sent_topics[:3]
    assert counter_versions() == [1, 2, 3]
    assert not running.is_alive()


def test_every_projection_of_a_running_worker_wakes_on_each_append():
    """No projection waits for its poll: each append wakes them all, also
    appends that commit while the projections are busy."""
    names = ["first", "second", "third"]
    worker = ProjectionWorker([NamedCounter(n) for n in names], poll_secs=30)
    stop, running = start_running(worker)
    caught_up = []
    try:
        for n in range(15):
            append_events(1 + n % 3, stream=f"round-{n}")
            caught_up.append(
                wait_for(lambda: all(checkpoint_at_head(name) for name in names))
            )
    finally:
        stop.set()
        running.join(10)

    assert caught_up == [True] * 15
    for name in names:
        versions = Change.objects.filter(topic=name).values_list("version", flat=True)
        assert sorted(versions) == list(range(1, 31))


def test_a_running_worker_keeps_its_leases_while_idle_and_gives_them_up_on_stop():
    append_events(2)
    running_worker = ProjectionWorker(
        [NamedCounter("a"), NamedCounter("b")], lease_secs=0.4, poll_secs=0.05
    )
    other = ProjectionWorker([NamedCounter("a"), NamedCounter("b")], owner="other")
    stop, running = start_running(running_worker)
    try:
        applied = wait_for(lambda: checkpoint_at_head("a") and checkpoint_at_head("b"))
        # Idle for more than two lease lengths.
        time.sleep(1.0)
        taken_while_running = other.step()
        owners_while_running = set(Checkpoint.objects.values_list("owner", flat=True))
    finally:
        stop.set()
        running.join(10)
    owners_after_stop = set(Checkpoint.objects.values_list("owner", flat=True))

    assert applied
    assert taken_while_running == 0
    assert owners_while_running == {running_worker.owner}
    assert owners_after_stop == {""}
    assert not running.is_alive()


def test_skipping_for_an_unknown_projection_names_the_known_ones():
    append_events(1)
    ProjectionWorker([CounterProjection()]).step()

    with pytest.raises(CommandError, match="no projection named 'nope'.*counter"):
        call_command("skip_event", "nope", "--position", "1")
