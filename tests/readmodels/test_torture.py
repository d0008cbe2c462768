"""Many writers, one worker: every committed event applied exactly once.

Writers append to random streams with random pauses inside their
transactions; some roll back, some lose version races. A worker tails the
store meanwhile. At the end the projection has seen each committed event
once, in position order, and its checkpoint is the head.
"""

from __future__ import annotations

import json
import random
import threading
import time

import pytest
from django.db import connection, transaction

from events.errors import VersionConflict
from events.models import StoredEvent
from events.records import NewEvent
from events.store import append_to_stream, head_position, stream_version
from readmodels.models import Change, Checkpoint
from readmodels.worker import ProjectionWorker
from tests.readmodels.test_worker import CounterProjection

pytestmark = pytest.mark.django_db(transaction=True)

WRITERS = 4
APPENDS_PER_WRITER = 40
STREAMS = 6


class RolledBack(Exception):
    pass


_counting = threading.Lock()


def count(outcomes: dict[str, int], outcome: str) -> None:
    with _counting:
        outcomes[outcome] += 1


def writer(seed: int, outcomes: dict[str, int]) -> None:
    chance = random.Random(seed)
    try:
        for _ in range(APPENDS_PER_WRITER):
            stream = f"torture-{chance.randrange(STREAMS)}"
            try:
                with transaction.atomic():
                    version = stream_version(stream)
                    time.sleep(chance.random() * 0.01)
                    append_to_stream(stream, "thing", version, [NewEvent("Hit", {})])
                    time.sleep(chance.random() * 0.01)
                    if chance.random() < 0.2:
                        raise RolledBack
                count(outcomes, "committed")
            except RolledBack:
                count(outcomes, "rolled_back")
            except VersionConflict:
                count(outcomes, "conflicts")
    finally:
        connection.close()


def test_every_committed_event_is_applied_once_while_writers_race():
    outcomes = {"committed": 0, "rolled_back": 0, "conflicts": 0}
    stop = threading.Event()
    worker = ProjectionWorker([CounterProjection()], poll_secs=0.05)
    tailing = threading.Thread(target=worker.run, args=(stop,))
    writers = [
        threading.Thread(target=writer, args=(seed, outcomes))
        for seed in range(WRITERS)
    ]

    tailing.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join(120)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done = Checkpoint.objects.filter(name="counter", position=head_position())
        if done.exists():
            break
        time.sleep(0.1)
    stop.set()
    tailing.join(10)

    committed = list(
        StoredEvent.objects.filter(stream_type="thing")
        .order_by("position")
        .values_list("position", flat=True)
    )
    applied = [
        json.loads(message)["position"]
        for message in Change.objects.filter(topic="counter")
        .order_by("version")
        .values_list("message", flat=True)
    ]
    assert outcomes["committed"] == len(committed) > 0
    assert outcomes["rolled_back"] > 0
    assert applied == committed
    assert Checkpoint.objects.get(name="counter").position == head_position()
