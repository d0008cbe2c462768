"""The ``orders`` projection: one ``OrderView`` row per order and one
``CustomerOrders`` row per customer, published on topics ``orders/{id}``
and ``customers/{id}/orders``.

It folds events with the write side's own ``Order.apply``, so the read
model cannot disagree with the rules about what an event means. The same
fold serves live batches (rows from the database) and rebuilds (rows in
memory, see ``readmodels.rebuild``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from events.orders import ORDER_STREAM_TYPE, Item, Order, money
from events.records import RecordedEvent

from ..models import CustomerOrders, OrderView
from ..serializers import order_representation
from ..topics import (
    UPSERT,
    CountingPublisher,
    Publisher,
    customer_orders_topic,
    order_topic,
)
from .rows import RowCache

ORDER_PREFIX = order_topic("")
CUSTOMER_PREFIX, CUSTOMER_SUFFIX = customer_orders_topic("\0").split("\0")


class OrdersProjection:
    name = "orders"
    stream_types = (ORDER_STREAM_TYPE,)
    models = (OrderView, CustomerOrders)
    # The columns changed_topics reads from a row of each model.
    topic_columns = {
        OrderView: ("order_id", "customer_id"),
        CustomerOrders: ("customer_id",),
    }

    def apply_batch(self, events: list[RecordedEvent], publisher: Publisher) -> None:
        fold = OrdersFold(publisher, live=True)
        fold.apply_batch(events)
        fold.save()

    def builder(self) -> OrdersFold:
        return OrdersFold(CountingPublisher(), live=False)

    def changed_topics(self, model: type, row: dict[str, Any]) -> list[str]:
        """The topics a row of ``model`` is published on."""
        if model is OrderView:
            return [
                order_topic(row["order_id"]),
                customer_orders_topic(row["customer_id"]),
            ]
        return [customer_orders_topic(row["customer_id"])]

    def topic_row(self, topic: str) -> tuple[type, str]:
        """The model and key of the row whose ``version`` is ``topic``'s."""
        if topic.startswith(ORDER_PREFIX):
            return OrderView, topic.removeprefix(ORDER_PREFIX)
        key = topic.removeprefix(CUSTOMER_PREFIX).removesuffix(CUSTOMER_SUFFIX)
        return CustomerOrders, key


class OrdersFold:
    """What each order event does to the orders read model."""

    def __init__(self, publisher: Publisher, live: bool) -> None:
        self.publisher = publisher
        self.orders = RowCache(OrderView, live)
        self.customers = RowCache(CustomerOrders, live)
        # The domain state of each order row held, so a long batch or a
        # rebuild folds each order without parsing its row again.
        self.states: dict[str, Order] = {}

    def apply_batch(self, events: list[RecordedEvent]) -> None:
        events = [e for e in events if e.stream_type == ORDER_STREAM_TYPE]
        if self.orders.live:
            self._preload(events)
        for event in events:
            self.apply(event)

    def _preload(self, events: list[RecordedEvent]) -> None:
        """Read the rows and lock the topics that ``events`` touch, one
        query for each kind."""
        self.orders.preload(e.stream_id for e in events if e.type != "OrderPlaced")
        customer_of = {
            e.stream_id: e.data["customer_id"]
            for e in events
            if e.type == "OrderPlaced"
        }
        for event in events:
            row = self.orders.rows.get(event.stream_id)
            if row is not None:
                customer_of.setdefault(event.stream_id, row.customer_id)
        customers = set(customer_of.values())
        self.customers.preload(customers)
        self.publisher.lock_topics(
            [order_topic(order_id) for order_id in customer_of]
            + [customer_orders_topic(customer) for customer in customers]
        )

    def apply(self, event: RecordedEvent) -> None:
        row, order = self._order(event)
        order.apply(event.type, event.data)
        order.version = event.stream_version
        row.updated_at = event.recorded_at
        row.stream_version = event.stream_version
        row.last_position = event.position
        self.orders.touch(row.order_id, row)

        customer = self._customer(order.customer_id)
        if event.type == "OrderPlaced":
            customer.order_count += 1
        self.customers.touch(customer.customer_id, customer)

        # One change on the order's topic, one on its customer's list.
        publisher = self.publisher
        topic = order_topic(row.order_id)
        row.version = publisher.next_version(topic)
        data = None
        if publisher.sends:
            copy_state_to_row(order, row)
            data = order_representation(row)
        publisher.publish(topic, row.version, UPSERT, row.order_id, data, event)

        topic = customer_orders_topic(customer.customer_id)
        customer.version = publisher.next_version(topic)
        publisher.publish(topic, customer.version, UPSERT, row.order_id, data, event)

    def save(self) -> None:
        """Write the changed rows to the live tables."""
        self._copy_changed_states()
        self.orders.save_changed()
        self.customers.save_changed()

    def take_rows(self) -> dict[type, list]:
        """Rows changed since the last call, ready to write (rebuilds)."""
        self._copy_changed_states()
        return {
            OrderView: self.orders.take_changed(),
            CustomerOrders: self.customers.take_changed(),
        }

    def _copy_changed_states(self) -> None:
        for order_id, row in self.orders.changed.items():
            copy_state_to_row(self.states[order_id], row)

    def _order(self, event: RecordedEvent) -> tuple[OrderView, Order]:
        order_id = event.stream_id
        if event.type == "OrderPlaced":
            row = self.orders.new(
                order_id,
                order_id=order_id,
                customer_id=event.data["customer_id"],
                created_at=event.recorded_at,
                placed_position=event.position,
                version=0,
                total=Decimal("0"),
                items=[],
            )
            order = self.states[order_id] = Order(order_id)
            return row, order

        row = self.orders.get(order_id)
        if row is None:
            raise LookupError(f"order {order_id} has no row to apply an event to")
        order = self.states.get(order_id)
        if order is None:
            order = self.states[order_id] = order_from_row(row)
        return row, order

    def _customer(self, customer_id: str) -> CustomerOrders:
        customer = self.customers.get(customer_id)
        if customer is None:
            customer = self.customers.new(customer_id, customer_id=customer_id)
        return customer


def order_from_row(row: OrderView) -> Order:
    items = {
        raw["sku"]: Item(raw["sku"], raw["quantity"], Decimal(raw["unit_price"]))
        for raw in row.items
    }
    return Order(
        order_id=row.order_id,
        customer_id=row.customer_id,
        status=row.status,
        items=items,
        paid_amount=row.paid_amount,
        cancel_reason=row.cancel_reason,
        payment_method=row.payment_method,
        version=row.stream_version,
    )


def copy_state_to_row(order: Order, row: OrderView) -> None:
    row.customer_id = order.customer_id
    row.status = order.status
    row.items = [
        {
            "sku": item.sku,
            "quantity": item.quantity,
            "unit_price": money(item.unit_price),
            "subtotal": money(item.subtotal),
        }
        for item in order.items.values()
    ]
    row.total = order.total
    row.paid_amount = order.paid_amount
    row.cancel_reason = order.cancel_reason
    row.payment_method = order.payment_method
