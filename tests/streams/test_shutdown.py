"""Graceful shutdown, against real daphne processes and real clients: on
SIGTERM every watcher is asked to reconnect (WebSocket close 1012, an SSE
``retry:`` and the end of the stream, an early long-poll answer), spread
over the drain window; the server exits with status 0; watchers that
resume on a new server on the same port get every change once, in order.
The drain's schedule is also checked in process, with a short window.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import httpx
import pytest
from channels.db import database_sync_to_async
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from streams import shutdown
from tests.conftest import ONE_ITEM, client_for
from tests.streams.conftest import ServerProcess, sse_events

DRAIN_SECS = 2.0
# The drain's own wait after the last goodbye (up to 2 s), and room for the
# process to exit: 1.5 to 3.5 s on two shared cores once the server has
# stopped, as before the drain existed.
EXIT_SLACK_SECS = 8.0
SERVICE_RESTART = 1012
SSE = {"Accept": "text/event-stream"}
LONG_POLL_SECS = 30
WAYS = ("ws", "multiplex", "sse", "poll")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


@dataclass
class Watcher:
    """What one client saw on one connection, and how it was let go."""

    versions: list[int] = field(default_factory=list)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    goodbye: object = None
    goodbye_at: float = 0.0

    def said_goodbye(self, goodbye: object) -> None:
        self.goodbye = goodbye
        self.goodbye_at = time.monotonic()

    def has(self, version: int) -> bool:
        return bool(self.versions) and self.versions[-1] >= version


async def watch_websocket(
    server: ServerProcess,
    path: str,
    token: str,
    watcher: Watcher,
    until: int = 0,
    subscribe: dict | None = None,
) -> Watcher:
    """Per-resource (``path`` names the watch and ``since``), or multiplexed
    (``path`` is ``/ws/v1/`` and ``subscribe`` the frame to send)."""
    url = server.url.replace("http", "ws", 1) + path
    async with ws_connect(url, additional_headers=auth(token)) as ws:
        if subscribe:
            await ws.send(json.dumps({"type": "subscribe", **subscribe}))
        try:
            async for raw in ws:
                message = json.loads(raw)
                if message["type"] == "subscribed":
                    watcher.subscribed.set()
                elif message["type"] == "change":
                    watcher.versions.append(message["version"])
                else:
                    raise AssertionError(f"unexpected frame {message}")
                if until and watcher.has(until):
                    return watcher
        except ConnectionClosed:
            pass
        watcher.said_goodbye(ws.close_code)
    return watcher


async def watch_sse(
    client: httpx.AsyncClient, path: str, since: int, watcher: Watcher, until: int = 0
) -> Watcher:
    headers = {**SSE, "Last-Event-ID": str(since)}
    async with client.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200
        async for event in sse_events(response):
            if event.get("event") == "subscribed":
                watcher.subscribed.set()
            elif event.get("event") == "change":
                watcher.versions.append(int(event["id"]))
            elif watcher.subscribed.is_set() and "retry" in event:
                watcher.goodbye = event["retry"]
            if until and watcher.has(until):
                return watcher
    # The stream ended cleanly: no transport error on the way out.
    watcher.said_goodbye(watcher.goodbye)
    return watcher


async def long_poll(
    client: httpx.AsyncClient, path: str, since: int, watcher: Watcher, until: int = 0
) -> Watcher:
    """Poll until ``until``, or until a poll is answered empty-handed long
    before its timeout (the server let it go)."""
    # Nothing tells when a poll waits on the server; soon after it is sent.
    watcher.subscribed.set()
    while True:
        started = time.monotonic()
        params = {"since": since, "timeout": LONG_POLL_SECS}
        response = await client.get(path, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        watcher.versions += [change["version"] for change in body["changes"]]
        since = body["version"]
        if until and watcher.has(until):
            return watcher
        if not body["changes"]:
            answered_in = time.monotonic() - started
            watcher.said_goodbye((answered_in, response.headers.get("Connection")))
            return watcher


def _add_item_in_process(token: str, order_id: str, sku: str) -> None:
    """A command that does not go through a server: for while none runs."""
    item = {"sku": sku, "quantity": 1, "unit_price": "1.00"}
    response = client_for(token).post(
        f"/api/v1/orders/{order_id}/items", item, format="json"
    )
    assert response.status_code == 200, response.content


add_item_in_process = database_sync_to_async(_add_item_in_process)


async def add_item(client: httpx.AsyncClient, order_id: str, sku: str) -> None:
    item = {"sku": sku, "quantity": 1, "unit_price": "1.00"}
    response = await client.post(f"/api/v1/orders/{order_id}/items", json=item)
    assert response.status_code == 200, response.text


def watch_every_way(
    server: ServerProcess,
    client: httpx.AsyncClient,
    token: str,
    order_id: str,
    since: dict[str, int],
    watchers: dict[str, Watcher],
    until: int = 0,
) -> list:
    """The order's topic watched four ways, each from its own version."""
    path = f"/api/v1/orders/{order_id}/watch"
    topic = f"orders/{order_id}"
    return [
        watch_websocket(
            server, f"{path}?since={since['ws']}", token, watchers["ws"], until
        ),
        watch_websocket(
            server,
            "/ws/v1/",
            token,
            watchers["multiplex"],
            until,
            subscribe={"topic": topic, "since": since["multiplex"]},
        ),
        watch_sse(client, path, since["sse"], watchers["sse"], until),
        long_poll(client, path, since["poll"], watchers["poll"], until),
    ]


@pytest.mark.django_db(transaction=True)
async def test_sigterm_lets_every_watcher_go_and_they_resume_missing_nothing(
    start_server, alice
):
    _, token = alice
    server = start_server(LOOKOUT_DRAIN_SECS=str(DRAIN_SECS))
    commands = httpx.AsyncClient(base_url=server.url, headers=auth(token), timeout=10)
    watches = httpx.AsyncClient(base_url=server.url, headers=auth(token), timeout=40)
    order_id = (await commands.post("/api/v1/orders/", json=ONE_ITEM)).json()["id"]
    watchers = {name: Watcher() for name in WAYS}
    from_one = dict.fromkeys(WAYS, 1)
    running = asyncio.gather(
        *watch_every_way(server, watches, token, order_id, from_one, watchers)
    )
    await asyncio.wait_for(
        asyncio.gather(*(w.subscribed.wait() for w in watchers.values())), 10
    )

    # Version 2 reaches everyone live; the long poll then waits for more.
    await add_item(commands, order_id, "before")
    async with asyncio.timeout(10):
        while not all(w.has(2) for w in watchers.values()):
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)

    # SIGTERM; version 3 is committed through the draining server, on the
    # command client's kept-alive connection.
    sigterm_at = time.monotonic()
    server.terminate()
    await asyncio.sleep(DRAIN_SECS / 4)
    await add_item(commands, order_id, "during")
    await asyncio.wait_for(running, DRAIN_SECS + EXIT_SLACK_SECS)
    status = await asyncio.to_thread(server.wait, EXIT_SLACK_SECS)
    exited_in = time.monotonic() - sigterm_at
    await commands.aclose()
    await watches.aclose()

    # Version 4 while no server runs, version 5 on the new one; everyone
    # resumes from the last version it saw.
    await add_item_in_process(token, order_id, "between")
    await asyncio.to_thread(server.start)
    resumed = {name: Watcher() for name in WAYS}
    last = {name: w.versions[-1] for name, w in watchers.items()}
    async with httpx.AsyncClient(
        base_url=server.url, headers=auth(token), timeout=10
    ) as client:
        await add_item(client, order_id, "after")
        await asyncio.wait_for(
            asyncio.gather(
                *watch_every_way(server, client, token, order_id, last, resumed, 5)
            ),
            10,
        )

    assert watchers["ws"].goodbye == SERVICE_RESTART
    assert watchers["multiplex"].goodbye == SERVICE_RESTART
    assert watchers["sse"].goodbye == "2000"
    answered_in, connection = watchers["poll"].goodbye
    assert answered_in < DRAIN_SECS + 1 and connection == "close"
    # Four told at 0, 1/4, 2/4 and 3/4 of the window; the long poll may
    # leave early (answered with version 3, told again on its next poll).
    goodbyes = sorted(w.goodbye_at for w in watchers.values())
    assert goodbyes[-1] - goodbyes[0] >= DRAIN_SECS / 4
    assert status == 0
    assert exited_in < DRAIN_SECS + EXIT_SLACK_SECS
    log = server.log_path.read_text()
    assert "server draining: 4 subscribers told to leave over 2.0 s" in log
    for name in WAYS:
        assert watchers[name].versions + resumed[name].versions == [2, 3, 4, 5], name


@pytest.mark.django_db(transaction=True)
async def test_an_idle_server_exits_at_once_on_sigterm(start_server):
    server = start_server(LOOKOUT_DRAIN_SECS="30")

    started = time.monotonic()
    server.terminate()
    status = await asyncio.to_thread(server.wait, 10)

    assert status == 0
    assert time.monotonic() - started < 10
    assert "server drained" in server.log_path.read_text()


class Clock:
    """A subscriber that notes when it was told to leave."""

    def __init__(self, told: list[float]) -> None:
        self.told = told

    async def leave_for_restart(self) -> None:
        self.told.append(asyncio.get_running_loop().time())


@pytest.fixture
def registry(monkeypatch) -> shutdown.Registry:
    fresh = shutdown.Registry()
    monkeypatch.setattr(shutdown, "registry", fresh)
    return fresh


async def test_drain_tells_subscribers_evenly_across_the_window(registry):
    told: list[float] = []
    for _ in range(4):
        shutdown.register(Clock(told))
    started = asyncio.get_running_loop().time()

    async with asyncio.timeout(5):
        drain = asyncio.ensure_future(shutdown.drain(window_secs=0.4))
        while len(told) < 4:
            await asyncio.sleep(0.01)
        late = Clock(told)
        shutdown.register(late)
        while len(told) < 5:
            await asyncio.sleep(0.01)
        shutdown.unregister(late)
        for subscriber in list(registry.subscribers):
            shutdown.unregister(subscriber)
        await drain

    # Told at 0, 0.1, 0.2 and 0.3 s: never before their share of the
    # window, and the last well before its end.
    offsets = [t - started for t in told]
    assert all(offsets[n] >= n * 0.1 - 0.01 for n in range(4))
    assert offsets[3] < 0.5
    # One that arrives during the drain is told at once.
    assert offsets[4] - offsets[3] < 0.1


async def test_a_long_poll_told_to_leave_stops_waiting_at_once(registry):
    async def forever():
        while True:
            await asyncio.sleep(3600)
            yield 0

    async with shutdown.watching() as subscriber:
        waiting = asyncio.ensure_future(anext(subscriber.until_told(forever()), None))
        await asyncio.sleep(0.01)
        await shutdown.tell(subscriber)
        async with asyncio.timeout(1):
            got = await waiting

    assert got is None
    assert subscriber.told
    assert not registry.subscribers
