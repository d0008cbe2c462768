"""The rebuild's quick ways to make rows and to prepare their values must
give exactly what Django's own would: a rebuilt row that differed from the
live one only in how a value was written would reset its topic's
watchers for nothing."""

from __future__ import annotations

import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.db import connection, models

from readmodels.columns import preparer
from readmodels.models import CustomerOrders, Dashboard, DashboardOrder, OrderView
from readmodels.projections.rows import RowCache

UTC = datetime.UTC
PARIS = ZoneInfo("Europe/Paris")
ITEMS = [{"sku": "cake", "quantity": 3, "unit_price": "1.10", "subtotal": "3.30"}]

# Values of every kind read models hold, including the unusual ones the
# quick paths hand back to Django.
SAMPLES = {
    "DecimalField": [Decimal("12.50"), Decimal("0"), None, "3.3", 7],
    "ExactDecimalField": [Decimal("149999999999998.50"), Decimal("0.00"), "3.3"],
    "DateTimeField": [
        datetime.datetime(2026, 12, 4, 15, 0, 1, 250000, tzinfo=UTC),
        datetime.datetime(2026, 12, 4, 16, 0, 0, tzinfo=PARIS),
        datetime.datetime(2026, 1, 1, tzinfo=UTC),
        None,
    ],
    "JSONField": [ITEMS, [], {"paid": 2, "placed": 1}, {}, None, "text", 5],
    "CharField": ["o-1", ""],
    "PositiveBigIntegerField": [0, 2**40],
    "BigIntegerField": [-1, 7],
    "PositiveIntegerField": [3],
    "PositiveSmallIntegerField": [1],
    "AutoField": [1],
    "BigAutoField": [1],
}


def comparable(value):
    # psycopg's Jsonb wrapper has no equality of its own.
    return getattr(value, "obj", value)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "model", [OrderView, CustomerOrders, DashboardOrder, Dashboard], ids=str
)
def test_prepared_values_equal_djangos(model: type[models.Model]):
    checked = 0
    for field in model._meta.concrete_fields:
        prepare = preparer(field, connection)
        for value in SAMPLES[field.get_internal_type()]:
            expected = field.get_db_prep_save(value, connection)
            assert comparable(prepare(value)) == comparable(expected), (field, value)
            checked += 1
    assert checked >= len(model._meta.concrete_fields)


def test_a_new_row_equals_one_made_by_the_model():
    cache = RowCache(OrderView, live=False)
    values = {
        "order_id": "o-1",
        "customer_id": "c-1",
        "created_at": datetime.datetime(2026, 12, 4, tzinfo=UTC),
        "placed_position": 9,
        "total": Decimal("0"),
    }

    row = cache.new("o-1", **values)
    other = cache.new("o-2", **{**values, "order_id": "o-2"})

    made = OrderView(**values)
    for field in OrderView._meta.concrete_fields:
        assert getattr(row, field.attname) == getattr(made, field.attname), field
    assert row._state.adding and row._state.db is None
    assert cache.rows["o-1"] is row and cache.changed["o-1"] is row
    # A default made by a callable is made afresh for every row.
    assert row.items == [] and row.items is not other.items


def test_a_new_row_refuses_a_field_the_model_lacks():
    with pytest.raises(TypeError, match="totl"):
        RowCache(OrderView, live=False).new("o-1", order_id="o-1", totl=1)


@pytest.mark.django_db
def test_a_new_row_saves_like_any_other():
    cache = RowCache(CustomerOrders, live=True)
    cache.new("c-1", customer_id="c-1", order_count=2, version=5)

    cache.save_changed()

    saved = CustomerOrders.objects.get(customer_id="c-1")
    assert (saved.order_count, saved.version) == (2, 5)
