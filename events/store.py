"""Appending to and reading from the event store.

Positions come from the table's auto-increment key, which hands out numbers
at insert time, not at commit time. To keep positions in commit order, as
readers see them, every append takes one store-wide write lock that is held
until its transaction ends: on PostgreSQL a transaction-scoped advisory
lock, on SQLite the database's own single writer (transactions start
IMMEDIATE, see settings). A reader that follows positions therefore never
passes a number that a slower transaction fills in later; a rolled-back
append leaves a hole that no one will fill.

An append is one statement, sent through the driver's cursor under Django's
connection: on PostgreSQL a call of the stored function ``lookout_append``
(events migration 0003), which takes the lock, checks the stream's version,
queues the NOTIFY and inserts; on SQLite an INSERT that inserts nothing
unless the stream is at the expected version. Its parameters are ready
before the transaction begins, so the lock covers the statement, the
append hooks and the commit, and nothing else.

An append that is a transaction of its own, with no append hook for its
stream type (no inline projection reads it), is that statement alone in
autocommit: the database commits it as it ends, with no BEGIN or COMMIT
round trip and none of Django's transaction bookkeeping. Inside a
transaction, or with a hook to run, it joins ``transaction.atomic``.

Limit: one writer at a time across the whole store, and the lock is held
through the commit. On this machine a PostgreSQL commit costs a few tenths
of a millisecond (the WAL flush and a round trip), so writers on distinct
streams queue behind each other's commits at a few thousand transactions
per second, where unlocked INSERTs would share flushes and go faster.
"""

from __future__ import annotations

import datetime
import functools
import json
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.db import IntegrityError, NotSupportedError, connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Max
from django.utils import timezone

from . import conf
from .errors import VersionConflict
from .models import StoredEvent
from .records import CommandMetadata, NewEvent, RecordedEvent
from .scan import select_events
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

# The stored function that appends on PostgreSQL (see the events app's
# migrations): lock, version check, NOTIFY and INSERT in one round trip.
_APPEND_POSTGRESQL = (
    "SELECT event_position, event_version FROM lookout_append("
    "%s::bigint, %s::text, %s::varchar, %s::varchar, %s::integer, %s::jsonb, "
    "%s::timestamptz)"
)

# Rows per INSERT on SQLite: five parameters a row stays under the 999
# that SQLite builds before 3.32 allow in one statement.
_SQLITE_ROWS_PER_INSERT = 190

AppendHook = Callable[[list[RecordedEvent]], None]
# An event on its way in: its id, the event, its metadata.
_Row = tuple[uuid.UUID, NewEvent, dict[str, Any]]
_append_hooks: list[AppendHook] = []
# The stream types a hook asked for; a hook missing here hears of all.
_hook_stream_types: dict[AppendHook, frozenset[str]] = {}
_commit_listeners: list[Callable[[], None]] = []

# SQLite has one writer at a time, and a connection that finds it busy
# polls, sleeping up to 100 ms between tries: under concurrent commands an
# unlucky one waited over a second. Writers of one process queue on this
# lock instead and find SQLite free when their turn comes.
_sqlite_writers = threading.Lock()


@contextmanager
def write_transaction() -> Iterator[None]:
    """``transaction.atomic()`` for a transaction that will append or
    project; on SQLite, this process's writers first take turns.

    The turn ends with the commit, before the commit hooks (which may send
    changes) run. Inside a transaction already open, this is a savepoint,
    as ``atomic`` is, and takes no turn.
    """
    db = transaction.get_connection()
    if db.vendor != "sqlite" or db.in_atomic_block:
        with transaction.atomic():
            yield
        return

    _sqlite_writers.acquire()
    held = True

    def end_turn() -> None:
        nonlocal held
        if held:
            held = False
            _sqlite_writers.release()

    try:
        with transaction.atomic():
            # The first hook after the commit: the next writer goes on
            # while this one's hooks run.
            transaction.on_commit(end_turn)
            yield
    finally:
        end_turn()


def on_append(
    hook: AppendHook, stream_types: Sequence[str] | None = None
) -> AppendHook:
    """Run ``hook`` inside the transaction of every append to a stream of
    one of ``stream_types`` (of any type if None), after the insert.

    Inline projections register here. An exception in a hook rolls the
    append back with it, and with it the caller's transaction, if any.
    """
    if hook not in _append_hooks:
        _append_hooks.append(hook)
    if stream_types is None:
        _hook_stream_types.pop(hook, None)
    else:
        _hook_stream_types[hook] = frozenset(stream_types)
    return hook


def _hooks_for(stream_type: str) -> list[AppendHook]:
    return [
        hook
        for hook in _append_hooks
        if stream_type in _hook_stream_types.get(hook, (stream_type,))
    ]


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

    Raises ``VersionConflict`` when the stream is at another version; the
    caller's transaction is then left as it was.

    Joins the caller's transaction without a savepoint: an exception from
    an append hook or from the database spoils that whole transaction.
    """
    if not events:
        return []
    metadata = metadata or CommandMetadata()
    rows = [
        (uuid.uuid4(), event, metadata.for_event(event.schema_version))
        for event in events
    ]
    now = timezone.now()
    db = transaction.get_connection()
    # Built before the transaction, so that the store lock is held for the
    # statement and the commit, not for turning events into parameters.
    statements = _insert_statements(
        db, stream_id, stream_type, expected_version, rows, now
    )

    hooks = _hooks_for(stream_type)
    recorded: list[RecordedEvent] = []
    if not hooks and len(statements) == 1 and _autocommits(db):
        positions = _append_alone(db, stream_id, expected_version, statements[0])
        if not positions:
            # Read after the refusal: the stream may have moved on since,
            # as no lock holds it now.
            current = stream_version(stream_id)
    else:
        with transaction.atomic(savepoint=False):
            positions = _insert_rows(db, stream_id, expected_version, statements)
            if not positions:
                # Nothing was written; the store lock, held until the
                # transaction ends, keeps the stream where the check found it.
                current = stream_version(stream_id)
            else:
                if hooks:
                    recorded = _recorded_events(
                        stream_id, stream_type, expected_version, rows, positions, now
                    )
                    for hook in hooks:
                        hook(recorded)
                if _commit_listeners:
                    transaction.on_commit(_notify_listeners)

    # Raised outside the block, so that the caller's transaction goes on.
    if not positions:
        raise VersionConflict(stream_id, expected_version, current)
    # With no hook to feed, the records are made outside the block: when
    # the append is a transaction of its own, after the store lock is gone.
    return recorded or _recorded_events(
        stream_id, stream_type, expected_version, rows, positions, now
    )


def _insert_statements(
    db: BaseDatabaseWrapper,
    stream_id: str,
    stream_type: str,
    expected_version: int,
    rows: list[_Row],
    now: datetime.datetime,
) -> list[tuple[str, Sequence[Any]]]:
    """The statements that take the store lock, check the stream's version
    and insert ``rows``: one on PostgreSQL, one per chunk on SQLite."""
    if db.vendor == "postgresql":
        # One JSON array, which the driver sends as it is: parameters per
        # event would cost more to adapt than to insert.
        events = json.dumps(
            [
                [str(event_id), event.type, event.data, meta]
                for event_id, event, meta in rows
            ]
        )
        params = (
            APPEND_LOCK_KEY,
            APPEND_NOTIFY_CHANNEL,
            stream_id,
            stream_type,
            expected_version,
            events,
            now,
        )
        return [(_APPEND_POSTGRESQL, params)]

    if not db.features.can_return_rows_from_bulk_insert:
        raise NotSupportedError(
            "appending events needs SQLite 3.35 or later, for INSERT ... "
            "RETURNING: upgrade SQLite or use PostgreSQL"
        )

    # Values as Django stores them on SQLite.
    recorded_at = db.ops.adapt_datetimefield_value(now)
    # The events of one append share their metadata but for the schema
    # version: encode each distinct one once.
    encoded_metadata: dict[int, str] = {}
    statements = []
    for start in range(0, len(rows), _SQLITE_ROWS_PER_INSERT):
        chunk = rows[start : start + _SQLITE_ROWS_PER_INSERT]
        version = expected_version + start
        params: list[Any] = [stream_id, stream_type, recorded_at]
        for n, (event_id, event, meta) in enumerate(chunk, version + 1):
            schema = event.schema_version
            if schema not in encoded_metadata:
                encoded_metadata[schema] = json.dumps(meta)
            params += (
                event_id.hex,
                n,
                event.type,
                json.dumps(event.data),
                encoded_metadata[schema],
            )
        params += (stream_id, version)
        statements.append((_sqlite_insert(len(chunk)), params))
    return statements


def _autocommits(db: BaseDatabaseWrapper) -> bool:
    """Whether a statement run now on ``db`` commits as it ends."""
    return not db.in_atomic_block and db.get_autocommit()


def _append_alone(
    db: BaseDatabaseWrapper,
    stream_id: str,
    expected_version: int,
    statement: tuple[str, Sequence[Any]],
) -> list[int]:
    """Run the one statement of an append as a transaction of its own.

    The statement takes the store lock itself: on PostgreSQL the stored
    function's advisory lock, released by the commit that ends the
    statement; on SQLite the write lock, which a writing statement takes
    before it reads. In-process SQLite writers take turns first, as in
    ``write_transaction``.
    """
    if db.vendor == "sqlite":
        with _sqlite_writers:
            positions = _insert_rows(db, stream_id, expected_version, [statement])
    else:
        positions = _insert_rows(db, stream_id, expected_version, [statement])
    if positions:
        _notify_listeners()
    return positions


def _insert_rows(
    db: BaseDatabaseWrapper,
    stream_id: str,
    expected_version: int,
    statements: list[tuple[str, Sequence[Any]]],
) -> list[int]:
    """Run ``statements`` through the driver's own cursor, with no SQL to
    build. Returns the new events' positions in version order, or none if
    the stream is not at ``expected_version``."""
    db.validate_thread_sharing()
    db.validate_no_broken_transaction()
    cursor = _driver_cursor(db)
    found: list[tuple[int, int]] = []
    try:
        with db.wrap_database_errors:
            for sql, params in statements:
                cursor.execute(sql, params)
                found += cursor.fetchall()
                if not found:
                    break
    except IntegrityError as exc:
        # Only reachable if something appended without the store lock.
        raise VersionConflict(stream_id, expected_version, -1) from exc

    # RETURNING promises no order: put the positions in version order.
    positions = [0] * len(found)
    for position, version in found:
        positions[version - expected_version - 1] = position
    return positions


def _driver_cursor(db: BaseDatabaseWrapper) -> Any:
    if db.vendor == "postgresql":
        import psycopg

        # Server-side binding: the JSON goes as one text parameter, never
        # quoted into the statement; and a connection that appends often
        # prepares the statement, if the database's OPTIONS set
        # ``prepare_threshold`` (Django turns prepared statements off).
        return psycopg.Cursor(db.connection)
    # The transaction began IMMEDIATE (see settings): this connection is
    # the store's only writer until it ends.
    return db.connection.cursor()


def _recorded_events(
    stream_id: str,
    stream_type: str,
    expected_version: int,
    rows: list[_Row],
    positions: list[int],
    now: datetime.datetime,
) -> list[RecordedEvent]:
    return [
        upcast(
            RecordedEvent(
                event_id,
                position,
                stream_id,
                stream_type,
                version,
                event.type,
                event.data,
                meta,
                now,
            )
        )
        for version, position, (event_id, event, meta) in zip(
            range(expected_version + 1, expected_version + len(rows) + 1),
            positions,
            rows,
            strict=True,
        )
    ]


@functools.cache
def _sqlite_insert(row_count: int) -> str:
    """The INSERT of ``row_count`` events that inserts nothing unless the
    stream is at the version given last."""
    values = ", ".join(["(?, ?, ?, ?, ?)"] * row_count)
    return (
        "INSERT INTO events_event (stream_id, stream_type, recorded_at, "
        "event_id, stream_version, type, data, metadata) "
        "SELECT ?, ?, ?, column1, column2, column3, column4, column5 "
        f"FROM (VALUES {values}) "
        "WHERE (SELECT COALESCE(MAX(stream_version), 0) FROM events_event "
        "WHERE stream_id = ?) = ? "
        "RETURNING position, stream_version"
    )


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
        batch = select_events(
            ["stream_id = %s", "stream_version > %s"],
            [stream_id, last],
            limit=batch_size,
            order_by="stream_version",
        )
        yield from batch
        if len(batch) < batch_size:
            return
        last = batch[-1].stream_version


def read_all(
    after_position: int = 0,
    limit: int = 1000,
    stream_id: str | None = None,
    types: Sequence[str] | None = None,
) -> list[RecordedEvent]:
    """Events after ``after_position`` in position order, at most ``limit``."""
    conditions, params = ["position > %s"], [after_position]
    if stream_id:
        conditions.append("stream_id = %s")
        params.append(stream_id)
    if types:
        conditions.append(f"type IN ({', '.join(['%s'] * len(types))})")
        params.extend(types)
    return select_events(conditions, params, limit=limit)
