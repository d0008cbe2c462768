"""Appending to and reading from the event store.

Positions come from the table's auto-increment key, which hands out numbers
at insert time, not at commit time. To keep positions in commit order, as
readers see them, every append takes one store-wide write lock that is held
until its transaction ends: on PostgreSQL a transaction-scoped advisory
lock, on SQLite the database's own single writer (transactions start
IMMEDIATE, see settings). A reader that follows positions therefore never
passes a number that a slower transaction fills in later; a rolled-back
append leaves a hole that no one will fill.

Limit: one writer at a time across the whole store. On this machine a
PostgreSQL commit costs about a millisecond of round trips, which bounds
appends near a thousand transactions per second.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable, Iterator, Sequence

from django.db import IntegrityError, connection, transaction
from django.db.models import Max
from django.utils import timezone

from . import conf
from .errors import VersionConflict
from .models import StoredEvent
from .records import CommandMetadata, NewEvent, RecordedEvent
from .upcasting import upcast

__all__ = [
    "APPEND_NOTIFY_CHANNEL",
    "AppendHook",
    "append_to_stream",
    "head_position",
    "on_append",
    "on_append_committed",
    "read_all",
    "read_stream",
    "stream_version",
]

# Any number that no other part of the system uses as an advisory lock key.
APPEND_LOCK_KEY = 0x4C4F4F4B  # "LOOK"

# PostgreSQL NOTIFY channel that tells workers in other processes that
# events were committed.
APPEND_NOTIFY_CHANNEL = "lookout_events"

AppendHook = Callable[[list[RecordedEvent]], None]
_append_hooks: list[AppendHook] = []
_commit_listeners: list[Callable[[], None]] = []

_FIELDS = (
    "event_id",
    "position",
    "stream_id",
    "stream_type",
    "stream_version",
    "type",
    "data",
    "metadata",
    "recorded_at",
)


def on_append(hook: AppendHook) -> AppendHook:
    """Run ``hook`` inside every append's transaction, after the insert.

    Inline projections register here. An exception in a hook rolls the
    append back with it.
    """
    if hook not in _append_hooks:
        _append_hooks.append(hook)
    return hook


def on_append_committed(listener: Callable[[], None]) -> None:
    """Call ``listener`` (no arguments) after each append commits, in the
    committing thread: wake-ups for workers in this process."""
    if listener not in _commit_listeners:
        _commit_listeners.append(listener)


def _notify_listeners() -> None:
    for listener in _commit_listeners:
        listener()


def append_to_stream(
    stream_id: str,
    stream_type: str,
    expected_version: int,
    events: Sequence[NewEvent],
    metadata: CommandMetadata | None = None,
) -> list[RecordedEvent]:
    """Append ``events`` after ``expected_version``, all or none.

    Raises ``VersionConflict`` when the stream is at another version.
    """
    if not events:
        return []
    metadata = metadata or CommandMetadata()

    with transaction.atomic():
        lock_store_for_append()

        # Refuse the write if the stream moved on since the caller read it.
        current = stream_version(stream_id)
        if current != expected_version:
            raise VersionConflict(stream_id, expected_version, current)

        # Number the new events after the stream's last version.
        now = timezone.now()
        rows = [
            StoredEvent(
                event_id=uuid.uuid4(),
                stream_id=stream_id,
                stream_type=stream_type,
                stream_version=current + n,
                type=event.type,
                data=event.data,
                metadata=metadata.for_event(event.schema_version),
                recorded_at=now,
            )
            for n, event in enumerate(events, 1)
        ]
        try:
            with transaction.atomic(savepoint=False):
                StoredEvent.objects.bulk_create(rows)
        except IntegrityError as exc:
            # Only reachable if something appended without the store lock.
            raise VersionConflict(stream_id, expected_version, -1) from exc

        recorded = [_record_from_row(row) for row in rows]
        for hook in _append_hooks:
            hook(recorded)
        if _commit_listeners:
            transaction.on_commit(_notify_listeners)

    return recorded


def lock_store_for_append() -> None:
    """Hold the store-wide write lock until the current transaction ends.

    On PostgreSQL the same round trip queues a NOTIFY, which is delivered
    to listening workers when (and only if) the transaction commits.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s), pg_notify(%s, '')",
                [APPEND_LOCK_KEY, APPEND_NOTIFY_CHANNEL],
            )


def stream_version(stream_id: str) -> int:
    """The stream's last version, 0 for a stream with no events."""
    found = StoredEvent.objects.filter(stream_id=stream_id).aggregate(
        v=Max("stream_version")
    )
    return found["v"] or 0


def head_position() -> int:
    """The highest committed position, 0 for an empty store."""
    return StoredEvent.objects.aggregate(p=Max("position"))["p"] or 0


def read_stream(
    stream_id: str, after_version: int = 0, batch_size: int | None = None
) -> Iterator[RecordedEvent]:
    """Yield a stream's events in version order, in bounded batches."""
    batch_size = batch_size or conf.get("READ_BATCH_SIZE")
    last = after_version
    while True:
        batch = list(
            StoredEvent.objects.filter(stream_id=stream_id, stream_version__gt=last)
            .order_by("stream_version")
            .values_list(*_FIELDS)[:batch_size]
        )
        for values in batch:
            yield _record_from_values(values)
        if len(batch) < batch_size:
            return
        last = batch[-1][4]


def read_all(
    after_position: int = 0,
    limit: int = 1000,
    stream_id: str | None = None,
    types: Sequence[str] | None = None,
) -> list[RecordedEvent]:
    """Events after ``after_position`` in position order, at most ``limit``."""
    query = StoredEvent.objects.filter(position__gt=after_position)
    if stream_id:
        query = query.filter(stream_id=stream_id)
    if types:
        query = query.filter(type__in=list(types))
    rows = query.order_by("position").values_list(*_FIELDS)[:limit]
    return [_record_from_values(values) for values in rows]


def _record_from_values(values: tuple) -> RecordedEvent:
    return upcast(RecordedEvent(*values))


def _record_from_row(row: StoredEvent) -> RecordedEvent:
    recorded_at = row.recorded_at
    if timezone.is_naive(recorded_at):
        recorded_at = recorded_at.replace(tzinfo=datetime.UTC)
    return upcast(
        RecordedEvent(
            id=row.event_id,
            position=row.position,
            stream_id=row.stream_id,
            stream_type=row.stream_type,
            stream_version=row.stream_version,
            type=row.type,
            data=row.data,
            metadata=row.metadata,
            recorded_at=recorded_at,
        )
    )
