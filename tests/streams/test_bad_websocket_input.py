"""Bad WebSocket input under daphne, with a real client: each mistake gets
an error the client can read and a close code it can act on, never a
500, a 1011, or a connection closed with other subscriptions on it.
(Autobahn refuses close codes that Channels' communicator accepts, so
these run against the real server.)"""

from __future__ import annotations

import json

import httpx
import pytest
import websockets
from websockets.asyncio.client import connect

from tests.conftest import ONE_ITEM
from tests.streams.test_longpoll import auth

pytestmark = pytest.mark.django_db(transaction=True)


async def closing(ws) -> tuple[list[dict], int]:
    """The frames the server sends before it closes, and its close code."""
    frames = []
    try:
        while True:
            frames.append(json.loads(await ws.recv()))
    except websockets.ConnectionClosed as closed:
        return frames, closed.rcvd.code if closed.rcvd else None


@pytest.mark.parametrize("since", ["abc", "-1", str(10**30)])
async def test_a_bad_since_on_a_resource_watch_closes_with_4400(server, alice, since):
    _, token = alice
    async with httpx.AsyncClient(base_url=server, headers=auth(token)) as client:
        order = (await client.post("/api/v1/orders/", json=ONE_ITEM)).json()
    url = f"{server.replace('http', 'ws')}/api/v1/orders/{order['id']}/watch"

    async with connect(f"{url}?since={since}", additional_headers=auth(token)) as ws:
        frames, code = await closing(ws)

    assert [frame["code"] for frame in frames] == ["validation_error"]
    assert code == 4400


async def test_a_websocket_on_no_route_is_closed_with_4404(server, alice):
    _, token = alice
    url = f"{server.replace('http', 'ws')}/api/v1/nope/watch"

    async with connect(url, additional_headers=auth(token)) as ws:
        frames, code = await closing(ws)

    assert [frame["code"] for frame in frames] == ["not_found"]
    assert code == 4404


async def test_a_frame_with_a_lone_surrogate_leaves_the_connection_working(
    server, alice
):
    _, token = alice
    url = f"{server.replace('http', 'ws')}/ws/v1/"

    async with connect(url, additional_headers=auth(token)) as ws:
        await ws.send(json.dumps({"type": "subscribe", "topic": "dashboard"}))
        refused = json.loads(await ws.recv())
        await ws.send('{"type": "subscribe", "topic": "customers/\\ud800/orders"}')
        surrogate = json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "ping", "ref": "still"}))
        pong = json.loads(await ws.recv())

    assert refused["code"] == "forbidden"
    assert surrogate["code"] == "invalid_frame"
    assert pong == {"type": "pong", "ref": "still"}


async def test_a_frame_over_the_servers_limit_closes_with_1009(server, alice):
    # Frames up to 64 KiB get an error frame (test_websocket.py); past
    # daphne's 1 MiB the server reads no further and says why it closes.
    _, token = alice
    url = f"{server.replace('http', 'ws')}/ws/v1/"

    async with connect(url, additional_headers=auth(token), max_size=None) as ws:
        await ws.send(json.dumps({"type": "ping", "ref": "x" * (1024 * 1024)}))
        frames, code = await closing(ws)

    assert frames == []
    assert code == 1009


async def test_nul_characters_are_refused_without_closing_other_topics(server, alice):
    # PostgreSQL refuses a NUL in any text: the topic, the path, the ticket.
    _, token = alice
    base = server.replace("http", "ws")

    async with connect(f"{base}/ws/v1/", additional_headers=auth(token)) as ws:
        await ws.send(json.dumps({"type": "subscribe", "topic": "orders/\x00"}))
        in_frame = json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "ping", "ref": "still"}))
        pong = json.loads(await ws.recv())
    async with connect(
        f"{base}/api/v1/orders/%00/watch", additional_headers=auth(token)
    ) as ws:
        _, in_path = await closing(ws)
    async with connect(f"{base}/ws/v1/?ticket=%00") as ws:
        _, in_ticket = await closing(ws)

    assert in_frame["code"] == "invalid_frame"
    assert pong == {"type": "pong", "ref": "still"}
    assert in_path == 4404
    assert in_ticket == 4401
