"""Who may read, command and watch what.

Staff see everything. A customer user sees only its own orders and its own
customer topic. Everyone else sees nothing.
"""

from __future__ import annotations

from typing import Any

from readmodels.models import OrderView

__all__ = ["Access", "customer_id_of", "order_customer_id"]

STAFF_ONLY_TOPICS = frozenset({"dashboard", "events"})


def customer_id_of(user: Any) -> str | None:
    """The customer a user acts for, or None (staff, or no account)."""
    if not getattr(user, "is_authenticated", False):
        return None
    account = getattr(user, "customer", None)
    return account.customer_id if account else None


def order_customer_id(order_id: str) -> str | None:
    found = OrderView.objects.filter(order_id=order_id).values_list(
        "customer_id", flat=True
    )
    return next(iter(found), None)


class Access:
    """What one user may do. Build it once per request or connection."""

    def __init__(self, user: Any) -> None:
        self.user = user
        self.active = bool(getattr(user, "is_active", False))
        self.authenticated = bool(getattr(user, "is_authenticated", False))
        self.staff = self.authenticated and self.active and bool(user.is_staff)
        self.customer_id = customer_id_of(user) if self.active else None

    def may_act_for(self, customer_id: str) -> bool:
        return self.staff or (
            self.customer_id is not None and self.customer_id == customer_id
        )

    def may_read_order(self, order_customer: str | None) -> bool:
        return order_customer is not None and self.may_act_for(order_customer)

    def may_watch(self, topic: str) -> bool:
        """Whether the user may read ``topic``. Hits the database for
        order topics."""
        if self.staff:
            return True
        if self.customer_id is None or topic in STAFF_ONLY_TOPICS:
            return False
        parts = topic.split("/")
        if len(parts) == 3 and parts[0] == "customers" and parts[2] == "orders":
            return parts[1] == self.customer_id
        if len(parts) == 2 and parts[0] == "orders":
            return self.may_read_order(order_customer_id(parts[1]))
        return False
