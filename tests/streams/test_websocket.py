"""Watching over WebSocket, through Channels' communicator."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from project.asgi import application
from tests.conftest import ONE_ITEM, client_for

pytestmark = pytest.mark.django_db(transaction=True)


async def connect(path: str, token: str | None) -> WebsocketCommunicator:
    headers = [(b"authorization", f"Token {token}".encode())] if token else []
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def receive(communicator: WebsocketCommunicator) -> dict:
    return json.loads(await communicator.receive_from(timeout=3))


def command(token: str, path: str, body: dict | None = None):
    response = client_for(token).post(path, body or {}, format="json")
    assert response.status_code in (200, 201), response.content
    return response.json()


async def test_multiplexed_watch_sends_backlog_then_live_changes(alice):
    _, token = alice
    order = await database_sync_to_async(command)(token, "/api/v1/orders/", ONE_ITEM)
    ws = await connect("/ws/v1/", token)

    await ws.send_json_to(
        {"type": "subscribe", "topic": f"orders/{order['id']}", "since": 0, "ref": "a"}
    )
    subscribed = await receive(ws)
    backlog = await receive(ws)
    await database_sync_to_async(command)(
        token, f"/api/v1/orders/{order['id']}/pay", {"amount": "12.30"}
    )
    live = await receive(ws)

    assert subscribed == {
        "type": "subscribed",
        "topic": f"orders/{order['id']}",
        "version": 0,
        "ref": "a",
    }
    assert (backlog["version"], backlog["data"]["status"]) == (1, "placed")
    assert (live["version"], live["data"]["status"]) == (2, "paid")
    await ws.disconnect()
