"""Following one topic from code that is not a Channels consumer: the SSE
and long-poll views.

``TopicFollower`` joins the topic through the process's hub (see
``fanout``), then yields the backlog above a version followed by live
changes, once each and in order, filling any gap from the outbox. It holds
no database connection while it waits. A follower that falls more than
``MAX_SUBSCRIBER_LAG`` changes behind gets a ``behind`` delivery and no
more: the caller ends the stream and the client resumes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from readmodels.topics import current_version

from . import metrics
from .fanout import ChangeQueue, ResetMessage, SubscriberTooSlow, topic_hub
from .watch import Backlog, off_loop, read_backlog

__all__ = ["Delivery", "TopicFollower"]


@dataclass(frozen=True)
class Delivery:
    """One thing to tell the subscriber: a change (``message`` is its JSON
    text), a reset (``reset`` is the reset object), nothing new within the
    wait (``idle``), or that it fell too far behind and must resume from
    ``version`` (``behind``; the last delivery)."""

    version: int
    message: str | None = None
    reset: dict[str, Any] | None = None
    idle: bool = False
    behind: bool = False


class TopicFollower:
    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.queue = ChangeQueue("http")
        self.version = 0

    async def __aenter__(self) -> TopicFollower:
        self.hub = topic_hub()
        await self.hub.join(self.topic, self.queue)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.hub.leave(self.topic, self.queue)

    async def start(self, since: int | None) -> Backlog:
        """Read the first page of backlog; ``self.version`` is where the
        subscriber starts."""
        backlog = await off_loop(read_backlog)(self.topic, since)
        self.version = backlog.version if backlog.reset or since is None else since
        return backlog

    async def deliveries(
        self, first: Backlog, idle_secs: float
    ) -> AsyncIterator[Delivery]:
        """Everything after the starting version, then live changes; an
        ``idle`` delivery after each quiet ``idle_secs``."""
        async for delivery in self._drain(first):
            yield delivery
        while True:
            try:
                change = await self.queue.next(timeout=idle_secs)
            except SubscriberTooSlow:
                yield Delivery(self.version, behind=True)
                return
            if change is None:
                # Quiet: catch up if the last change sent was dropped.
                if await off_loop(current_version)(self.topic) > self.version:
                    backlog = await off_loop(read_backlog)(self.topic, self.version)
                    async for delivery in self._drain(backlog):
                        yield delivery
                yield Delivery(self.version, idle=True)
                continue
            _, version, message = change
            if version <= self.version:
                continue
            if isinstance(message, ResetMessage):
                self.version = version
                yield Delivery(version, reset=json.loads(message))
                continue
            if version == self.version + 1:
                self.version = version
                yield Delivery(version, message=message)
                continue
            # A gap: a send was dropped or overtaken. Read it from the outbox.
            metrics.WATCH_GAPS.labels("http").inc()
            backlog = await off_loop(read_backlog)(self.topic, self.version)
            async for delivery in self._drain(backlog):
                yield delivery

    async def _drain(self, backlog: Backlog) -> AsyncIterator[Delivery]:
        while True:
            if backlog.reset:
                self.version = backlog.version
                yield Delivery(backlog.version, reset=backlog.reset)
            for offset, message in enumerate(backlog.messages, 1):
                yield Delivery(self.version + offset, message=message)
            if backlog.messages:
                self.version = backlog.version
            if not backlog.more:
                return
            backlog = await off_loop(read_backlog)(self.topic, self.version)
