"""Snapshots of long streams: the state at a version, saved in the
command's own transaction every ``SNAPSHOT_EVERY`` events."""

from __future__ import annotations

from typing import Any

from . import conf
from .models import Snapshot

__all__ = ["load_snapshot", "save_snapshot_if_due"]


def load_snapshot(stream_id: str, schema: int) -> tuple[int, dict[str, Any]] | None:
    """``(version, state)`` of the stream's snapshot in ``schema``, if any."""
    found = (
        Snapshot.objects.filter(stream_id=stream_id, schema=schema)
        .values_list("version", "state")
        .first()
    )
    return found


def save_snapshot_if_due(
    stream_id: str,
    stream_type: str,
    snapshot_version: int,
    version: int,
    schema: int,
    state: dict[str, Any],
) -> bool:
    """Save ``state`` at ``version`` when it is ``SNAPSHOT_EVERY`` or more
    events past the last snapshot (``snapshot_version``, 0 for none)."""
    every = conf.get("SNAPSHOT_EVERY")
    if not every or version - snapshot_version < every:
        return False
    Snapshot.objects.update_or_create(
        stream_id=stream_id,
        defaults={
            "stream_type": stream_type,
            "version": version,
            "schema": schema,
            "state": state,
        },
    )
    return True
