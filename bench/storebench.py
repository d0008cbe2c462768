"""What the store benchmarks share: a scratch database per process, and
one table of figures.

Django's settings are fixed per process, so ``replay.py`` and ``append.py``
measure each database in a subprocess of their own (``--worker KIND``). The
worker sets up Django against a fresh database (``ScratchDatabase``) and
writes its figures as JSON; the parent gathers them into one table.

- SQLite: a file in a temporary directory (``LOOKOUT_SQLITE_PATH``).
- PostgreSQL: a database ``lookout_bench_<pid>`` created on the server that
  ``--server-url`` names, dropped afterwards; the named database itself is
  never touched.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "DATABASE_LABELS",
    "DEFAULT_SERVER_URL",
    "ScratchDatabase",
    "note",
    "print_figures",
    "run_per_database",
]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE_LABELS = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


def note(message: str) -> None:
    """A progress line on stderr, so that long runs show where they are."""
    print(message, file=sys.stderr, flush=True)


def run_per_database(
    script: Path, kinds: Sequence[str], worker_args: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Run ``script --worker KIND --result FILE ...`` once per database, one
    after another, and return each worker's JSON result by kind."""
    results = {}
    for kind in kinds:
        with tempfile.TemporaryDirectory(prefix="lookout-bench-") as directory:
            result_path = Path(directory) / "result.json"
            command = [sys.executable, str(script), "--worker", kind]
            command += ["--result", str(result_path), *worker_args]
            subprocess.run(command, cwd=ROOT, check=True)
            results[kind] = json.loads(result_path.read_text())
    return results


def close_django_connections() -> None:
    """Close Django's connections and, on PostgreSQL, its pools: a pooled
    connection stays open when it is given back, and a forked child must
    not share it with its parent (their prepared statements collide)."""
    from django.db import connections

    connections.close_all()
    for connection in connections.all(initialized_only=True):
        # Django's pools live on the backend class; asking a connection
        # for its pool would open one.
        if connection.alias in getattr(connection, "_connection_pools", {}):
            connection.close_pool()


class ScratchDatabase:
    """A fresh, migrated database for this process, with Django set up
    against it. ``with ScratchDatabase("sqlite", url) as database: ...``"""

    def __init__(self, kind: str, server_url: str = DEFAULT_SERVER_URL) -> None:
        if kind not in DATABASE_LABELS:
            raise ValueError(f"unknown database {kind!r}: sqlite or postgres")
        self.kind = kind
        self.server_url = server_url
        self.directory = Path(tempfile.mkdtemp(prefix="lookout-bench-"))
        self.sqlite_path = self.directory / "lookout.sqlite3"
        self.name = f"lookout_bench_{os.getpid()}"
        self.url = ""

    @property
    def label(self) -> str:
        return DATABASE_LABELS[self.kind]

    def __enter__(self) -> ScratchDatabase:
        try:
            self._create()
            self._set_up_django()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if "django" in sys.modules:
            close_django_connections()
        if self.url:
            with self._maintenance_connection() as connection:
                connection.execute(
                    f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'
                )
            self.url = ""
        shutil.rmtree(self.directory, ignore_errors=True)

    def connect(self) -> Any:
        """A plain driver connection (psycopg or sqlite3), not Django's."""
        if self.kind == "postgres":
            import psycopg

            return psycopg.connect(self.url)
        connection = sqlite3.connect(self.sqlite_path, timeout=30)
        # The same pragmas as Lookout's settings, so raw figures compare.
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection

    @property
    def placeholder(self) -> str:
        """The parameter marker of ``connect``'s driver."""
        return "%s" if self.kind == "postgres" else "?"

    @staticmethod
    def transaction(connection: Any) -> AbstractContextManager:
        """A transaction on a connection from ``connect``: committed when
        the block ends, rolled back if it raises."""
        if isinstance(connection, sqlite3.Connection):
            return connection
        return connection.transaction()

    def server_description(self) -> str:
        """Versions and the durability settings that decide commit cost."""
        if self.kind == "sqlite":
            return (
                f"SQLite {sqlite3.sqlite_version}, WAL, synchronous=NORMAL; "
                f"Python {platform.python_version()}, {os.cpu_count()} cores"
            )
        with self.connect() as connection:
            version = connection.execute("SHOW server_version").fetchone()[0]
            commit = connection.execute("SHOW synchronous_commit").fetchone()[0]
            fsync = connection.execute("SHOW fsync").fetchone()[0]
        return (
            f"PostgreSQL {version}, synchronous_commit={commit}, fsync={fsync}; "
            f"Python {platform.python_version()}, {os.cpu_count()} cores"
        )

    def eventsourcing_env(self) -> dict[str, str]:
        """Settings for an eventsourcing ``Application`` on this database."""
        if self.kind == "sqlite":
            return {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(self.sqlite_path),
                "SQLITE_LOCK_TIMEOUT": "30",
            }
        parts = urlsplit(self.url)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": self.name,
            "POSTGRES_HOST": parts.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": parts.username or "postgres",
            "POSTGRES_PASSWORD": parts.password or "",
            "POSTGRES_LOCK_TIMEOUT": "30",
        }

    def _create(self) -> None:
        if self.kind == "sqlite":
            return
        with self._maintenance_connection() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{self.name}"')
        parts = urlsplit(self.server_url)
        self.url = urlunsplit(parts._replace(path=f"/{self.name}"))

    def _set_up_django(self) -> None:
        os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
        os.environ["LOOKOUT_VAR_DIR"] = str(self.directory)
        os.environ["LOOKOUT_LOG_LEVEL"] = "WARNING"
        os.environ.pop("REDIS_URL", None)
        if self.kind == "postgres":
            os.environ["DATABASE_URL"] = self.url
        else:
            os.environ.pop("DATABASE_URL", None)
            os.environ["LOOKOUT_SQLITE_PATH"] = str(self.sqlite_path)
        sys.path.insert(0, str(ROOT))

        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)

    def _maintenance_connection(self) -> Any:
        import psycopg

        return psycopg.connect(self.server_url, autocommit=True)


def print_figures(
    header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1
) -> None:
    """A plain table of preformatted cells: the first ``text_columns``
    left-aligned, the others right-aligned so that figures line up."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        aligned = [
            cell.ljust(width) if i < text_columns else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(aligned).rstrip()

    print(line(header))
    print(line(["-" * width for width in widths]))
    for row in rows:
        print(line(row))
