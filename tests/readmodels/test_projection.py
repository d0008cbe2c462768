"""The orders projection: its rows, and the change it publishes per topic
with every command, per the wire contract."""

from __future__ import annotations

import datetime
import json

import pytest

from events import store
from events.models import StoredEvent
from readmodels.models import Change, CustomerOrders, OrderView, Topic
from readmodels.topics import current_version
from tests.conftest import place_order

pytestmark = pytest.mark.django_db

MESSAGE_KEYS = {"type", "topic", "version", "position", "op", "key", "data", "event"}
EVENT_KEYS = {"id", "type", "stream_id", "stream_version", "recorded_at"}


def changes_of(topic: str) -> list[Change]:
    return list(Change.objects.filter(topic=topic).order_by("version"))


def message_of(change: Change) -> dict:
    return json.loads(change.message)


def command(client, method: str, path: str, body: dict | None = None) -> dict:
    response = getattr(client, method)(path, body, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def parse_utc(text: str) -> datetime.datetime:
    assert text.endswith("Z"), text
    parsed = datetime.datetime.fromisoformat(text)
    assert parsed.utcoffset() == datetime.timedelta(0)
    return parsed


def test_placing_an_order_publishes_version_one_on_its_topic_and_its_customers(
    alice_client,
):
    order = place_order(alice_client)

    changes = Change.objects.order_by("id")

    assert [(c.topic, c.version) for c in changes] == [
        (f"orders/{order['id']}", 1),
        ("customers/c-alice/orders", 1),
    ]


def test_a_change_message_holds_every_field_of_the_contract(alice_client):
    order = place_order(alice_client)
    event = StoredEvent.objects.get(stream_id=order["id"])

    (change,) = changes_of(f"orders/{order['id']}")

    message = message_of(change)
    assert set(message) == MESSAGE_KEYS
    assert message["type"] == "change"
    assert message["topic"] == change.topic == f"orders/{order['id']}"
    assert message["version"] == change.version == 1
    assert message["position"] == change.position == event.position
    assert (message["op"], message["key"]) == ("upsert", order["id"])
    assert set(message["event"]) == EVENT_KEYS
    assert message["event"]["id"] == str(event.event_id)
    assert message["event"]["type"] == "OrderPlaced"
    assert message["event"]["stream_id"] == order["id"]
    assert message["event"]["stream_version"] == 1
    assert parse_utc(message["event"]["recorded_at"]) == event.recorded_at


def test_the_change_data_is_the_order_as_rest_returns_it(alice_client):
    order = place_order(alice_client)
    command(
        alice_client, "post", f"/api/v1/orders/{order['id']}/pay", {"amount": "12.3"}
    )

    rest = alice_client.get(f"/api/v1/orders/{order['id']}").json()

    for change in Change.objects.filter(version=2):
        assert message_of(change)["data"] == rest


def test_each_command_publishes_the_next_version_with_its_event(alice_client):
    order = place_order(alice_client)
    path = f"/api/v1/orders/{order['id']}"
    cake = {"sku": "cake", "quantity": 1, "unit_price": "1.00"}
    command(alice_client, "post", f"{path}/items", cake)
    command(alice_client, "delete", f"{path}/items/cake")
    command(alice_client, "post", f"{path}/pay", {"amount": "12.30"})
    command(alice_client, "post", f"{path}/ship")

    messages = [message_of(c) for c in changes_of(f"orders/{order['id']}")]

    assert [
        (m["version"], m["event"]["type"], m["data"]["version"]) for m in messages
    ] == [
        (1, "OrderPlaced", 1),
        (2, "ItemAdded", 2),
        (3, "ItemRemoved", 3),
        (4, "OrderPaid", 4),
        (5, "OrderShipped", 5),
    ]
    assert [m["event"]["stream_version"] for m in messages] == [1, 2, 3, 4, 5]
    positions = [m["position"] for m in messages]
    assert positions == sorted(positions)
    assert current_version(f"orders/{order['id']}") == 5


def test_the_customer_topic_counts_changes_across_the_customers_orders(
    alice_client, bob_client
):
    first = place_order(alice_client)
    place_order(bob_client)
    second = place_order(alice_client)
    command(alice_client, "post", f"/api/v1/orders/{first['id']}/cancel")

    messages = [message_of(c) for c in changes_of("customers/c-alice/orders")]

    assert [(m["version"], m["key"]) for m in messages] == [
        (1, first["id"]),
        (2, second["id"]),
        (3, first["id"]),
    ]
    assert messages[-1]["data"]["status"] == "cancelled"
    summary = CustomerOrders.objects.get(customer_id="c-alice")
    assert (summary.version, summary.order_count) == (3, 2)
    assert current_version("customers/c-bob/orders") == 1


def test_amounts_in_change_messages_are_two_place_decimal_strings(alice_client):
    body = {"items": [{"sku": "tea", "quantity": 3, "unit_price": "4.1"}]}
    order = place_order(alice_client, body)
    command(
        alice_client, "post", f"/api/v1/orders/{order['id']}/pay", {"amount": "12.3"}
    )

    change = changes_of(f"orders/{order['id']}")[-1]

    data = message_of(change)["data"]
    assert (data["total"], data["paid_amount"]) == ("12.30", "12.30")
    assert data["items"] == [
        {"sku": "tea", "quantity": 3, "unit_price": "4.10", "subtotal": "12.30"}
    ]
    assert '"total":"12.30"' in change.message


def test_times_in_change_messages_are_utc_ending_in_z(alice_client):
    order = place_order(alice_client)

    message = message_of(changes_of(f"orders/{order['id']}")[0])

    created = parse_utc(message["data"]["created_at"])
    updated = parse_utc(message["data"]["updated_at"])
    recorded = parse_utc(message["event"]["recorded_at"])
    assert created == updated == recorded


def test_the_order_row_follows_the_stream(alice_client):
    order = place_order(alice_client)
    command(
        alice_client, "post", f"/api/v1/orders/{order['id']}/pay", {"amount": "12.30"}
    )

    row = OrderView.objects.get(order_id=order["id"])

    last = StoredEvent.objects.filter(stream_id=order["id"]).order_by("position").last()
    first = (
        StoredEvent.objects.filter(stream_id=order["id"]).order_by("position").first()
    )
    assert (row.status, row.version, row.stream_version) == ("paid", 2, 2)
    assert (row.placed_position, row.last_position) == (first.position, last.position)
    assert row.updated_at == last.recorded_at
    assert row.created_at == first.recorded_at


def test_a_command_refused_by_a_rule_publishes_nothing(alice_client):
    order = place_order(alice_client)
    changes_before = Change.objects.count()
    topics_before = list(Topic.objects.order_by("name").values_list("name", "version"))

    response = alice_client.post(f"/api/v1/orders/{order['id']}/ship")

    assert response.status_code == 422
    assert Change.objects.count() == changes_before
    assert list(Topic.objects.order_by("name").values_list("name", "version")) == (
        topics_before
    )


def test_a_command_failing_after_projection_rolls_back_its_changes(
    alice_client, monkeypatch
):
    def fail_after_projecting(events):
        raise RuntimeError("failed after the projection ran")

    order = place_order(alice_client)
    topic = f"orders/{order['id']}"
    monkeypatch.setattr(
        store, "_append_hooks", [*store._append_hooks, fail_after_projecting]
    )

    with pytest.raises(RuntimeError, match="after the projection"):
        alice_client.post(
            f"/api/v1/orders/{order['id']}/pay", {"amount": "12.30"}, format="json"
        )

    assert [c.version for c in changes_of(topic)] == [1]
    assert current_version(topic) == 1
    assert current_version("customers/c-alice/orders") == 1
    row = OrderView.objects.get(order_id=order["id"])
    assert (row.status, row.version) == ("placed", 1)
    assert StoredEvent.objects.filter(stream_id=order["id"]).count() == 1
