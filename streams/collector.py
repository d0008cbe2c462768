"""Full garbage collections at quiet moments, not in the middle of a
fan-out.

A full (generation 2) collection walks every object the process holds:
with a thousand WebSockets open it takes about 200 ms here, and a change
that arrives meanwhile waits for it. CPython runs one once the objects
that outlived the younger generations have grown by a quarter since the
last, so a burst of new subscribers (a deploy's reconnects, a page that
many open at once) is soon followed by one, as likely as not while a
change is being handed to all of them.

The process's topic hub tells its ``QuietCollector`` when a subscriber
joins and when a change is delivered. Once ``QUIET_COLLECT_AFTER_SUBSCRIBERS``
have joined since the last time, it runs a full collection itself as soon
as neither has happened for ``QUIET_COLLECT_SECS``. What the burst left is
then collected between changes, and CPython's own next full collection is
a quarter's growth away again.

Server processes also raise the youngest generation's threshold
(``GC_THRESHOLDS``, applied by ``apply_gc_thresholds`` when the ASGI
application loads). At CPython's 700, a fan-out to a thousand sockets,
whose frames and buffers live until the reactor has written them, runs
dozens of young collections that promote those objects to the older
generations; the full collections that follow walk them again, one every
twenty-odd changes. With 50,000 most of them die young.

Limit: a process that is never quiet that long collects when CPython
decides, as it would without this; after ``GIVE_UP_SECS`` of waiting the
collector stops waiting until more subscribers join.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

from . import conf

__all__ = ["QuietCollector", "apply_gc_thresholds"]

logger = logging.getLogger(__name__)

GIVE_UP_SECS = 30.0


def apply_gc_thresholds() -> None:
    """Set the collector's thresholds to ``GC_THRESHOLDS``, if any: for
    server processes, which fan changes out."""
    thresholds = conf.get("GC_THRESHOLDS")
    if thresholds:
        gc.set_threshold(*thresholds)
        logger.debug("garbage collector thresholds %s", thresholds)


class QuietCollector:
    def __init__(self) -> None:
        self.joined = 0
        self.last_activity = 0.0
        self.task: asyncio.Task | None = None

    def subscriber_joined(self) -> None:
        self.last_activity = time.monotonic()
        self.joined += 1
        wanted = conf.get("QUIET_COLLECT_AFTER_SUBSCRIBERS")
        if wanted and self.joined >= wanted and self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._collect())

    def change_delivered(self) -> None:
        self.last_activity = time.monotonic()

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _collect(self) -> None:
        quiet = conf.get("QUIET_COLLECT_SECS")
        give_up = time.monotonic() + GIVE_UP_SECS
        try:
            while True:
                now = time.monotonic()
                waited = now - self.last_activity
                if waited >= quiet:
                    break
                if now >= give_up:
                    logger.debug("no quiet moment for a full collection")
                    return
                await asyncio.sleep(quiet - waited)

            joined, self.joined = self.joined, 0
            started = time.perf_counter()
            found = gc.collect()
            logger.debug(
                "full collection after %d new subscribers: %d objects freed in %.1f ms",
                joined,
                found,
                (time.perf_counter() - started) * 1000,
            )
        finally:
            self.task = None
