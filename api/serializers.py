"""Input of commands. Output is the read models' own serializers."""

from __future__ import annotations

import re
from typing import Any

from rest_framework import serializers

from events.orders import PAYMENT_METHODS
from readmodels.models import ID_MAX_LENGTH

MAX_QUANTITY = 1_000_000

# DRF turns a JSON number given for a text field into text, and a string
# or a float with no fraction given for an integer into an integer. A
# client that sends the wrong type has a bug; it hears so here instead of
# finding its value changed.


class StringOnly:
    """A field mixin that refuses anything but a JSON string."""

    default_error_messages = {"not_a_string": "give a string, not {kind}"}

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("not_a_string", kind=_json_kind(data))
        return super().to_internal_value(data)


class Text(StringOnly, serializers.CharField):
    pass


class Name(Text, serializers.RegexField):
    """A name used as a URL path segment and in topics: no slash."""

    def __init__(self, what: str, **kwargs: Any) -> None:
        messages = {"invalid": f"{what} cannot contain a slash"}
        super().__init__(
            r"^[^/]+$",
            max_length=ID_MAX_LENGTH,
            error_messages=messages,
            **kwargs,
        )


class Count(serializers.IntegerField):
    default_error_messages = {"not_an_integer": "give a whole number, not {kind}"}

    def to_internal_value(self, data: Any) -> int:
        if type(data) is not int:
            self.fail("not_an_integer", kind=_json_kind(data))
        return super().to_internal_value(data)


class Money(StringOnly, serializers.DecimalField):
    """An amount as a decimal string, never a JSON number: a number may
    already have been rounded in binary floating point on its way."""

    default_error_messages = {
        "not_a_string": 'give money as a decimal string such as "12.50", not {kind}'
    }

    def __init__(self, max_digits: int, **kwargs: Any) -> None:
        super().__init__(max_digits=max_digits, decimal_places=2, min_value=0, **kwargs)

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str) and not _DECIMAL_TEXT.fullmatch(data):
            # Decimal() also reads "1e5", " 12.50 " and other scripts' digits.
            self.fail("invalid")
        return super().to_internal_value(data)


_DECIMAL_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?", re.ASCII)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


class ItemSerializer(serializers.Serializer):
    # A sku names an item in URLs (``/items/{sku}``).
    sku = Name("a sku")
    quantity = Count(min_value=1, max_value=MAX_QUANTITY)
    unit_price = Money(max_digits=12)


class PlaceOrderSerializer(serializers.Serializer):
    # A customer id names a topic and a URL path segment.
    customer_id = Name("a customer id", required=False)
    items = ItemSerializer(many=True, allow_empty=False)


class PaySerializer(serializers.Serializer):
    amount = Money(max_digits=14)
    method = serializers.ChoiceField(choices=PAYMENT_METHODS, default="card")


class CancelSerializer(serializers.Serializer):
    reason = Text(max_length=500, allow_blank=True, default="")
