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
    # A stream's state is snapshotted every this many events, so a command
    # on a long stream reads at most this many events past the snapshot.
    # 0 turns snapshots off.
    "SNAPSHOT_EVERY": 200,
}


def get(name: str) -> Any:
    return getattr(settings, "EVENTS", {}).get(name, DEFAULTS[name])
