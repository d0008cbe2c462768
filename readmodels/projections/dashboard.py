"""The ``dashboard`` projection: figures across all orders, published on
topic ``dashboard``. Runs asynchronously, in the worker, so that commands
never queue on its single row.

A batch of events changes the dashboard once: its figures after the batch
are one change on the topic, carrying the batch's last event. Readers
never see the figures between two events of a batch either; under load
the worker's batches grow, and the dashboard's changes do not.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from events.orders import ORDER_STREAM_TYPE, money
from events.records import RecordedEvent, format_time

from ..models import Dashboard, DashboardOrder
from ..serializers import API_ROOT, watch_links
from ..topics import UPSERT, CountingPublisher, Publisher
from .rows import RowCache

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
    stream_types = (ORDER_STREAM_TYPE,)
    models = (DashboardOrder, Dashboard)
    # The columns changed_topics reads from a row of each model: none.
    topic_columns = {DashboardOrder: ("order_id",), Dashboard: ("id",)}

    def apply_batch(self, events: list[RecordedEvent], publisher: Publisher) -> None:
        fold = DashboardFold(publisher, live=True)
        fold.apply_batch(events)
        fold.orders.save_changed()
        fold.dashboards.save_changed()

    def builder(self) -> DashboardFold:
        return DashboardFold(CountingPublisher(), live=False)

    def changed_topics(self, model: type, row: dict[str, Any]) -> list[str]:
        """The topics a row of ``model`` is published on: ``DashboardOrder``
        rows are the projection's own notes, seen by no watcher."""
        return [TOPIC] if model is Dashboard else []

    def topic_row(self, topic: str) -> tuple[type, int]:
        """The model and key of the row whose ``version`` is ``topic``'s."""
        return Dashboard, 1


class DashboardFold:
    """What each order event does to the dashboard's figures."""

    def __init__(self, publisher: Publisher, live: bool) -> None:
        self.publisher = publisher
        self.orders = RowCache(DashboardOrder, live)
        self.dashboards = RowCache(Dashboard, live)

    def apply_batch(self, events: list[RecordedEvent]) -> None:
        events = [e for e in events if e.stream_type == ORDER_STREAM_TYPE]
        if not events:
            return
        self.orders.preload(e.stream_id for e in events if e.type != "OrderPlaced")
        dashboard = self.dashboard()
        for event in events:
            self.apply(event, dashboard)

        dashboard.version = self.publisher.next_version(TOPIC)
        data = dashboard_representation(dashboard) if self.publisher.sends else None
        last = events[-1]
        self.publisher.publish(TOPIC, dashboard.version, UPSERT, TOPIC, data, last)

    def dashboard(self) -> Dashboard:
        return self.dashboards.get(1) or self.dashboards.add(1, Dashboard(id=1))

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
        self.orders.touch(order.order_id, order)

        counts = dashboard.by_status
        if before:
            counts[before] = counts.get(before, 0) - 1
        counts[order.status] = counts.get(order.status, 0) + 1
        dashboard.position = event.position
        dashboard.updated_at = event.recorded_at
        self.dashboards.touch(1, dashboard)

    def take_rows(self) -> dict[type, list]:
        """Rows changed since the last call, ready to write (rebuilds)."""
        return {
            DashboardOrder: self.orders.take_changed(),
            Dashboard: self.dashboards.take_changed(),
        }

    def _order(self, event: RecordedEvent) -> DashboardOrder:
        if event.type == "OrderPlaced":
            return self.orders.new(event.stream_id, order_id=event.stream_id)
        order = self.orders.get(event.stream_id)
        if order is None:
            raise LookupError(f"order {event.stream_id} is not on the dashboard")
        return order
