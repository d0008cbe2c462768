"""The eventsourcing library (PyPI) as a peer: the same order events,
stored through its application and recorder and read back through its
notification log, on the same database.

Its recorders serialise writers as Lookout does, by a different lock: on
PostgreSQL ``LOCK TABLE ... IN EXCLUSIVE MODE`` plus ``NOTIFY`` per insert;
on SQLite the single writer (``BEGIN``, WAL, default ``synchronous``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from decimal import Decimal
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from order_events import OrderPlan

__all__ = [
    "Order",
    "OrderTotals",
    "Orders",
    "order_from_plan",
    "read_notification_log",
]


class Order(Aggregate):
    """An order as an eventsourcing aggregate; its events carry the same
    data as Lookout's."""

    @event("OrderPlaced")
    def __init__(self, order_id: str, customer_id: str, items: list[dict]) -> None:
        self.order_id = order_id
        self.customer_id = customer_id
        self.items = list(items)
        self.status = "placed"

    @event("ItemAdded")
    def add_item(self, sku: str, quantity: int, unit_price: str) -> None:
        self.items.append({"sku": sku, "quantity": quantity, "unit_price": unit_price})

    @event("OrderPaid")
    def pay(self, amount: str) -> None:
        self.status = "paid"

    @event("OrderShipped")
    def ship(self) -> None:
        self.status = "shipped"

    @event("OrderCancelled")
    def cancel(self, reason: str) -> None:
        self.status = "cancelled"


class Orders(Application):
    """Stores orders; no snapshots."""


def order_from_plan(plan: OrderPlan, upto: int | None = None) -> Order:
    """An order whose pending events are the plan's first ``upto`` events."""
    order: Order | None = None
    for event_type, data in plan.events[:upto]:
        if event_type == "OrderPlaced":
            order = Order(**data)
        else:
            apply_to_order(order, event_type, data)
    assert order is not None, "a plan starts with OrderPlaced"
    return order


def apply_to_order(order: Order, event_type: str, data: dict[str, Any]) -> None:
    """Trigger one more planned event on ``order``."""
    if event_type == "ItemAdded":
        order.add_item(**data)
    elif event_type == "OrderPaid":
        order.pay(**data)
    elif event_type == "OrderShipped":
        order.ship()
    elif event_type == "OrderCancelled":
        order.cancel(**data)
    else:
        raise ValueError(f"no order method for {event_type}")


def read_notification_log(
    app: Orders, batch_size: int, pages: int | None = None
) -> int:
    """Read every notification (or the first ``pages`` pages), page by
    page, into domain events; the count read."""
    read = 0
    for page in _pages(app, batch_size):
        read += len(page)
        pages = pages and pages - 1
        if pages == 0:
            break
    return read


def _pages(app: Orders, batch_size: int) -> Iterator[list[tuple[int, Any]]]:
    last = 0
    while True:
        notifications = app.recorder.select_notifications(
            last, batch_size, inclusive_of_start=False
        )
        if not notifications:
            return
        yield [
            (notification.id, app.mapper.to_domain_event(notification))
            for notification in notifications
        ]
        last = notifications[-1].id


class OrderTotals:
    """A projection of the notification log: status and total per order.

    Folds each page of notifications in memory, then writes the orders it
    touched and the page's last notification id in one transaction, so the
    table and its tracking position move together.
    """

    def __init__(
        self,
        connection: Any,
        transaction: Callable[[], AbstractContextManager],
        placeholder: str,
    ) -> None:
        self.connection = connection
        self.transaction = transaction
        self.orders: dict[Any, dict[str, Any]] = {}
        p = placeholder
        self.upsert = (
            "INSERT INTO bench_order_totals (order_id, status, total, paid) "
            f"VALUES ({p}, {p}, {p}, {p}) ON CONFLICT (order_id) DO UPDATE SET "
            "status = excluded.status, total = excluded.total, paid = excluded.paid"
        )
        self.track = (
            "INSERT INTO bench_tracking (name, notification_id) "
            f"VALUES ('order_totals', {p}) ON CONFLICT (name) DO UPDATE SET "
            "notification_id = excluded.notification_id"
        )

    def create_tables(self) -> None:
        with self.transaction():
            self.connection.execute(
                "CREATE TABLE bench_order_totals (order_id text PRIMARY KEY, "
                "status text NOT NULL, total text NOT NULL, paid text)"
            )
            self.connection.execute(
                "CREATE TABLE bench_tracking (name text PRIMARY KEY, "
                "notification_id bigint NOT NULL)"
            )

    def replay(self, app: Orders, batch_size: int) -> int:
        read = 0
        for page in _pages(app, batch_size):
            touched = {self.apply(domain_event) for _, domain_event in page}
            self.save(touched, page[-1][0])
            read += len(page)
        return read

    def apply(self, domain_event: Any) -> Any:
        """Fold one event into its order's figures; the order's id."""
        order_id = domain_event.originator_id
        if isinstance(domain_event, Order.OrderPlaced):
            order = {"status": "placed", "total": Decimal(0), "paid": None}
            self.orders[order_id] = order
            self._add(order, domain_event.items)
            return order_id
        order = self.orders[order_id]
        if isinstance(domain_event, Order.ItemAdded):
            self._add(order, [vars(domain_event)])
        elif isinstance(domain_event, Order.OrderPaid):
            order["status"], order["paid"] = "paid", Decimal(domain_event.amount)
        elif isinstance(domain_event, Order.OrderShipped):
            order["status"] = "shipped"
        elif isinstance(domain_event, Order.OrderCancelled):
            order["status"], order["paid"] = "cancelled", None
        return order_id

    def save(self, touched: set[Any], notification_id: int) -> None:
        rows = [
            (str(order_id), o["status"], str(o["total"]), _text(o["paid"]))
            for order_id in touched
            for o in [self.orders[order_id]]
        ]
        with self.transaction():
            cursor = self.connection.cursor()
            cursor.executemany(self.upsert, rows)
            cursor.execute(self.track, (notification_id,))

    def revenue(self) -> Decimal:
        return sum(
            (o["paid"] for o in self.orders.values() if o["paid"] is not None),
            Decimal("0.00"),
        )

    @staticmethod
    def _add(order: dict[str, Any], items: Sequence[dict[str, Any]]) -> None:
        for item in items:
            order["total"] += item["quantity"] * Decimal(item["unit_price"])


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)
