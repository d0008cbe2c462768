"""The order domain: its events, its state, and pure ``decide`` functions.

Nothing here touches the database. A command handler loads an order's
events, folds them into ``Order``, calls a ``decide_*`` function that either
raises ``RuleViolation`` or returns the new events, and appends them.

Rules:
- an order is placed with at least one item; quantities are positive whole
  numbers, prices are decimal amounts of at most two places, not negative;
- items change only while the order is unpaid and not cancelled;
- an order's total stays within ``MAX_TOTAL``, and it holds at most
  ``MAX_ITEMS`` distinct items;
- payment is for exactly the order's total, once;
- only a paid order ships; a shipped or cancelled order cannot be cancelled.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

from .errors import RuleViolation
from .records import NewEvent, RecordedEvent
from .upcasting import register_upcaster

__all__ = [
    "ORDER_STREAM_TYPE",
    "Item",
    "Order",
    "decide_add_item",
    "decide_cancel",
    "decide_pay",
    "decide_place",
    "decide_remove_item",
    "decide_ship",
    "money",
]

ORDER_STREAM_TYPE = "order"
CENT = Decimal("0.01")
# Read models keep amounts in 14 digits, two after the point; a larger
# total could be appended but not projected.
MAX_TOTAL = Decimal("999999999999.99")
# Distinct items in one order. Keeps every representation of an order,
# and so every change message about it, far below the 1 MiB that
# WebSocket clients and servers accept in one frame.
MAX_ITEMS = 500

PLACED = "placed"
PAID = "paid"
SHIPPED = "shipped"
CANCELLED = "cancelled"
STATUSES = (PLACED, PAID, SHIPPED, CANCELLED)


def money(value: Decimal | str) -> str:
    """A decimal amount as the string stored in events: two places, and
    no sign on zero ("-0.00" is not an amount)."""
    amount = Decimal(value).quantize(CENT)
    return str(amount.copy_abs() if amount.is_zero() else amount)


class Item(NamedTuple):
    """One line of an order. A named tuple: immutable, and quick to make
    for every item of every order a rebuild folds."""

    sku: str
    quantity: int
    unit_price: Decimal

    @property
    def subtotal(self) -> Decimal:
        return self.quantity * self.unit_price


@dataclass
class Order:
    """An order as its events left it. ``version`` is the stream version."""

    order_id: str
    customer_id: str = ""
    status: str = ""
    items: dict[str, Item] = field(default_factory=dict)
    paid_amount: Decimal | None = None
    payment_method: str = ""
    cancel_reason: str = ""
    version: int = 0
    # The version of the snapshot it was loaded from, 0 for none.
    snapshot_version: int = 0

    @classmethod
    def from_events(cls, order_id: str, events: Iterable[RecordedEvent]) -> Order:
        order = cls(order_id)
        order.apply_all(events)
        return order

    def apply_all(self, events: Iterable[RecordedEvent]) -> None:
        for event in events:
            self.apply(event.type, event.data)
            self.version = event.stream_version

    # Snapshots. Bump SNAPSHOT_SCHEMA whenever to_state's shape changes:
    # older snapshots are then ignored and orders folded from their events.
    SNAPSHOT_SCHEMA = 2

    def to_state(self) -> dict:
        return {
            "customer_id": self.customer_id,
            "status": self.status,
            "items": [
                [item.sku, item.quantity, money(item.unit_price)]
                for item in self.items.values()
            ],
            "paid_amount": None
            if self.paid_amount is None
            else money(self.paid_amount),
            "cancel_reason": self.cancel_reason,
            "payment_method": self.payment_method,
        }

    @classmethod
    def from_state(cls, order_id: str, version: int, state: dict) -> Order:
        paid = state["paid_amount"]
        return cls(
            order_id=order_id,
            customer_id=state["customer_id"],
            status=state["status"],
            items={
                sku: Item(sku, quantity, Decimal(price))
                for sku, quantity, price in state["items"]
            },
            paid_amount=None if paid is None else Decimal(paid),
            cancel_reason=state["cancel_reason"],
            payment_method=state["payment_method"],
            version=version,
        )

    @property
    def exists(self) -> bool:
        return self.version > 0

    @property
    def total(self) -> Decimal:
        return sum((item.subtotal for item in self.items.values()), Decimal("0"))

    def apply(self, event_type: str, data: dict) -> None:
        """Move the state past one event. Unknown types are ignored, so new
        event types do not break old folds."""
        if event_type == "OrderPlaced":
            self.customer_id = data["customer_id"]
            self.status = PLACED
            for raw in data["items"]:
                self._add(raw)
        elif event_type == "ItemAdded":
            self._add(data)
        elif event_type == "ItemRemoved":
            self.items.pop(data["sku"], None)
        elif event_type == "OrderPaid":
            self.status = PAID
            self.paid_amount = Decimal(data["amount"])
            self.payment_method = data["method"]
        elif event_type == "OrderShipped":
            self.status = SHIPPED
        elif event_type == "OrderCancelled":
            self.status = CANCELLED
            self.cancel_reason = data.get("reason", "")

    def _add(self, raw: dict) -> None:
        sku = raw["sku"]
        before = self.items.get(sku)
        quantity = raw["quantity"] + (before.quantity if before else 0)
        self.items[sku] = Item(sku, quantity, Decimal(raw["unit_price"]))


def _check_item(sku: str, quantity: int, unit_price: Decimal) -> dict:
    if not sku:
        raise RuleViolation("sku_required", "an item needs a sku")
    if quantity <= 0:
        raise RuleViolation(
            "quantity_not_positive", f"quantity of {sku} must be at least 1"
        )
    if unit_price < 0:
        raise RuleViolation("price_negative", f"price of {sku} cannot be negative")
    if unit_price != unit_price.quantize(CENT):
        raise RuleViolation(
            "price_precision", f"price of {sku} has more than two decimal places"
        )
    return {"sku": sku, "quantity": quantity, "unit_price": money(unit_price)}


def _check_total(total: Decimal) -> None:
    if total > MAX_TOTAL:
        raise RuleViolation(
            "total_too_large", f"an order's total cannot exceed {money(MAX_TOTAL)}"
        )


def _check_item_count(count: int) -> None:
    if count > MAX_ITEMS:
        raise RuleViolation(
            "too_many_items", f"an order holds at most {MAX_ITEMS} distinct items"
        )


def _require_open_for_items(order: Order) -> None:
    _require_exists(order)
    if order.status == SHIPPED:
        raise RuleViolation("order_shipped", "items cannot change after shipping")
    if order.status == CANCELLED:
        raise RuleViolation("order_cancelled", "the order is cancelled")
    if order.status == PAID:
        raise RuleViolation("order_paid", "items cannot change after payment")


def _require_exists(order: Order) -> None:
    # Commands on unknown orders are answered 404 before deciding; this
    # guards the pure functions when called directly.
    if not order.exists:
        raise RuleViolation("order_not_found", f"order {order.order_id} is unknown")


def decide_place(
    order: Order, customer_id: str, items: list[tuple[str, int, Decimal]]
) -> list[NewEvent]:
    if order.exists:
        raise RuleViolation("order_exists", f"order {order.order_id} exists")
    if not customer_id:
        raise RuleViolation("customer_required", "an order needs a customer")
    if not items:
        raise RuleViolation("order_empty", "an order needs at least one item")
    checked = [_check_item(*item) for item in items]
    skus = [item["sku"] for item in checked]
    if len(set(skus)) != len(skus):
        raise RuleViolation("sku_repeated", "each sku may appear once per order")
    _check_item_count(len(skus))
    _check_total(sum((quantity * price for _, quantity, price in items), Decimal(0)))
    data = {"order_id": order.order_id, "customer_id": customer_id, "items": checked}
    return [NewEvent("OrderPlaced", data)]


def decide_add_item(
    order: Order, sku: str, quantity: int, unit_price: Decimal
) -> list[NewEvent]:
    _require_open_for_items(order)
    item = _check_item(sku, quantity, unit_price)
    before = order.items.get(sku)
    if before and before.unit_price != unit_price:
        raise RuleViolation(
            "price_mismatch",
            f"{sku} is in the order at {money(before.unit_price)}; "
            "remove it first to change its price",
        )
    if sku not in order.items:
        _check_item_count(len(order.items) + 1)
    _check_total(order.total + quantity * unit_price)
    return [NewEvent("ItemAdded", item)]


def decide_remove_item(order: Order, sku: str) -> list[NewEvent]:
    _require_open_for_items(order)
    if sku not in order.items:
        raise RuleViolation("item_not_in_order", f"{sku} is not in the order")
    return [NewEvent("ItemRemoved", {"sku": sku})]


PAYMENT_METHODS = ("card", "transfer", "cash")


def decide_pay(order: Order, amount: Decimal, method: str = "card") -> list[NewEvent]:
    _require_exists(order)
    if order.status != PLACED:
        raise RuleViolation(
            "order_not_payable", f"an order that is {order.status} cannot be paid"
        )
    if not order.items:
        raise RuleViolation("order_empty", "an order without items cannot be paid")
    if amount != order.total:
        raise RuleViolation(
            "amount_mismatch",
            f"the amount must equal the total {money(order.total)}",
        )
    if method not in PAYMENT_METHODS:
        raise RuleViolation(
            "payment_method_unknown", f"{method!r} is not a payment method"
        )
    data = {"amount": money(amount), "method": method}
    return [NewEvent("OrderPaid", data, schema_version=2)]


# OrderPaid, schema 1 -> 2: payments learned their method. Payments stored
# before that record none; they read as "unknown".
@register_upcaster("OrderPaid", from_version=1)
def _order_paid_gains_a_method(data: dict) -> dict:
    return {**data, "method": "unknown"}


def decide_ship(order: Order) -> list[NewEvent]:
    _require_exists(order)
    if order.status == SHIPPED:
        raise RuleViolation("order_shipped", "the order is already shipped")
    if order.status == CANCELLED:
        raise RuleViolation("order_cancelled", "a cancelled order cannot be shipped")
    if order.status != PAID:
        raise RuleViolation(
            "order_not_paid", f"only a paid order ships; this one is {order.status}"
        )
    return [NewEvent("OrderShipped", {})]


def decide_cancel(order: Order, reason: str) -> list[NewEvent]:
    _require_exists(order)
    if order.status == SHIPPED:
        raise RuleViolation("order_shipped", "a shipped order cannot be cancelled")
    if order.status == CANCELLED:
        raise RuleViolation("order_cancelled", "the order is already cancelled")
    return [NewEvent("OrderCancelled", {"reason": reason})]
