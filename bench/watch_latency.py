"""From a command's HTTP answer to its change at a WebSocket watcher.

Starts daphne on a free port against a fresh database (see harness.py),
opens one watcher on the multiplexed ``/ws/v1/`` (token in the
``Authorization`` header) subscribed to ``customers/<id>/orders``, then
sends commands one after another over HTTP. For each, it takes the time
from the HTTP answer to the change carrying the same order id and version
at the watcher. Baseline from the same socket: ``ping`` to ``pong``.

    .venv/bin/python bench/watch_latency.py [--count 1200] [--pings 1000]

``DATABASE_URL`` and ``REDIS_URL`` run it against PostgreSQL and Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from typing import Any

from harness import BenchServer, print_table, summarize
from http_commands import Shopper
from websockets.asyncio.client import ClientConnection, connect

CUSTOMER = "c-watch"
TOPIC = f"customers/{CUSTOMER}/orders"
WARM_UP_COMMANDS = 30
CHANGE_TIMEOUT_SECS = 10.0
MIN_COMMANDS = 1000

Key = tuple[str, int]


class Watcher:
    """Reads every frame; notes when each change and pong arrived."""

    def __init__(self, ws: ClientConnection, version: int) -> None:
        self.ws = ws
        self.version = version
        self.arrivals: dict[Key, float] = {}
        self.waiting: dict[Any, asyncio.Future[float]] = {}
        self.problems: list[str] = []

    async def read_forever(self) -> None:
        async for raw in self.ws:
            now = time.perf_counter()
            frame = json.loads(raw)
            if frame["type"] == "change":
                self._check_order(frame)
                key = (frame["key"], frame["data"]["version"])
                self.arrivals[key] = now
                self._wake(key, now)
            elif frame["type"] == "pong":
                self._wake(("pong", frame["ref"]), now)
            else:
                self.problems.append(f"unexpected frame: {raw[:200]}")

    async def arrival(self, key: Any) -> float:
        """When ``key`` arrived, waiting for it if it has not yet."""
        if key in self.arrivals:
            return self.arrivals[key]
        future = asyncio.get_running_loop().create_future()
        self.waiting[key] = future
        return await asyncio.wait_for(future, CHANGE_TIMEOUT_SECS)

    async def ping(self, ref: int) -> float:
        """One ``ping`` to ``pong`` round trip, in seconds."""
        future = asyncio.get_running_loop().create_future()
        self.waiting[("pong", ref)] = future
        started = time.perf_counter()
        await self.ws.send(json.dumps({"type": "ping", "ref": ref}))
        return await asyncio.wait_for(future, CHANGE_TIMEOUT_SECS) - started

    def _check_order(self, frame: dict[str, Any]) -> None:
        if frame["version"] != self.version + 1:
            self.problems.append(
                f"topic version went from {self.version} to {frame['version']}"
            )
        self.version = frame["version"]

    def _wake(self, key: Any, now: float) -> None:
        future = self.waiting.pop(key, None)
        if future and not future.done():
            future.set_result(now)


async def measure(server: BenchServer, token: str, args) -> dict[str, Any]:
    headers = {"Authorization": f"Token {token}"}
    async with connect(f"{server.ws_url}/ws/v1/", additional_headers=headers) as ws:
        await ws.send(json.dumps({"type": "subscribe", "topic": TOPIC}))
        subscribed = json.loads(await ws.recv())
        if subscribed.get("type") != "subscribed":
            raise RuntimeError(f"subscribe failed: {subscribed}")
        watcher = Watcher(ws, subscribed["version"])
        reader = asyncio.create_task(watcher.read_forever())

        # Baseline: the same socket, the same server, no command.
        pings = [await watcher.ping(n) for n in range(args.pings)]

        # Commands one after another; each waits for its change.
        shopper = Shopper(server.url, token)
        answer_to_change, sent_to_change, round_trips = [], [], []
        early = 0
        for n in range(WARM_UP_COMMANDS + args.count):
            started = time.perf_counter()
            response = await shopper.command()
            answered = time.perf_counter()
            response.raise_for_status()
            body = response.json()
            arrived = await watcher.arrival((body["id"], body["version"]))
            if n < WARM_UP_COMMANDS:
                continue
            early += arrived < answered
            answer_to_change.append(arrived - answered)
            sent_to_change.append(arrived - started)
            round_trips.append(answered - started)

        await shopper.close()
        reader.cancel()

    return {
        "rows": [
            ["change at watcher, after HTTP answer", answer_to_change],
            ["change at watcher, after request sent", sent_to_change],
            ["HTTP command round trip", round_trips],
            ["baseline: WS ping -> pong", pings],
        ],
        "early": early,
        "problems": watcher.problems,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--count", type=int, default=1200, help=f"commands (at least {MIN_COMMANDS})"
    )
    parser.add_argument("--pings", type=int, default=1000, help="ping round trips")
    args = parser.parse_args()
    if args.count < MIN_COMMANDS:
        parser.error(f"--count must be at least {MIN_COMMANDS}")

    with BenchServer() as server:
        token = server.create_token("bench-watch", "--customer", CUSTOMER)
        print(f"lookout watch_latency: {server.mode}")
        print(
            f"python {platform.python_version()}, {os.cpu_count()} cores; "
            f"one watcher on {TOPIC}, commands one at a time"
        )
        print()
        result = asyncio.run(measure(server, token, args))

    rows = []
    for name, values in result["rows"]:
        figures = summarize(values)
        rows.append([name, len(values), *figures.values()])
    print_table(["measure", "n", "median ms", "p90 ms", "p99 ms", "max ms"], rows)
    print()
    print(
        f"changes that reached the watcher before their HTTP answer: "
        f"{result['early']} of {args.count} (counted as negative times)"
    )
    for problem in result["problems"][:10]:
        print(f"problem: {problem}")
    if result["problems"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
