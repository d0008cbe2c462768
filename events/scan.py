"""Reading the whole store quickly, for rebuilding projections.

``read_all`` goes through the ORM, which is right for the worker's
batches of a few hundred events. A rebuild reads every event, so here the
database driver's cursor reads pages by position and each row becomes a
``RecordedEvent`` with no model instance in between, its JSON decoded by
orjson. Events are upcast as on every other read path.
"""

from __future__ import annotations

import datetime
import json
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from django.db import connection

from .models import StoredEvent
from .records import RecordedEvent
from .upcasting import upcast

__all__ = ["scan"]

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
    table = connection.ops.quote_name(StoredEvent._meta.db_table)
    columns = ", ".join(_select(c) for c in _COLUMNS)
    statement = (
        f"SELECT {columns} FROM {table} WHERE position > %s AND position <= %s "
        f"ORDER BY position LIMIT {int(page_size)}"
    )
    decode = _decoder()

    while after < up_to:
        with connection.cursor() as cursor:
            cursor.execute(statement, [after, up_to])
            rows = cursor.fetchall()
        if not rows:
            return
        yield [decode(row) for row in rows]
        after = rows[-1][1]


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
            # Naive UTC text: parsing it with the offset appended is
            # several times quicker than replacing tzinfo afterwards.
            recorded_at = parse_time(recorded_at + "+00:00")
        elif recorded_at.tzinfo is None:
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
