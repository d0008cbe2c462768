"""The ``orders`` projection: one ``OrderView`` row per order and one
``CustomerOrders`` row per customer, published on topics ``orders/{id}``
and ``customers/{id}/orders``.

It folds events with the write side's own ``Order.apply``, so the read
model cannot disagree with the rules about what an event means.
"""

from __future__ import annotations

from decimal import Decimal

from events.orders import ORDER_STREAM_TYPE, Item, Order, money
from events.records import RecordedEvent

from ..models import CustomerOrders, OrderView
from ..serializers import order_representation
from ..topics import UPSERT, Publisher, customer_orders_topic, order_topic


class OrdersProjection:
    name = "orders"
    models = (OrderView, CustomerOrders)

    def apply_batch(self, events: list[RecordedEvent], publisher: Publisher) -> None:
        for event in events:
            if event.stream_type == ORDER_STREAM_TYPE:
                self.apply(event, publisher)

    def apply(self, event: RecordedEvent, publisher: Publisher) -> None:
        row = self._load(event)
        order = _order_from_row(row)
        order.apply(event.type, event.data)
        _copy_order_to_row(order, row, event)

        # The order's own topic.
        topic = order_topic(row.order_id)
        row.version = publisher.next_version(topic)
        row.save(force_insert=row._state.adding)
        data = order_representation(row) if publisher.sends else None
        publisher.publish(topic, row.version, UPSERT, row.order_id, data, event)

        # The customer's list: one entry changed.
        customer = self._customer(row.customer_id, event)
        topic = customer_orders_topic(customer.customer_id)
        customer.version = publisher.next_version(topic)
        customer.save()
        publisher.publish(topic, customer.version, UPSERT, row.order_id, data, event)

    def _load(self, event: RecordedEvent) -> OrderView:
        if event.type == "OrderPlaced":
            return OrderView(
                order_id=event.stream_id,
                customer_id=event.data["customer_id"],
                created_at=event.recorded_at,
                placed_position=event.position,
                version=0,
                total=Decimal("0"),
                items=[],
            )
        return OrderView.objects.get(order_id=event.stream_id)

    def _customer(self, customer_id: str, event: RecordedEvent) -> CustomerOrders:
        customer, _ = CustomerOrders.objects.get_or_create(customer_id=customer_id)
        if event.type == "OrderPlaced":
            customer.order_count += 1
        return customer


def _order_from_row(row: OrderView) -> Order:
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


def _copy_order_to_row(order: Order, row: OrderView, event: RecordedEvent) -> None:
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
    row.updated_at = event.recorded_at
    row.stream_version = event.stream_version
    row.last_position = event.position
