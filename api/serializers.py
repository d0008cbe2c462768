"""Input of commands. Output is the read models' own serializers."""

from __future__ import annotations

from rest_framework import serializers

from events.orders import PAYMENT_METHODS

MAX_QUANTITY = 1_000_000


class ItemSerializer(serializers.Serializer):
    # A sku names an item in URLs (``/items/{sku}``), so it holds no slash.
    sku = serializers.RegexField(
        r"^[^/]+$",
        max_length=100,
        error_messages={"invalid": "a sku cannot contain a slash"},
    )
    quantity = serializers.IntegerField(min_value=1, max_value=MAX_QUANTITY)
    unit_price = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=0)


class PlaceOrderSerializer(serializers.Serializer):
    # A customer id names a topic and a URL path segment: no slash.
    customer_id = serializers.RegexField(
        r"^[^/]+$",
        max_length=100,
        required=False,
        error_messages={"invalid": "a customer id cannot contain a slash"},
    )
    items = ItemSerializer(many=True, allow_empty=False)


class PaySerializer(serializers.Serializer):
    amount = serializers.DecimalField(max_digits=14, decimal_places=2, min_value=0)
    method = serializers.ChoiceField(choices=PAYMENT_METHODS, default="card")


class CancelSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500, allow_blank=True, default="")
