"""Tunables of the read side, read from ``settings.READMODELS`` when used."""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Run the projection worker in a thread of the server process.
    "WORKER_IN_SERVER": True,
    # Change history kept per topic, for watchers that resume: a change is
    # trimmed once it is this many versions behind its topic, or this old.
    "CHANGE_RETENTION_VERSIONS": 10_000,
    "CHANGE_RETENTION_SECS": 7 * 24 * 3600,
    # How often the worker trims.
    "TRIM_EVERY_SECS": 60.0,
}


def get(name: str) -> Any:
    return getattr(settings, "READMODELS", {}).get(name, DEFAULTS[name])
