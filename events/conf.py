"""Tunables of the event store, read from ``settings.EVENTS`` when used."""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Events read per query when loading a stream: bounds memory for long
    # streams while keeping round trips few for short ones.
    "READ_BATCH_SIZE": 1000,
    # A command that lost a race without If-Match is decided again on the
    # new state this many times before it is answered 409.
    "COMMAND_RETRIES": 5,
}


def get(name: str) -> Any:
    return getattr(settings, "EVENTS", {}).get(name, DEFAULTS[name])
