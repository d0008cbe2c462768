"""Topics: names, versions, and publishing changes through the outbox.

A projection that changes a read model publishes one change per topic it
touched. ``OutboxPublisher`` gives the change the topic's next version and
writes it to the ``Change`` table in the projection's own transaction; only
after that transaction commits are the hooks told (``on_change_committed``),
so nothing is announced for a command that rolls back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from django.db import transaction
from django.db.models import F, OuterRef, Q, Subquery
from django.utils import timezone

from events.records import RecordedEvent

from . import conf
from .models import Change, Topic

__all__ = [
    "CommittedChange",
    "CountingPublisher",
    "OutboxPublisher",
    "Publisher",
    "announce_resets",
    "current_version",
    "customer_orders_topic",
    "encode_message",
    "on_change_committed",
    "on_topics_reset",
    "order_topic",
    "trim_changes",
]

logger = logging.getLogger(__name__)

UPSERT = "upsert"
DELETE = "delete"


def order_topic(order_id: str) -> str:
    return f"orders/{order_id}"


def customer_orders_topic(customer_id: str) -> str:
    return f"customers/{customer_id}/orders"


@dataclass(frozen=True)
class CommittedChange:
    """A change whose transaction committed, ready to be sent."""

    id: int
    topic: str
    version: int
    message: str


ChangeHook = Callable[[list[CommittedChange]], None]
_committed_hooks: list[ChangeHook] = []


def on_change_committed(hook: ChangeHook) -> ChangeHook:
    """Call ``hook`` with each transaction's changes after it commits."""
    if hook not in _committed_hooks:
        _committed_hooks.append(hook)
    return hook


ResetHook = Callable[[dict[str, int], str], None]
_reset_hooks: list[ResetHook] = []


def on_topics_reset(hook: ResetHook) -> ResetHook:
    """Call ``hook`` with ``{topic: new version}`` and a reason when topics
    start over (a rebuilt read model that differs from the live one)."""
    if hook not in _reset_hooks:
        _reset_hooks.append(hook)
    return hook


def announce_resets(versions: dict[str, int], reason: str) -> None:
    """After a commit: tell the hooks which topics were reset."""
    if not versions:
        return
    for hook in _reset_hooks:
        try:
            hook(versions, reason)
        except Exception:
            # Watchers miss the live reset, but any resume below the new
            # version finds no history and is reset then.
            logger.exception("announcing the reset of %d topics failed", len(versions))


def encode_message(message: dict[str, Any]) -> str:
    """JSON text of a message. Refuses what JSON cannot carry exactly, so a
    bad value fails in the projection, never in a consumer."""
    return json.dumps(
        message, ensure_ascii=False, allow_nan=False, separators=(",", ":")
    )


def current_version(topic: str) -> int:
    found = Topic.objects.filter(name=topic).values_list("version", flat=True)
    return next(iter(found), 0)


class Publisher(Protocol):
    # False when changes are only numbered, never sent (a replay): the
    # projection may then skip building their data.
    sends: bool

    def lock_topics(self, topics: Iterable[str]) -> None:
        """Read the versions of ``topics`` up front, in one query."""

    def next_version(self, topic: str) -> int: ...

    def publish(
        self,
        topic: str,
        version: int,
        op: str,
        key: str,
        data: dict[str, Any] | None,
        event: RecordedEvent,
    ) -> None: ...


class OutboxPublisher:
    """Writes changes to the outbox inside the current transaction.

    Use one per transaction, as a context manager around the projection's
    work: ``publish`` collects the changes, and leaving the block writes
    them, with their topics' new versions, in one statement each. When the
    transaction commits, all of its changes are announced at once.
    """

    sends = True

    def __init__(self) -> None:
        # Versions of the topics read so far; a topic with no row is absent.
        self.versions: dict[str, int] = {}
        self.read: set[str] = set()
        self.pending: list[Change] = []
        self.committed: list[CommittedChange] = []

    def __enter__(self) -> OutboxPublisher:
        return self

    def __exit__(self, exc_type: type | None, *rest: object) -> None:
        if exc_type is None:
            self.flush()

    def lock_topics(self, topics: Iterable[str]) -> None:
        """Read and lock the rows of ``topics`` in one query. Rows are
        locked in name order, so two transactions never wait crosswise."""
        wanted = sorted(set(topics) - self.read)
        if not wanted:
            return
        rows = (
            Topic.objects.select_for_update()
            .filter(name__in=wanted)
            .order_by("name")
            .values_list("name", "version")
        )
        self.versions.update(rows)
        self.read.update(wanted)

    def next_version(self, topic: str) -> int:
        if topic not in self.read:
            self.lock_topics([topic])
        return self.versions.get(topic, 0) + 1

    def publish(
        self,
        topic: str,
        version: int,
        op: str,
        key: str,
        data: dict[str, Any] | None,
        event: RecordedEvent,
    ) -> None:
        message = encode_message(
            {
                "type": "change",
                "topic": topic,
                "version": version,
                "position": event.position,
                "op": op,
                "key": key,
                "data": data,
                "event": event.summary(),
            }
        )
        self.versions[topic] = version
        change = Change(
            topic=topic, version=version, position=event.position, message=message
        )
        self.pending.append(change)

    def flush(self) -> None:
        """Write the collected changes and their topics' versions."""
        if not self.pending:
            return
        touched = sorted({change.topic for change in self.pending})
        Topic.objects.bulk_create(
            [Topic(name=topic, version=self.versions[topic]) for topic in touched],
            update_conflicts=True,
            unique_fields=["name"],
            update_fields=["version"],
        )
        changes = Change.objects.bulk_create(self.pending)
        self.pending = []

        if not self.committed:
            transaction.on_commit(lambda: _announce(self.committed))
        self.committed.extend(
            CommittedChange(c.id, c.topic, c.version, c.message) for c in changes
        )


class CountingPublisher:
    """Numbers versions as live publishing would, and publishes nothing.

    Used while replaying history into a rebuilt read model: the rows get
    the versions they had, and no change is sent twice.
    """

    sends = False

    def __init__(self) -> None:
        self.versions: dict[str, int] = {}

    def lock_topics(self, topics: Iterable[str]) -> None:
        pass

    def next_version(self, topic: str) -> int:
        return self.versions.get(topic, 0) + 1

    def publish(
        self,
        topic: str,
        version: int,
        op: str,
        key: str,
        data: dict[str, Any] | None,
        event: RecordedEvent,
    ) -> None:
        self.versions[topic] = version


def _announce(changes: list[CommittedChange]) -> None:
    for hook in _committed_hooks:
        try:
            hook(changes)
        except Exception:
            # The change is committed and stays unsent in the outbox; the
            # relay's sweep sends it later.
            logger.exception(
                "announcing change %s@%d failed", changes[0].topic, changes[0].version
            )


def trim_changes(
    keep_versions: int | None = None, keep_secs: float | None = None
) -> int:
    """Delete history that watchers may no longer resume from.

    A change goes once it is more than ``keep_versions`` behind its topic's
    version, or older than ``keep_secs``; an unsent change stays until the
    relay has sent it. Returns the changes deleted.

    Limit: changes older than the retention window are trimmed; a watcher
    resuming from before it gets a reset and must fetch the snapshot again.
    """
    if keep_versions is None:
        keep_versions = conf.get("CHANGE_RETENTION_VERSIONS")
    if keep_secs is None:
        keep_secs = conf.get("CHANGE_RETENTION_SECS")
    oldest_kept = timezone.now() - timedelta(seconds=keep_secs)
    head = Topic.objects.filter(name=OuterRef("topic")).values("version")[:1]
    expired = (
        Change.objects.annotate(head=Subquery(head))
        .filter(sent_at__isnull=False)
        .filter(
            Q(version__lte=F("head") - keep_versions) | Q(created_at__lt=oldest_kept)
        )
    )
    deleted, _ = Change.objects.filter(id__in=expired.values("id")).delete()
    if deleted:
        logger.info("trimmed %d changes from topic history", deleted)
    return deleted
