"""The outbox relay: sends committed changes to their topics' groups.

A transaction that made changes hands them, after commit, to the relay of
the server's event loop; the relay sends them to Channels groups and marks
the outbox rows sent. Commands never wait for a send. A change that was
committed but never sent (the process died in between) stays unsent in the
outbox and is sent by the sweep that runs when a relay starts.

A change may be sent twice (a sweep in one process racing another
process's relay); subscribers ignore versions they already have.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.utils import timezone

from events.store import write_transaction
from readmodels.models import Change
from readmodels.topics import CommittedChange

from . import conf, metrics
from .watch import encode, group_name, off_loop, reset_message

__all__ = [
    "Relay",
    "announce",
    "announce_resets",
    "ensure_relay",
    "send_changes",
    "send_resets",
    "sweep_unsent",
]

logger = logging.getLogger(__name__)

SWEEP_BATCH = 500
# A busy topic's changes go to its group in messages of up to this many:
# one layer round trip for each, not one for each change.
CHANGES_PER_MESSAGE = 100
_relay: Relay | None = None


async def send_changes(changes: list[CommittedChange]) -> None:
    """Send changes to their topics' groups: one group message per topic
    for up to ``CHANGES_PER_MESSAGE`` of its changes, in version order."""
    layer = get_channel_layer()
    by_topic: dict[str, list[CommittedChange]] = {}
    for change in changes:
        by_topic.setdefault(change.topic, []).append(change)

    for topic, topic_changes in by_topic.items():
        for start in range(0, len(topic_changes), CHANGES_PER_MESSAGE):
            chunk = topic_changes[start : start + CHANGES_PER_MESSAGE]
            await layer.group_send(group_name(topic), _group_message(topic, chunk))
    metrics.CHANGES_SENT.inc(len(changes))


def _group_message(topic: str, changes: list[CommittedChange]) -> dict:
    if len(changes) == 1:
        change = changes[0]
        return {
            "type": "change.message",
            "topic": topic,
            "version": change.version,
            "message": change.message,
        }
    return {
        "type": "changes.message",
        "topic": topic,
        "changes": [[change.version, change.message] for change in changes],
    }


async def send_resets(versions: dict[str, int], reason: str) -> None:
    """Tell each topic's watchers that it starts over at a new version."""
    layer = get_channel_layer()
    for topic, version in versions.items():
        await layer.group_send(
            group_name(topic),
            {
                "type": "topic.reset",
                "topic": topic,
                "version": version,
                "message": encode(reset_message(topic, version, reason)),
            },
        )


def mark_sent(ids: list[int]) -> None:
    with write_transaction():
        Change.objects.filter(id__in=ids, sent_at__isnull=True).update(
            sent_at=timezone.now()
        )


def unsent_changes(older_than_secs: float, limit: int) -> list[CommittedChange]:
    cutoff = timezone.now() - timedelta(seconds=older_than_secs)
    rows = (
        Change.objects.filter(sent_at__isnull=True, created_at__lte=cutoff)
        .order_by("id")
        .values_list("id", "topic", "version", "message")[:limit]
    )
    return [CommittedChange(*row) for row in rows]


async def sweep_unsent(older_than_secs: float | None = None) -> int:
    """Send outbox rows that were committed but never sent."""
    if older_than_secs is None:
        older_than_secs = conf.get("RELAY_SWEEP_GRACE_SECS")
    sent = 0
    while True:
        batch = await off_loop(unsent_changes)(older_than_secs, SWEEP_BATCH)
        if not batch:
            break
        await send_changes(batch)
        await off_loop(mark_sent)([c.id for c in batch])
        sent += len(batch)
    if sent:
        logger.info("relay sent %d changes left unsent in the outbox", sent)
    return sent


class Relay:
    """Sends changes from one event loop. Start it with ``ensure_relay``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[list[CommittedChange]] = asyncio.Queue()
        self.task = loop.create_task(self.run())

    @property
    def alive(self) -> bool:
        return (
            not self.loop.is_closed()
            and self.loop.is_running()
            and not self.task.done()
        )

    def enqueue(self, changes: list[CommittedChange]) -> None:
        """Hand over changes from any thread."""
        self.loop.call_soon_threadsafe(self.queue.put_nowait, changes)

    async def run(self) -> None:
        try:
            await sweep_unsent(older_than_secs=0)
        except Exception:
            logger.exception("relay sweep of the outbox failed; rows stay unsent")
        while True:
            batch = await self.queue.get()
            while not self.queue.empty():
                batch.extend(self.queue.get_nowait())
            try:
                await send_changes(batch)
                await off_loop(mark_sent)([c.id for c in batch])
            except Exception:
                # The rows stay unsent; the next relay's sweep sends them.
                logger.exception("relay failed to send %d changes", len(batch))


def ensure_relay() -> Relay:
    """Start the relay on the running event loop, once per loop."""
    global _relay
    loop = asyncio.get_running_loop()
    if _relay is None or _relay.loop is not loop or _relay.task.done():
        _relay = Relay(loop)
    return _relay


def announce(changes: list[CommittedChange]) -> None:
    """After a commit: hand changes to this process's relay, or, where no
    server loop runs (a management command), send them right here."""
    relay = _relay
    if relay is not None and relay.alive:
        relay.enqueue(changes)
        return
    async_to_sync(send_changes)(changes)
    mark_sent([c.id for c in changes])


def announce_resets(versions: dict[str, int], reason: str) -> None:
    """After a commit that reset topics (a rebuild): send their watchers a
    reset, from this process's relay loop if one runs, else right here.

    Resets are not kept in the outbox. A watcher that misses this one (a
    dropped send; a server that shares no channel layer with the process
    that rebuilt, as under the embedded in-memory layer) finds its
    topic's version ahead on its next tick or idle check, and its history
    gone: it is told ``reset`` then, with reason ``history_expired``.
    """
    relay = _relay
    if relay is not None and relay.alive:
        asyncio.run_coroutine_threadsafe(send_resets(versions, reason), relay.loop)
        return
    async_to_sync(send_resets)(versions, reason)
    logger.info("sent a %s reset to the watchers of %d topics", reason, len(versions))
