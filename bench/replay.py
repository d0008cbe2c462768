"""Reading the store and rebuilding projections, next to the raw read rate.

Bulk-inserts N order events (order_events.py: about five per order stream)
into a fresh database with COPY (PostgreSQL) or executemany (SQLite), then
measures, side by side in the same run:

(a) raw read: the driver's cursor over ``events_event`` in batches by
    position, JSON decoded: the baseline;
(b) ``read_all`` in the same batches: ``RecordedEvent`` objects;
(c) ``replay(projection)`` for ``orders``, ``dashboard`` and ``events``;
(d) the eventsourcing library on the same database: the same events stored
    through ``Application.save``, read back from its notification log into
    domain events, and folded into per-order totals (written per page with
    a tracking row).

Each database runs in a subprocess of its own; the table comes at the end.

    .venv/bin/python bench/replay.py [--events 1000000] [--db sqlite|postgres|both]
    .venv/bin/python bench/replay.py --events 100000 --db sqlite --profile
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import io
import json
import os
import pstats
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from order_events import Expected, OrderPlan, expected_figures, interleaved, order_plans
from storebench import (
    DATABASE_LABELS,
    DEFAULT_SERVER_URL,
    ScratchDatabase,
    note,
    print_figures,
    run_per_database,
)

# Rebuild targets, events per second, and as a share of the raw read rate.
REBUILD_TARGETS = {"sqlite": 20_000, "postgres": 15_000}
RAW_SHARE_TARGET = 1 / 3
PROJECTIONS = ("orders", "dashboard", "events")
# The batch size that ``replay`` uses by default; every read uses it.
BATCH_SIZE = 2000
# Orders per ``Application.save`` call: about a thousand events per
# transaction, as in a bulk load.
PEER_ORDERS_PER_SAVE = 200
INSERT_ROWS_PER_CHUNK = 10_000

COLUMNS = (
    "position, event_id, stream_id, stream_type, stream_version, type, data, "
    "metadata, recorded_at"
)

# Rows of the table: key, label, and whether the rebuild target applies.
ROWS = (
    ("insert", "setup: bulk insert (COPY / executemany)", False),
    ("raw_read", "(a) raw read: driver cursor, JSON decoded", False),
    ("read_all", "(b) read_all: RecordedEvent objects", False),
    ("replay_orders", "(c) replay(orders)", True),
    ("replay_orders_again", "(c) replay(orders) again, rows equal", True),
    ("replay_dashboard", "(c) replay(dashboard)", True),
    ("replay_events", "(c) replay(events)", True),
    ("peer_store", "(d) eventsourcing: Application.save", False),
    ("peer_read", "(d) eventsourcing: notification log read", False),
    ("peer_fold", "(d) eventsourcing: fold into order totals", False),
)


def main() -> None:
    args = parse_arguments()
    if args.worker:
        run_worker(args)
        return

    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    worker_args = ["--events", str(args.events), "--server-url", args.server_url]
    worker_args += ["--batch-size", str(args.batch_size)]
    worker_args += ["--projections", ",".join(args.projections)]
    if args.profile:
        worker_args.append("--profile")
    results = run_per_database(Path(__file__), kinds, worker_args)
    print_report(results)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument(
        "--projections",
        type=lambda text: [name for name in text.split(",") if name],
        default=list(PROJECTIONS),
        help="comma-separated projections to replay (default all: "
        f"{','.join(PROJECTIONS)}); the others show '-'",
    )
    parser.add_argument(
        "--server-url",
        default=DEFAULT_SERVER_URL,
        help="a PostgreSQL database on the server that gets the scratch one",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print each replay's profile (cProfile): Lookout's functions by "
        "cumulative time, then all by own time, to stderr",
    )
    parser.add_argument("--worker", choices=sorted(DATABASE_LABELS), help="internal")
    parser.add_argument("--result", type=Path, help="internal: JSON result path")
    return parser.parse_args()


# The worker: one database, in its own process.


def run_worker(args: argparse.Namespace) -> None:
    load_averages = [os.getloadavg()[0]]
    with ScratchDatabase(args.worker, args.server_url) as database:
        note(f"{database.label}: planning {args.events:,} events")
        plans = order_plans(args.events)
        expected = expected_figures(plans)
        figures = {}

        note(f"{database.label}: bulk insert")
        figures["insert"] = timed(bulk_insert, database, plans)
        # One page each first, so that no figure pays for first-use costs.
        raw_read(database, args.batch_size, pages=1)
        read_all_batched(args.batch_size, pages=1)
        figures["raw_read"] = timed(raw_read, database, args.batch_size)
        figures["read_all"] = timed(read_all_batched, args.batch_size)
        switches = {}
        for name in args.projections:
            note(f"{database.label}: replay({name})")
            figures[f"replay_{name}"] = timed(
                replay_projection, name, args.batch_size, args.profile, switches
            )
            if name == "orders":
                # The common case: a rebuild whose rows equal the live ones.
                figures["replay_orders_again"] = timed(
                    replay_projection, name, args.batch_size, False, switches
                )
        figures["switch_ms"] = switches
        checks = check_read_models(expected, args.projections)

        note(f"{database.label}: eventsourcing")
        peer_figures, peer_checks = measure_peer(database, plans, expected, args)
        figures.update(peer_figures)
        load_averages.append(os.getloadavg()[0])

        result = {
            "label": database.label,
            "description": database.server_description(),
            "load": load_averages,
            "events": args.events,
            "orders": len(plans),
            "figures": figures,
            "checks": checks + peer_checks,
        }
    args.result.write_text(json.dumps(result))


def timed(function: Callable[..., int], *args: Any) -> dict[str, float]:
    """Run ``function``, which returns the events it handled; the count
    and the seconds it took."""
    started = time.perf_counter()
    count = function(*args)
    return {"events": count, "seconds": time.perf_counter() - started}


def event_rows(plans: Sequence[OrderPlan]) -> Iterator[tuple]:
    """Rows of ``events_event`` in store order, positions from 1."""
    rng = random.Random(11)
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    for position, (plan, index) in enumerate(interleaved(plans), 1):
        event_type, data = plan.events[index]
        correlation_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        metadata = {
            "actor": "bench",
            "correlation_id": correlation_id,
            "causation_id": correlation_id,
            "schema_version": 1,
        }
        yield (
            position,
            uuid.UUID(int=rng.getrandbits(128), version=4),
            plan.order_id,
            "order",
            index + 1,
            event_type,
            json.dumps(data),
            json.dumps(metadata),
            start + datetime.timedelta(milliseconds=position),
        )


def bulk_insert(database: ScratchDatabase, plans: Sequence[OrderPlan]) -> int:
    if database.kind == "postgres":
        return _copy_into_postgres(database, plans)
    return _insert_into_sqlite(database, plans)


def _copy_into_postgres(database: ScratchDatabase, plans: Sequence[OrderPlan]) -> int:
    count = 0
    with database.connect() as connection:
        with connection.cursor() as cursor:
            statement = f"COPY events_event ({COLUMNS}) FROM STDIN"
            with cursor.copy(statement) as copy:
                for row in event_rows(plans):
                    copy.write_row(row)
                    count += 1
            # The next append continues after the copied positions.
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence('events_event', 'position'), %s)",
                [count],
            )
        connection.commit()
        connection.autocommit = True
        connection.execute("VACUUM ANALYZE events_event")
    return count


def _insert_into_sqlite(database: ScratchDatabase, plans: Sequence[OrderPlan]) -> int:
    statement = (
        f"INSERT INTO events_event ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    count = 0
    connection = database.connect()
    try:
        with connection:
            chunk = []
            for row in event_rows(plans):
                # Django keeps UUIDs as hex and times as naive UTC text.
                recorded_at = row[8].replace(tzinfo=None).isoformat(" ")
                chunk.append((*row[:1], row[1].hex, *row[2:8], recorded_at))
                if len(chunk) == INSERT_ROWS_PER_CHUNK:
                    connection.executemany(statement, chunk)
                    count += len(chunk)
                    chunk = []
            connection.executemany(statement, chunk)
            count += len(chunk)
        connection.execute("ANALYZE")
    finally:
        connection.close()
    return count


def raw_read(
    database: ScratchDatabase, batch_size: int, pages: int | None = None
) -> int:
    """Every row by position through the driver; psycopg decodes jsonb
    itself, SQLite's JSON text goes through ``json.loads``."""
    p = database.placeholder
    statement = (
        f"SELECT {COLUMNS} FROM events_event WHERE position > {p} "
        f"ORDER BY position LIMIT {p}"
    )
    decode = database.kind == "sqlite"
    read, after = 0, 0
    connection = database.connect()
    try:
        while True:
            rows = connection.execute(statement, (after, batch_size)).fetchall()
            if decode:
                rows = [
                    (*row[:6], json.loads(row[6]), json.loads(row[7]), row[8])
                    for row in rows
                ]
            if not rows or pages == 0:
                return read
            read += len(rows)
            after = rows[-1][0]
            pages = pages and pages - 1
    finally:
        connection.close()


def read_all_batched(batch_size: int, pages: int | None = None) -> int:
    from events.store import read_all

    read, after = 0, 0
    while pages != 0 and (batch := read_all(after, batch_size)):
        read += len(batch)
        after = batch[-1].position
        pages = pages and pages - 1
    return read


def replay_projection(
    name: str, batch_size: int, profile: bool, switches: dict[str, str]
) -> int:
    from readmodels.projector import ASYNC_PROJECTIONS, projection_named
    from readmodels.rebuild import rebuild

    projection = projection_named(name)
    options = {
        "page_size": batch_size,
        "progress": Progress(name),
        "asynchronous": projection in ASYNC_PROJECTIONS,
    }
    if profile:
        profiler = cProfile.Profile()
        result = profiler.runcall(rebuild, projection, **options)
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("cumulative").print_stats(r"/(events|readmodels)/", 20)
        stats.sort_stats("tottime").print_stats(15)
        note(f"profile of rebuild({name}):\n{text.getvalue()}")
    else:
        result = rebuild(projection, **options)
    phases = ", ".join(
        f"{phase} {secs:.1f} s" for phase, secs in result.seconds.items()
    )
    note(
        f"  {name}: {phases}; switch {result.switch_ms:.0f} ms; "
        f"{len(result.reset_topics):,} topics reset"
    )
    label = name if name not in switches else f"{name} again"
    switches[label] = (
        f"{result.switch_ms:,.0f} ms ({len(result.reset_topics):,} topics reset)"
    )
    return result.events


class Progress:
    """Notes a rebuild's progress about every tenth of the way."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.next_share = 0.1

    def __call__(self, position: int, head: int) -> None:
        if position >= self.next_share * head:
            note(f"  {self.name}: position {position:,} of {head:,}")
            self.next_share += 0.1


def check_read_models(expected: Expected, projections: Sequence[str]) -> list[str]:
    """What the rebuilt read models show, against what the events imply."""
    from readmodels.models import Dashboard, OrderView

    checks = []
    if "orders" in projections:
        rows = OrderView.objects.count()
        checks.append(_check("orders: OrderView rows", rows, expected.orders))
    if "dashboard" in projections:
        dashboard = Dashboard.objects.get(id=1)
        by_status = {k: v for k, v in dashboard.by_status.items() if v}
        checks += [
            _check("dashboard: order_count", dashboard.order_count, expected.orders),
            _check("dashboard: revenue", str(dashboard.revenue), str(expected.revenue)),
            _check("dashboard: by_status", by_status, dict(expected.by_status)),
        ]
    return checks


def _check(what: str, found: object, expected: object) -> str:
    verdict = "ok" if found == expected else "MISMATCH"
    return f"{verdict}: {what} {found} (expected {expected})"


def measure_peer(
    database: ScratchDatabase,
    plans: Sequence[OrderPlan],
    expected: Expected,
    args: argparse.Namespace,
) -> tuple[dict[str, dict[str, float]], list[str]]:
    """The eventsourcing library: store, read and fold the same events."""
    from peer import Orders, OrderTotals, order_from_plan, read_notification_log

    app = Orders(env=database.eventsourcing_env())
    connection = database.connect()
    try:
        # Build each chunk's aggregates first: only the saving is timed.
        saving_secs = 0.0
        for start in range(0, len(plans), PEER_ORDERS_PER_SAVE):
            chunk = plans[start : start + PEER_ORDERS_PER_SAVE]
            orders = [order_from_plan(plan) for plan in chunk]
            started = time.perf_counter()
            app.save(*orders)
            saving_secs += time.perf_counter() - started
        figures = {"peer_store": {"events": args.events, "seconds": saving_secs}}

        read_notification_log(app, args.batch_size, pages=1)
        figures["peer_read"] = timed(read_notification_log, app, args.batch_size)
        totals = OrderTotals(
            connection, lambda: database.transaction(connection), database.placeholder
        )
        totals.create_tables()
        figures["peer_fold"] = timed(totals.replay, app, args.batch_size)
        checks = [
            _check("eventsourcing: orders folded", len(totals.orders), len(plans)),
            _check(
                "eventsourcing: revenue", str(totals.revenue()), str(expected.revenue)
            ),
        ]
    finally:
        connection.close()
        app.close()
    return figures, checks


# The report: one table across databases.


def print_report(results: dict[str, dict[str, Any]]) -> None:
    print()
    for result in results.values():
        print(
            f"{result['label']}: {result['events']:,} events in "
            f"{result['orders']:,} order streams; {result['description']}; "
            "1-minute load average {:.1f} at start, {:.1f} at end".format(
                *result["load"]
            )
        )
    print()

    header = ["measure"]
    for result in results.values():
        header += [f"{result['label']} events/s", "% of raw", "target", "met"]
    rows = []
    for key, label, rebuild in ROWS:
        row = [label]
        for kind, result in results.items():
            row += _cells(kind, result["figures"], key, rebuild)
        rows.append(row)
    print_figures(header, rows)

    print()
    print(
        "target: rebuild at least "
        + " and ".join(
            f"{REBUILD_TARGETS[kind]:,} events/s on {DATABASE_LABELS[kind]}"
            for kind in results
        )
        + ", and at least 1/3 of the raw read rate; the larger is shown."
    )
    print(
        f"reads are batches of {BATCH_SIZE:,} by position; each replay runs once:"
        " it folds into twin tables, then switches them in. The first replay"
        " starts from empty read-model tables, so every topic differs and is"
        " reset (the slowest case); 'again' rebuilds over equal rows."
    )
    print(
        "(d) stores its own copy of the events (table stored_events) in the same"
        " database, ~1,000 events per transaction, and folds in memory, writing"
        " touched totals and a tracking row per page."
    )
    for result in results.values():
        switches = result["figures"].get("switch_ms", {})
        print(
            f"{result['label']}: commands waited for each switch: "
            + "; ".join(f"{name} {text}" for name, text in switches.items())
        )
    for result in results.values():
        for check in result["checks"]:
            print(f"{result['label']} {check}")


def _cells(kind: str, figures: dict[str, Any], key: str, rebuild: bool) -> list[str]:
    figure = figures.get(key)
    if figure is None:
        return ["-", "-", "-", "-"]
    rate = figure["events"] / figure["seconds"]
    raw = figures["raw_read"]["events"] / figures["raw_read"]["seconds"]
    share = f"{100 * rate / raw:.1f}%" if key != "insert" else "-"
    if not rebuild:
        return [f"{rate:,.0f}", share, "-", ""]
    target = max(REBUILD_TARGETS[kind], raw * RAW_SHARE_TARGET)
    return [f"{rate:,.0f}", share, f"{target:,.0f}", "yes" if rate >= target else "no"]


if __name__ == "__main__":
    sys.exit(main())
