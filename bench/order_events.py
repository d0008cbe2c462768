"""Order events for the store benchmarks: a repeatable, consistent mix.

About five events per order stream: ``OrderPlaced`` with one to three
items, one to three ``ItemAdded``, then most orders are paid and shipped;
some are only paid, some cancelled after payment (a refund), some cancelled
unpaid. Every order keeps the rules of events/orders.py, so projections
apply the events without complaint, and ``expected_figures`` says what the
read models must show afterwards.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

__all__ = [
    "Expected",
    "OrderPlan",
    "expected_figures",
    "interleaved",
    "long_order",
    "order_plans",
]

SKU_COUNT = 200
CENT = Decimal("0.01")
# Each order's customer is drawn from a pool this many times smaller than
# the number of events, so a customer has about ten orders.
EVENTS_PER_CUSTOMER = 50
# Streams are interleaved within groups of this many orders, as concurrent
# commands would leave them.
INTERLEAVE_WINDOW = 100

# Relative weights of how an order's life ends.
ENDINGS = (
    (("OrderPaid", "OrderShipped"), 70),
    (("OrderPaid",), 10),
    (("OrderPaid", "OrderCancelled"), 10),
    (("OrderCancelled",), 10),
)

_STATUS_AFTER = {
    "OrderPlaced": "placed",
    "OrderPaid": "paid",
    "OrderShipped": "shipped",
    "OrderCancelled": "cancelled",
}


@dataclass(frozen=True)
class OrderPlan:
    """One order stream's events, in version order, as ``(type, data)``."""

    order_id: str
    customer_id: str
    events: tuple[tuple[str, dict[str, Any]], ...]


@dataclass
class Expected:
    """What the read models show once every planned event is applied."""

    orders: int = 0
    revenue: Decimal = Decimal("0.00")
    by_status: Counter[str] = field(default_factory=Counter)


def order_plans(event_count: int, prefix: str = "o", seed: int = 7) -> list[OrderPlan]:
    """Orders holding ``event_count`` events in all; the last order is cut
    short if need be, which still leaves a valid stream."""
    rng = random.Random(seed)
    prices = _prices()
    customers = max(1, event_count // EVENTS_PER_CUSTOMER)
    endings, weights = zip(*ENDINGS, strict=True)
    plans = []
    left = event_count
    while left > 0:
        order_id = f"{prefix}-{len(plans) + 1}"
        customer_id = f"c-{rng.randrange(customers)}"
        events = _order_events(rng, prices, order_id, customer_id)
        events += [(t, {}) for t in rng.choices(endings, weights)[0]]
        events = [_with_data(t, d, events) for t, d in events][:left]
        plans.append(OrderPlan(order_id, customer_id, tuple(events)))
        left -= len(events)
    return plans


def long_order(order_id: str, customer_id: str, event_count: int) -> OrderPlan:
    """One order of ``event_count`` events: placed with one item, then an
    item added by each later event, cycling through the skus."""
    prices = _prices()
    skus = [n % SKU_COUNT for n in range(event_count)]
    items = [
        {"sku": f"sku-{n}", "quantity": 1, "unit_price": str(prices[n])} for n in skus
    ]
    placed = {"order_id": order_id, "customer_id": customer_id, "items": items[:1]}
    added = [("ItemAdded", item) for item in items[1:]]
    return OrderPlan(order_id, customer_id, (("OrderPlaced", placed), *added))


def interleaved(plans: Sequence[OrderPlan]) -> Iterator[tuple[OrderPlan, int]]:
    """``(plan, index)`` of every event in store order: streams interleave
    within groups of orders, each stream keeping its own order."""
    for start in range(0, len(plans), INTERLEAVE_WINDOW):
        group = plans[start : start + INTERLEAVE_WINDOW]
        longest = max(len(plan.events) for plan in group)
        for index in range(longest):
            for plan in group:
                if index < len(plan.events):
                    yield plan, index


def expected_figures(plans: Sequence[OrderPlan]) -> Expected:
    expected = Expected()
    for plan in plans:
        status, paid = "", Decimal("0.00")
        for event_type, data in plan.events:
            status = _STATUS_AFTER.get(event_type, status)
            if event_type == "OrderPaid":
                paid = Decimal(data["amount"])
        expected.orders += 1
        expected.by_status[status] += 1
        if status in ("paid", "shipped"):
            expected.revenue += paid
    return expected


def _prices() -> list[Decimal]:
    """A fixed price per sku, from 1.00 to 99.99."""
    return [
        (Decimal(100 + (n * 7919) % 9900) / 100).quantize(CENT)
        for n in range(SKU_COUNT)
    ]


def _order_events(
    rng: random.Random, prices: list[Decimal], order_id: str, customer_id: str
) -> list[tuple[str, dict[str, Any]]]:
    """OrderPlaced and the ItemAdded after it, on distinct skus."""
    skus = rng.sample(range(SKU_COUNT), rng.randint(1, 3) + rng.randint(1, 3))
    items = [
        {
            "sku": f"sku-{n}",
            "quantity": rng.randint(1, 4),
            "unit_price": str(prices[n]),
        }
        for n in skus
    ]
    # At least two items were drawn, so at least one is added later.
    placed_count = rng.randint(1, min(3, len(items) - 1))
    placed = {
        "order_id": order_id,
        "customer_id": customer_id,
        "items": items[:placed_count],
    }
    return [("OrderPlaced", placed)] + [("ItemAdded", i) for i in items[placed_count:]]


def _with_data(
    event_type: str, data: dict[str, Any], events: list[tuple[str, dict[str, Any]]]
) -> tuple[str, dict[str, Any]]:
    """Fill in the data that depends on the order so far."""
    if event_type == "OrderPaid":
        total = sum(
            (
                item["quantity"] * Decimal(item["unit_price"])
                for earlier_type, earlier_data in events
                for item in _items(earlier_type, earlier_data)
            ),
            Decimal("0.00"),
        )
        return event_type, {"amount": str(total.quantize(CENT))}
    if event_type == "OrderCancelled":
        return event_type, {"reason": "changed my mind"}
    return event_type, data


def _items(event_type: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    if event_type == "OrderPlaced":
        return data["items"]
    if event_type == "ItemAdded":
        return [data]
    return []
