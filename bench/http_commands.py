"""Commands per second over HTTP, next to the server's raw request rate.

Starts daphne on a free port against a fresh database (see harness.py),
then, for each number of concurrent clients, sends a fixed count of order
commands (place, add item, add item, remove item, pay, ship, again and
again; every one must succeed) and as many ``GET /api/v1/orders/{id}``
as a baseline: the same server, auth and connection handling, with no
event appended.

    .venv/bin/python bench/http_commands.py [--count 1200] [--clients 1,8]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/lookout \\
        .venv/bin/python bench/http_commands.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from harness import BenchServer, percentile, print_table

WARM_UP_COMMANDS = 60

Step = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


@dataclass
class Budget:
    """Requests left to send, shared by the clients of one run."""

    left: int

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0


# Refused requests of every run by status and error code, with one example
# message each: a benchmark that hides its failures measures nothing.
FAILURES: Counter[tuple[int, str]] = Counter()
FAILURE_EXAMPLES: dict[tuple[int, str], str] = {}


def note_failure(response: httpx.Response) -> None:
    try:
        error = response.json()["error"]
        code, message = error["code"], error["message"]
    except (ValueError, KeyError, TypeError):
        code, message = "-", response.text[:200]
    FAILURES[(response.status_code, code)] += 1
    FAILURE_EXAMPLES.setdefault((response.status_code, code), message)


class Shopper:
    """One client: its own token, connection and current order."""

    def __init__(self, url: str, token: str) -> None:
        self.client = httpx.AsyncClient(
            base_url=url,
            headers={"Authorization": f"Token {token}"},
            limits=httpx.Limits(max_connections=1),
            timeout=30,
        )
        self.order: dict | None = None
        self.step = 0

    async def command(self) -> httpx.Response:
        """The next command of the order's life; a new order after ship."""
        step, self.step = self.step, (self.step + 1) % 6
        if step == 0:
            body = {"items": [{"sku": "tea", "quantity": 1, "unit_price": "6.15"}]}
            return await self._send("POST", "/api/v1/orders/", body)
        path = f"/api/v1/orders/{self.order['id']}"
        if step == 1:
            body = {"sku": "mug", "quantity": 1, "unit_price": "12.00"}
            return await self._send("POST", f"{path}/items", body)
        if step == 2:
            body = {"sku": "sugar", "quantity": 2, "unit_price": "2.35"}
            return await self._send("POST", f"{path}/items", body)
        if step == 3:
            return await self._send("DELETE", f"{path}/items/mug")
        if step == 4:
            return await self._send("POST", f"{path}/pay", {"amount": "10.85"})
        return await self._send("POST", f"{path}/ship")

    async def read(self) -> httpx.Response:
        return await self.client.get(f"/api/v1/orders/{self.order['id']}")

    async def _send(self, method: str, path: str, body=None) -> httpx.Response:
        response = await self.client.request(method, path, json=body)
        if response.is_success:
            self.order = response.json()
        else:
            # Start over with a new order rather than fail every later step.
            self.step = 0
        return response

    async def close(self) -> None:
        await self.client.aclose()


async def drive(shoppers: list[Shopper], count: int, read: bool) -> Run:
    """Send ``count`` requests from all shoppers at once."""
    run = Run()
    budget = Budget(count)

    async def loop(shopper: Shopper) -> None:
        while budget.take():
            started = time.perf_counter()
            response = await (shopper.read() if read else shopper.command())
            run.latencies.append(time.perf_counter() - started)
            if not response.is_success:
                run.errors += 1
                note_failure(response)

    started = time.perf_counter()
    await asyncio.gather(*(loop(shopper) for shopper in shoppers))
    run.seconds = time.perf_counter() - started
    return run


async def measure(server: BenchServer, tokens: list[str], args) -> list[list]:
    rows = []
    for clients in args.clients:
        shoppers = [Shopper(server.url, token) for token in tokens[:clients]]

        # Warm up, and give every shopper an order to read.
        await drive(shoppers, max(WARM_UP_COMMANDS, clients), read=False)
        for shopper in shoppers:
            if shopper.order is None:
                await shopper.command()

        for name, read in (("commands", False), ("GET order", True)):
            run = await drive(shoppers, args.count, read)
            rows.append(
                [
                    name,
                    clients,
                    args.count,
                    run.errors,
                    run.seconds,
                    args.count / run.seconds,
                    percentile(run.latencies, 0.5) * 1000,
                    percentile(run.latencies, 0.99) * 1000,
                ]
            )
        for shopper in shoppers:
            await shopper.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1200, help="requests per row")
    parser.add_argument(
        "--clients",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 8],
        help="comma-separated numbers of concurrent clients (default 1,8)",
    )
    args = parser.parse_args()

    with BenchServer() as server:
        tokens = [
            server.create_token(f"bench-{n}", "--customer", f"c-bench-{n}")
            for n in range(max(args.clients))
        ]
        print(f"lookout http_commands: {server.mode}")
        print(
            f"python {platform.python_version()}, {os.cpu_count()} cores; "
            "client and server share them"
        )
        print()
        rows = asyncio.run(measure(server, tokens, args))

    print_table(
        [
            "workload",
            "clients",
            "requests",
            "errors",
            "seconds",
            "req/s",
            "p50 ms",
            "p99 ms",
        ],
        rows,
    )
    for (status, code), count in sorted(FAILURES.items()):
        example = FAILURE_EXAMPLES[(status, code)]
        print(f"failed: {count} x {status} {code}: {example}")


if __name__ == "__main__":
    main()
