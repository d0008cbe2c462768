"""Long streams: bounded reads and snapshots (field case C02)."""

from __future__ import annotations

import datetime
import json
import uuid
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.utils import timezone

from events import commands
from events.models import Snapshot
from events.orders import ORDER_STREAM_TYPE, Item, Order
from readmodels.models import CustomerOrders, OrderView, Topic
from readmodels.projections.orders import copy_state_to_row
from readmodels.topics import customer_orders_topic, order_topic
from tests.conftest import place_order

pytestmark = pytest.mark.django_db(transaction=True)

LONG_STREAM = 200_000


def bulk_insert_long_order(order_id: str, customer_id: str, count: int) -> None:
    """An order placed, then ``count - 1`` items added, inserted in bulk
    as an import would, with its read model and topics set to match."""
    now = timezone.now()
    placed = {
        "order_id": order_id,
        "customer_id": customer_id,
        "items": [{"sku": "first", "quantity": 1, "unit_price": "1.00"}],
    }

    added = json.dumps({"sku": "bolt", "quantity": 1, "unit_price": "0.01"})
    rows = (
        (
            str(uuid.uuid4()),
            order_id,
            ORDER_STREAM_TYPE,
            version,
            "OrderPlaced" if version == 1 else "ItemAdded",
            json.dumps(placed) if version == 1 else added,
            '{"schema_version": 1}',
            now + datetime.timedelta(microseconds=version),
        )
        for version in range(1, count + 1)
    )
    cast = "::jsonb" if connection.vendor == "postgresql" else ""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO events_event (event_id, stream_id, stream_type, "
            "stream_version, type, data, metadata, recorded_at) VALUES "
            f"(%s, %s, %s, %s, %s, %s{cast}, %s{cast}, %s)",
            list(rows),
        )

    order = Order(
        order_id,
        customer_id=customer_id,
        status="placed",
        items={
            "first": Item("first", 1, Decimal("1.00")),
            "bolt": Item("bolt", count - 1, Decimal("0.01")),
        },
        version=count,
    )
    last = next(commands.read_stream(order_id, after_version=count - 1))
    row = OrderView(order_id=order_id, placed_position=last.position - count + 1)
    copy_state_to_row(order, row)
    row.updated_at = last.recorded_at
    row.stream_version = last.stream_version
    row.last_position = last.position
    row.created_at = now
    row.version = count
    row.save()
    CustomerOrders.objects.create(customer_id=customer_id, order_count=1, version=count)
    Topic.objects.create(name=order_topic(order_id), version=count)
    Topic.objects.create(name=customer_orders_topic(customer_id), version=count)


def test_c02_a_command_on_a_200000_event_stream_reads_in_bounded_memory(alice_client):
    order_id = str(uuid.uuid4())
    bulk_insert_long_order(order_id, "c-alice", LONG_STREAM)
    item = {"sku": "nut", "quantity": 2, "unit_price": "0.05"}

    queries = []

    def record(execute, sql, params, many, context):
        queries.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        first = alice_client.post(
            f"/api/v1/orders/{order_id}/items", item, format="json"
        )
    reads = []
    real_read_stream = commands.read_stream

    def counting_read_stream(stream_id, after_version=0, batch_size=None):
        for event in real_read_stream(stream_id, after_version, batch_size):
            reads.append(event.stream_version)
            yield event

    commands.read_stream = counting_read_stream
    try:
        second = alice_client.post(
            f"/api/v1/orders/{order_id}/items", item, format="json"
        )
    finally:
        commands.read_stream = real_read_stream

    assert first.status_code == 200, first.content
    assert second.status_code == 200, second.content
    assert second.json()["version"] == LONG_STREAM + 2
    assert second.json()["stream_version"] == LONG_STREAM + 2
    assert OrderView.objects.get(order_id=order_id).version == LONG_STREAM + 2
    assert second.json()["items"][1] == {
        "sku": "bolt",
        "quantity": LONG_STREAM - 1,
        "unit_price": "0.01",
        "subtotal": "1999.99",
    }
    # The first command folds all 200,000 events, never more than one
    # batch of them in memory at a time.
    stream_reads = [
        sql for sql in queries if "ORDER BY" in sql and "events_event" in sql
    ]
    assert len(stream_reads) > LONG_STREAM // 1000
    assert all("LIMIT 1000" in sql for sql in stream_reads)
    assert Snapshot.objects.get(stream_id=order_id).version == LONG_STREAM + 1
    assert reads == []


def test_an_order_loaded_from_its_snapshot_equals_one_folded_from_events(
    alice_client, settings
):
    settings.EVENTS = {"SNAPSHOT_EVERY": 3}
    order = place_order(alice_client)
    for sku in ("a", "b", "c", "d"):
        item = {"sku": sku, "quantity": 1, "unit_price": "2.50"}
        alice_client.post(f"/api/v1/orders/{order['id']}/items", item, format="json")
    alice_client.delete(f"/api/v1/orders/{order['id']}/items/b")
    last = {"sku": "e", "quantity": 2, "unit_price": "1.25"}
    alice_client.post(f"/api/v1/orders/{order['id']}/items", last, format="json")

    from_snapshot = commands.load_order(order["id"])
    folded = Order.from_events(order["id"], commands.read_stream(order["id"]))

    snapshot = Snapshot.objects.get(stream_id=order["id"])
    assert snapshot.version == 6
    assert from_snapshot.snapshot_version == 6
    assert from_snapshot.version == 7
    assert (from_snapshot.version, from_snapshot.items, from_snapshot.total) == (
        folded.version,
        folded.items,
        folded.total,
    )


def test_a_snapshot_of_another_schema_is_ignored(alice_client, settings):
    settings.EVENTS = {"SNAPSHOT_EVERY": 1}
    order = place_order(alice_client)
    Snapshot.objects.filter(stream_id=order["id"]).update(
        schema=Order.SNAPSHOT_SCHEMA + 1, state={"unreadable": True}
    )

    loaded = commands.load_order(order["id"])

    assert loaded.version == 1
    assert loaded.snapshot_version == 0
    assert loaded.customer_id == "c-alice"
