"""Watchers and the PostgreSQL connection pool, under daphne.

A watcher needs the database to sign in and to read a backlog, then not
until its next gap: an open watch must not keep a pooled connection, or a
few watchers leave the commands none. The server here gets a pool of four
connections; on SQLite there is no pool and these show only that the
watches work.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from channels.db import database_sync_to_async
from websockets.asyncio.client import connect

from tests.conftest import ONE_ITEM, session_cookie
from tests.streams.conftest import sse_events

pytestmark = pytest.mark.django_db(transaction=True)

POOL = {"LOOKOUT_DB_POOL_SIZE": "4", "LOOKOUT_DB_POOL_TIMEOUT": "3"}
WATCHERS = 8


async def _sse_change(client: httpx.AsyncClient, path: str, cookie: str) -> int:
    headers = {"Accept": "text/event-stream", "Cookie": cookie}
    async with client.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200
        async for event in sse_events(response):
            if event.get("event") == "change":
                return event["json"]["version"]
    raise AssertionError("the stream ended before a change")


async def _websocket_change(url: str, cookie: str) -> int:
    async with connect(url, additional_headers={"Cookie": cookie}) as ws:
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "change":
                return frame["version"]


@pytest.mark.parametrize("transport", ["sse", "websocket"])
async def test_watchers_signed_in_by_session_leave_connections_for_commands(
    start_server, alice, transport
):
    user, token = alice
    server = start_server(**POOL)
    cookie = await database_sync_to_async(session_cookie)(user)
    commands = httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Token {token}"}, timeout=10
    )
    order = (await commands.post("/api/v1/orders/", json=ONE_ITEM)).json()
    path = f"/api/v1/orders/{order['id']}/watch?since=1"

    async with httpx.AsyncClient(base_url=server.url, timeout=10) as browser:
        if transport == "sse":
            watches = [_sse_change(browser, path, cookie) for _ in range(WATCHERS)]
        else:
            url = server.url.replace("http", "ws") + path
            watches = [_websocket_change(url, cookie) for _ in range(WATCHERS)]
        watchers = [asyncio.create_task(watch) for watch in watches]
        await asyncio.sleep(1)
        added = await commands.post(
            f"/api/v1/orders/{order['id']}/items", json=ONE_ITEM["items"][0]
        )
        versions = await asyncio.wait_for(asyncio.gather(*watchers), 10)
    await commands.aclose()

    assert added.status_code == 200, added.content
    assert versions == [2] * WATCHERS
