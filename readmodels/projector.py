"""Running projections: inline, in the appending transaction, and replay
from the whole store into fresh tables."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from django.db import transaction

from events.records import RecordedEvent
from events.store import head_position, lock_store_for_append, read_all

from .projections.orders import OrdersProjection
from .topics import CountingPublisher, OutboxPublisher, Publisher

__all__ = ["INLINE_PROJECTIONS", "Projection", "project_inline", "replay"]

logger = logging.getLogger(__name__)


class Projection(Protocol):
    name: str
    models: tuple

    def handles(self, event: RecordedEvent) -> bool: ...

    def apply(self, event: RecordedEvent, publisher: Publisher) -> None: ...


INLINE_PROJECTIONS: list[Projection] = [OrdersProjection()]


def projection_named(name: str) -> Projection:
    for projection in INLINE_PROJECTIONS:
        if projection.name == name:
            return projection
    known = ", ".join(p.name for p in INLINE_PROJECTIONS)
    raise KeyError(f"no projection named {name!r}; known: {known}")


def project_inline(events: list[RecordedEvent]) -> None:
    """Apply freshly appended events to every inline projection, in the
    append's transaction."""
    publisher = OutboxPublisher()
    for event in events:
        for projection in INLINE_PROJECTIONS:
            if projection.handles(event):
                projection.apply(event, publisher)


def replay(
    projection: Projection,
    batch_size: int = 2000,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Rebuild ``projection`` from every event, in position order.

    Runs in one transaction holding the store's write lock: readers keep
    seeing the old rows until the rebuilt ones commit, and no command can
    append meanwhile. Publishes nothing. Returns the events applied.

    Limit: commands wait for the whole rebuild, which is fine for the
    order tables here but not for a store of millions of events.
    """
    started = time.monotonic()
    applied = 0
    publisher = CountingPublisher()

    with transaction.atomic():
        lock_store_for_append()
        head = head_position()
        for model in reversed(projection.models):
            model.objects.all().delete()

        after = 0
        for batch in _batches(after, head, batch_size):
            for event in batch:
                if projection.handles(event):
                    projection.apply(event, publisher)
                    applied += 1
            after = batch[-1].position
            if progress:
                progress(after, head)

    logger.info(
        "projection %s rebuilt to position %d (%d events, %d ms)",
        projection.name,
        head,
        applied,
        (time.monotonic() - started) * 1000,
    )
    return applied


def _batches(after: int, head: int, size: int) -> Iterable[list[RecordedEvent]]:
    while after < head:
        batch = [e for e in read_all(after, size) if e.position <= head]
        if not batch:
            return
        yield batch
        after = batch[-1].position
