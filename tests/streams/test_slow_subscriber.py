"""A subscriber that stops reading is cut off with 4008 and resumes, and
never holds up the others (field case C05, over a real socket)."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

pytestmark = pytest.mark.django_db(transaction=True)

TOPIC = "customers/c-alice/orders"
MAX_LAG = 10
# A small kernel send buffer: a stalled socket fills it with a few changes.
SEND_BUFFER_BYTES = 16384
# Big orders make big changes (about 25 KB each), so that a stalled
# socket fills the server's buffers within a few dozen commands.
BIG_ORDER = {
    "items": [
        {"sku": f"sku-{n:03d}-" + "x" * 80, "quantity": 1, "unit_price": "1.00"}
        for n in range(120)
    ]
}
COMMANDS = 40


def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


async def open_watch(
    url: str, token: str, since: int, slow: bool = False
) -> ClientConnection:
    """A multiplexed watch on TOPIC. A slow one has a 4 KiB receive buffer
    and lets the client library hold one frame only: when the application
    stops reading, the socket stops too."""
    sock = socket.socket()
    if slow:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    ws = await websockets.connect(
        url.replace("http", "ws") + "/ws/v1/",
        sock=sock,
        additional_headers=headers(token),
        max_queue=1 if slow else 4096,
        max_size=2**22,
        ping_interval=None,
    )
    await ws.send(json.dumps({"type": "subscribe", "topic": TOPIC, "since": since}))
    subscribed = json.loads(await ws.recv())
    assert subscribed["type"] == "subscribed"
    return ws


async def read_until_closed(ws: ClientConnection) -> list[int]:
    versions = []
    try:
        async for raw in ws:
            versions.append(json.loads(raw)["version"])
    except websockets.ConnectionClosed:
        pass
    return versions


async def test_c05_a_stalled_websocket_is_cut_off_with_4008_and_resumes_exactly_once(
    start_server, alice
):
    _, token = alice
    server = start_server(
        LOOKOUT_MAX_SUBSCRIBER_LAG=str(MAX_LAG),
        LOOKOUT_SOCKET_SEND_BUFFER_BYTES=str(SEND_BUFFER_BYTES),
    ).url
    slow = await open_watch(server, token, since=0, slow=True)
    fast = await open_watch(server, token, since=0)
    fast_arrivals: dict[int, float] = {}

    async def read_fast() -> None:
        async for raw in fast:
            fast_arrivals[json.loads(raw)["version"]] = time.monotonic()
            if len(fast_arrivals) == COMMANDS:
                return

    # The slow client reads nothing while the commands run.
    reader = asyncio.create_task(read_fast())
    answered: dict[int, float] = {}
    async with httpx.AsyncClient(base_url=server, headers=headers(token)) as c:
        for version in range(1, COMMANDS + 1):
            response = await c.post("/api/v1/orders/", json=BIG_ORDER, timeout=30)
            assert response.status_code == 201
            answered[version] = time.monotonic()
        await asyncio.wait_for(reader, 30)
        await fast.close()

        # Then it reads what it was sent, up to the close, and resumes.
        before_close = await asyncio.wait_for(read_until_closed(slow), 30)
        close_code, reason = slow.close_code, slow.close_reason
        resume_from = json.loads(reason)["versions"][TOPIC]
        resumed = await open_watch(server, token, since=resume_from)
        after_resume = []
        while not after_resume or after_resume[-1] < COMMANDS:
            after_resume.append(json.loads(await resumed.recv())["version"])
        await resumed.close()
        metrics_text = (await c.get("/metrics")).text

    worst_fast_delay = max(fast_arrivals[v] - answered[v] for v in answered)
    assert sorted(fast_arrivals) == list(range(1, COMMANDS + 1))
    assert worst_fast_delay < 1.0
    assert close_code == 4008
    assert before_close == list(range(1, resume_from + 1))
    assert resume_from < COMMANDS
    assert after_resume == list(range(resume_from + 1, COMMANDS + 1))
    assert 'lookout_watch_slow_subscribers_total{transport="websocket"} 1.0' in (
        metrics_text
    )
