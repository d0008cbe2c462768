"""The rows a projection's fold reads and changes.

A fold works on model instances held here. Live, the rows come from the
database, loaded once per batch, and the changed ones are saved when the
batch is done. In a rebuild every row lives in memory from the first
event on, and the changed ones are handed to the rebuild to write into
its new tables.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import models
from django.db.models.base import ModelState

__all__ = ["RowCache"]


class RowCache:
    def __init__(self, model: type[models.Model], live: bool) -> None:
        self.model = model
        self.live = live
        self.rows: dict[Any, models.Model] = {}
        self.changed: dict[Any, models.Model] = {}
        fields = model._meta.concrete_fields
        self._attnames = {f.attname for f in fields}
        self._defaults = {
            f.attname: f.get_default()
            for f in fields
            if not (f.has_default() and callable(f.default))
        }
        self._made_defaults = [
            (f.attname, f.default)
            for f in fields
            if f.has_default() and callable(f.default)
        ]

    def preload(self, keys: Iterable[Any]) -> None:
        """Load the live rows for ``keys`` in one query."""
        if not self.live:
            return
        wanted = [key for key in set(keys) if key not in self.rows]
        if wanted:
            self.rows.update(self.model.objects.in_bulk(wanted))

    def get(self, key: Any) -> models.Model | None:
        row = self.rows.get(key)
        if row is None and self.live:
            row = self.model.objects.filter(pk=key).first()
            if row is not None:
                self.rows[key] = row
        return row

    def add(self, key: Any, row: models.Model) -> models.Model:
        self.rows[key] = row
        self.changed[key] = row
        return row

    def new(self, key: Any, **values: Any) -> models.Model:
        """Add a new row with ``values`` (by attribute name) and defaults
        for the rest. Equal to ``model(**values)``, several times quicker:
        a rebuild makes one per order, and the model's constructor would
        check each field and send signals that read models do not use."""
        unknown = values.keys() - self._attnames
        if unknown:
            raise TypeError(f"{self.model.__name__} has no field {sorted(unknown)}")
        row = self.model.__new__(self.model)
        state = row.__dict__
        state.update(self._defaults)
        for name, make in self._made_defaults:
            state[name] = make()
        state.update(values)
        row._state = ModelState()
        return self.add(key, row)

    def touch(self, key: Any, row: models.Model) -> None:
        self.changed[key] = row

    def take_changed(self) -> list[models.Model]:
        """The rows changed since the last call, now counted as written."""
        rows = list(self.changed.values())
        self.changed.clear()
        return rows

    def save_changed(self) -> None:
        """Write the changed rows to the live table: one upsert for new and
        changed rows alike."""
        if self.changed:
            meta = self.model._meta
            self.model.objects.bulk_create(
                list(self.changed.values()),
                update_conflicts=True,
                unique_fields=[meta.pk.name],
                update_fields=[
                    field.name
                    for field in meta.concrete_fields
                    if not field.primary_key
                ],
            )
        self.changed.clear()
