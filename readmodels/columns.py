"""Turning read-model field values into what the database driver stores.

A rebuild writes every row of a projection, so each column's value goes
through here hundreds of thousands of times. Django's
``Field.get_db_prep_save`` is the reference; for the kinds of field read
models use most there is a quicker function that gives the same value
(tests/readmodels/test_columns.py holds them to it), and every other
kind, or an unusual value, goes to Django's.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper

__all__ = ["preparer"]

Prepare = Callable[[Any], Any]

# Fields whose Python value is what every backend stores.
STORED_AS_IS = {
    "BigIntegerField",
    "BooleanField",
    "CharField",
    "IntegerField",
    "PositiveBigIntegerField",
    "PositiveIntegerField",
    "PositiveSmallIntegerField",
    "SmallIntegerField",
    "TextField",
}


def preparer(field: models.Field, database: BaseDatabaseWrapper) -> Prepare:
    """The function that prepares ``field``'s values for ``database``."""
    kind = field.get_internal_type()

    def django(value: Any) -> Any:
        return field.get_db_prep_save(value, database)

    if kind in STORED_AS_IS:
        return _as_is
    if kind == "DecimalField":
        return _decimal(django)
    if kind == "DateTimeField" and database.vendor == "sqlite" and settings.USE_TZ:
        return _naive_text(database.timezone, django)
    if kind == "JSONField":
        return _json(database, field.encoder, django)
    return django


def _as_is(value: Any) -> Any:
    return value


def _decimal(django: Prepare) -> Prepare:
    # Both drivers adapt a Decimal themselves (Django registers ``str``
    # for it with sqlite3); the field would only copy it first.
    def prepare(value: Any) -> Any:
        if value is None or type(value) is Decimal:
            return value
        return django(value)

    return prepare


def _naive_text(zone: datetime.tzinfo, django: Prepare) -> Prepare:
    # SQLite keeps times as naive text in the connection's time zone.
    def prepare(value: Any) -> Any:
        if type(value) is datetime.datetime and value.tzinfo is not None:
            return str(value.astimezone(zone).replace(tzinfo=None))
        return django(value)

    return prepare


def _json(database: BaseDatabaseWrapper, encoder: Any, django: Prepare) -> Prepare:
    adapt = database.ops.adapt_json_value

    def prepare(value: Any) -> Any:
        if type(value) is dict or type(value) is list:
            return adapt(value, encoder)
        # None (SQL NULL), scalars and expressions: as the field does it.
        return django(value)

    return prepare
