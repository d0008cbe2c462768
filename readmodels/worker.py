"""The projection worker: tails the event store by position and applies
each batch to the asynchronous projections.

Why tailing by position never skips an event: every append holds the
store's write lock from taking its positions until its commit is visible
(see ``events.store``). So when a reader sees position P, every lower
position is committed or rolled back for good; an append still in flight
can only hold positions above every committed one. The worker never waits
on a hole: a hole is a rolled-back append, and nothing will fill it.

Each batch is applied in one transaction together with the checkpoint, so
a crash loses both or neither, and a restart goes on from the checkpoint.
One worker at a time moves a projection: it holds a lease on the
checkpoint row, renewed as it works; another worker takes over once the
lease has run out. The batch transaction checks the lease and the
checkpoint it started from, so a worker that lost its lease while stalled
cannot apply a batch twice.

``run`` tails each projection in a thread of its own, with a wake-up of
its own, so that one projection's batch never waits for another's apply,
commit or sends. Each thread keeps its database connection between
batches, whatever ``CONN_MAX_AGE`` says (reconnecting per batch cost more
than the batch); only a failed step drops it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import timedelta

from django.db import connection
from django.utils import timezone

from events.records import RecordedEvent
from events.store import (
    APPEND_NOTIFY_CHANNEL,
    on_append_committed,
    read_all,
    write_transaction,
)

from . import conf
from .models import Checkpoint
from .projector import ASYNC_PROJECTIONS, Projection
from .topics import OutboxPublisher, trim_changes

__all__ = ["ProjectionWorker", "start_in_background"]

logger = logging.getLogger(__name__)

# Events applied per transaction: large enough to amortize the commit,
# small enough that a batch's changes reach watchers quickly.
BATCH_SIZE = 500
# A silent worker loses a projection after this long. A worker renews its
# lease with every batch, and while idle once half of it has gone by.
LEASE_SECS = 5.0
# A lost wake-up (a dropped LISTEN connection, another process's commit
# under SQLite) costs at most this much delay.
POLL_SECS = 1.0


class LeaseLost(Exception):
    """Another worker holds the projection, or moved its checkpoint."""


class ProjectionWorker:
    def __init__(
        self,
        projections: list[Projection] | None = None,
        owner: str | None = None,
        batch_size: int = BATCH_SIZE,
        lease_secs: float = LEASE_SECS,
        poll_secs: float = POLL_SECS,
    ) -> None:
        self.projections = list(projections or ASYNC_PROJECTIONS)
        self.owner = (
            owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        )
        self.batch_size = batch_size
        self.lease_secs = lease_secs
        self.poll_secs = poll_secs
        # One wake-up per projection: a thread clears its own, so a clear
        # never swallows a wake-up meant for another projection.
        self.wakeups = {p.name: threading.Event() for p in self.projections}
        # When each lease this worker holds is due for renewal, by the
        # monotonic clock; renewal starts once half of the lease is gone.
        self.renew_at: dict[str, float] = {}
        self.last_trim = 0.0

    def wake(self) -> None:
        """Wake every projection's thread: new events may be there. Safe
        to call from any thread."""
        for wakeup in self.wakeups.values():
            wakeup.set()

    def step(self) -> int:
        """Move every projection this worker can hold by one batch.
        Returns the events applied."""
        applied = 0
        for projection in self.projections:
            if self.hold(projection.name):
                applied += self.advance(projection)
        return applied

    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set: each projection in a thread of its
        own, sleeping when caught up until woken. Trims topic history
        meanwhile, and returns once every thread has stopped."""
        on_append_committed(self.wake)
        threads = [
            threading.Thread(
                target=self.tail,
                args=(projection, stop),
                name=f"projection-{projection.name}",
                daemon=True,
            )
            for projection in self.projections
        ]
        logger.info(
            "worker %s runs projections %s",
            self.owner,
            ", ".join(p.name for p in self.projections),
        )
        for thread in threads:
            thread.start()

        try:
            while not stop.is_set():
                self.trim_safely()
                stop.wait(self.poll_secs)
        finally:
            # Also when this thread fails: the projections' threads must
            # not outlive run().
            stop.set()
            self.wake()
            for thread in threads:
                thread.join()
            connection.close()

    def tail(self, projection: Projection, stop: threading.Event) -> None:
        """Move one projection until ``stop`` is set, then give up its
        lease."""
        wakeup = self.wakeups[projection.name]
        try:
            while not stop.is_set():
                try:
                    applied = 0
                    if self.hold(projection.name):
                        applied = self.advance(projection)
                except Exception:
                    # A lost database connection, say: the checkpoint is
                    # intact, so try again after a poll on a new one.
                    logger.exception(
                        "worker %s failed a step of projection %s",
                        self.owner,
                        projection.name,
                    )
                    connection.close()
                    applied = 0
                if applied == 0:
                    wakeup.wait(self.poll_secs)
                    # Cleared before the next read, so an append that
                    # commits from here on sets it again.
                    wakeup.clear()
        finally:
            try:
                self.release([projection.name])
            finally:
                connection.close()

    def trim_safely(self) -> None:
        try:
            self.trim_when_due()
        except Exception:
            logger.exception("worker %s failed to trim topic history", self.owner)
            connection.close()

    def trim_when_due(self) -> None:
        """Trim topic history now and then; every worker may, since a
        trim is idempotent."""
        now = time.monotonic()
        if now - self.last_trim >= conf.get("TRIM_EVERY_SECS"):
            self.last_trim = now
            trim_changes()

    def hold(self, name: str) -> bool:
        """True while this worker holds the lease on a projection: claims
        it, or renews it once half of it has gone by."""
        if time.monotonic() < self.renew_at.get(name, 0.0):
            return True
        return self.claim(name)

    def claim(self, name: str) -> bool:
        """Take or renew the lease on a projection."""
        started = time.monotonic()
        now = timezone.now()
        with write_transaction():
            row, _ = Checkpoint.objects.select_for_update().get_or_create(name=name)
            held_by_other = row.owner not in ("", self.owner)
            if held_by_other and row.lease_until and row.lease_until > now:
                self.renew_at.pop(name, None)
                return False
            if row.owner != self.owner:
                logger.info(
                    "worker %s takes projection %s at position %d",
                    self.owner,
                    name,
                    row.position,
                )
            row.owner = self.owner
            row.lease_until = now + timedelta(seconds=self.lease_secs)
            row.save(update_fields=["owner", "lease_until", "updated_at"])
        self.renew_at[name] = started + self.lease_secs / 2
        return True

    def release(self, names: list[str] | None = None) -> None:
        """Give up the leases on ``names`` (all of this worker's
        projections by default), so another worker may take over now."""
        if names is None:
            names = [p.name for p in self.projections]
        for name in names:
            self.renew_at.pop(name, None)
        Checkpoint.objects.filter(name__in=names, owner=self.owner).update(
            owner="", lease_until=None
        )

    def advance(self, projection: Projection) -> int:
        checkpoint = Checkpoint.objects.get(name=projection.name)
        if checkpoint.state == Checkpoint.FAILED:
            return 0
        batch = read_all(checkpoint.position, self.batch_size)
        if not batch:
            return 0

        started = time.monotonic()
        try:
            self._apply(projection, batch, checkpoint.position)
        except LeaseLost:
            logger.warning(
                "worker %s lost projection %s at position %d",
                self.owner,
                projection.name,
                checkpoint.position,
            )
            return 0
        except Exception:
            return self._apply_one_by_one(projection, batch, checkpoint.position)

        logger.debug(
            "projection %s applied positions %d..%d (%d events, %d ms)",
            projection.name,
            batch[0].position,
            batch[-1].position,
            len(batch),
            (time.monotonic() - started) * 1000,
        )
        return len(batch)

    def _apply(
        self, projection: Projection, events: list[RecordedEvent], expected: int
    ) -> None:
        """Apply ``events`` and move the checkpoint past them in one
        transaction, which also renews the lease."""
        started = time.monotonic()
        try:
            with write_transaction():
                row = Checkpoint.objects.select_for_update().get(name=projection.name)
                if row.owner != self.owner or row.position != expected:
                    raise LeaseLost(projection.name)
                with OutboxPublisher() as publisher:
                    projection.apply_batch(events, publisher)
                row.position = events[-1].position
                row.lease_until = timezone.now() + timedelta(seconds=self.lease_secs)
                row.save(update_fields=["position", "lease_until", "updated_at"])
        except LeaseLost:
            self.renew_at.pop(projection.name, None)
            raise
        self.renew_at[projection.name] = started + self.lease_secs / 2

    def _apply_one_by_one(
        self, projection: Projection, events: list[RecordedEvent], expected: int
    ) -> int:
        """A batch failed: apply it event by event to find the event at
        fault, keep what applies before it, and stop the projection there."""
        applied = 0
        for event in events:
            try:
                self._apply(projection, [event], expected)
            except LeaseLost:
                return applied
            except Exception as exc:
                self._stop_at(projection, event, exc)
                return applied
            expected = event.position
            applied += 1
        return applied

    def _stop_at(
        self, projection: Projection, event: RecordedEvent, exc: Exception
    ) -> None:
        logger.error(
            "projection %s stopped at position %d (stream %s version %d, %s)",
            projection.name,
            event.position,
            event.stream_id,
            event.stream_version,
            event.type,
            exc_info=exc,
        )
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        Checkpoint.objects.filter(name=projection.name).update(
            state=Checkpoint.FAILED,
            failed_position=event.position,
            last_error=(
                f"{error} (stream {event.stream_id} version "
                f"{event.stream_version}, {event.type})"
            ),
        )


def listen_for_appends(wake: Callable[[], None], stop: threading.Event) -> None:
    """Call ``wake`` on every PostgreSQL NOTIFY of a committed append.

    Runs on its own connection; if it drops, the worker's poll covers the
    gap and this reconnects.
    """
    import psycopg

    params = connection.get_connection_params()
    while not stop.is_set():
        try:
            with psycopg.connect(**params, autocommit=True) as listener:
                listener.execute(f"LISTEN {APPEND_NOTIFY_CHANNEL}")
                while not stop.is_set():
                    for _ in listener.notifies(timeout=POLL_SECS, stop_after=1):
                        wake()
        except Exception:
            logger.warning("worker lost its LISTEN connection; polling meanwhile")
            stop.wait(POLL_SECS)


def start_in_background(stop: threading.Event | None = None) -> ProjectionWorker:
    """Run a worker in a daemon thread of this process (the embedded
    mode's server), with a LISTEN thread on PostgreSQL."""
    stop = stop or threading.Event()
    worker = ProjectionWorker()
    threading.Thread(
        target=worker.run, args=(stop,), name="projection-worker", daemon=True
    ).start()
    if connection.vendor == "postgresql":
        threading.Thread(
            target=listen_for_appends,
            args=(worker.wake, stop),
            name="projection-listener",
            daemon=True,
        ).start()
    return worker
