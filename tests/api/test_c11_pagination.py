"""Field case C11: paging through a customer's orders.

Seven orders of one customer, five of them with the same ``updated_at``,
paged two at a time by following ``next``. Every order must come exactly
once, in a fixed order whose ties are broken by a unique key, also when a
new order is placed between two page fetches.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from readmodels.models import OrderView
from tests.conftest import place_order

pytestmark = pytest.mark.django_db

LIST = "/api/v1/orders/?customer_id=c-alice&page_size=2"
CUSTOMER_LIST = "/api/v1/customers/c-alice/orders?page_size=2"
SAME_TIME = datetime.datetime(2026, 12, 3, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture
def seven_orders(alice_client, bob_client) -> list[str]:
    """Alice's seven order ids in the order they were placed, with another
    customer's orders in between and five of alice's updated at the same
    instant."""
    placed = []
    for n in range(7):
        placed.append(place_order(alice_client)["id"])
        if n % 3 == 0:
            place_order(bob_client)
    OrderView.objects.filter(order_id__in=placed[1:6]).update(updated_at=SAME_TIME)
    # The other two sort around the five by time, against placing order.
    OrderView.objects.filter(order_id=placed[0]).update(
        updated_at=SAME_TIME + datetime.timedelta(hours=1)
    )
    OrderView.objects.filter(order_id=placed[6]).update(
        updated_at=SAME_TIME - datetime.timedelta(hours=1)
    )
    return placed


def page_through(
    client: APIClient,
    url: str,
    items_key: str = "results",
    between_pages: Callable[[], None] | None = None,
) -> list[list[str]]:
    """The order ids of each page, following ``next`` to the end."""
    pages = []
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        pages.append([order["id"] for order in body[items_key]])
        url = body["next"]
        if between_pages and len(pages) == 1:
            between_pages()
    return pages


def test_c11_seven_orders_come_once_each_in_pages_of_two_newest_first(
    alice_client, seven_orders
):
    pages = page_through(alice_client, LIST)

    assert [len(page) for page in pages] == [2, 2, 2, 1]
    assert sum(pages, []) == seven_orders[::-1]


@pytest.mark.parametrize("client_name", ["alice_client", "staff_client"])
def test_c11_paging_twice_gives_the_same_order(request, client_name, seven_orders):
    client = request.getfixturevalue(client_name)

    first = page_through(client, LIST)
    second = page_through(client, LIST)

    assert first == second
    assert sum(first, []) == seven_orders[::-1]


def test_c11_an_order_placed_between_pages_causes_no_skip_or_repeat(
    alice_client, seven_orders
):
    placed_meanwhile = []

    pages = page_through(
        alice_client,
        LIST,
        between_pages=lambda: placed_meanwhile.append(place_order(alice_client)["id"]),
    )

    seen = sum(pages, [])
    assert len(seen) == len(set(seen))
    assert [i for i in seen if i not in placed_meanwhile] == seven_orders[::-1]


def test_c11_an_order_updated_between_pages_causes_no_skip_or_repeat(
    alice_client, seven_orders
):
    def pay_the_oldest_order() -> None:
        path = f"/api/v1/orders/{seven_orders[0]}/pay"
        response = alice_client.post(path, {"amount": "12.30"}, format="json")
        assert response.status_code == 200

    pages = page_through(alice_client, LIST, between_pages=pay_the_oldest_order)

    assert sum(pages, []) == seven_orders[::-1]


def test_c11_the_customer_orders_resource_pages_the_same_way(
    alice_client, seven_orders
):
    placed_meanwhile = []

    pages = page_through(
        alice_client,
        CUSTOMER_LIST,
        items_key="orders",
        between_pages=lambda: placed_meanwhile.append(place_order(alice_client)["id"]),
    )

    seen = sum(pages, [])
    assert len(seen) == len(set(seen))
    assert [i for i in seen if i not in placed_meanwhile] == seven_orders[::-1]
    assert all(len(page) <= 2 for page in pages)


def test_c11_pages_hold_only_the_named_customers_orders(staff_client, seven_orders):
    pages = page_through(staff_client, LIST)

    ids = sum(pages, [])
    customers = set(
        OrderView.objects.filter(order_id__in=ids).values_list("customer_id", flat=True)
    )
    assert customers == {"c-alice"}
    assert OrderView.objects.exclude(customer_id="c-alice").exists()


def test_orders_filter_by_status_and_refuse_an_unknown_one(alice_client):
    first = place_order(alice_client)["id"]
    paid = place_order(alice_client)
    response = alice_client.post(
        f"/api/v1/orders/{paid['id']}/pay", {"amount": paid["total"]}, format="json"
    )
    assert response.status_code == 200, response.content

    listed = alice_client.get("/api/v1/orders/?status=placed").json()["results"]
    assert [order["id"] for order in listed] == [first]

    response = alice_client.get("/api/v1/orders/?status=lost")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert "status" in error["details"]


def test_a_garbled_cursor_is_a_validation_error(alice_client):
    place_order(alice_client)

    response = alice_client.get("/api/v1/orders/?cursor=garbage")

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], list(error["details"])) == ("validation_error", ["cursor"])
