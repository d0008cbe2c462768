"""What the benchmarks share: a throwaway Lookout server, and figures.

``BenchServer`` runs daphne on a free port against a fresh database: SQLite
in a temporary ``LOOKOUT_VAR_DIR`` by default, or, when ``DATABASE_URL`` is
set, a scratch database created next to the one it names and dropped
afterwards (the named database itself is never touched). ``REDIS_URL``, when
set, is passed on with a private key prefix. ``BenchServer(workers=N)`` also
starts N ``manage.py run_worker`` processes, as production runs them.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

__all__ = ["BenchServer", "percentile", "print_table", "summarize"]

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DAPHNE = str(Path(sys.executable).parent / "daphne")

SERVER_START_TIMEOUT_SECS = 30.0


class BenchServer:
    """``with BenchServer() as server:`` gives ``server.url`` and
    ``server.create_token(...)``."""

    def __init__(self, workers: int = 0) -> None:
        self.worker_count = workers
        self.workers: list[subprocess.Popen] = []
        self.var_dir = Path(tempfile.mkdtemp(prefix="lookout-bench-"))
        self.database_url = os.environ.get("DATABASE_URL", "")
        self.redis_url = os.environ.get("REDIS_URL", "")
        self.scratch_database = ""
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.log_path = self.var_dir / "daphne.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def mode(self) -> str:
        database = "PostgreSQL" if self.database_url else "SQLite"
        layer = "Redis" if self.redis_url else "in-memory layer"
        if self.worker_count:
            worker = f"{self.worker_count} run_worker process(es)"
        else:
            worker = "projection worker in daphne" if not self.database_url else ""
        return ", ".join(filter(None, [database, layer, "one daphne process", worker]))

    def __enter__(self) -> BenchServer:
        try:
            self.env = self._environment()
            self.manage("migrate", "--noinput", "-v", "0")
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def manage(self, *args: str) -> str:
        """Run ``manage.py`` against the bench database; its stdout."""
        done = subprocess.run(
            [PYTHON, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stderr}")
        return done.stdout

    def create_token(self, username: str, *role: str) -> str:
        return self.manage("create_token", username, *role).strip().splitlines()[-1]

    def start(self) -> None:
        self.port = free_port()
        log = open(self.log_path, "w")  # noqa: SIM115 - lives as long as daphne
        self.process = subprocess.Popen(
            [DAPHNE, "-v", "0", "-b", "127.0.0.1", "-p", str(self.port)]
            + ["project.asgi:application"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self._wait_until_ready()
        for n in range(self.worker_count):
            self.workers.append(self._start_worker(n))

    def _start_worker(self, n: int) -> subprocess.Popen:
        log = open(self.var_dir / f"worker-{n}.log", "w")  # noqa: SIM115
        return subprocess.Popen(
            [PYTHON, "manage.py", "run_worker"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def close(self) -> None:
        for worker in self.workers:
            _stop(worker)
        if self.process:
            _stop(self.process)
        if self.scratch_database:
            self._drop_scratch_database()
        shutil.rmtree(self.var_dir, ignore_errors=True)

    def _environment(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("DATABASE_URL", "REDIS_URL")
        }
        env["LOOKOUT_VAR_DIR"] = str(self.var_dir)
        env["LOOKOUT_LOG_LEVEL"] = "WARNING"
        if self.database_url:
            env["DATABASE_URL"] = self._create_scratch_database()
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
            env["LOOKOUT_REDIS_PREFIX"] = f"lookout-bench-{os.getpid()}"
        return env

    def _create_scratch_database(self) -> str:
        self.scratch_database = f"lookout_bench_{os.getpid()}"
        with self._maintenance_connection() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.scratch_database}"')
            connection.execute(f'CREATE DATABASE "{self.scratch_database}"')
        parts = urlsplit(self.database_url)
        return urlunsplit(parts._replace(path=f"/{self.scratch_database}"))

    def _drop_scratch_database(self) -> None:
        with self._maintenance_connection() as connection:
            connection.execute(
                f'DROP DATABASE IF EXISTS "{self.scratch_database}" WITH (FORCE)'
            )
        self.scratch_database = ""

    def _maintenance_connection(self):
        import psycopg

        parts = urlsplit(self.database_url)
        url = urlunsplit(parts._replace(path="/postgres"))
        return psycopg.connect(url, autocommit=True)

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_SECS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                # Any answer will do; this one is a cheap 401.
                httpx.get(f"{self.url}/api/v1/orders/", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(
            f"daphne did not start; its log:\n{self.log_path.read_text()}"
        )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0 to 1) of ``values``, nearest rank."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summarize(values_secs: Sequence[float]) -> dict[str, float]:
    """Median, p90, p99 and max, in milliseconds."""
    ms = [v * 1000 for v in values_secs]
    return {
        "median": statistics.median(ms),
        "p90": percentile(ms, 0.90),
        "p99": percentile(ms, 0.99),
        "max": max(ms),
    }


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain table: text left-aligned, numbers right-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [
        max(len(str(h)), *(len(row[i]) for row in cells)) for i, h in enumerate(header)
    ]
    numeric = [all(_is_number(row[i]) for row in rows) for i in range(len(header))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if n else v.ljust(w)
            for v, w, n in zip(values, widths, numeric, strict=True)
        ).rstrip()

    print(line([str(h) for h in header]))
    print(line(["-" * w for w in widths]))
    for row in cells:
        print(line(row))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float)
