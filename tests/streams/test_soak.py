"""A bounded soak of the watch routes against a real daphne.

Fifty clients watch a few topics over every transport (multiplexed
WebSocket, per-resource WebSocket, Server-Sent Events, long polling). Each
drops its connection at random moments and resumes from the last version it
applied, while writers run commands over HTTP. At the end every client must
have applied every version of each of its topics exactly once, in order, up
to the version the REST API reports. Clients dedupe nothing, so a version
sent twice or skipped, or a reset, fails the test.

It runs for about a minute and stops by itself.

Limit: one thread makes the database calls of every WebSocket consumer in a
daphne process, so on a busy machine, with PostgreSQL, handshakes queue past
daphne's 5 s limit and are dropped. Such drops are counted and printed, not
failed: the client resumes as after any other drop, and the test still
demands that it ends with every version exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosedError, InvalidHandshake

from tests.streams.conftest import ROOT, free_port, server_env, sse_events

pytestmark = pytest.mark.django_db(transaction=True)

# Writers run commands this long; then clients get at most SETTLE_SECS to
# reach the final versions. Together with server start, about a minute.
WRITE_SECS = 40.0
SETTLE_SECS = 15.0
WRITERS = 2
# Clients per transport: 50 in all.
CLIENTS = {"multiplexed": 12, "websocket": 13, "sse": 13, "long_poll": 12}
ORDERS_PER_CUSTOMER = 3
# While writers run, a connection lives a random while in a range of its
# transport's (Watcher.connection_secs), then the client drops it and
# resumes after a random pause.
PAUSE_SECS = (0.0, 0.3)
ARRIVAL_SECS = (0.0, 2.0)
LONG_POLL_TIMEOUT_SECS = 2
# Fixed, so that a failure names the same plan of clients when run again.
SEED = 20261203
# The other watch tests' server ticks every 0.5 s. Each WebSocket tick is a
# database call, and one thread serves every consumer's database calls in a
# daphne process; 25 sockets ticking that often would measure that thread,
# not resuming. 5 s is still well under the protocol's 15 s.
HEARTBEAT_SECS = 5
SERVER_START_SECS = 20

# A handshake the server did not complete: daphne gives up on one that
# the application has not accepted within 5 s (see the module docstring).
HANDSHAKE_ERRORS = (InvalidHandshake, TimeoutError)
# Failures of a connection after it opened, rather than of what came over
# it. The client resumes as after any drop; the test bounds how many there
# are.
TRANSPORT_ERRORS = (OSError, httpx.TransportError, ConnectionClosedError)
MOST_TRANSPORT_ERRORS = 0.05

SSE = {"Accept": "text/event-stream"}
# Building an SSL context loads the CA bundle: some 70 ms that would block
# the event loop on every new httpx client. These clients speak plain HTTP
# to 127.0.0.1, so they share one.
SSL_CONTEXT = ssl.create_default_context()


@pytest.fixture
def soak_server(transactional_db, tmp_path) -> Iterator[str]:
    """Base URL of a daphne like the ``server`` fixture's, ticking every
    HEARTBEAT_SECS."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "daphne.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
            + ["project.asgi:application"],
            cwd=ROOT,
            env=server_env(LOOKOUT_HEARTBEAT_SECS=str(HEARTBEAT_SECS)),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_serving(url, process, tmp_path / "daphne.log")
        yield url
    finally:
        process.terminate()
        process.wait(10)


def wait_until_serving(url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_SECS
    while time.monotonic() < deadline and process.poll() is None:
        try:
            httpx.get(f"{url}/api/v1/schema/", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"daphne did not start:\n{log_path.read_text()}")


class Watcher:
    """One client: applies changes per topic, resumes from the last version
    applied, and notes every breach of the protocol it sees."""

    transport = ""
    # Seconds a connection lives while writers run.
    connection_secs = (0.5, 6.0)

    def __init__(self, name: str, base_url: str, token: str, topics: list[str]):
        self.name = name
        self.base_url = base_url
        self.headers = {"Authorization": f"Token {token}"}
        self.versions: dict[str, list[int]] = {topic: [] for topic in topics}
        self.problems: list[str] = []
        self.connections = 0
        self.handshakes_dropped = 0
        self.transport_errors: list[str] = []

    def last(self, topic: str) -> int:
        applied = self.versions[topic]
        return applied[-1] if applied else 0

    def apply(self, change: dict[str, Any]) -> None:
        topic, version = change["topic"], change["version"]
        if topic not in self.versions:
            self.problems.append(f"change on {topic}, which it does not watch")
            return
        if version != self.last(topic) + 1:
            self.problems.append(f"{topic}: version {version} after {self.last(topic)}")
        self.versions[topic].append(version)

    def expect_start(self, topic: str, version: int) -> None:
        """A ``subscribed`` must announce the version the client gave."""
        if version != self.last(topic):
            self.problems.append(
                f"{topic}: subscribed at {version}, resumed from {self.last(topic)}"
            )

    def note(self, frame: dict[str, Any]) -> None:
        """Anything else is a failure here: reset, error, unknown."""
        self.problems.append(f"unexpected {json.dumps(frame)[:300]}")

    def caught_up(self, finals: dict[str, int]) -> bool:
        return all(self.last(topic) >= finals[topic] for topic in self.versions)

    async def connection(self) -> None:
        """Watch over one connection until cancelled."""
        raise NotImplementedError

    async def run(
        self, rng: random.Random, settling: asyncio.Event, stop: asyncio.Event
    ) -> None:
        """Connect, drop the connection at random, resume; once ``settling``,
        keep the next connection until ``stop``."""
        # Clients arrive over a moment, not all in one instant.
        await wait_or_stop(rng.uniform(*ARRIVAL_SECS), stop)
        while not stop.is_set():
            self.connections += 1
            secs = None if settling.is_set() else rng.uniform(*self.connection_secs)
            try:
                await run_until(self.connection(), secs, stop)
            except HANDSHAKE_ERRORS:
                self.handshakes_dropped += 1
            except TRANSPORT_ERRORS as exc:
                self.transport_errors.append(repr(exc))
            except Exception as exc:  # noqa: BLE001 - every failure is reported
                self.problems.append(f"connection failed: {exc!r}")
            await wait_or_stop(rng.uniform(*PAUSE_SECS), stop)


async def run_until(
    work: Awaitable[None], secs: float | None, stop: asyncio.Event
) -> None:
    """Run ``work``; cancel it after ``secs`` (if any) or on ``stop``."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopped}, timeout=secs, return_when="FIRST_COMPLETED")
    stopped.cancel()
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def wait_or_stop(secs: float, stop: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), secs)


def ws_url(base_url: str, path: str) -> str:
    return "ws" + base_url.removeprefix("http") + path


def watch_path(topic: str) -> str:
    return f"/api/v1/{topic}/watch"


class MultiplexedWatcher(Watcher):
    transport = "multiplexed"
    # Longer: each WebSocket connect and subscribe is a few database calls,
    # and one thread makes them for every consumer of a daphne process, one
    # after another (some 100 ms a subscription with PostgreSQL on a busy
    # machine). HTTP-speed churn would swamp it; daphne then drops
    # handshakes that wait over 5 s.
    connection_secs = (2.0, 15.0)

    async def connection(self) -> None:
        url = ws_url(self.base_url, "/ws/v1/")
        async with ws_connect(
            url, additional_headers=self.headers, close_timeout=2
        ) as ws:
            for topic in self.versions:
                since = self.last(topic)
                frame = {"type": "subscribe", "topic": topic, "since": since}
                await ws.send(json.dumps(frame))
            async for raw in ws:
                self.receive(json.loads(raw))
            self.problems.append(f"server closed the connection: {ws.close_code}")

    def receive(self, frame: dict[str, Any]) -> None:
        if frame["type"] == "change":
            self.apply(frame)
        elif frame["type"] == "subscribed":
            self.expect_start(frame["topic"], frame["version"])
        else:
            self.note(frame)


class ResourceWebSocketWatcher(MultiplexedWatcher):
    transport = "websocket"

    async def connection(self) -> None:
        [topic] = self.versions
        url = ws_url(self.base_url, f"{watch_path(topic)}?since={self.last(topic)}")
        async with ws_connect(
            url, additional_headers=self.headers, close_timeout=2
        ) as ws:
            async for raw in ws:
                self.receive(json.loads(raw))
            self.problems.append(f"server closed the connection: {ws.close_code}")


class SseWatcher(Watcher):
    """Resumes as a browser does: the first URL again, with Last-Event-ID."""

    transport = "sse"

    async def connection(self) -> None:
        [topic] = self.versions
        headers = {**self.headers, **SSE}
        if self.versions[topic]:
            headers["Last-Event-ID"] = str(self.last(topic))
        async with (
            httpx.AsyncClient(
                base_url=self.base_url, timeout=10, verify=SSL_CONTEXT
            ) as client,
            client.stream(
                "GET", f"{watch_path(topic)}?since=0", headers=headers
            ) as response,
        ):
            if response.status_code != 200:
                await response.aread()
                self.problems.append(f"status {response.status_code}: {response.text}")
                return
            async for event in sse_events(response):
                self.receive(event)
            self.problems.append("server ended the stream")

    def receive(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if "comment" in event or "retry" in event:
            return
        if kind == "change":
            if event["id"] != str(event["json"]["version"]):
                self.problems.append(f"event id {event['id']} is not its version")
            self.apply(event["json"])
        elif kind == "subscribed":
            self.expect_start(event["json"]["topic"], event["json"]["version"])
        else:
            self.note(event)


class LongPollWatcher(Watcher):
    transport = "long_poll"

    async def connection(self) -> None:
        [topic] = self.versions
        async with httpx.AsyncClient(
            base_url=self.base_url,
            headers=self.headers,
            timeout=15,
            verify=SSL_CONTEXT,
        ) as client:
            while True:
                since = self.last(topic)
                response = await client.get(
                    watch_path(topic),
                    params={"since": since, "timeout": LONG_POLL_TIMEOUT_SECS},
                )
                if response.status_code != 200:
                    self.problems.append(
                        f"status {response.status_code}: {response.text}"
                    )
                    await asyncio.sleep(0.5)
                    continue
                body = response.json()
                for change in body["changes"]:
                    self.apply(change)
                if body["version"] != self.last(topic):
                    self.problems.append(
                        f"{topic}: poll from {since} says version {body['version']}"
                        f" after changes up to {self.last(topic)}"
                    )


class Writer:
    """Runs commands over HTTP on the watched orders, and sometimes places
    a new order (a change on the customer's topic only)."""

    def __init__(self, base_url: str, orders: dict[str, tuple[str, str]]):
        self.base_url = base_url
        # order id -> (customer id, token of its customer)
        self.orders = orders
        self.outcomes: Counter[str] = Counter()
        self.problems: list[str] = []

    async def run(self, rng: random.Random, secs: float) -> None:
        deadline = time.monotonic() + secs
        async with httpx.AsyncClient(
            base_url=self.base_url, timeout=20, verify=SSL_CONTEXT
        ) as client:
            while time.monotonic() < deadline:
                await self.command(client, rng)
                await asyncio.sleep(rng.uniform(0, 0.02))

    async def command(self, client: httpx.AsyncClient, rng: random.Random) -> None:
        order_id = rng.choice(sorted(self.orders))
        customer_id, token = self.orders[order_id]
        headers = {"Authorization": f"Token {token}"}
        roll = rng.random()
        if roll < 0.1:
            body = {"items": [{"sku": "tea", "quantity": 1, "unit_price": "1.00"}]}
            body["customer_id"] = customer_id
            response = await client.post("/api/v1/orders/", json=body, headers=headers)
        elif roll < 0.3:
            sku = f"sku-{rng.randrange(4)}"
            path = f"/api/v1/orders/{order_id}/items/{sku}"
            response = await client.delete(path, headers=headers)
        else:
            item = {
                "sku": f"sku-{rng.randrange(4)}",
                "quantity": 1,
                "unit_price": "1.00",
            }
            path = f"/api/v1/orders/{order_id}/items"
            response = await client.post(path, json=item, headers=headers)
        self.record(response)

    def record(self, response: httpx.Response) -> None:
        # Removing an item that is not there is refused, and two writers on
        # one order may meet in a conflict; neither publishes a change.
        error = response.json().get("error") or {}
        code = (error.get("details") or {}).get("rule") or error.get("code", "ok")
        self.outcomes[f"{response.status_code} {code}"] += 1
        refused = (422, "item_not_in_order"), (409, "version_conflict")
        if response.status_code not in (200, 201) and (
            (response.status_code, code) not in refused
        ):
            self.problems.append(f"{response.request.url}: {response.text}")


async def place_orders(
    base_url: str, customers: dict[str, str]
) -> dict[str, tuple[str, str]]:
    orders = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        for customer_id, token in customers.items():
            for _ in range(ORDERS_PER_CUSTOMER):
                body = {
                    "customer_id": customer_id,
                    "items": [{"sku": "sku-0", "quantity": 1, "unit_price": "1.00"}],
                }
                response = await client.post(
                    "/api/v1/orders/",
                    json=body,
                    headers={"Authorization": f"Token {token}"},
                )
                assert response.status_code == 201, response.text
                orders[response.json()["id"]] = (customer_id, token)
    return orders


async def final_versions(
    base_url: str, topics: list[str], token: str
) -> dict[str, int]:
    """Each topic's version as REST reports it."""
    finals = {}
    async with httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Token {token}"}, timeout=10
    ) as client:
        for topic in topics:
            response = await client.get(f"/api/v1/{topic}")
            assert response.status_code == 200, response.text
            finals[topic] = response.json()["version"]
    return finals


def plan_watchers(
    base_url: str,
    rng: random.Random,
    topics_of: dict[str, list[str]],
    tokens: dict[str, str],
) -> list[Watcher]:
    """Fifty clients, customers taking turns; a multiplexed client watches
    all of its customer's topics, the others one of them."""
    kinds: dict[str, Callable[..., Watcher]] = {
        "multiplexed": MultiplexedWatcher,
        "websocket": ResourceWebSocketWatcher,
        "sse": SseWatcher,
        "long_poll": LongPollWatcher,
    }
    watchers = []
    customers = sorted(topics_of)
    for kind, count in CLIENTS.items():
        for n in range(count):
            customer = customers[n % len(customers)]
            topics = topics_of[customer]
            if kind != "multiplexed":
                topics = [rng.choice(topics)]
            name = f"{kind}-{n}"
            watchers.append(kinds[kind](name, base_url, tokens[customer], topics))
    return watchers


async def wait_until_caught_up(
    watchers: list[Watcher], finals: dict[str, int], secs: float
) -> None:
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if all(watcher.caught_up(finals) for watcher in watchers):
            return
        await asyncio.sleep(0.2)


def describe_failures(watchers: list[Watcher], finals: dict[str, int]) -> list[str]:
    failures = []
    for watcher in watchers:
        for topic, applied in watcher.versions.items():
            if applied != list(range(1, finals[topic] + 1)):
                failures.append(
                    f"{watcher.name} on {topic}: applied {len(applied)} versions,"
                    f" last {watcher.last(topic)}, final {finals[topic]}"
                )
        failures += [f"{watcher.name}: {p}" for p in watcher.problems[:5]]
    return failures


def topics_by_customer(orders: dict[str, tuple[str, str]]) -> dict[str, list[str]]:
    customers = sorted({customer for customer, _ in orders.values()})
    return {
        customer: [f"customers/{customer}/orders"]
        + [f"orders/{o}" for o, (c, _) in orders.items() if c == customer]
        for customer in customers
    }


def summary(
    secs: float, writers: list[Writer], watchers: list[Watcher], finals: dict
) -> tuple[Counter[str], Counter[str], list[str]]:
    """Commands by outcome, connections by transport, and the transport
    errors; printed, for ``-s``."""
    outcomes: Counter[str] = sum((w.outcomes for w in writers), Counter())
    connections: Counter[str] = Counter()
    for watcher in watchers:
        connections[watcher.transport] += watcher.connections
    errors = [e for watcher in watchers for e in watcher.transport_errors]
    dropped = sum(watcher.handshakes_dropped for watcher in watchers)
    print(
        f"soak: {secs:.1f} s, commands {dict(outcomes)},"
        f" connections {dict(connections)}, handshakes dropped {dropped},"
        f" transport errors {len(errors)} {errors[:3]}, final versions {finals}"
    )
    return outcomes, connections, errors


async def test_fifty_clients_that_drop_and_resume_apply_every_version_once(
    soak_server, alice, bob, staff
):
    server = soak_server  # the base URL
    rng = random.Random(SEED)
    tokens = {"c-alice": alice[1], "c-bob": bob[1]}
    orders = await place_orders(server, tokens)
    topics_of = topics_by_customer(orders)
    watchers = plan_watchers(server, rng, topics_of, tokens)
    writers = [Writer(server, orders) for _ in range(WRITERS)]
    settling, stop = asyncio.Event(), asyncio.Event()
    started = time.monotonic()

    # Clients churn while the writers run; then they stay connected until
    # they reach the final versions, or SETTLE_SECS pass.
    clients = [
        asyncio.create_task(w.run(random.Random(rng.random()), settling, stop))
        for w in watchers
    ]
    await asyncio.gather(
        *(w.run(random.Random(rng.random()), WRITE_SECS) for w in writers)
    )
    settling.set()
    all_topics = [topic for topics in topics_of.values() for topic in topics]
    finals = await final_versions(server, all_topics, staff[1])
    await wait_until_caught_up(watchers, finals, SETTLE_SECS)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*clients), 10)
    outcomes, connections, errors = summary(
        time.monotonic() - started, writers, watchers, finals
    )

    failures = describe_failures(watchers, finals)
    assert not failures, "\n".join(failures)
    assert [p for w in writers for p in w.problems] == []
    assert len(errors) <= MOST_TRANSPORT_ERRORS * connections.total(), errors[:10]
    # Floors low enough for a busy two-core machine: the point is that
    # clients dropped and resumed many times while changes kept coming.
    assert len(watchers) == 50
    assert outcomes["200 ok"] >= 20
    assert all(count >= 40 for count in connections.values())
