"""Tunables of the read side, read from ``settings.READMODELS`` when used."""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Run the projection worker in a thread of the server process.
    "WORKER_IN_SERVER": True,
}


def get(name: str) -> Any:
    return getattr(settings, "READMODELS", {}).get(name, DEFAULTS[name])
