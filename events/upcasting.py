"""Upcasters turn the stored shape of an old event into the current one.

Stored rows are never rewritten: the change happens on read, so old events
replay into new code. An upcaster takes an event of ``(type,
schema_version)`` and returns it one schema version newer.
"""

from __future__ import annotations

from collections.abc import Callable

from .records import RecordedEvent

__all__ = ["register_upcaster", "upcast"]

Upcaster = Callable[[dict], dict]
_upcasters: dict[tuple[str, int], Upcaster] = {}


def register_upcaster(event_type: str, from_version: int) -> Callable:
    """Decorate a function that maps ``data`` from ``from_version`` to the
    next schema version."""

    def register(function: Upcaster) -> Upcaster:
        _upcasters[(event_type, from_version)] = function
        return function

    return register


def upcast(event: RecordedEvent) -> RecordedEvent:
    version = event.schema_version
    data = event.data
    while (event.type, version) in _upcasters:
        data = _upcasters[(event.type, version)](data)
        version += 1
    if version == event.schema_version:
        return event
    metadata = {**event.metadata, "schema_version": version}
    return event._replace(data=data, metadata=metadata)
