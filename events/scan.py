"""Reading events from the store quickly: pages of ``RecordedEvent``.

Every read of events goes through here: the worker's batches, the event
feed, loading a stream, and rebuilds, which read every event. The
database driver's cursor runs one plain SELECT and each row becomes a
``RecordedEvent`` with no model instance in between, its JSON decoded by
orjson. Events are upcast on the way out.
"""

from __future__ import annotations

import datetime
import json
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
from django.db import connection

from .models import StoredEvent
from .records import RecordedEvent
from .upcasting import upcast

__all__ = ["select_events", "scan"]

PAGE_SIZE = 5000

_COLUMNS = (
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


def scan(
    after: int, up_to: int, page_size: int = PAGE_SIZE
) -> Iterator[list[RecordedEvent]]:
    """Pages of the events with ``after < position <= up_to``, in order."""
    while after < up_to:
        page = select_events(
            ["position > %s", "position <= %s"], [after, up_to], limit=page_size
        )
        if not page:
            return
        yield page
        after = page[-1].position


def select_events(
    conditions: Sequence[str],
    params: Sequence[Any],
    limit: int,
    order_by: str = "position",
) -> list[RecordedEvent]:
    """At most ``limit`` events meeting every one of ``conditions`` (SQL on
    the store's columns, with ``%s`` for each of ``params``), ordered by
    the column ``order_by``."""
    table = connection.ops.quote_name(StoredEvent._meta.db_table)
    columns = ", ".join(_select(c) for c in _COLUMNS)
    where = " AND ".join(conditions) or "TRUE"
    statement = (
        f"SELECT {columns} FROM {table} WHERE {where} "
        f"ORDER BY {connection.ops.quote_name(order_by)} LIMIT {int(limit)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        rows = cursor.fetchall()
    decode = _decoder()
    return [decode(row) for row in rows]


def _select(column: str) -> str:
    name = connection.ops.quote_name(column)
    if column == "recorded_at" and connection.vendor == "sqlite":
        # As text: the driver would parse the declared timestamp with
        # Django's converter, several times slower than fromisoformat.
        return f"CAST({name} AS TEXT)"
    return name


# orjson reads integers beyond 64 bits as floats, losing digits; data with
# a run of that many digits goes to the standard library instead. Metadata
# is the store's own (actor, ids as strings, small numbers).
_LONG_DIGITS = re.compile(r"[0-9]{19}")


def _load_data(text: str) -> Any:
    if _LONG_DIGITS.search(text):
        return json.loads(text)
    return orjson.loads(text)


def _decoder() -> Callable[[tuple], RecordedEvent]:
    """Turn a row into a ``RecordedEvent``. Drivers differ: SQLite's gives
    ids and JSON as text and naive UTC times; PostgreSQL's gives UUIDs and
    aware times, and JSON as text too (the ORM decodes it in the field)."""
    load_data, load_metadata = _load_data, orjson.loads
    parse_time = datetime.datetime.fromisoformat
    utc = datetime.UTC
    as_uuid = uuid.UUID

    def decode(row: tuple) -> RecordedEvent:
        event_id, position, stream_id, stream_type, version, type_, *rest = row
        data, metadata, recorded_at = rest
        if isinstance(recorded_at, str):
            # Naive UTC text, as Django writes it: parsing it with the
            # offset appended is several times quicker than replacing
            # tzinfo afterwards. Text written with an offset fails that.
            try:
                recorded_at = parse_time(recorded_at + "+00:00")
            except ValueError:
                recorded_at = parse_time(recorded_at)
        if recorded_at.tzinfo is None:
            recorded_at = recorded_at.replace(tzinfo=utc)
        event = RecordedEvent(
            event_id if isinstance(event_id, uuid.UUID) else as_uuid(event_id),
            position,
            stream_id,
            stream_type,
            version,
            type_,
            load_data(data) if isinstance(data, str) else data,
            load_metadata(metadata) if isinstance(metadata, str) else metadata,
            recorded_at,
        )
        return upcast(event)

    return decode
