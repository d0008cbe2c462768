"""SSE behind compression middleware: with Django's GZipMiddleware
installed and a client that accepts gzip, each change still arrives on its
own, as soon as it is made, in a body the client can read."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import ONE_ITEM
from tests.streams.conftest import sse_events

pytestmark = pytest.mark.django_db(transaction=True)

GZIP_SETTINGS = "tests.streams.gzip_settings"
# Far above a change's round trip here, far below a heartbeat-free wait.
ARRIVAL_SECS = 5


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}", "Accept-Encoding": "gzip"}


async def test_sse_events_arrive_one_by_one_through_gzip_middleware(
    start_server, alice
):
    _, token = alice
    server = start_server(
        DJANGO_SETTINGS_MODULE=GZIP_SETTINGS, LOOKOUT_HEARTBEAT_SECS="30"
    )
    async with httpx.AsyncClient(
        base_url=server.url, headers=auth(token), timeout=10
    ) as client:
        placed = await client.post("/api/v1/orders/", json=ONE_ITEM)
        assert placed.status_code == 201, placed.text
        order = placed.json()
        path = f"/api/v1/orders/{order['id']}/watch"
        rest = await client.get("/api/v1/schema/")

        arrived = []
        sse = {"Accept": "text/event-stream", "Accept-Encoding": "gzip"}
        async with client.stream("GET", f"{path}?since=1", headers=sse) as response:
            events = sse_events(response)
            async for event in events:
                if event.get("event") == "subscribed":
                    break
            # Each change is made only once the one before it has arrived.
            for n in range(3):
                item = {"sku": f"sku-{n}", "quantity": 1, "unit_price": "1.00"}
                added = await client.post(
                    f"/api/v1/orders/{order['id']}/items", json=item
                )
                assert added.status_code == 200, added.text
                async with asyncio.timeout(ARRIVAL_SECS):
                    async for event in events:
                        if event.get("event") == "change":
                            arrived.append(int(event["id"]))
                            break
            await events.aclose()

    assert rest.headers["Content-Encoding"] == "gzip"
    assert response.headers.get("Content-Encoding", "identity") == "identity"
    assert response.headers["Cache-Control"] == "no-cache, no-transform"
    assert arrived == [2, 3, 4]
