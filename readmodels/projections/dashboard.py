"""The ``dashboard`` projection: figures across all orders, published on
topic ``dashboard``. Runs asynchronously, in the worker, so that commands
never queue on its single row."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from events.orders import ORDER_STREAM_TYPE, money
from events.records import RecordedEvent, format_time

from ..models import Dashboard, DashboardOrder
from ..serializers import API_ROOT, watch_links
from ..topics import UPSERT, Publisher

TOPIC = "dashboard"
STATUSES = ("placed", "paid", "shipped", "cancelled")

_STATUS_AFTER = {
    "OrderPlaced": "placed",
    "OrderPaid": "paid",
    "OrderShipped": "shipped",
    "OrderCancelled": "cancelled",
}


def dashboard_representation(dashboard: Dashboard) -> dict[str, Any]:
    by_status = {status: dashboard.by_status.get(status, 0) for status in STATUSES}
    return {
        "order_count": dashboard.order_count,
        "by_status": by_status,
        "revenue": money(dashboard.revenue),
        "position": dashboard.position,
        "updated_at": format_time(dashboard.updated_at)
        if dashboard.updated_at
        else None,
        "version": dashboard.version,
        "_links": watch_links(f"{API_ROOT}/dashboard", TOPIC),
    }


class DashboardProjection:
    name = "dashboard"
    models = (DashboardOrder, Dashboard)

    def apply_batch(self, events: list[RecordedEvent], publisher: Publisher) -> None:
        orders = [e for e in events if e.stream_type == ORDER_STREAM_TYPE]
        if not orders:
            return
        dashboard, _ = Dashboard.objects.get_or_create(id=1)
        for event in orders:
            self.apply(event, dashboard)
            dashboard.version = publisher.next_version(TOPIC)
            data = dashboard_representation(dashboard) if publisher.sends else None
            publisher.publish(TOPIC, dashboard.version, UPSERT, TOPIC, data, event)
        dashboard.save()

    def apply(self, event: RecordedEvent, dashboard: Dashboard) -> None:
        order = self._order(event)
        before = order.status
        if event.type in _STATUS_AFTER:
            order.status = _STATUS_AFTER[event.type]
        if event.type == "OrderPlaced":
            dashboard.order_count += 1
            order.item_count = sum(item["quantity"] for item in event.data["items"])
        elif event.type == "OrderPaid":
            order.paid_amount = Decimal(event.data["amount"])
            dashboard.revenue += order.paid_amount
        elif event.type == "OrderCancelled" and order.paid_amount is not None:
            # Cancelling a paid order refunds it.
            dashboard.revenue -= order.paid_amount
            order.paid_amount = None
        order.save()

        counts = dict(dashboard.by_status)
        if before:
            counts[before] = counts.get(before, 0) - 1
        counts[order.status] = counts.get(order.status, 0) + 1
        dashboard.by_status = counts
        dashboard.position = event.position
        dashboard.updated_at = event.recorded_at

    def _order(self, event: RecordedEvent) -> DashboardOrder:
        if event.type == "OrderPlaced":
            return DashboardOrder(order_id=event.stream_id, status="")
        return DashboardOrder.objects.get(order_id=event.stream_id)
