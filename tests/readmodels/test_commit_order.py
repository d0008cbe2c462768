"""Positions become visible in commit order, so a reader that tails the
store by position, like the projection worker, never passes an event that
commits later.

The store's write lock is what makes this so (see ``events.store``): an
append takes its positions only once it holds the lock, and holds it until
it commits. Without the lock on PostgreSQL, an append that pauses before
committing is overtaken by a later one with a higher position, and a
reader that already moved past the lower position never sees it.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from django.db import connection, transaction

from events.models import StoredEvent
from events.records import NewEvent
from events.store import append_to_stream, head_position, read_all
from readmodels.models import Change, Checkpoint
from readmodels.worker import ProjectionWorker
from tests.readmodels.racing_writer import race
from tests.readmodels.test_worker import CounterProjection, in_thread

pytestmark = pytest.mark.django_db(transaction=True)

WRITERS = 3
APPENDS_PER_WRITER = 40
STREAMS = 4


def position_of(stream_id: str) -> int:
    return StoredEvent.objects.get(stream_id=stream_id).position


def tail(stop: threading.Event, tailed: list[int]) -> None:
    """Read the store as the worker does: only after the last position
    read, until ``stop`` is set and nothing new is left."""
    after = 0
    while True:
        stopping = stop.is_set()
        batch = read_all(after, 100)
        tailed.extend(event.position for event in batch)
        after = tailed[-1] if tailed else 0
        if stopping and not batch:
            return
        if not batch:
            # Poll, as the worker does, rather than hold the interpreter.
            time.sleep(0.001)


def test_a_tailing_reader_sees_every_committed_position_while_writers_race():
    stop = threading.Event()
    tailed: list[int] = []
    outcomes: list[dict[str, int]] = []
    reader = in_thread(lambda: tail(stop, tailed))
    writers = [
        in_thread(
            lambda seed=seed: outcomes.append(race(seed, APPENDS_PER_WRITER, STREAMS))
        )
        for seed in range(WRITERS)
    ]

    for writer in writers:
        writer.join(60)
    stop.set()
    reader.join(10)

    committed = list(
        StoredEvent.objects.order_by("position").values_list("position", flat=True)
    )
    assert sum(o["committed"] for o in outcomes) == len(committed) > 0
    assert sum(o["rolled_back"] for o in outcomes) > 0
    assert tailed == committed


def wait_for_store_lock_waiter(timeout_secs: float = 5.0) -> bool:
    """True once a PostgreSQL session waits for an advisory lock (the
    store's); False if none does within the timeout."""
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_locks"
                " WHERE locktype = 'advisory' AND NOT granted"
            )
            if cursor.fetchone()[0]:
                return True
        time.sleep(0.01)
    return False


def test_a_worker_stops_below_an_append_in_flight_and_applies_it_once_committed():
    append_to_stream("first", "thing", 0, [NewEvent("Happened", {})])
    holding = threading.Event()
    release = threading.Event()

    def slow_append() -> None:
        with transaction.atomic():
            append_to_stream("slow", "thing", 0, [NewEvent("Happened", {})])
            holding.set()
            release.wait(10)

    worker = ProjectionWorker([CounterProjection()])
    slow = in_thread(slow_append)
    holding.wait(10)
    quick = in_thread(
        lambda: append_to_stream("quick", "thing", 0, [NewEvent("Happened", {})])
    )
    try:
        if connection.vendor == "postgresql":
            # The later append waits for the store lock; the worker runs now.
            waited = wait_for_store_lock_waiter()
            applied_meanwhile = worker.step() if waited else None
        else:
            # SQLite's single writer shuts the worker out until the append
            # in flight ends; what it would read meanwhile stops below it.
            applied_meanwhile = len(read_all(0))
        checkpoint_meanwhile = Checkpoint.objects.filter(name="counter").first()
    finally:
        release.set()
        slow.join(10)
        quick.join(10)
    while worker.step():
        pass

    changes = Change.objects.filter(topic="counter").order_by("version")
    streams = [
        json.loads(message)["event"]["stream_id"]
        for message in changes.values_list("message", flat=True)
    ]
    assert applied_meanwhile == 1
    if checkpoint_meanwhile:
        assert checkpoint_meanwhile.position == position_of("first")
    assert position_of("first") < position_of("slow") < position_of("quick")
    assert streams == ["first", "slow", "quick"]
    assert list(changes.values_list("version", flat=True)) == [1, 2, 3]
    assert Checkpoint.objects.get(name="counter").position == head_position()
