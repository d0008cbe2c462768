"""Odd input gets the protocol's error shape, never a 500 or an HTML page."""

from __future__ import annotations

import pytest

from events.models import StoredEvent
from events.orders import MAX_ITEMS
from readmodels.models import Change
from tests.conftest import place_order

pytestmark = pytest.mark.django_db


def test_a_deeply_nested_body_is_a_400_and_appends_nothing(alice_client):
    order = place_order(alice_client)
    body = '{"reason": ' + "[" * 100_000 + "]" * 100_000 + "}"

    response = alice_client.post(
        f"/api/v1/orders/{order['id']}/cancel", body, content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert StoredEvent.objects.count() == 1


def test_the_event_feed_next_link_keeps_its_filters(alice_client, staff_client):
    for _ in range(3):
        place_order(alice_client)

    page = staff_client.get("/api/v1/events/", {"type": "OrderPlaced", "limit": 2})
    following = staff_client.get(page.json()["next"])

    assert "type=OrderPlaced" in page.json()["next"]
    assert [e["type"] for e in following.json()["events"]] == ["OrderPlaced"]


def test_other_methods_on_a_watch_route_get_a_json_405(alice_client):
    order = place_order(alice_client)

    response = alice_client.post(f"/api/v1/orders/{order['id']}/watch")

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_a_customer_id_with_a_slash_is_refused(staff_client):
    body = {
        "customer_id": "a/b",
        "items": [{"sku": "x", "quantity": 1, "unit_price": "1"}],
    }

    response = staff_client.post("/api/v1/orders/", body, format="json")

    assert response.status_code == 400
    assert "customer_id" in response.json()["error"]["details"]


def items(count: int, sku_length: int = 10) -> list[dict]:
    return [
        {
            "sku": f"{n:0{sku_length}d}",
            "quantity": 100_000,
            "unit_price": "9999.99",
        }
        for n in range(count)
    ]


def test_an_order_holds_at_most_max_items_distinct_items(alice_client):
    refused = alice_client.post(
        "/api/v1/orders/", {"items": items(MAX_ITEMS + 1)}, format="json"
    )
    order = place_order(alice_client, {"items": items(MAX_ITEMS)})
    one_more = alice_client.post(
        f"/api/v1/orders/{order['id']}/items",
        {"sku": "one-more", "quantity": 1, "unit_price": "1.00"},
        format="json",
    )
    more_of_one = alice_client.post(
        f"/api/v1/orders/{order['id']}/items",
        {"sku": items(1)[0]["sku"], "quantity": 1, "unit_price": "9999.99"},
        format="json",
    )

    assert refused.status_code == one_more.status_code == 422
    assert refused.json()["error"]["details"] == {"rule": "too_many_items"}
    assert one_more.json()["error"]["details"] == {"rule": "too_many_items"}
    assert more_of_one.status_code == 200
    assert StoredEvent.objects.count() == 2


def test_the_largest_order_changes_fit_in_one_websocket_frame(alice_client):
    """Every change must be deliverable: WebSocket servers and clients
    refuse frames above 1 MiB by default."""
    order = place_order(alice_client, {"items": items(MAX_ITEMS, sku_length=100)})

    sizes = [len(m.encode()) for m in Change.objects.values_list("message", flat=True)]

    assert len(order["items"]) == MAX_ITEMS
    assert sizes and max(sizes) < 1024 * 1024


def test_a_body_above_the_upload_limit_is_a_json_413(alice_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = {"items": items(200)}

    response = alice_client.post("/api/v1/orders/", body, format="json")

    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "payload_too_large"
    assert StoredEvent.objects.count() == 0
