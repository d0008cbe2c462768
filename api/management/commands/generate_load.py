"""Place and progress orders over real HTTP, at a steady rate.

A small shop: orders are placed, items come and go, orders are paid,
shipped or cancelled, in the mix a busy shop would see. A share of the
commands breaks a rule on purpose (shipping an unpaid order, paying the
wrong amount, a stale ``If-Match``), so watchers also see refusals that
change nothing.

    manage.py generate_load --url http://127.0.0.1:8000 \\
        --token KEY1 --token KEY2 --rate 3 --duration 60

Customer tokens place orders for their own customer. A staff token needs
``--customer`` to name the customers it places orders for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
from django.core.management.base import BaseCommand, CommandError

logger = logging.getLogger(__name__)

# Prices as strings: money travels as decimal strings, never floats.
CATALOG = {
    "tea": "6.15",
    "coffee": "9.80",
    "mug": "12.00",
    "biscuits": "3.45",
    "honey": "7.25",
    "teapot": "34.90",
    "filter": "4.10",
    "sugar": "2.35",
}

# Orders kept open at once; with fewer, the next command places one.
OPEN_ORDERS_TARGET = 20

# Shipped and cancelled orders remembered for commands that must fail.
CLOSED_ORDERS_KEPT = 20

REQUEST_TIMEOUT_SECS = 10.0

# As the API accepts them; mostly cards, as in a web shop.
PAYMENT_METHODS = ("card", "card", "card", "transfer", "cash")


@dataclass
class ShopOrder:
    """What the generator knows of one order, from the server's answers."""

    id: str
    token: str
    status: str
    version: int
    total: str
    skus: list[str] = field(default_factory=list)

    def update(self, body: dict[str, Any]) -> None:
        self.status = body["status"]
        self.version = body["version"]
        self.total = body["total"]
        self.skus = [item["sku"] for item in body["items"]]


@dataclass(frozen=True)
class Intent:
    """One command about to be sent."""

    name: str
    method: str
    path: str
    token: str
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    order: ShopOrder | None = None


class Tally:
    """Counts of answers, in total and since the last report."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.sent = 0
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.last_report = self.started
        self.sent_at_last_report = 0

    def line(self) -> str:
        now = time.monotonic()
        window = max(now - self.last_report, 1e-9)
        rate = (self.sent - self.sent_at_last_report) / window
        self.last_report, self.sent_at_last_report = now, self.sent

        ok = sum(n for code, n in self.statuses.items() if code < 300)
        return (
            f"{self.sent} commands in {now - self.started:.0f} s ({rate:.1f}/s "
            f"lately): 2xx {ok}, 4xx {self._codes(400, 500)}, "
            f"5xx {self._codes(500, 600)}, transport errors "
            f"{_counts(self.errors)}"
        )

    def _codes(self, low: int, high: int) -> str:
        return _counts(
            {code: n for code, n in self.statuses.items() if low <= code < high}
        )


def _counts(counter: dict[Any, int]) -> str:
    """``0``, or ``422=12 412=3``: each kind with its count."""
    if not counter:
        return "0"
    return " ".join(f"{kind}={n}" for kind, n in sorted(counter.items()))


class Shop:
    """Chooses commands and keeps the orders' state from the answers."""

    def __init__(
        self,
        tokens: list[str],
        customers: list[str],
        violations: float,
        rng: random.Random,
    ) -> None:
        self.tokens = tokens
        self.customers = customers
        self.violations = violations
        self.rng = rng
        self.open: dict[str, ShopOrder] = {}
        self.closed: deque[ShopOrder] = deque(maxlen=CLOSED_ORDERS_KEPT)
        self.busy: set[str] = set()

    def next_intent(self) -> Intent:
        idle = [o for o in self.open.values() if o.id not in self.busy]
        if self.rng.random() < self.violations:
            intent = self._violation(idle)
            if intent:
                return intent
        if not idle or len(self.open) < OPEN_ORDERS_TARGET * self.rng.random():
            return self._place()
        return self._progress(self.rng.choice(idle))

    def settle(self, intent: Intent, status: int, body: Any) -> None:
        """Take in the server's answer to ``intent``."""
        order = intent.order
        if order:
            self.busy.discard(order.id)
        if status >= 300 or not isinstance(body, dict) or "status" not in body:
            return
        if order is None:
            order = ShopOrder(body["id"], intent.token, "", 0, "0.00")
        order.update(body)
        if order.status in ("shipped", "cancelled"):
            self.open.pop(order.id, None)
            self.closed.append(order)
        else:
            self.open[order.id] = order

    def _intent(self, name: str, method: str, order: ShopOrder, **kw: Any) -> Intent:
        self.busy.add(order.id)
        path = f"/api/v1/orders/{order.id}{kw.pop('suffix', '')}"
        return Intent(name, method, path, order.token, order=order, **kw)

    def _place(self) -> Intent:
        skus = self.rng.sample(sorted(CATALOG), self.rng.randint(1, 3))
        body: dict[str, Any] = {
            "items": [
                {"sku": s, "quantity": self.rng.randint(1, 4), "unit_price": CATALOG[s]}
                for s in skus
            ]
        }
        if self.customers:
            body["customer_id"] = self.rng.choice(self.customers)
        headers = {"Idempotency-Key": str(uuid.uuid4())}
        token = self.rng.choice(self.tokens)
        return Intent("place", "POST", "/api/v1/orders/", token, body, headers)

    def _progress(self, order: ShopOrder) -> Intent:
        roll = self.rng.random()
        if order.status == "paid":
            if roll < 0.85:
                return self._intent("ship", "POST", order, suffix="/ship")
            return self._cancel(order, "customer changed their mind")

        # A placed order: add, remove, pay or cancel.
        if roll < 0.30:
            return self._add_item(order)
        if roll < 0.40 and len(order.skus) > 1:
            sku = self.rng.choice(order.skus)
            return self._intent("remove_item", "DELETE", order, suffix=f"/items/{sku}")
        if roll < 0.87:
            return self._pay(order, order.total)
        return self._cancel(order, "out of stock")

    def _add_item(self, order: ShopOrder, **kw: Any) -> Intent:
        sku = self.rng.choice(sorted(CATALOG))
        body = {
            "sku": sku,
            "quantity": self.rng.randint(1, 3),
            "unit_price": CATALOG[sku],
        }
        return self._intent("add_item", "POST", order, suffix="/items", body=body, **kw)

    def _pay(self, order: ShopOrder, amount: str) -> Intent:
        body = {"amount": amount, "method": self.rng.choice(PAYMENT_METHODS)}
        return self._intent("pay", "POST", order, suffix="/pay", body=body)

    def _cancel(self, order: ShopOrder, reason: str) -> Intent:
        body = {"reason": reason}
        return self._intent("cancel", "POST", order, suffix="/cancel", body=body)

    def _violation(self, idle: list[ShopOrder]) -> Intent | None:
        """A command the server must refuse, if a fitting order is at hand."""
        placed = [o for o in idle if o.status == "placed"]
        paid = [o for o in idle if o.status == "paid"]
        choices = []
        if placed:
            choices += [self._ship_unpaid, self._pay_wrong_amount, self._remove_absent]
            choices.append(self._add_item_if_stale)
        if paid:
            choices.append(self._add_item_after_payment)
        if self.closed:
            choices.append(self._cancel_closed)
        if not choices:
            return None
        return self.rng.choice(choices)(placed, paid)

    def _ship_unpaid(self, placed: list[ShopOrder], _: Any) -> Intent:
        order = self.rng.choice(placed)
        return self._intent("ship_unpaid", "POST", order, suffix="/ship")

    def _pay_wrong_amount(self, placed: list[ShopOrder], _: Any) -> Intent:
        order = self.rng.choice(placed)
        return self._pay(order, str(Decimal(order.total) + Decimal("1.00")))

    def _remove_absent(self, placed: list[ShopOrder], _: Any) -> Intent:
        order = self.rng.choice(placed)
        suffix = "/items/no-such-sku"
        return self._intent("remove_absent", "DELETE", order, suffix=suffix)

    def _add_item_if_stale(self, placed: list[ShopOrder], _: Any) -> Intent:
        # If-Match names a version the order has already left: 412.
        order = self.rng.choice(placed)
        return self._add_item(order, headers={"If-Match": f'"{order.version - 1}"'})

    def _add_item_after_payment(self, _: Any, paid: list[ShopOrder]) -> Intent:
        return self._add_item(self.rng.choice(paid))

    def _cancel_closed(self, _: Any, __: Any) -> Intent:
        return self._cancel(self.rng.choice(self.closed), "too late")


class LoadGenerator:
    def __init__(
        self,
        url: str,
        shop: Shop,
        rate: float,
        duration: float | None,
        concurrency: int,
        report_every: float,
    ) -> None:
        self.url = url
        self.shop = shop
        self.rate = rate
        self.duration = duration
        self.concurrency = concurrency
        self.report_every = report_every
        self.tally = Tally()

    async def run(self) -> None:
        # SIGTERM (bin/demo stopping its children) ends the run like Ctrl-C.
        stop = asyncio.current_task()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.cancel)

        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(
            base_url=self.url, timeout=REQUEST_TIMEOUT_SECS, limits=limits
        ) as client:
            reporter = asyncio.create_task(self._report_forever())
            try:
                await self._send_forever(client)
            finally:
                reporter.cancel()

    async def _send_forever(self, client: httpx.AsyncClient) -> None:
        # Open loop: commands leave on a fixed schedule, not when the last
        # answer came back, unless the cap on commands in flight is reached.
        slots = asyncio.Semaphore(self.concurrency)
        in_flight: set[asyncio.Task] = set()
        started = time.monotonic()
        due = started
        try:
            while self.duration is None or due - started < self.duration:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                await slots.acquire()
                task = asyncio.create_task(self._send(client, self.shop.next_intent()))
                in_flight.add(task)
                task.add_done_callback(
                    lambda t: (in_flight.discard(t), slots.release())
                )
                due += 1 / self.rate
        finally:
            if in_flight:
                await asyncio.wait(in_flight, timeout=REQUEST_TIMEOUT_SECS)

    async def _send(self, client: httpx.AsyncClient, intent: Intent) -> None:
        headers = {"Authorization": f"Token {intent.token}", **intent.headers}
        self.tally.sent += 1
        try:
            response = await client.request(
                intent.method, intent.path, json=intent.body, headers=headers
            )
        except httpx.HTTPError as exc:
            kind = type(exc).__name__
            if not self.tally.errors[kind]:
                logger.warning("load: %s %s failed: %s", intent.name, intent.path, exc)
            self.tally.errors[kind] += 1
            self.shop.settle(intent, 599, None)
            return

        self.tally.statuses[response.status_code] += 1
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 500:
            logger.warning(
                "load: %s %s answered %d",
                intent.name,
                intent.path,
                response.status_code,
            )
        elif logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "load: %s %s answered %d",
                intent.name,
                intent.path,
                response.status_code,
            )
        self.shop.settle(intent, response.status_code, body)

    async def _report_forever(self) -> None:
        while True:
            await asyncio.sleep(self.report_every)
            logger.info("load: %s", self.tally.line())


class Command(BaseCommand):
    help = "Place and progress orders over HTTP at a steady rate."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--url", default="http://127.0.0.1:8000", help="server base URL"
        )
        parser.add_argument(
            "--token",
            action="append",
            required=True,
            help="API token to send commands with; repeat for several users",
        )
        parser.add_argument(
            "--customer",
            action="append",
            default=[],
            help="customer id to place orders for (staff tokens); repeatable",
        )
        parser.add_argument(
            "--rate", type=float, default=3.0, help="commands per second"
        )
        parser.add_argument(
            "--duration", type=float, help="seconds to run (default: until Ctrl-C)"
        )
        parser.add_argument(
            "--concurrency", type=int, default=8, help="most commands in flight"
        )
        parser.add_argument(
            "--violations",
            type=float,
            default=0.1,
            help="share of commands that break a rule on purpose (0 to 1)",
        )
        parser.add_argument(
            "--report-every", type=float, default=5.0, help="seconds between counts"
        )
        parser.add_argument("--seed", type=int, help="seed for a repeatable run")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["rate"] <= 0:
            raise CommandError("--rate must be above 0")
        if options["concurrency"] < 1:
            raise CommandError("--concurrency must be at least 1")
        if not 0 <= options["violations"] <= 1:
            raise CommandError("--violations must be between 0 and 1")

        shop = Shop(
            options["token"],
            options["customer"],
            options["violations"],
            random.Random(options["seed"]),
        )
        load = LoadGenerator(
            options["url"].rstrip("/"),
            shop,
            options["rate"],
            options["duration"],
            options["concurrency"],
            options["report_every"],
        )
        logger.info(
            "load: sending %.1f commands/s to %s with %d tokens",
            options["rate"],
            options["url"],
            len(options["token"]),
        )
        with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
            asyncio.run(load.run())
        logger.info("load: stopped after %s", load.tally.line())
