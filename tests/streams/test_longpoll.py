"""Watching by long polling, against a real daphne with httpx."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.conftest import ONE_ITEM

pytestmark = pytest.mark.django_db(transaction=True)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


async def new_order(client: httpx.AsyncClient) -> str:
    response = await client.post("/api/v1/orders/", json=ONE_ITEM)
    assert response.status_code == 201
    return response.json()["id"]


async def test_long_poll_returns_changes_above_since_at_once(server, alice):
    _, token = alice
    async with httpx.AsyncClient(base_url=server, headers=auth(token), timeout=10) as c:
        order_id = await new_order(c)
        await c.post(f"/api/v1/orders/{order_id}/pay", json={"amount": "12.30"})

        response = await c.get(f"/api/v1/orders/{order_id}/watch?since=0&timeout=5")

    body = response.json()
    assert response.status_code == 200
    assert (body["topic"], body["version"]) == (f"orders/{order_id}", 2)
    assert [change["version"] for change in body["changes"]] == [1, 2]


async def test_long_poll_waits_for_the_next_change(server, alice):
    _, token = alice
    async with httpx.AsyncClient(base_url=server, headers=auth(token), timeout=10) as c:
        order_id = await new_order(c)

        async def pay_soon() -> None:
            await asyncio.sleep(0.5)
            await c.post(f"/api/v1/orders/{order_id}/pay", json={"amount": "12.30"})

        payer = asyncio.create_task(pay_soon())
        started = time.monotonic()
        response = await c.get(f"/api/v1/orders/{order_id}/watch?since=1&timeout=5")
        waited = time.monotonic() - started
        await payer

    assert 0.4 < waited < 4
    assert [change["data"]["status"] for change in response.json()["changes"]] == [
        "paid"
    ]


async def test_long_poll_timeout_returns_no_changes_and_the_same_version(server, alice):
    _, token = alice
    async with httpx.AsyncClient(base_url=server, headers=auth(token), timeout=10) as c:
        order_id = await new_order(c)

        response = await c.get(f"/api/v1/orders/{order_id}/watch?since=1&timeout=0.3")

    assert response.status_code == 200
    assert response.json() == {
        "topic": f"orders/{order_id}",
        "version": 1,
        "changes": [],
    }


async def test_long_poll_since_ahead_is_410_with_the_reset_object(server, alice):
    _, token = alice
    async with httpx.AsyncClient(base_url=server, headers=auth(token), timeout=10) as c:
        order_id = await new_order(c)

        response = await c.get(f"/api/v1/orders/{order_id}/watch?since=50&timeout=1")

    body = response.json()
    assert response.status_code == 410
    assert (body["type"], body["reason"], body["version"]) == (
        "reset",
        "version_ahead",
        1,
    )
    assert body["error"]["code"] == "version_ahead"


@pytest.mark.parametrize(
    "query",
    [
        "since=-1",
        "since=abc",
        "since=1e3",
        "since=%C2%B2",
        "since=%D9%A1",
        "since=" + "9" * 5000,
        "timeout=61",
        "timeout=x",
        "timeout=1e1",
        "timeout=nan",
        "timeout=-1",
    ],
)
async def test_long_poll_bad_parameters_are_a_400_error(server, alice, query):
    _, token = alice
    async with httpx.AsyncClient(base_url=server, headers=auth(token), timeout=10) as c:
        order_id = await new_order(c)

        response = await c.get(f"/api/v1/orders/{order_id}/watch?{query}")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"


async def test_long_poll_refuses_other_customers_and_anonymous(server, alice, bob):
    _, alice_token = alice
    _, bob_token = bob
    async with httpx.AsyncClient(base_url=server, timeout=10) as c:
        response = await c.post(
            "/api/v1/orders/", json=ONE_ITEM, headers=auth(alice_token)
        )
        path = f"/api/v1/orders/{response.json()['id']}/watch?timeout=0"

        anonymous = await c.get(path)
        other = await c.get(path, headers=auth(bob_token))
        other_list = await c.get(
            "/api/v1/customers/c-alice/orders/watch?timeout=0", headers=auth(bob_token)
        )

    assert anonymous.status_code == 401
    assert other.status_code == 403
    assert other_list.status_code == 403


async def test_async_dashboard_reaches_a_long_poll_of_staff(server, alice, staff):
    _, alice_token = alice
    _, staff_token = staff
    async with httpx.AsyncClient(base_url=server, timeout=10) as c:
        await c.post("/api/v1/orders/", json=ONE_ITEM, headers=auth(alice_token))

        response = await c.get(
            "/api/v1/dashboard/watch?since=0&timeout=5", headers=auth(staff_token)
        )
        dashboard = await c.get("/api/v1/dashboard", headers=auth(staff_token))
        refused = await c.get("/api/v1/dashboard", headers=auth(alice_token))

    change = response.json()["changes"][0]
    assert change["data"]["order_count"] == 1
    assert change["data"]["revenue"] == "0.00"
    assert dashboard.json()["version"] >= 1
    assert refused.status_code == 403
