"""The projections, and running them: inline in the appending
transaction, or replayed from the whole store into fresh tables.

Asynchronous projections are run by ``readmodels.worker``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Protocol

from django.db import transaction

from events.records import RecordedEvent
from events.store import head_position, lock_store_for_append, read_all

from .models import Checkpoint
from .projections.dashboard import DashboardProjection
from .projections.event_feed import EventFeedProjection
from .projections.orders import OrdersProjection
from .topics import CountingPublisher, OutboxPublisher, Publisher

__all__ = [
    "ASYNC_PROJECTIONS",
    "INLINE_PROJECTIONS",
    "Projection",
    "project_inline",
    "projection_named",
    "replay",
]

logger = logging.getLogger(__name__)


class Projection(Protocol):
    """Turns events into read-model rows and publishes their changes."""

    name: str
    models: tuple

    def apply_batch(self, events: list[RecordedEvent], publisher: Publisher) -> None:
        """Apply events in position order; skip those of no interest."""


INLINE_PROJECTIONS: list[Projection] = [OrdersProjection()]
ASYNC_PROJECTIONS: list[Projection] = [DashboardProjection(), EventFeedProjection()]


def all_projections() -> list[Projection]:
    return INLINE_PROJECTIONS + ASYNC_PROJECTIONS


def projection_named(name: str) -> Projection:
    for projection in all_projections():
        if projection.name == name:
            return projection
    known = ", ".join(p.name for p in all_projections())
    raise KeyError(f"no projection named {name!r}; known: {known}")


def project_inline(events: list[RecordedEvent]) -> None:
    """Apply freshly appended events to every inline projection, in the
    append's transaction."""
    publisher = OutboxPublisher()
    for projection in INLINE_PROJECTIONS:
        projection.apply_batch(events, publisher)


def replay(
    projection: Projection,
    batch_size: int = 2000,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Rebuild ``projection`` from every event, in position order.

    Runs in one transaction holding the store's write lock: readers keep
    seeing the old rows until the rebuilt ones commit, and no command can
    append meanwhile. Publishes nothing; rows get the versions that live
    publishing gave them. Returns the events read.

    Limit: commands wait for the whole rebuild, which is fine for the
    order tables here but not for a store of millions of events.
    """
    started = time.monotonic()
    read = 0
    publisher = CountingPublisher()

    with transaction.atomic():
        lock_store_for_append()
        head = head_position()
        for model in reversed(projection.models):
            model.objects.all().delete()

        for batch in _batches(0, head, batch_size):
            projection.apply_batch(batch, publisher)
            read += len(batch)
            if progress:
                progress(batch[-1].position, head)

        if projection in ASYNC_PROJECTIONS:
            Checkpoint.objects.update_or_create(
                name=projection.name, defaults={"position": head}
            )

    logger.info(
        "projection %s rebuilt to position %d (%d events, %d ms)",
        projection.name,
        head,
        read,
        (time.monotonic() - started) * 1000,
    )
    return read


def _batches(after: int, head: int, size: int) -> Iterator[list[RecordedEvent]]:
    while after < head:
        batch = [e for e in read_all(after, size) if e.position <= head]
        if not batch:
            return
        yield batch
        after = batch[-1].position
