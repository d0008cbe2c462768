"""Watching over Server-Sent Events, against a real daphne with httpx."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from django.test import RequestFactory

from streams.http import wants_event_stream
from tests.conftest import ONE_ITEM
from tests.streams.conftest import sse_events

pytestmark = pytest.mark.django_db(transaction=True)

SSE = {"Accept": "text/event-stream"}


def auth(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}", **headers}


async def place_and_add(client: httpx.AsyncClient, adds: int) -> str:
    order = (await client.post("/api/v1/orders/", json=ONE_ITEM)).json()
    for n in range(adds):
        item = {"sku": f"sku-{n}", "quantity": 1, "unit_price": "1.00"}
        response = await client.post(f"/api/v1/orders/{order['id']}/items", json=item)
        assert response.status_code == 200
    return order["id"]


async def collect(client, path: str, headers: dict, until_version: int) -> list[dict]:
    """Open the stream, read until a change at ``until_version``, drop it."""
    seen = []
    async with client.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200
        async for event in sse_events(response):
            seen.append(event)
            if event.get("event") in ("change", "reset") and (
                event["json"]["version"] >= until_version
            ):
                return seen
    return seen


async def test_c08_sse_resumes_exclusively_with_heartbeats_without_ids(server, alice):
    _, token = alice
    async with httpx.AsyncClient(base_url=server, headers=auth(token), timeout=10) as c:
        order_id = await place_and_add(c, 5)
        path = f"/api/v1/orders/{order_id}/watch"

        first = []
        async with c.stream("GET", f"{path}?since=0", headers=SSE) as response:
            async for event in sse_events(response):
                first.append(event)
                if "comment" in event and any(e.get("id") == "6" for e in first):
                    break
        await c.post(f"/api/v1/orders/{order_id}/items", json=ONE_ITEM["items"][0])
        await c.post(f"/api/v1/orders/{order_id}/cancel", json={"reason": "late"})
        resumed = await collect(c, path, {**SSE, "Last-Event-ID": "6"}, until_version=8)

    assert first[0] == {"retry": "2000"}
    changes = [e for e in first if e.get("event") == "change"]
    assert [e["id"] for e in changes] == ["1", "2", "3", "4", "5", "6"]
    assert [e["json"]["version"] for e in changes] == [1, 2, 3, 4, 5, 6]
    heartbeats = [e for e in first if "comment" in e]
    assert heartbeats and all(set(h) == {"comment"} for h in heartbeats)
    resumed_changes = [e for e in resumed if e.get("event") == "change"]
    assert [e["id"] for e in resumed_changes] == ["7", "8"]
    assert resumed_changes[-1]["json"]["data"]["status"] == "cancelled"


async def test_c08_sse_last_event_id_ahead_gets_a_reset(server, alice):
    _, token = alice
    async with httpx.AsyncClient(base_url=server, headers=auth(token), timeout=10) as c:
        order_id = await place_and_add(c, 1)
        path = f"/api/v1/orders/{order_id}/watch"

        seen = await collect(c, path, {**SSE, "Last-Event-ID": "999"}, until_version=0)

    reset = [e for e in seen if e.get("event") == "reset"]
    assert reset[0]["json"] == {
        "type": "reset",
        "topic": f"orders/{order_id}",
        "version": 2,
        "reason": "version_ahead",
    }


@pytest.mark.parametrize("last_event_id", ["abc", "-1", "1.5", "9" * 30])
async def test_c08_sse_a_bad_last_event_id_is_a_400_error(server, alice, last_event_id):
    _, token = alice
    async with httpx.AsyncClient(base_url=server, headers=auth(token), timeout=10) as c:
        order_id = await place_and_add(c, 0)

        response = await c.get(
            f"/api/v1/orders/{order_id}/watch",
            headers={**SSE, "Last-Event-ID": last_event_id},
        )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"


async def test_sse_snapshot_then_watch_sees_changes_made_in_between(server, alice):
    _, token = alice
    async with httpx.AsyncClient(base_url=server, headers=auth(token), timeout=10) as c:
        order_id = await place_and_add(c, 0)
        snapshot = (await c.get(f"/api/v1/orders/{order_id}")).json()
        await place_and_add(c, 0)
        await c.post(f"/api/v1/orders/{order_id}/pay", json={"amount": "12.30"})

        async def ship_soon() -> None:
            await asyncio.sleep(0.3)
            await c.post(f"/api/v1/orders/{order_id}/ship")

        shipper = asyncio.create_task(ship_soon())
        seen = await collect(
            c,
            f"/api/v1/orders/{order_id}/watch?since={snapshot['version']}",
            SSE,
            until_version=3,
        )
        await shipper

    changes = [e["json"] for e in seen if e.get("event") == "change"]
    assert [c["version"] for c in changes] == [2, 3]
    assert [c["data"]["status"] for c in changes] == ["paid", "shipped"]
    assert all(c["data"]["total"] == "12.30" for c in changes)


async def test_sse_answers_401_and_403_in_the_error_shape(server, alice, bob):
    _, alice_token = alice
    _, bob_token = bob
    async with httpx.AsyncClient(base_url=server, timeout=10) as c:
        created = await c.post(
            "/api/v1/orders/", json=ONE_ITEM, headers=auth(alice_token)
        )
        path = f"/api/v1/orders/{created.json()['id']}/watch"

        anonymous = await c.get(path, headers=SSE)
        other = await c.get(path, headers={**SSE, **auth(bob_token)})

    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "not_authenticated"
    assert other.status_code == 403
    assert other.json()["error"]["code"] == "forbidden"


async def test_sse_response_headers_stop_buffering(server, alice):
    _, token = alice
    async with httpx.AsyncClient(base_url=server, headers=auth(token), timeout=10) as c:
        order_id = await place_and_add(c, 0)
        path = f"/api/v1/orders/{order_id}/watch"
        async with c.stream("GET", path, headers=SSE) as response:
            headers = response.headers

    assert headers["content-type"].startswith("text/event-stream")
    assert headers["cache-control"].startswith("no-cache")
    assert headers["x-accel-buffering"] == "no"
    assert headers.get("content-encoding", "identity") == "identity"


@pytest.mark.parametrize(
    ("accept", "event_stream"),
    [
        ("text/event-stream", True),
        ("TEXT/Event-Stream", True),
        ("text/event-stream, application/json;q=0.5", True),
        ("text/event-stream;q=0, application/json", False),
        ("application/json, text/event-stream;q=0.1", False),
        ("*/*", False),
        (None, False),
    ],
)
def test_the_accept_header_picks_sse_by_media_type_and_q_value(accept, event_stream):
    headers = {"HTTP_ACCEPT": accept} if accept else {}
    request = RequestFactory().get("/api/v1/dashboard/watch", **headers)

    assert wants_event_stream(request) is event_stream
