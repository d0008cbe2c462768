"""A real server for the watch tests: daphne in a subprocess, on a free
port, over the test database; one that a test can stop with SIGTERM and
start again on the same port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
SERVER_START_SECS = 20


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_env(**extra: str) -> dict[str, str]:
    """The environment that points a server at the test database. A test
    server drains within a second when stopped."""
    env = {
        **os.environ,
        "LOOKOUT_WORKER_IN_SERVER": "1",
        "LOOKOUT_DRAIN_SECS": "1",
        **extra,
    }
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


class ServerProcess:
    """A daphne on the test database, on a port of its own that it keeps
    across restarts."""

    def __init__(self, log_path: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        defaults = {"LOOKOUT_HEARTBEAT_SECS": "0.5", "LOOKOUT_WATCH_PAGE_LOGIN": "1"}
        self.env = server_env(**{**defaults, **env})
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start, and return once the server answers."""
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", "127.0.0.1"]
                + ["-p", str(self.port), "project.asgi:application"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + SERVER_START_SECS
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                httpx.get(f"{self.url}/api/v1/schema/", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        self.process.kill()
        self.process.wait()
        raise RuntimeError(f"daphne did not start:\n{self.log_path.read_text()}")

    def terminate(self) -> None:
        """Send SIGTERM, as an orchestrator does; the server drains."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        """Wait for the process to end; its exit status."""
        assert self.process is not None
        status = self.process.wait(timeout)
        self.process = None
        return status

    def stop(self) -> None:
        if self.process is None:
            return
        self.terminate()
        try:
            self.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.wait(10)


@pytest.fixture
def start_server(transactional_db, tmp_path) -> Iterator[Callable[..., ServerProcess]]:
    """``start_server(**env)`` starts a daphne with these environment
    variables added; each is stopped after the test."""
    started: list[ServerProcess] = []

    def start(**env: str) -> ServerProcess:
        server = ServerProcess(tmp_path / f"daphne-{len(started)}.log", **env)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(start_server) -> str:
    """Base URL of a daphne serving Lookout on the test database."""
    return start_server().url


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
