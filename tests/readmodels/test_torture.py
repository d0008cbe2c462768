"""Writer processes race, worker processes tail: every committed event is
applied exactly once.

Writers (``tests/readmodels/racing_writer.py``) append to random streams
with random pauses inside their transactions; some roll back, some lose
version races. Two ``manage.py run_worker`` processes run meanwhile: one
holds the projections, and is killed (SIGKILL, no goodbye) once it has
applied some events; the other takes over when the lease runs out. At the
end the ``events`` topic has one change per committed event, versions
1..N in position order, and every checkpoint is the head.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from events.models import StoredEvent
from events.store import head_position
from readmodels.models import Change, Checkpoint
from tests.streams.conftest import ROOT, server_env

pytestmark = pytest.mark.django_db(transaction=True)

WRITERS = 4
APPENDS_PER_WRITER = 80
STREAMS = 4
LEASE_SECS = 1.0
POLL_SECS = 0.1
# Generous: six Python processes start on two shared cores.
DEADLINE_SECS = 45.0


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_worker"]
        + ["--poll-secs", str(POLL_SECS), "--lease-secs", str(LEASE_SECS)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )


def start_writer(seed: int, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.readmodels.racing_writer"]
        + [str(seed), str(APPENDS_PER_WRITER), str(STREAMS)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def wait_until(condition: Callable[[], Any], what: str, logs: list[Path]) -> Any:
    deadline = time.monotonic() + DEADLINE_SECS
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    worker_logs = "\n".join(f"{log.name}:\n{log.read_text()}" for log in logs)
    raise AssertionError(f"timed out waiting until {what}\n{worker_logs}")


def holder(workers: list[subprocess.Popen]) -> subprocess.Popen | None:
    """The worker process holding topic ``events``' projection, once it
    has applied something. Owners read ``host:pid:tag``."""
    row = Checkpoint.objects.filter(name="events", position__gt=0).first()
    for worker in workers:
        if row and row.owner.split(":")[1] == str(worker.pid):
            return worker
    return None


def caught_up() -> bool:
    head = head_position()
    positions = Checkpoint.objects.values_list("position", flat=True)
    return len(positions) == 2 and all(p == head for p in positions)


def test_every_committed_event_is_applied_once_across_processes(tmp_path):
    env = server_env(
        LOOKOUT_LOG_LEVEL="INFO", LOOKOUT_REDIS_PREFIX=f"lookout-torture-{os.getpid()}"
    )
    logs = [tmp_path / "worker-0.log", tmp_path / "worker-1.log"]
    workers = [start_worker(env, log) for log in logs]
    writers: list[subprocess.Popen] = []
    try:
        # Writers start once a worker holds the projections.
        wait_until(Checkpoint.objects.exists, "a worker claims", logs)
        writers = [start_writer(seed, env) for seed in range(WRITERS)]
        first = wait_until(lambda: holder(workers), "a worker applies", logs)
        first.kill()
        first.wait()
        head_at_kill = head_position()
        outcomes = [json.loads(w.communicate(timeout=60)[0]) for w in writers]
        wait_until(caught_up, "the checkpoints reach the head", logs)
        survivor = holder(workers)
    finally:
        for process in workers + writers:
            process.kill()
            process.wait()

    committed = list(
        StoredEvent.objects.order_by("position").values_list("position", flat=True)
    )
    changes = Change.objects.filter(topic="events").order_by("version")
    versions, positions = zip(*changes.values_list("version", "position"), strict=True)
    assert sum(o["committed"] for o in outcomes) == len(committed) > 0
    assert sum(o["rolled_back"] for o in outcomes) > 0
    assert sum(o["conflicts"] for o in outcomes) > 0
    assert list(versions) == list(range(1, len(committed) + 1))
    assert list(positions) == committed
    assert survivor is not None and survivor is not first
    assert head_at_kill < committed[-1]
