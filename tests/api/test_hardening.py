"""Odd input gets the protocol's error shape, never a 500 or an HTML page."""

from __future__ import annotations

import pytest

from events.models import StoredEvent
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
