"""A real server for the watch tests: daphne in a subprocess, on a free
port, over the test database."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_env(**extra: str) -> dict[str, str]:
    """The environment that points a server at the test database."""
    env = {**os.environ, "LOOKOUT_WORKER_IN_SERVER": "1", **extra}
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        env["LOOKOUT_SQLITE_PATH"] = str(db["NAME"])
    else:
        user = db.get("USER") or "postgres"
        env["DATABASE_URL"] = (
            f"postgres://{user}@{db.get('HOST') or '127.0.0.1'}:"
            f"{db.get('PORT') or 5432}/{db['NAME']}"
        )
    return env


@pytest.fixture
def server(transactional_db, tmp_path) -> Iterator[str]:
    """Base URL of a daphne serving Lookout on the test database."""
    port = free_port()
    log = open(tmp_path / "daphne.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
        + ["project.asgi:application"],
        cwd=ROOT,
        env=server_env(LOOKOUT_HEARTBEAT_SECS="0.5", LOOKOUT_WATCH_PAGE_LOGIN="1"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/api/v1/schema/", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    else:
        process.kill()
        raise RuntimeError((tmp_path / "daphne.log").read_text())
    yield url
    process.terminate()
    process.wait(10)
    log.close()


async def sse_events(response: httpx.Response) -> AsyncIterator[dict]:
    """Parse a text/event-stream body into dicts of its fields; comment
    lines come as ``{"comment": text}``."""
    fields: dict = {}
    async for line in response.aiter_lines():
        if line == "":
            if fields:
                if "data" in fields:
                    fields["json"] = json.loads(fields["data"])
                yield fields
            fields = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
