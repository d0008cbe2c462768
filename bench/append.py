"""Appending events: Lookout's ``append_to_stream`` next to raw INSERTs.

Side by side in one run, on PostgreSQL and SQLite, for three shapes: one
event per transaction with one writer; one event per transaction with four
writers on distinct streams (processes, each with its own connection); and
batches of 100 events per transaction with one writer. The contenders:

- raw INSERT, autocommit: the driver (psycopg, sqlite3) inserts the same
  rows into ``bench_raw_event``, a copy of ``events_event`` with its indexes
  and constraints, ``RETURNING position``, one statement that the database
  commits as it ends: the baseline, the least an append can cost;
- raw INSERT in BEGIN/COMMIT: the same INSERT in an explicit transaction,
  as most code writes it;
- raw INSERT in Django's atomic: the same INSERT through the driver under
  Django's connection, inside ``transaction.atomic()``, as Lookout's append
  runs: what Django's transaction handling costs;
- raw INSERT + store protocol: the raw INSERT, after the store-wide lock
  (PostgreSQL advisory xact lock and ``pg_notify``; SQLite ``BEGIN
  IMMEDIATE``) and a stream-version read, as separate statements;
- Lookout ``append_to_stream`` with stream_type ``bench``, which no inline
  projection reads: the store's append alone, with its lock, version check
  and NOTIFY, as one statement in autocommit (on PostgreSQL one call of its
  stored function);
- Lookout ``append_to_stream`` with stream_type ``order`` and the hooks on:
  the same events with the inline orders projection applying them, for
  reference;
- the eventsourcing library's ``Application.save`` of an order aggregate
  that triggered the same events.

Each database runs in a subprocess of its own; the table comes at the end.

    .venv/bin/python bench/append.py [--events 2000] [--db sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import statistics
import sys
import time
import traceback
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from order_events import long_order, order_plans
from psycopg.types.json import Jsonb
from storebench import (
    DATABASE_LABELS,
    DEFAULT_SERVER_URL,
    ScratchDatabase,
    close_django_connections,
    note,
    print_figures,
    run_per_database,
)

# Lookout's append as a share of the raw INSERT rate.
RAW_SHARE_TARGET = 0.80
STREAM_TYPE = "bench"
# Transactions each writer appends to streams of its own before timing
# starts, so that connecting and first-use costs stay out of the figures.
WARM_UP_TRANSACTIONS = 20
WRITER_TIMEOUT_SECS = 1800

Event = tuple[str, dict[str, Any]]
# One append: stream id, expected version, events.
Transaction = tuple[str, int, tuple[Event, ...]]


@dataclass(frozen=True)
class Shape:
    key: str
    label: str
    writers: int
    events_per_transaction: int
    # Batches append this many times ``--events``, so that each shape runs
    # for a comparable time.
    event_factor: int = 1


SHAPES = (
    Shape("single", "1 event/txn, 1 writer", 1, 1),
    Shape("four", "1 event/txn, 4 writers", 4, 1),
    Shape("batch", "100 events/txn, 1 writer", 1, 100, event_factor=10),
)

CONTENDERS = (
    ("raw", "raw INSERT, autocommit (baseline)"),
    ("raw_txn", "raw INSERT in BEGIN/COMMIT"),
    ("atomic", "raw INSERT in Django atomic"),
    ("protocol", "raw INSERT + lock + version read"),
    ("lookout", "Lookout append, stream_type bench"),
    ("lookout_order", "Lookout append + inline projection"),
    ("peer", "eventsourcing Application.save"),
)
RAW_TABLES = {
    "raw": "bench_raw_event",
    "raw_txn": "bench_txn_event",
    "atomic": "bench_atomic_event",
    "protocol": "bench_protocol_event",
}


def main() -> None:
    args = parse_arguments()
    if args.worker:
        run_worker(args)
        return

    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    worker_args = ["--events", str(args.events), "--server-url", args.server_url]
    worker_args += ["--seconds", str(args.seconds), "--rounds", str(args.rounds)]
    results = run_per_database(Path(__file__), kinds, worker_args)
    print_report(results)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events",
        type=int,
        default=2000,
        help="events per contender and shape (batches: ten times as many)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=5.0,
        help="stop a row's writers after this long in a round, with fewer events",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="times each row runs, contenders taking turns; medians are shown",
    )
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument(
        "--server-url",
        default=DEFAULT_SERVER_URL,
        help="a PostgreSQL database on the server that gets the scratch one",
    )
    parser.add_argument("--worker", choices=sorted(DATABASE_LABELS), help="internal")
    parser.add_argument("--result", type=Path, help="internal: JSON result path")
    return parser.parse_args()


# The worker: one database, in its own process; writers are forked from it.


def run_worker(args: argparse.Namespace) -> None:
    load_averages = [os.getloadavg()[0]]
    with ScratchDatabase(args.worker, args.server_url) as database:
        create_raw_tables(database)
        create_peer_tables(database)
        # Contenders take turns, round after round, so that a change in the
        # machine's load falls on all of them alike.
        figures: dict[str, list[dict[str, float]]] = {}
        for round_number in range(1, args.rounds + 1):
            for shape in SHAPES:
                for contender, _ in CONTENDERS:
                    note(
                        f"{database.label}: round {round_number}: {shape.label}: "
                        f"{contender}"
                    )
                    figure = measure(
                        database,
                        contender,
                        shape,
                        f"{contender}-{shape.key}-r{round_number}",
                        args.events * shape.event_factor,
                        args.seconds,
                    )
                    figures.setdefault(f"{shape.key}/{contender}", []).append(figure)
        load_averages.append(os.getloadavg()[0])
        result = {
            "label": database.label,
            "description": database.server_description(),
            "load": load_averages,
            "figures": figures,
        }
    args.result.write_text(json.dumps(result))


def create_raw_tables(database: ScratchDatabase) -> None:
    """Copies of ``events_event``: columns, keys, indexes, constraints."""
    connection = database.connect()
    try:
        with database.transaction(connection):
            for table in RAW_TABLES.values():
                for statement in _copy_statements(database, connection, table):
                    connection.execute(statement)
    finally:
        connection.close()


def _copy_statements(
    database: ScratchDatabase, connection: Any, table: str
) -> list[str]:
    if database.kind == "postgres":
        return [f"CREATE TABLE {table} (LIKE events_event INCLUDING ALL)"]
    found = connection.execute(
        "SELECT sql FROM sqlite_master WHERE tbl_name = 'events_event' "
        "AND sql IS NOT NULL ORDER BY type DESC"
    ).fetchall()
    # Rename the table first, then the indexes and constraints after it.
    return [
        sql.replace('"events_event"', f'"{table}"').replace('"events_', f'"{table}_')
        for (sql,) in found
    ]


def create_peer_tables(database: ScratchDatabase) -> None:
    """Let the library create its tables once, before writers race to."""
    from peer import Orders

    Orders(env=database.eventsourcing_env()).close()


def measure(
    database: ScratchDatabase,
    contender: str,
    shape: Shape,
    stream_prefix: str,
    event_count: int,
    budget_secs: float,
) -> dict[str, float]:
    """Fork the shape's writers, let them warm up, start them together;
    all their events over the time from the first start to the last end."""
    # A forked child must not share the parent's database connections.
    close_django_connections()
    context = multiprocessing.get_context("fork")
    start = context.Barrier(shape.writers + 1)
    reports = context.Queue()
    writers = [
        context.Process(
            target=run_writer,
            args=(database, contender, shape, f"{stream_prefix}-w{n}"),
            kwargs={
                "event_count": event_count // shape.writers,
                "budget_secs": budget_secs,
                "start": start,
                "reports": reports,
            },
        )
        for n in range(shape.writers)
    ]
    for writer in writers:
        writer.start()
    start.wait(timeout=WRITER_TIMEOUT_SECS)
    timings = [reports.get(timeout=WRITER_TIMEOUT_SECS) for _ in writers]
    for writer in writers:
        writer.join()

    failures = [timing for timing in timings if isinstance(timing, str)]
    if failures:
        raise RuntimeError(f"a {contender} writer failed:\n{failures[0]}")
    seconds = max(t[1] for t in timings) - min(t[0] for t in timings)
    return {"events": sum(t[2] for t in timings), "seconds": seconds}


def run_writer(
    database: ScratchDatabase,
    contender: str,
    shape: Shape,
    prefix: str,
    event_count: int,
    budget_secs: float,
    start: Any,
    reports: Any,
) -> None:
    """One writer process: warm up, wait for the others, append until done
    or out of time, report ``(started, ended, events)`` or a traceback."""
    try:
        appender = make_appender(database, contender)
        warm_up_events = WARM_UP_TRANSACTIONS * shape.events_per_transaction
        for transaction in transactions(f"{prefix}-warm", shape, warm_up_events):
            appender.append(*transaction)
        work = transactions(prefix, shape, event_count)
    except BaseException:
        start.abort()
        raise

    try:
        start.wait(timeout=WRITER_TIMEOUT_SECS)
        started = time.monotonic()
        deadline = started + budget_secs
        appended = 0
        for transaction in work:
            appender.append(*transaction)
            appended += len(transaction[2])
            if time.monotonic() > deadline:
                break
        ended = time.monotonic()
        appender.close()
        reports.put((started, ended, appended))
    except BaseException:
        reports.put(traceback.format_exc())
        raise


def transactions(prefix: str, shape: Shape, event_count: int) -> list[Transaction]:
    """The appends of one writer: order events one at a time, or orders of
    ``events_per_transaction`` events appended whole."""
    size = shape.events_per_transaction
    if size == 1:
        plans = order_plans(
            event_count, prefix=prefix, seed=zlib.crc32(prefix.encode())
        )
        return [
            (plan.order_id, version, (event,))
            for plan in plans
            for version, event in enumerate(plan.events)
        ]
    plans = [
        long_order(f"{prefix}-{n}", f"c-{prefix}", size)
        for n in range(event_count // size)
    ]
    return [(plan.order_id, 0, plan.events) for plan in plans]


def make_appender(database: ScratchDatabase, contender: str) -> Any:
    if contender == "atomic":
        return AtomicAppender(database, RAW_TABLES[contender])
    if contender in RAW_TABLES:
        table = RAW_TABLES[contender]
        return RawAppender(
            database,
            table,
            autocommit=contender == "raw",
            protocol=contender == "protocol",
        )
    if contender == "lookout":
        return LookoutAppender(STREAM_TYPE)
    if contender == "lookout_order":
        return LookoutAppender("order")
    return PeerAppender(database)


class RawAppender:
    """The driver alone: ``INSERT ... RETURNING position`` of the rows
    ``append_to_stream`` would store, one transaction per append: with
    ``autocommit``, the statement alone; else in BEGIN (IMMEDIATE on SQLite,
    as Lookout's settings ask of Django) and COMMIT. With ``protocol``,
    first the store's lock and the stream-version read."""

    def __init__(
        self, database: ScratchDatabase, table: str, autocommit: bool, protocol: bool
    ) -> None:
        self.postgres = database.kind == "postgres"
        self.connection = database.connect()
        if self.postgres:
            self.connection.autocommit = autocommit
        else:
            # Autocommit, so that only the BEGIN below opens a transaction.
            self.connection.isolation_level = None
        self.autocommit = autocommit
        self.table = table
        self.protocol = protocol
        self.inserts: dict[int, str] = {}
        p = database.placeholder
        self.read_version = (
            f"SELECT MAX(stream_version) FROM {table} WHERE stream_id = {p}"
        )

    def append(self, stream_id: str, expected_version: int, events: tuple) -> None:
        rows = self._rows(stream_id, expected_version, events)
        if self.autocommit:
            self._insert(stream_id, expected_version, rows)
            return
        if self.postgres:
            with self.connection.transaction():
                self._insert(stream_id, expected_version, rows)
            return
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            self._insert(stream_id, expected_version, rows)
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")

    def close(self) -> None:
        self.connection.close()

    def _insert(self, stream_id: str, expected_version: int, rows: list) -> None:
        if self.protocol:
            if self.postgres:
                self.connection.execute(
                    "SELECT pg_advisory_xact_lock(%s), pg_notify(%s, '')",
                    [0x4C4F4F4B, "lookout_events"],
                )
            found = self.connection.execute(self.read_version, [stream_id])
            current = found.fetchone()[0] or 0
            if current != expected_version:
                raise RuntimeError(f"{stream_id} is at {current}")
        values = [value for row in rows for value in row]
        self.connection.execute(self._statement(len(rows)), values).fetchall()

    def _statement(self, row_count: int) -> str:
        if row_count not in self.inserts:
            p = "%s" if self.postgres else "?"
            row = "(" + ", ".join([p] * 8) + ")"
            self.inserts[row_count] = (
                f"INSERT INTO {self.table} (event_id, stream_id, stream_type, "
                "stream_version, type, data, metadata, recorded_at) VALUES "
                + ", ".join([row] * row_count)
                + " RETURNING position"
            )
        return self.inserts[row_count]

    def _rows(self, stream_id: str, expected_version: int, events: tuple) -> list:
        now = datetime.datetime.now(datetime.UTC)
        recorded_at = now if self.postgres else now.replace(tzinfo=None).isoformat(" ")
        correlation_id = str(uuid.uuid4())
        metadata = {
            "actor": "",
            "correlation_id": correlation_id,
            "causation_id": correlation_id,
            "schema_version": 1,
        }
        return [
            (
                self._event_id(),
                stream_id,
                STREAM_TYPE,
                expected_version + n,
                event_type,
                self._json(data),
                self._json(metadata),
                recorded_at,
            )
            for n, (event_type, data) in enumerate(events, 1)
        ]

    def _event_id(self) -> uuid.UUID | str:
        # Django keeps UUIDs as hex on SQLite.
        event_id = uuid.uuid4()
        return event_id if self.postgres else event_id.hex

    def _json(self, value: dict[str, Any]) -> Jsonb | str:
        return Jsonb(value) if self.postgres else json.dumps(value)


class AtomicAppender(RawAppender):
    """The raw INSERT on Django's connection, through the driver's own
    cursor, inside ``transaction.atomic()``; no lock, no version check."""

    def __init__(self, database: ScratchDatabase, table: str) -> None:
        self.postgres = database.kind == "postgres"
        self.table = table
        self.protocol = False
        self.inserts = {}

    def append(self, stream_id: str, expected_version: int, events: tuple) -> None:
        import psycopg
        from django.db import connection, transaction

        rows = self._rows(stream_id, expected_version, events)
        values = [value for row in rows for value in row]
        with transaction.atomic():
            driver = connection.connection
            # Server-side binding on PostgreSQL, as the raw INSERT has.
            cursor = psycopg.Cursor(driver) if self.postgres else driver.cursor()
            cursor.execute(self._statement(len(rows)), values).fetchall()

    def close(self) -> None:
        close_django_connections()


class LookoutAppender:
    """``append_to_stream`` through Django, as a command handler calls it:
    for ``stream_type`` "order" the inline orders projection runs in the
    append's transaction; for "bench", which no projection reads, the
    store's append runs alone."""

    def __init__(self, stream_type: str) -> None:
        self.stream_type = stream_type

    def append(self, stream_id: str, expected_version: int, events: tuple) -> None:
        from events.records import NewEvent
        from events.store import append_to_stream

        new_events = [NewEvent(event_type, data) for event_type, data in events]
        append_to_stream(stream_id, self.stream_type, expected_version, new_events)

    def close(self) -> None:
        close_django_connections()


class PeerAppender:
    """The eventsourcing library: trigger the events on an order aggregate
    kept in memory, then ``Application.save`` it."""

    def __init__(self, database: ScratchDatabase) -> None:
        from peer import Orders

        env = {**database.eventsourcing_env(), "CREATE_TABLE": "false"}
        self.app = Orders(env=env)
        self.orders: dict[str, Any] = {}

    def append(self, stream_id: str, expected_version: int, events: tuple) -> None:
        from peer import Order, apply_to_order

        for event_type, data in events:
            if event_type == "OrderPlaced":
                self.orders[stream_id] = Order(**data)
            else:
                apply_to_order(self.orders[stream_id], event_type, data)
        self.app.save(self.orders[stream_id])

    def close(self) -> None:
        self.app.close()


# The report: one table across databases.


def print_report(results: dict[str, dict[str, Any]]) -> None:
    print()
    for result in results.values():
        print(
            f"{result['label']}: {result['description']}; 1-minute load average "
            "{:.1f} at start, {:.1f} at end".format(*result["load"])
        )
    print()

    header = ["shape", "contender", "target"]
    for result in results.values():
        header += [f"{result['label']} events/s", "% of raw", "met", "rounds"]
    rows = []
    for shape in SHAPES:
        for n, (contender, label) in enumerate(CONTENDERS):
            target = f">= {RAW_SHARE_TARGET:.0%}" if contender == "lookout" else ""
            row = [shape.label if n == 0 else "", label, target]
            for result in results.values():
                row += _cells(result["figures"], shape, contender)
            rows.append(row)
    print_figures(header, rows, text_columns=2)

    print()
    rounds = {
        len(figures) for r in results.values() for figures in r["figures"].values()
    }
    print(
        f"events/s: median of {max(rounds)} rounds in which the contenders take "
        "turns ('rounds': slowest-fastest); '% of raw': median of each round's "
        "ratio to that round's raw INSERT."
    )
    print(
        f"each writer first appends {WARM_UP_TRANSACTIONS} transactions of its "
        "own, untimed; a row appends --events events (batches: ten times as "
        "many) or stops when its --seconds run out."
    )
    print(
        "Lookout 'stream_type bench' is the store's append alone: no inline "
        "projection reads that stream type, so no append hook runs and the "
        "append is one statement in autocommit; store lock, version check, "
        "NOTIFY and positions in commit order all stay."
    )
    print(
        "raw INSERT, autocommit: one statement that the database commits as "
        "it ends, the shape of Lookout's append when it is a transaction of "
        "its own; raw INSERT in BEGIN/COMMIT: two more statements (psycopg "
        "sends BEGIN as a round trip of its own)."
    )
    print(
        "raw INSERT in Django atomic: the raw INSERT, no lock or version check, "
        "inside django.db.transaction.atomic() on Django's connection: the "
        "ceiling for anything that appends inside Django's transactions. On "
        "PostgreSQL, Lookout's settings let psycopg prepare statements that "
        "run often on one connection, as it does for the raw INSERT."
    )
    print(
        "Lookout 'inline projection' appends the same events as stream_type "
        "'order': project_inline applies them to the orders read model and its "
        "outbox, and after commit the changes are announced (no relay runs in "
        "this process, so streams.relay.announce sends them and marks them sent)."
    )
    print(
        "four writers: processes with a connection each, on distinct streams; "
        "rate = all events / (last end - first start)."
    )
    print(
        "eventsourcing on SQLite runs its default synchronous=FULL (WAL); "
        "Lookout and raw INSERT run synchronous=NORMAL, as Lookout's settings say."
    )


def _cells(figures: dict[str, Any], shape: Shape, contender: str) -> list[str]:
    """Median rate over the rounds; the share of raw is the median of each
    round's share, taken against the raw run closest in time."""
    rates = [f["events"] / f["seconds"] for f in figures[f"{shape.key}/{contender}"]]
    raw_rates = [f["events"] / f["seconds"] for f in figures[f"{shape.key}/raw"]]
    share = statistics.median(r / raw for r, raw in zip(rates, raw_rates, strict=True))
    met = ""
    if contender == "lookout":
        met = "yes" if share >= RAW_SHARE_TARGET else "no"
    return [
        f"{statistics.median(rates):,.0f}",
        f"{share:.1%}",
        met,
        f"{min(rates):,.0f}-{max(rates):,.0f}",
    ]


if __name__ == "__main__":
    sys.exit(main())
