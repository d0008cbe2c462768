"""The projections, and running them: inline in the appending
transaction, or rebuilt from the whole store into new tables.

Asynchronous projections are run by ``readmodels.worker``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from events.records import RecordedEvent
from events.scan import PAGE_SIZE

from .projections.dashboard import DashboardProjection
from .projections.event_feed import EventFeedProjection
from .projections.orders import OrdersProjection
from .rebuild import Builder, rebuild
from .topics import OutboxPublisher, Publisher

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
    # The stream types whose events it reads; None for every type.
    stream_types: tuple[str, ...] | None

    def apply_batch(self, events: list[RecordedEvent], publisher: Publisher) -> None:
        """Apply events in position order; skip those of no interest."""

    def builder(self) -> Builder:
        """A fold over rows in memory, for rebuilds."""

    def changed_topics(self, model: type, row: dict[str, Any]) -> list[str]:
        """The topics on which a row of ``model`` is published."""

    def topic_row(self, topic: str) -> tuple[type, Any] | None:
        """The model and key of the row whose ``version`` column holds
        ``topic``'s version, if a row does."""


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


def inline_stream_types() -> list[str] | None:
    """The stream types some inline projection reads; None for all."""
    types: set[str] = set()
    for projection in INLINE_PROJECTIONS:
        if projection.stream_types is None:
            return None
        types.update(projection.stream_types)
    return sorted(types)


def project_inline(events: list[RecordedEvent]) -> None:
    """Apply freshly appended events to every inline projection, in the
    append's transaction."""
    with OutboxPublisher() as publisher:
        for projection in INLINE_PROJECTIONS:
            projection.apply_batch(events, publisher)


def replay(
    projection: Projection,
    batch_size: int = PAGE_SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Rebuild ``projection`` from every event into new tables and switch
    them in (``readmodels.rebuild``). Returns the events folded."""
    result = rebuild(
        projection,
        page_size=batch_size,
        progress=progress,
        asynchronous=projection in ASYNC_PROJECTIONS,
    )
    return result.events
