"""Odd input gets the protocol's error shape, never a 500 or an HTML page."""

from __future__ import annotations

import logging

import pytest
from django.db import OperationalError
from django.db.models.query import QuerySet
from psycopg_pool import PoolTimeout

from events.models import StoredEvent
from events.orders import MAX_ITEMS
from readmodels.models import Change
from tests.conftest import ONE_ITEM, place_order

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


# Committed, so that the watch view's own database thread sees the token.
@pytest.mark.django_db(transaction=True)
def test_a_customer_id_too_long_for_any_order_is_not_found_to_read_or_watch(
    staff_client,
):
    customer_id = "c" * 101

    listed = staff_client.get(f"/api/v1/customers/{customer_id}/orders")
    watched = staff_client.get(f"/api/v1/customers/{customer_id}/orders/watch")
    placed = staff_client.post(
        "/api/v1/orders/",
        {"customer_id": customer_id, "items": items(1)},
        format="json",
    )

    assert listed.status_code == 404
    assert listed.json()["error"]["code"] == "not_found"
    assert "100" in listed.json()["error"]["message"]
    assert watched.status_code == 404
    assert placed.status_code == 400


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


def test_a_body_above_the_upload_limit_is_a_json_413(alice_client, settings, caplog):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = {"items": items(200)}

    response = alice_client.post("/api/v1/orders/", body, format="json")

    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "payload_too_large"
    assert StoredEvent.objects.count() == 0
    # A refused request, not a server error: no traceback in the log.
    logged = [r for r in caplog.records if r.name.startswith("django.")]
    assert logged and all(r.levelno < logging.ERROR for r in logged), logged
    assert not any(r.exc_info for r in logged)


def validation_error_of(response) -> dict:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    return error


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/orders/%00",
        "/api/v1/customers/%00/orders",
        "/api/v1/orders/%00/watch?timeout=0",
        "/api/v1/orders/?customer_id=c-alice%00",
        "/api/v1/dashboard/watch?ticket=%00",
    ],
)
def test_a_nul_in_the_url_is_a_400_on_every_database(alice_client, path):
    # PostgreSQL refuses a NUL in any text it is asked to compare.
    error = validation_error_of(alice_client.get(path))

    assert "NUL" in error["message"]


def test_a_nul_in_a_command_url_or_body_appends_nothing(alice_client):
    order = place_order(alice_client)

    by_url = alice_client.post("/api/v1/orders/%00/pay", {"amount": "1.00"})
    by_body = alice_client.post(
        f"/api/v1/orders/{order['id']}/cancel",
        '{"reason": "nul \\u0000 inside"}',
        content_type="application/json",
    )

    validation_error_of(by_url)
    assert "NUL" in validation_error_of(by_body)["message"]
    assert StoredEvent.objects.count() == 1


def test_an_idempotency_key_too_long_to_keep_whole_is_refused(alice_client):
    key = "p" * 255
    first = alice_client.post(
        "/api/v1/orders/", ONE_ITEM, format="json", HTTP_IDEMPOTENCY_KEY=key + "-1"
    )

    error = validation_error_of(first)

    assert list(error["details"]) == ["Idempotency-Key"]
    assert StoredEvent.objects.count() == 0


@pytest.mark.parametrize(
    "query",
    [
        "cursor=garbage",
        # Decodes, but to positions that are not numbers.
        "cursor=cD14",
        "cursor=cj0xJnA9eno=",
        "page_size=0",
        "page_size=-1",
        "page_size=abc",
        "page_size=501",
    ],
)
def test_bad_paging_parameters_are_a_400(alice_client, query):
    place_order(alice_client)

    error = validation_error_of(alice_client.get(f"/api/v1/orders/?{query}"))

    assert list(error["details"]) == [query.split("=")[0]]


def test_an_event_feed_position_beyond_64_bits_is_a_400(staff_client):
    error = validation_error_of(staff_client.get("/api/v1/events/?after=" + "9" * 20))

    assert list(error["details"]) == ["after"]


@pytest.mark.parametrize("price", ["1e5", " 12.50", "١٢.٥٠", "12.", ".5", "+1"])
def test_money_is_plain_decimal_text(alice_client, price):
    body = {"items": [{"sku": "tea", "quantity": 1, "unit_price": price}]}

    response = alice_client.post("/api/v1/orders/", body, format="json")

    error = validation_error_of(response)
    assert list(error["details"]["items"]["0"]) == ["unit_price"]
    assert StoredEvent.objects.count() == 0


def test_links_lead_to_resources_whose_ids_hold_url_characters(staff_client):
    body = {"customer_id": "c?x#1 %", "items": ONE_ITEM["items"]}
    order = staff_client.post("/api/v1/orders/", body, format="json").json()

    link = order["_links"]["customer_orders"]["href"]
    listed = staff_client.get(link)

    assert link == "/api/v1/customers/c%3Fx%231%20%25/orders"
    assert listed.status_code == 200
    assert [o["id"] for o in listed.json()["orders"]] == [order["id"]]
    assert listed.json()["_links"]["self"]["href"] == link


def pool_timeout(*args, **kwargs):
    """What Django raises when no pooled connection came free in time."""
    try:
        raise PoolTimeout("couldn't get a connection after 10.00 sec")
    except PoolTimeout as exc:
        raise OperationalError(str(exc)) from exc


def test_a_request_that_finds_every_database_connection_busy_gets_a_503(
    staff_client, monkeypatch
):
    monkeypatch.setattr(QuerySet, "first", pool_timeout)

    response = staff_client.get("/api/v1/customers/c-1/orders")

    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "unavailable"


def test_other_database_errors_stay_server_errors(staff_client, monkeypatch):
    def broken(*args, **kwargs):
        raise OperationalError("disk I/O error")

    monkeypatch.setattr(QuerySet, "first", broken)
    staff_client.raise_request_exception = False

    response = staff_client.get("/api/v1/customers/c-1/orders")

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "server_error"


def test_a_body_above_the_limit_is_a_413_where_no_view_reads_it(alice_client, settings):
    # Issuing a watch ticket reads no body; the limit holds all the same.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000

    response = alice_client.post(
        "/api/v1/watch-tickets/", "x" * 20_000, content_type="text/plain"
    )

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
