"""Representations of read models: one serializer per model, used by REST
and by change messages alike, so both carry the same bytes for a value."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from rest_framework import serializers

from .models import OrderView
from .topics import customer_orders_topic, order_topic

API_ROOT = "/api/v1"


def segment(name: str) -> str:
    """An id as one URL path segment: ``?``, ``#``, ``%`` and the like
    percent-encoded, so that a link leads to the resource it names."""
    return quote(name, safe="")


def watch_links(resource_path: str, topic: str) -> dict[str, Any]:
    return {
        "self": {"href": resource_path},
        "watch": {"href": f"{resource_path}/watch", "topic": topic},
    }


class OrderViewSerializer(serializers.Serializer):
    # A plain Serializer, not a ModelSerializer: it is built for every
    # change, and declaring the fields spares the model introspection.
    id = serializers.CharField(source="order_id")
    customer_id = serializers.CharField()
    status = serializers.CharField()
    items = serializers.JSONField()
    total = serializers.DecimalField(max_digits=14, decimal_places=2)
    paid_amount = serializers.DecimalField(
        max_digits=14, decimal_places=2, allow_null=True
    )
    cancel_reason = serializers.CharField()
    payment_method = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    version = serializers.IntegerField()
    stream_version = serializers.IntegerField()
    _links = serializers.SerializerMethodField()

    def get__links(self, order: OrderView) -> dict[str, Any]:
        links = watch_links(
            f"{API_ROOT}/orders/{segment(order.order_id)}", order_topic(order.order_id)
        )
        customer_path = f"{API_ROOT}/customers/{segment(order.customer_id)}/orders"
        links["customer_orders"] = {"href": customer_path}
        return links


def order_representation(order: OrderView) -> dict[str, Any]:
    return dict(OrderViewSerializer(order).data)


def customer_orders_links(customer_id: str) -> dict[str, Any]:
    path = f"{API_ROOT}/customers/{segment(customer_id)}/orders"
    return watch_links(path, customer_orders_topic(customer_id))
