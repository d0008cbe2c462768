"""Reading the whole store page by page, as rebuilds do."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection, transaction

from events.records import NewEvent
from events.scan import scan
from events.store import append_to_stream, head_position, read_all

pytestmark = pytest.mark.django_db


def append(stream_id: str, *events: NewEvent) -> None:
    with transaction.atomic():
        append_to_stream(stream_id, "thing", 0, list(events))


def test_scan_reads_the_same_events_as_read_all_in_pages():
    for number in range(7):
        append(f"s-{number}", NewEvent("Happened", {"n": number, "text": "Zürich ✓"}))
    # An old shape, upcast on the way out like on every read path.
    append("o-1", NewEvent("OrderPaid", {"amount": "1.00"}, schema_version=1))
    head = head_position()

    pages = list(scan(0, head, page_size=3))

    assert [len(page) for page in pages] == [3, 3, 2]
    assert [event for page in pages for event in page] == read_all(0, 100)
    assert pages[-1][-1].data == {"amount": "1.00", "method": "unknown"}


def test_scan_stays_within_its_bounds():
    for number in range(5):
        append(f"s-{number}", NewEvent("Happened", {"n": number}))
    positions = [e.position for e in read_all(0, 100)]

    pages = list(scan(positions[1], positions[3]))

    assert [e.position for page in pages for e in page] == positions[2:4]


def test_scan_keeps_integers_beyond_64_bits():
    huge = 2**70 + 1
    append("big", NewEvent("Counted", {"count": huge, "nested": [{"n": -huge}]}))

    (page,) = scan(0, head_position())

    assert page[0].data == {"count": huge, "nested": [{"n": -huge}]}


def test_scan_reads_times_with_and_without_an_offset():
    append("s-time", NewEvent("Hit", {}), NewEvent("Hit", {}))
    when = datetime.datetime(2026, 12, 4, 16, 30, 5, 250000, tzinfo=datetime.UTC)
    # SQLite keeps times as text: Django writes it naive (UTC), other
    # writers may add the offset. PostgreSQL keeps a timestamptz.
    values = [str(when.replace(tzinfo=None)), str(when)]
    if connection.vendor != "sqlite":
        values = [when, when]
    with connection.cursor() as cursor:
        for version, value in enumerate(values, 1):
            cursor.execute(
                "UPDATE events_event SET recorded_at = %s "
                "WHERE stream_id = %s AND stream_version = %s",
                [value, "s-time", version],
            )

    (page,) = scan(0, head_position())

    assert [event.recorded_at for event in page] == [when, when]
