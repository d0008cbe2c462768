"""From an event's commit to the asynchronous projection's change at a
WebSocket watcher, under a steady command rate.

Starts daphne on a free port against a fresh database (see harness.py) and,
in production mode, a separate ``manage.py run_worker``. Events go in at a
fixed rate (200 per second by default), in one of two ways:

- ``--via append`` (default with ``DATABASE_URL``): this process appends
  order events itself with ``append_to_stream``, one event per commit,
  from ``--writers`` threads on distinct streams, and notes each commit's
  time. With ``--inline off`` (the default) the writers append to the
  store alone, as the worker sees it: on this 2-core machine the inline
  orders projection holds the store's write lock for several milliseconds
  per event on PostgreSQL, and appends with it stop near 100 per second,
  short of the rate. With ``--inline on`` its changes are sent from here
  through Redis, as the worker's are.
- ``--via http`` (default embedded): order commands over HTTP from several
  clients, one event each. Appends from outside the server would wake the
  embedded worker only by its poll, so this is the embedded mode's path.

One staff watcher on the multiplexed ``/ws/v1/`` is
subscribed to ``dashboard`` (asynchronous: the worker applies it after the
command committed) and to the shoppers' ``customers/<id>/orders`` (inline:
applied in the command's transaction, sent by daphne's relay). The
baseline is that inline topic, measured the same way in the same run;
with ``--inline off`` it is the store's own NOTIFY instead, from commit to
its arrival at a plain psycopg connection that LISTENs, the floor of any
wake-up. Appends commit in position order under the store's lock and
PostgreSQL delivers notifications in commit order, so the n-th
notification belongs to the n-th position.

With ``--via append`` each change's time runs from its event's commit to
the frame's arrival. With ``--via http`` it runs from the event's
``recorded_at``, taken in the append's transaction just before its commit,
so the figures are a little above commit -> watcher; and a dashboard
change counts from the last event of the worker's batch only. With
``--via append`` every event counts, from its own commit to the arrival of
the first dashboard change that includes it. Server and client read the
same clock: they run on one machine.

    .venv/bin/python bench/async_latency.py [--rate 200] [--seconds 20]
        [--via append|http] [--writers 4] [--inline on|off]

``DATABASE_URL`` and ``REDIS_URL`` run it against PostgreSQL and Redis;
without them the worker runs inside daphne (the embedded mode).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import threading
import time
from collections import Counter, defaultdict

from harness import ROOT, BenchServer, print_table, summarize
from http_commands import Shopper
from order_events import interleaved, order_plans
from websockets.asyncio.client import ClientConnection, connect

CUSTOMER = "c-async"
INLINE_TOPIC = f"customers/{CUSTOMER}/orders"
ASYNC_TOPIC = "dashboard"
# Concurrent HTTP clients sharing the rate: enough that one slow answer
# does not hold the rate back.
SHOPPERS = 16
WARM_UP_SECS = 2.0
DRAIN_SECS = 3.0
NOTIFY_BASELINE = "baseline: store NOTIFY at a LISTEN connection"


class NotifyListener:
    """A plain psycopg connection LISTENing to the store's channel in a
    thread of its own; notes when each notification arrives."""

    def __init__(self, url: str) -> None:
        import psycopg

        from events.store import APPEND_NOTIFY_CHANNEL

        self.connection = psycopg.connect(url, autocommit=True)
        self.connection.execute(f"LISTEN {APPEND_NOTIFY_CHANNEL}")
        self.arrivals: list[float] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="listen", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            for _ in self.connection.notifies(timeout=0.2):
                self.arrivals.append(time.time())

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.connection.close()

    def delays(self, commits: dict[int, float], measure_from: float) -> list[float]:
        """The n-th notification against the n-th position's commit."""
        in_order = [commits[position] for position in sorted(commits)]
        return [
            arrived - committed
            for committed, arrived in zip(in_order, self.arrivals, strict=False)
            if committed >= measure_from
        ]


def recorded_at(frame: dict) -> float:
    text = frame["event"]["recorded_at"]
    when = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    return when.replace(tzinfo=datetime.UTC).timestamp()


class Watcher:
    """Reads every frame; notes each change's delay per topic."""

    def __init__(
        self,
        ws: ClientConnection,
        measure_from: float,
        commits: dict[int, float] | None = None,
    ) -> None:
        self.ws = ws
        self.measure_from = measure_from
        # Commit times by position, when this process appends.
        self.commits = commits
        # (position, arrival) of each change, per topic.
        self.arrivals: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.delays: dict[str, list[float]] = defaultdict(list)
        self.versions: dict[str, int] = {}
        self.problems: list[str] = []

    async def subscribe(self, topic: str) -> None:
        await self.ws.send(json.dumps({"type": "subscribe", "topic": topic}))
        frame = json.loads(await self.ws.recv())
        if frame.get("type") != "subscribed":
            raise RuntimeError(f"subscribe to {topic} failed: {frame}")
        self.versions[topic] = frame["version"]

    async def read_forever(self) -> None:
        async for raw in self.ws:
            now = time.time()
            frame = json.loads(raw)
            if frame["type"] != "change":
                self.problems.append(f"unexpected frame: {raw[:200]}")
                continue
            topic = frame["topic"]
            if frame["version"] != self.versions[topic] + 1:
                self.problems.append(
                    f"topic {topic} went from version {self.versions[topic]} "
                    f"to {frame['version']}"
                )
            self.versions[topic] = frame["version"]
            if self.commits is not None:
                self.arrivals[topic].append((frame["position"], now))
                continue
            recorded = recorded_at(frame)
            if recorded >= self.measure_from:
                self.delays[topic].append(now - recorded)

    def match_commits(self) -> None:
        """Delays from each event's commit, once every commit is noted.

        A change carries the last event it includes: an inline change its
        own event, a dashboard change the last of the worker's batch. Every
        event since the topic's previous change reached the watcher with
        it, so each counts from its own commit to that arrival.
        """
        positions = sorted(self.commits)
        for topic, arrivals in self.arrivals.items():
            index = 0
            for position, arrived in arrivals:
                if position not in self.commits:
                    self.problems.append(f"change at {position} without a commit")
                while index < len(positions) and positions[index] <= position:
                    committed = self.commits[positions[index]]
                    if committed >= self.measure_from:
                        self.delays[topic].append(arrived - committed)
                    index += 1


async def send_at_rate(
    shoppers: list[Shopper], rate: float, seconds: float
) -> tuple[int, Counter]:
    """Commands at ``rate`` per second for ``seconds``; slot n is due at
    start + n / rate, taken by whichever shopper is free."""
    slots = iter(range(int(rate * seconds)))
    statuses: Counter = Counter()
    started = time.perf_counter()

    async def loop(shopper: Shopper) -> None:
        for n in slots:
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            response = await shopper.command()
            statuses[response.status_code] += 1

    await asyncio.gather(*(loop(shopper) for shopper in shoppers))
    return sum(statuses.values()), statuses


def append_at_rate(
    rate: float,
    seconds: float,
    commits: dict[int, float],
    writers: int = 1,
) -> tuple[int, Counter]:
    """Append order events of customer ``CUSTOMER`` at ``rate`` per second
    for ``seconds``, one per transaction, noting when each committed.

    ``writers`` threads share the rate, each on its own connection and its
    own order streams: one writer alone cannot append with the inline
    projection at 200 per second here."""
    threads = [
        threading.Thread(
            target=_append_share,
            args=(n, rate / writers, seconds, commits),
            name=f"writer-{n}",
        )
        for n in range(writers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    count = len(threads) * int(rate / writers * seconds)
    return count, Counter({"appended": count})


def _append_share(
    writer: int, rate: float, seconds: float, commits: dict[int, float]
) -> None:
    from django.db import connection, transaction

    from events.orders import ORDER_STREAM_TYPE
    from events.records import NewEvent
    from events.store import append_to_stream

    count = int(rate * seconds)
    plans = order_plans(count, prefix=f"o-{os.getpid()}-{writer}")
    started = time.perf_counter()
    for n, (plan, index) in enumerate(interleaved(plans)):
        delay = started + n / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        event_type, data = plan.events[index]
        if event_type == "OrderPlaced":
            data = {**data, "customer_id": CUSTOMER}
        position: list[int] = []

        def note_commit(position: list[int] = position) -> None:
            commits[position[0]] = time.time()

        with transaction.atomic():
            # Registered first, so it runs first after the commit, before
            # the inline projection's changes are sent.
            transaction.on_commit(note_commit)
            recorded = append_to_stream(
                plan.order_id, ORDER_STREAM_TYPE, index, [NewEvent(event_type, data)]
            )
            position.append(recorded[0].position)
    connection.close()


async def measure(server: BenchServer, staff: str, customer: str, args) -> dict:
    headers = {"Authorization": f"Token {staff}"}
    commits: dict[int, float] | None = None
    listener = None
    if args.via == "append":
        commits = {}
        if args.inline == "off":
            listener = NotifyListener(server.env["DATABASE_URL"])
    async with connect(f"{server.ws_url}/ws/v1/", additional_headers=headers) as ws:
        watcher = Watcher(ws, time.time() + WARM_UP_SECS, commits)
        await watcher.subscribe(ASYNC_TOPIC)
        await watcher.subscribe(INLINE_TOPIC)
        reader = asyncio.create_task(watcher.read_forever())

        started = time.perf_counter()
        if commits is not None:
            sent, statuses = await asyncio.to_thread(
                append_at_rate,
                args.rate,
                WARM_UP_SECS + args.seconds,
                commits,
                args.writers,
            )
        else:
            shoppers = [Shopper(server.url, customer) for _ in range(SHOPPERS)]
            sent, statuses = await send_at_rate(
                shoppers, args.rate, WARM_UP_SECS + args.seconds
            )
            for shopper in shoppers:
                await shopper.close()
        elapsed = time.perf_counter() - started
        await asyncio.sleep(DRAIN_SECS)
        reader.cancel()
    if commits is not None:
        watcher.match_commits()
    if listener is not None:
        listener.stop()
        if len(listener.arrivals) != len(commits):
            watcher.problems.append(
                f"{len(listener.arrivals)} notifications for {len(commits)} commits"
            )
        watcher.delays[NOTIFY_BASELINE] = listener.delays(commits, watcher.measure_from)

    return {
        "watcher": watcher,
        "sent": sent,
        "statuses": statuses,
        "rate": sent / elapsed,
    }


def set_up_django(env: dict[str, str]) -> None:
    """Point this process's Django at the bench server's database and
    layer, to append as a command would."""
    import sys

    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="commands/s")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time")
    parser.add_argument(
        "--workers", type=int, default=1, help="run_worker processes (production)"
    )
    parser.add_argument(
        "--writers",
        type=int,
        default=4,
        help="appending threads sharing the rate (--via append)",
    )
    parser.add_argument(
        "--inline",
        choices=("on", "off"),
        default="off",
        help="run the inline orders projection in the writers (--via append)",
    )
    production = bool(os.environ.get("DATABASE_URL"))
    parser.add_argument(
        "--via", choices=("append", "http"), default="append" if production else "http"
    )
    args = parser.parse_args()
    if args.via == "append" and not production:
        parser.error("--via append needs DATABASE_URL: see the module docstring")

    with BenchServer(workers=args.workers if production else 0) as server:
        staff = server.create_token("bench-staff", "--staff")
        customer = server.create_token("bench-shopper", "--customer", CUSTOMER)
        if args.via == "append":
            set_up_django(server.env)
            if args.inline == "off":
                from events import store

                store._append_hooks.clear()
        inline = "with" if args.inline == "on" else "without"
        load = (
            f"direct appends from {args.writers} threads, one event per commit, "
            f"{inline} the inline projection"
            if args.via == "append"
            else f"HTTP commands from {SHOPPERS} clients"
        )
        print(f"lookout async_latency: {server.mode}")
        print(
            f"python {platform.python_version()}, {os.cpu_count()} cores; "
            f"{load} at {args.rate:g}/s, "
            f"{args.seconds:g} s measured after {WARM_UP_SECS:g} s warm-up"
        )
        print()
        result = asyncio.run(measure(server, staff, customer, args))

    watcher = result["watcher"]
    rows = []
    baseline = (
        (NOTIFY_BASELINE, NOTIFY_BASELINE)
        if args.via == "append" and args.inline == "off"
        else ("baseline: inline customers/{id}/orders", INLINE_TOPIC)
    )
    for name, topic in (("async: dashboard (worker)", ASYNC_TOPIC), baseline):
        delays = watcher.delays[topic]
        figures = summarize(delays) if delays else dict.fromkeys(range(4), 0.0)
        rows.append([name, len(delays), *figures.values()])
    start = "committed" if args.via == "append" else "recorded"
    print(f"event {start} -> change at the watcher")
    print_table(["topic", "n", "median ms", "p90 ms", "p99 ms", "max ms"], rows)
    print()
    statuses = ", ".join(
        f"{n} x {code}" for code, n in sorted(result["statuses"].items())
    )
    print(
        f"events sent: {result['sent']} at {result['rate']:.1f}/s achieved ({statuses})"
    )
    for problem in watcher.problems[:10]:
        print(f"problem: {problem}")
    if watcher.problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
