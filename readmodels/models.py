"""Read models, and the change log that publishes their changes.

``Topic`` holds each topic's version; ``Change`` is the transactional
outbox: a row per published change, written in the same transaction as the
read-model rows it describes.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import models

# The longest order or customer id; both appear in URLs and topic names.
ID_MAX_LENGTH = 100


class ExactDecimalField(models.Field):
    """A decimal number kept as its text: exact at any size, on every
    database. For sums that grow without bound: a DecimalField is a float
    on SQLite (15 significant digits) and overflows its digits on
    PostgreSQL."""

    description = "A decimal number kept as text"

    def db_type(self, connection: Any) -> str:
        return "text"

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        return None if value is None else Decimal(value)

    def to_python(self, value: Any) -> Decimal | None:
        return None if value is None else Decimal(value)

    def get_prep_value(self, value: Any) -> str | None:
        value = super().get_prep_value(value)
        return None if value is None else format(Decimal(value), "f")


class Topic(models.Model):
    """A watchable name and its version: 0, then +1 per change."""

    name = models.CharField(max_length=200, primary_key=True)
    version = models.PositiveBigIntegerField(default=0)

    class Meta:
        db_table = "readmodels_topic"

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


class Change(models.Model):
    """One published change of a topic. ``message`` is the change message
    as sent on every transport, encoded once when the change is made."""

    topic = models.CharField(max_length=200)
    version = models.PositiveBigIntegerField()
    position = models.BigIntegerField()
    message = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "readmodels_change"
        constraints = [
            models.UniqueConstraint(
                fields=["topic", "version"], name="readmodels_change_topic_version"
            )
        ]
        indexes = [
            models.Index(
                fields=["sent_at", "id"],
                name="readmodels_change_unsent",
                condition=models.Q(sent_at__isnull=True),
            )
        ]

    def __str__(self) -> str:
        return f"{self.topic}@{self.version}"


class OrderView(models.Model):
    """One order as clients read it. ``version`` is topic ``orders/{id}``."""

    order_id = models.CharField(max_length=ID_MAX_LENGTH, primary_key=True)
    customer_id = models.CharField(max_length=ID_MAX_LENGTH, db_index=True)
    status = models.CharField(max_length=20, db_index=True)
    items = models.JSONField(default=list)
    total = models.DecimalField(max_digits=14, decimal_places=2)
    paid_amount = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True
    )
    cancel_reason = models.CharField(max_length=500, blank=True)
    payment_method = models.CharField(max_length=20, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    version = models.PositiveBigIntegerField(default=0)
    stream_version = models.PositiveIntegerField(default=0)
    # Position of the OrderPlaced event: unique and rising, so it gives
    # lists a stable order that new orders never shuffle.
    placed_position = models.BigIntegerField(unique=True)
    last_position = models.BigIntegerField()

    class Meta:
        db_table = "readmodels_order"
        indexes = [
            models.Index(
                fields=["customer_id", "-placed_position"],
                name="readmodels_order_customer",
            )
        ]

    def __str__(self) -> str:
        return f"order {self.order_id}@{self.version}"


class CustomerOrders(models.Model):
    """One customer's order list; the orders themselves are ``OrderView``
    rows. ``version`` is topic ``customers/{id}/orders``."""

    customer_id = models.CharField(max_length=ID_MAX_LENGTH, primary_key=True)
    order_count = models.PositiveIntegerField(default=0)
    version = models.PositiveBigIntegerField(default=0)

    class Meta:
        db_table = "readmodels_customer_orders"

    def __str__(self) -> str:
        return f"customer {self.customer_id}@{self.version}"


class Checkpoint(models.Model):
    """How far an asynchronous projection has applied the store, and which
    worker may move it on.

    ``position`` is saved in the same transaction as the projection's rows,
    so a crash loses both or neither. ``owner`` holds the projection while
    ``lease_until`` lies ahead; another worker takes over once it passes.
    """

    RUNNING = "running"
    FAILED = "failed"

    name = models.CharField(max_length=100, primary_key=True)
    position = models.BigIntegerField(default=0)
    owner = models.CharField(max_length=200, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    state = models.CharField(max_length=20, default=RUNNING)
    last_error = models.TextField(blank=True)
    failed_position = models.BigIntegerField(null=True, blank=True)
    skipped_positions = models.JSONField(default=list)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "readmodels_checkpoint"

    def __str__(self) -> str:
        return f"{self.name}@{self.position} ({self.state})"


class DashboardOrder(models.Model):
    """What the dashboard projection remembers of each order: enough to
    move its figures when the order's status changes."""

    order_id = models.CharField(max_length=ID_MAX_LENGTH, primary_key=True)
    status = models.CharField(max_length=20)
    item_count = models.PositiveIntegerField(default=0)
    paid_amount = models.DecimalField(max_digits=14, decimal_places=2, null=True)

    class Meta:
        db_table = "readmodels_dashboard_order"

    def __str__(self) -> str:
        return f"order {self.order_id} ({self.status})"


class Dashboard(models.Model):
    """Figures across all orders; a single row. ``version`` is topic
    ``dashboard``."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    order_count = models.PositiveIntegerField(default=0)
    by_status = models.JSONField(default=dict)
    # The sum of every paid order: exact however large it grows.
    revenue = ExactDecimalField(default=Decimal("0.00"))
    version = models.PositiveBigIntegerField(default=0)
    position = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(null=True)

    class Meta:
        db_table = "readmodels_dashboard"

    def __str__(self) -> str:
        return f"dashboard@{self.version}"
