"""Order commands over HTTP: answers, errors, idempotency and metadata."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import connection
from rest_framework.test import APIClient

from events import commands
from events.models import CommandRecord, StoredEvent
from events.orders import Order
from events.store import read_stream
from readmodels.models import OrderView
from tests.conftest import ONE_ITEM, client_for, place_order

pytestmark = pytest.mark.django_db

ORDERS = "/api/v1/orders/"


def order_url(order_id: str, suffix: str = "") -> str:
    return f"/api/v1/orders/{order_id}{suffix}"


def send(
    client: APIClient, method: str, path: str, body: dict | None = None, **headers
):
    return getattr(client, method)(path, body, format="json", headers=headers)


def stream_types(order_id: str) -> list[str]:
    return list(
        StoredEvent.objects.filter(stream_id=order_id)
        .order_by("stream_version")
        .values_list("type", flat=True)
    )


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["message"]
    return body["error"]


# Each command, answered.


def test_place_answers_201_with_location_etag_and_the_order_at_version_one(
    alice_client,
):
    response = send(alice_client, "post", ORDERS, ONE_ITEM)

    order = response.json()
    assert response.status_code == 201
    assert response["Location"] == order_url(order["id"])
    assert response["ETag"] == '"1"'
    assert order["version"] == 1
    assert order["customer_id"] == "c-alice"
    assert order["status"] == "placed"
    assert order["total"] == "12.30"
    assert order["items"] == [
        {"sku": "tea", "quantity": 2, "unit_price": "6.15", "subtotal": "12.30"}
    ]
    assert stream_types(order["id"]) == ["OrderPlaced"]


def test_the_location_of_a_placed_order_serves_the_same_order(alice_client):
    placed = send(alice_client, "post", ORDERS, ONE_ITEM)

    fetched = alice_client.get(placed["Location"])

    assert fetched.status_code == 200
    assert fetched.json() == placed.json()
    assert fetched["ETag"] == placed["ETag"]


def test_staff_places_an_order_for_the_customer_it_names(staff_client):
    body = {"customer_id": "c-carol", **ONE_ITEM}

    response = send(staff_client, "post", ORDERS, body)

    assert response.status_code == 201
    assert response.json()["customer_id"] == "c-carol"


def test_add_item_answers_the_new_representation_and_version(alice_client):
    order = place_order(alice_client)
    item = {"sku": "cake", "quantity": 1, "unit_price": "3.5"}

    response = send(alice_client, "post", order_url(order["id"], "/items"), item)

    body = response.json()
    assert response.status_code == 200
    assert response["ETag"] == '"2"'
    assert (body["version"], body["total"]) == (2, "15.80")
    assert {i["sku"]: i["unit_price"] for i in body["items"]} == {
        "tea": "6.15",
        "cake": "3.50",
    }
    assert stream_types(order["id"]) == ["OrderPlaced", "ItemAdded"]


def test_remove_item_answers_the_new_representation_and_version(alice_client):
    order = place_order(alice_client)
    item = {"sku": "cake", "quantity": 1, "unit_price": "3.50"}
    send(alice_client, "post", order_url(order["id"], "/items"), item)

    response = send(alice_client, "delete", order_url(order["id"], "/items/tea"))

    body = response.json()
    assert response.status_code == 200
    assert response["ETag"] == '"3"'
    assert (body["version"], body["total"]) == (3, "3.50")
    assert [i["sku"] for i in body["items"]] == ["cake"]
    assert stream_types(order["id"])[-1] == "ItemRemoved"


def test_an_item_with_spaces_and_accents_in_its_sku_can_be_removed(alice_client):
    body = {"items": [{"sku": "thé vert?", "quantity": 1, "unit_price": "2.00"}]}
    order = place_order(alice_client, body)

    response = send(
        alice_client, "delete", order_url(order["id"], "/items/th%C3%A9%20vert%3F")
    )

    assert response.status_code == 200, response.content
    assert response.json()["items"] == []


def test_pay_answers_the_paid_order(alice_client):
    order = place_order(alice_client)

    response = send(
        alice_client, "post", order_url(order["id"], "/pay"), {"amount": "12.30"}
    )

    body = response.json()
    assert response.status_code == 200
    assert response["ETag"] == '"2"'
    assert (body["status"], body["paid_amount"], body["version"]) == (
        "paid",
        "12.30",
        2,
    )
    assert stream_types(order["id"]) == ["OrderPlaced", "OrderPaid"]


def test_ship_answers_the_shipped_order(alice_client):
    order = place_order(alice_client)
    send(alice_client, "post", order_url(order["id"], "/pay"), {"amount": "12.30"})

    response = send(alice_client, "post", order_url(order["id"], "/ship"))

    assert response.status_code == 200
    assert response["ETag"] == '"3"'
    assert (response.json()["status"], response.json()["version"]) == ("shipped", 3)
    assert stream_types(order["id"])[-1] == "OrderShipped"


def test_cancel_answers_the_cancelled_order_with_its_reason(alice_client):
    order = place_order(alice_client)

    response = send(
        alice_client, "post", order_url(order["id"], "/cancel"), {"reason": "late"}
    )

    body = response.json()
    assert response.status_code == 200
    assert response["ETag"] == '"2"'
    assert (body["status"], body["cancel_reason"], body["version"]) == (
        "cancelled",
        "late",
        2,
    )
    assert stream_types(order["id"]) == ["OrderPlaced", "OrderCancelled"]


def test_cancel_without_a_reason_is_accepted_with_an_empty_reason(alice_client):
    order = place_order(alice_client)

    response = send(alice_client, "post", order_url(order["id"], "/cancel"))

    assert response.status_code == 200
    assert response.json()["cancel_reason"] == ""


# Rule violations: 422, nothing appended.

CAKE = {"sku": "cake", "quantity": 1, "unit_price": "3.00"}
PAY = ("post", "/pay", {"amount": "12.30"})
SHIP = ("post", "/ship", None)
CANCEL = ("post", "/cancel", {"reason": "no"})


@pytest.mark.parametrize(
    ("before", "command", "rule"),
    [
        pytest.param(
            [],
            ("post", "/items", {"sku": "tea", "quantity": 1, "unit_price": "6.20"}),
            "price_mismatch",
            id="add-at-another-price",
        ),
        pytest.param([PAY], ("post", "/items", CAKE), "order_paid", id="add-paid"),
        pytest.param(
            [PAY, SHIP], ("post", "/items", CAKE), "order_shipped", id="add-shipped"
        ),
        pytest.param(
            [CANCEL], ("post", "/items", CAKE), "order_cancelled", id="add-cancelled"
        ),
        pytest.param(
            [], ("delete", "/items/cake", None), "item_not_in_order", id="remove-absent"
        ),
        pytest.param(
            [PAY], ("delete", "/items/tea", None), "order_paid", id="remove-paid"
        ),
        pytest.param(
            [],
            ("post", "/pay", {"amount": "12.29"}),
            "amount_mismatch",
            id="pay-too-little",
        ),
        pytest.param(
            [],
            ("post", "/pay", {"amount": "12.31"}),
            "amount_mismatch",
            id="pay-too-much",
        ),
        pytest.param(
            [],
            ("post", "/items", {**CAKE, "quantity": 1000000, "unit_price": "1000000"}),
            "total_too_large",
            id="add-beyond-largest-total",
        ),
        pytest.param([PAY], PAY, "order_not_payable", id="pay-twice"),
        pytest.param([CANCEL], PAY, "order_not_payable", id="pay-cancelled"),
        pytest.param(
            [("delete", "/items/tea", None)],
            ("post", "/pay", {"amount": "0"}),
            "order_empty",
            id="pay-empty",
        ),
        pytest.param([], SHIP, "order_not_paid", id="ship-unpaid"),
        pytest.param([PAY, SHIP], SHIP, "order_shipped", id="ship-twice"),
        pytest.param([CANCEL], SHIP, "order_cancelled", id="ship-cancelled"),
        pytest.param([PAY, SHIP], CANCEL, "order_shipped", id="cancel-shipped"),
        pytest.param([CANCEL], CANCEL, "order_cancelled", id="cancel-twice"),
    ],
)
def test_a_command_breaking_a_rule_answers_422_and_appends_nothing(
    alice_client, before, command, rule
):
    order = place_order(alice_client)
    for method, suffix, body in before:
        done = send(alice_client, method, order_url(order["id"], suffix), body)
        assert done.status_code == 200, done.content
    events_before = StoredEvent.objects.count()
    version_before = OrderView.objects.get(order_id=order["id"]).version
    method, suffix, body = command

    response = send(alice_client, method, order_url(order["id"], suffix), body)

    assert response.status_code == 422
    error = error_of(response)
    assert (error["code"], error["details"]) == ("rule_violation", {"rule": rule})
    assert StoredEvent.objects.count() == events_before
    assert OrderView.objects.get(order_id=order["id"]).version == version_before


def test_placing_an_order_beyond_the_largest_total_answers_422_not_500(
    alice_client,
):
    gold = {"sku": "gold", "quantity": 1000000, "unit_price": "9999999999.99"}

    response = send(alice_client, "post", ORDERS, {"items": [gold]})

    assert response.status_code == 422
    assert error_of(response)["details"] == {"rule": "total_too_large"}
    assert StoredEvent.objects.count() == 0


def test_placing_an_order_with_a_repeated_sku_answers_422_and_appends_nothing(
    alice_client,
):
    tea = {"sku": "tea", "quantity": 1, "unit_price": "6.15"}

    response = send(alice_client, "post", ORDERS, {"items": [tea, tea]})

    assert response.status_code == 422
    error = error_of(response)
    assert (error["code"], error["details"]) == (
        "rule_violation",
        {"rule": "sku_repeated"},
    )
    assert StoredEvent.objects.count() == 0
    assert OrderView.objects.count() == 0


# Bad input: 400 with the fields at fault, nothing appended.


@pytest.mark.parametrize(
    ("body", "field_path"),
    [
        pytest.param({}, ["items"], id="no-items"),
        pytest.param({"items": []}, ["items"], id="empty-items"),
        pytest.param(
            {"items": [{"sku": "tea", "quantity": 0, "unit_price": "1.00"}]},
            ["items", "0", "quantity"],
            id="zero-quantity",
        ),
        pytest.param(
            {"items": [{"sku": "tea", "quantity": 1.5, "unit_price": "1.00"}]},
            ["items", "0", "quantity"],
            id="fractional-quantity",
        ),
        pytest.param(
            {"items": [{"sku": "tea", "quantity": 1, "unit_price": "-1.00"}]},
            ["items", "0", "unit_price"],
            id="negative-price",
        ),
        pytest.param(
            {"items": [{"sku": "tea", "quantity": 1, "unit_price": "1.001"}]},
            ["items", "0", "unit_price"],
            id="three-decimal-places",
        ),
        pytest.param(
            {"items": [{"sku": "tea", "quantity": 1, "unit_price": "cheap"}]},
            ["items", "0", "unit_price"],
            id="price-not-a-number",
        ),
        pytest.param(
            {"items": [{"quantity": 1, "unit_price": "1.00"}]},
            ["items", "0", "sku"],
            id="no-sku",
        ),
        pytest.param(
            {"items": [{"sku": "a/b", "quantity": 1, "unit_price": "1.00"}]},
            ["items", "0", "sku"],
            id="sku-with-slash",
        ),
        # Wrong JSON types are refused, not converted.
        pytest.param(
            {"items": [{"sku": "tea", "quantity": 1, "unit_price": 0.1}]},
            ["items", "0", "unit_price"],
            id="price-as-a-float",
        ),
        pytest.param(
            {"items": [{"sku": "tea", "quantity": 1, "unit_price": 2}]},
            ["items", "0", "unit_price"],
            id="price-as-an-integer",
        ),
        pytest.param(
            {"items": [{"sku": 5, "quantity": 1, "unit_price": "1.00"}]},
            ["items", "0", "sku"],
            id="sku-as-a-number",
        ),
        pytest.param(
            {"items": [{"sku": "tea", "quantity": "1", "unit_price": "1.00"}]},
            ["items", "0", "quantity"],
            id="quantity-as-a-string",
        ),
        pytest.param(
            {"items": [{"sku": "tea", "quantity": 1.0, "unit_price": "1.00"}]},
            ["items", "0", "quantity"],
            id="quantity-as-a-float",
        ),
        pytest.param(
            {"items": [{"sku": "tea", "quantity": True, "unit_price": "1.00"}]},
            ["items", "0", "quantity"],
            id="quantity-as-a-boolean",
        ),
        pytest.param(
            {
                "customer_id": 5,
                "items": [{"sku": "t", "quantity": 1, "unit_price": "1"}],
            },
            ["customer_id"],
            id="customer-as-a-number",
        ),
    ],
)
def test_placing_an_order_with_bad_input_answers_400_naming_the_field(
    alice_client, body, field_path
):
    response = send(alice_client, "post", ORDERS, body)

    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "validation_error"
    details = error["details"]
    for step in field_path:
        details = details[step]
    assert details and all(isinstance(message, str) for message in details)
    assert StoredEvent.objects.count() == 0


@pytest.mark.parametrize(
    ("method", "suffix", "body", "field"),
    [
        pytest.param(
            "post",
            "/items",
            {"sku": "cake", "quantity": -1, "unit_price": "1"},
            "quantity",
            id="add-negative-quantity",
        ),
        pytest.param(
            "post", "/items", {"quantity": 1, "unit_price": "1"}, "sku", id="add-no-sku"
        ),
        pytest.param("post", "/pay", {}, "amount", id="pay-no-amount"),
        pytest.param("post", "/pay", {"amount": "lots"}, "amount", id="pay-not-number"),
        pytest.param(
            "post", "/pay", {"amount": "12.300001"}, "amount", id="pay-too-precise"
        ),
        pytest.param(
            "post", "/cancel", {"reason": "x" * 501}, "reason", id="cancel-long-reason"
        ),
        pytest.param("post", "/pay", {"amount": 0.3}, "amount", id="pay-a-float"),
        pytest.param("post", "/cancel", {"reason": 5}, "reason", id="cancel-number"),
    ],
)
def test_a_command_with_bad_input_answers_400_naming_the_field(
    alice_client, method, suffix, body, field
):
    order = place_order(alice_client)

    response = send(alice_client, method, order_url(order["id"], suffix), body)

    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "validation_error"
    assert list(error["details"]) == [field]
    assert stream_types(order["id"]) == ["OrderPlaced"]


def test_a_body_with_a_lone_surrogate_answers_400(alice_client):
    # Valid JSON, but "\ud800" decodes to no character: PostgreSQL's jsonb
    # would refuse it, and it could name no topic.
    body = '{"items": [{"sku": "t\\ud800", "quantity": 1, "unit_price": "1.00"}]}'

    response = alice_client.post(ORDERS, body, content_type="application/json")

    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "validation_error"
    assert "surrogate" in error["message"]
    assert StoredEvent.objects.count() == 0


def test_a_body_that_is_not_json_answers_400(alice_client):
    response = alice_client.post(ORDERS, b"{not json", content_type="application/json")

    assert response.status_code == 400
    assert error_of(response)["code"] == "validation_error"
    assert StoredEvent.objects.count() == 0


@pytest.mark.parametrize(
    "if_match", ['"abc"', '"1", "2"', "W/", 'W/"1"', '"²"', '"' + "9" * 30 + '"']
)
def test_an_if_match_that_is_not_one_version_answers_400(alice_client, if_match):
    order = place_order(alice_client)

    response = send(
        alice_client, "post", order_url(order["id"], "/ship"), **{"If-Match": if_match}
    )

    assert response.status_code == 400
    error = error_of(response)
    assert (error["code"], list(error["details"])) == (
        "validation_error",
        ["If-Match"],
    )
    assert stream_types(order["id"]) == ["OrderPlaced"]


def test_staff_placing_an_order_without_a_customer_answers_400(staff_client):
    response = send(staff_client, "post", ORDERS, ONE_ITEM)

    assert response.status_code == 400
    error = error_of(response)
    assert (error["code"], list(error["details"])) == (
        "validation_error",
        ["customer_id"],
    )
    assert StoredEvent.objects.count() == 0


# Unknown orders, other customers' orders, no credentials.


COMMANDS = [
    pytest.param("post", "/items", CAKE, id="add-item"),
    pytest.param("delete", "/items/tea", None, id="remove-item"),
    pytest.param("post", "/pay", {"amount": "12.30"}, id="pay"),
    pytest.param("post", "/ship", None, id="ship"),
    pytest.param("post", "/cancel", {"reason": "x"}, id="cancel"),
]


def test_get_of_an_unknown_order_answers_404(alice_client):
    response = alice_client.get(order_url("no-such-order"))

    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


@pytest.mark.parametrize(("method", "suffix", "body"), COMMANDS)
def test_a_command_on_an_unknown_order_answers_404_and_appends_nothing(
    alice_client, method, suffix, body
):
    response = send(alice_client, method, order_url("no-such-order", suffix), body)

    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"
    assert StoredEvent.objects.count() == 0


def test_get_of_another_customers_order_answers_403(alice_client, bob_client):
    order = place_order(alice_client)

    response = bob_client.get(order_url(order["id"]))

    assert response.status_code == 403
    error = error_of(response)
    assert error["code"] == "forbidden"
    assert "12.30" not in response.content.decode()


@pytest.mark.parametrize(("method", "suffix", "body"), COMMANDS)
def test_a_command_on_another_customers_order_answers_403_and_appends_nothing(
    alice_client, bob_client, method, suffix, body
):
    order = place_order(alice_client)

    response = send(bob_client, method, order_url(order["id"], suffix), body)

    assert response.status_code == 403
    assert error_of(response)["code"] == "forbidden"
    assert stream_types(order["id"]) == ["OrderPlaced"]


def test_placing_an_order_for_another_customer_answers_403(bob_client):
    body = {"customer_id": "c-alice", **ONE_ITEM}

    response = send(bob_client, "post", ORDERS, body)

    assert response.status_code == 403
    assert error_of(response)["code"] == "forbidden"
    assert StoredEvent.objects.count() == 0


def test_staff_reads_and_commands_any_customers_order(alice_client, staff_client):
    order = place_order(alice_client)

    read = staff_client.get(order_url(order["id"]))
    paid = send(staff_client, "post", order_url(order["id"], "/pay"), PAY[2])

    assert read.status_code == 200
    assert (paid.status_code, paid.json()["status"]) == (200, "paid")


def test_a_user_with_no_customer_account_sees_no_order(alice_client, make_user):
    order = place_order(alice_client)
    _, token = make_user("nobody")

    response = client_for(token).get(order_url(order["id"]))

    assert response.status_code == 403


def test_a_user_with_no_customer_account_cannot_place_an_order(make_user):
    _, token = make_user("nobody")

    response = send(client_for(token), "post", ORDERS, ONE_ITEM)

    assert response.status_code == 403
    assert error_of(response)["code"] == "forbidden"
    assert StoredEvent.objects.count() == 0


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("get", ORDERS, None, id="list"),
        pytest.param("post", ORDERS, ONE_ITEM, id="place"),
        pytest.param("get", order_url("x"), None, id="get"),
        pytest.param("post", order_url("x", "/pay"), {"amount": "1"}, id="pay"),
    ],
)
def test_a_request_without_credentials_answers_401(db, method, path, body):
    response = send(APIClient(), method, path, body)

    assert response.status_code == 401
    assert error_of(response)["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == "Token"
    assert StoredEvent.objects.count() == 0


def test_a_request_with_an_unknown_token_answers_401(db):
    response = send(client_for("0" * 40), "post", ORDERS, ONE_ITEM)

    assert response.status_code == 401
    assert error_of(response)["code"] == "not_authenticated"
    assert StoredEvent.objects.count() == 0


def test_a_deactivated_user_is_refused(alice, alice_client):
    user, _ = alice
    user.is_active = False
    user.save()

    response = send(alice_client, "post", ORDERS, ONE_ITEM)

    assert response.status_code == 401
    assert StoredEvent.objects.count() == 0


# Idempotency keys.


def test_placing_again_with_the_same_key_and_body_returns_the_first_answer(
    alice_client,
):
    first = send(alice_client, "post", ORDERS, ONE_ITEM, **{"Idempotency-Key": "k1"})

    again = send(alice_client, "post", ORDERS, ONE_ITEM, **{"Idempotency-Key": "k1"})

    assert again.status_code == 201
    assert again.json() == first.json()
    assert (again["Location"], again["ETag"]) == (first["Location"], first["ETag"])
    assert again["Idempotent-Replayed"] == "true"
    assert StoredEvent.objects.count() == 1
    assert OrderView.objects.count() == 1


def test_a_command_again_with_the_same_key_and_body_appends_nothing(alice_client):
    order = place_order(alice_client)
    path = order_url(order["id"], "/items")
    first = send(alice_client, "post", path, CAKE, **{"Idempotency-Key": "k1"})

    again = send(alice_client, "post", path, CAKE, **{"Idempotency-Key": "k1"})

    assert (again.status_code, again.json()) == (200, first.json())
    assert again["ETag"] == first["ETag"] == '"2"'
    assert stream_types(order["id"]) == ["OrderPlaced", "ItemAdded"]


def test_the_first_answer_is_returned_even_after_the_order_moved_on(alice_client):
    order = place_order(alice_client)
    path = order_url(order["id"], "/items")
    first = send(alice_client, "post", path, CAKE, **{"Idempotency-Key": "k1"})
    send(alice_client, "post", order_url(order["id"], "/cancel"), {"reason": ""})

    again = send(alice_client, "post", path, CAKE, **{"Idempotency-Key": "k1"})

    assert (again.status_code, again.json()) == (200, first.json())
    assert stream_types(order["id"]) == ["OrderPlaced", "ItemAdded", "OrderCancelled"]


def test_the_same_key_with_another_body_answers_422_and_appends_nothing(
    alice_client,
):
    order = place_order(alice_client)
    path = order_url(order["id"], "/items")
    send(alice_client, "post", path, CAKE, **{"Idempotency-Key": "k1"})
    other = {**CAKE, "quantity": 2}

    response = send(alice_client, "post", path, other, **{"Idempotency-Key": "k1"})

    assert response.status_code == 422
    error = error_of(response)
    assert (error["code"], error["details"]) == (
        "idempotency_key_reused",
        {"key": "k1"},
    )
    assert stream_types(order["id"]) == ["OrderPlaced", "ItemAdded"]


def test_the_same_key_on_another_command_answers_422(alice_client):
    order = place_order(alice_client)
    pay = order_url(order["id"], "/pay")
    send(alice_client, "post", pay, PAY[2], **{"Idempotency-Key": "k1"})

    response = send(
        alice_client,
        "post",
        order_url(order["id"], "/cancel"),
        PAY[2],
        **{"Idempotency-Key": "k1"},
    )

    assert response.status_code == 422
    assert error_of(response)["code"] == "idempotency_key_reused"
    assert stream_types(order["id"]) == ["OrderPlaced", "OrderPaid"]


def test_keys_are_kept_apart_per_user(alice_client, bob_client):
    first = send(alice_client, "post", ORDERS, ONE_ITEM, **{"Idempotency-Key": "k1"})

    other = send(bob_client, "post", ORDERS, ONE_ITEM, **{"Idempotency-Key": "k1"})

    assert other.status_code == 201
    assert other.json()["id"] != first.json()["id"]
    assert other.json()["customer_id"] == "c-bob"
    assert StoredEvent.objects.count() == 2


def test_a_command_refused_by_a_rule_does_not_use_up_its_key(alice_client):
    order = place_order(alice_client)
    path = order_url(order["id"], "/pay")
    send(alice_client, "post", path, {"amount": "1.00"}, **{"Idempotency-Key": "k1"})

    retried = send(
        alice_client, "post", path, {"amount": "1.00"}, **{"Idempotency-Key": "k1"}
    )

    assert retried.status_code == 422
    assert error_of(retried)["code"] == "rule_violation"
    assert CommandRecord.objects.count() == 0


# Metadata on events.


def test_events_carry_the_request_correlation_and_causation_ids(alice_client):
    place_order(
        alice_client,
        HTTP_X_CORRELATION_ID="checkout-42",
        HTTP_X_CAUSATION_ID="cart-7",
    )

    event = StoredEvent.objects.get()

    assert event.metadata == {
        "actor": "alice",
        "correlation_id": "checkout-42",
        "causation_id": "cart-7",
        "schema_version": 1,
    }


def test_without_correlation_headers_each_request_gets_its_own_correlation_id(
    alice_client,
):
    order = place_order(alice_client)
    send(alice_client, "post", order_url(order["id"], "/pay"), PAY[2])

    first, second = StoredEvent.objects.order_by("position")

    for event in (first, second):
        metadata = event.metadata
        assert uuid.UUID(metadata["correlation_id"])
        assert metadata["causation_id"] == metadata["correlation_id"]
        assert metadata["actor"] == "alice"
    assert first.metadata["correlation_id"] != second.metadata["correlation_id"]


# Lost races: decided again on the new state, or answered 409 or 412.


def stale_on_first_loads(monkeypatch, stale_loads: int) -> list[int]:
    """Make the first ``stale_loads`` loads of an order one event behind,
    as if another command appended between the load and the append."""
    real_load = commands.load_order
    loads: list[int] = []

    def load(order_id):
        order = real_load(order_id)
        if len(loads) < stale_loads:
            events = list(read_stream(order_id))[:-1]
            order = Order.from_events(order_id, events)
        loads.append(order.version)
        return order

    monkeypatch.setattr(commands, "load_order", load)
    return loads


def test_a_command_that_lost_a_race_is_decided_again_on_the_new_state(
    alice_client, monkeypatch
):
    order = place_order(alice_client)
    send(alice_client, "post", order_url(order["id"], "/items"), CAKE)
    loads = stale_on_first_loads(monkeypatch, stale_loads=1)

    response = send(alice_client, "post", order_url(order["id"], "/items"), CAKE)

    assert response.status_code == 200
    assert loads == [1, 2]
    assert response.json()["version"] == 3
    cake = [i for i in response.json()["items"] if i["sku"] == "cake"]
    assert cake[0]["quantity"] == 2


def test_a_command_that_keeps_losing_races_answers_409_and_appends_nothing(
    alice_client, monkeypatch, settings
):
    settings.EVENTS = {"COMMAND_RETRIES": 2}
    order = place_order(alice_client)
    send(alice_client, "post", order_url(order["id"], "/items"), CAKE)
    loads = stale_on_first_loads(monkeypatch, stale_loads=100)

    response = send(alice_client, "post", order_url(order["id"], "/items"), CAKE)

    assert response.status_code == 409
    error = error_of(response)
    assert error["code"] == "version_conflict"
    assert error["details"]["current_version"] == 2
    assert len(loads) == 3
    assert stream_types(order["id"]) == ["OrderPlaced", "ItemAdded"]


def test_a_conditional_command_that_loses_the_race_at_append_answers_412(
    alice_client, monkeypatch
):
    order = place_order(alice_client)
    send(alice_client, "post", order_url(order["id"], "/items"), CAKE)
    loads = stale_on_first_loads(monkeypatch, stale_loads=1)

    response = send(
        alice_client,
        "post",
        order_url(order["id"], "/items"),
        CAKE,
        **{"If-Match": '"1"'},
    )

    assert response.status_code == 412
    error = error_of(response)
    assert error["code"] == "version_conflict"
    assert (
        error["details"]["expected_version"],
        error["details"]["current_version"],
    ) == (1, 2)
    assert response["ETag"] == '"2"'
    assert loads == [1]
    assert stream_types(order["id"]) == ["OrderPlaced", "ItemAdded"]


# Requests with one idempotency key racing each other.


def send_concurrently(token: str, senders: int, path: str, body: dict, **headers):
    """The answers to ``senders`` requests sent at once, each from its own
    thread and database connection."""
    barrier = threading.Barrier(senders)
    answers: list = [None] * senders

    def post(index: int) -> None:
        try:
            client = client_for(token)
            barrier.wait(timeout=30)
            response = send(client, "post", path, body, **headers)
            answers[index] = (response.status_code, response.json())
        except Exception as exc:
            answers[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(i,)) for i in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return answers


@pytest.mark.django_db(transaction=True)
def test_concurrent_commands_with_the_same_key_all_get_the_first_answer(alice):
    _, token = alice
    order = place_order(client_for(token))

    answers = send_concurrently(
        token, 8, order_url(order["id"], "/pay"), PAY[2], **{"Idempotency-Key": "k1"}
    )

    assert all(answer == answers[0] for answer in answers), answers
    assert answers[0][0] == 200
    assert stream_types(order["id"]) == ["OrderPlaced", "OrderPaid"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_places_with_the_same_key_place_one_order(alice):
    _, token = alice

    answers = send_concurrently(token, 8, ORDERS, ONE_ITEM, **{"Idempotency-Key": "k1"})

    assert all(answer == answers[0] for answer in answers), answers
    assert answers[0][0] == 201
    assert StoredEvent.objects.count() == 1
    assert OrderView.objects.count() == 1
