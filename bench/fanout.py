"""One change fanned out to many subscribers of one topic.

Starts daphne on a free port against a fresh database (see harness.py),
serving Lookout plus a baseline route (fanout_asgi.py): a trivial Channels
consumer per socket, joined to the topic's group, forwarding each group
message. Subscriber clients run in other processes. For each setting (1,
100 and 1,000 WebSocket subscribers through Lookout and through the trivial
consumer; 100 SSE subscribers through Lookout), commands are sent one at a
time; each places an order, which is one change on the customer's topic,
and the next command waits until every subscriber has that change. The
time of a change is from its event's ``recorded_at`` (taken inside the
committing transaction) to its receipt by each subscriber, on the same
machine's clock. WebSocket clients read with websockets' Sans-I/O protocol
(``FrameReader``), SSE clients with httpx.

    .venv/bin/python bench/fanout.py [--changes 30] [--sizes 1,100,1000]
    .venv/bin/python bench/fanout.py --postgres-redis

``--postgres-redis`` runs against PostgreSQL and Redis (``DATABASE_URL``
and ``REDIS_URL``, or the local defaults below). ``FANOUT_LOG_LEVEL=DEBUG``
keeps the server's log in /tmp/fanout-daphne.log, with the time the topic
hub took to hand each change to its subscribers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import re
import resource
import shutil
import time
from collections.abc import Callable
from datetime import datetime
from multiprocessing.connection import Connection
from urllib.parse import urlsplit

import httpx
from harness import PYTHON, ROOT, BenchServer, free_port, print_table, summarize
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

CUSTOMER = "c-fanout"
TOPIC = f"customers/{CUSTOMER}/orders"
ORDER = {"items": [{"sku": "tea", "quantity": 2, "unit_price": "6.15"}]}
LOCAL_POSTGRES = "postgres://postgres@127.0.0.1:5432/lookout"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"
# One client process serves at most this many sockets: one Python process
# reads about 250 frames in a few milliseconds.
SOCKETS_PER_PROCESS = 250
CONNECTS_AT_ONCE = 50
WARM_UP_CHANGES = 3
CHANGE_TIMEOUT_SECS = 30.0
VERSION = re.compile(r'"version":(\d+)')


class FanoutServer(BenchServer):
    """A BenchServer serving fanout_asgi.py, with room for many sockets."""

    def _environment(self) -> dict[str, str]:
        env = super()._environment()
        env["LOOKOUT_LOG_LEVEL"] = os.environ.get("FANOUT_LOG_LEVEL", "WARNING")
        return env

    def close(self) -> None:
        if os.environ.get("FANOUT_LOG_LEVEL") and self.log_path.exists():
            shutil.copy(self.log_path, "/tmp/fanout-daphne.log")
        super().close()

    def start(self) -> None:
        import subprocess

        self.port = free_port()
        log = open(self.log_path, "w")  # noqa: SIM115 - lives as long as daphne
        self.process = subprocess.Popen(
            [PYTHON, "-m", "daphne", "-v", "0", "-b", "127.0.0.1"]
            + ["-p", str(self.port), "bench.fanout_asgi:application"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self._wait_until_ready()


# Client processes


class FrameReader(asyncio.Protocol):
    """One WebSocket client on websockets' Sans-I/O protocol. Text frames
    are handed to ``on_text`` as they are parsed, with the time their bytes
    arrived.

    The load generator shares this machine's two cores with the server, so
    its own cost counts in every figure: websockets' asyncio client, a task
    per connection woken for each frame, took about 48 us of CPU a frame
    here, this reader about 31 us.
    """

    def __init__(self, url: str, headers: dict[str, str], on_text: Callable) -> None:
        self.protocol = ClientProtocol(parse_uri(url))
        self.request = self.protocol.connect()
        self.request.headers.update(headers)
        self.on_text = on_text
        loop = asyncio.get_running_loop()
        self.opened = loop.create_future()
        self.closed = loop.create_future()

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.protocol.send_request(self.request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if not isinstance(event, Frame):
                self._handshake_done()
            elif event.opcode is Opcode.TEXT:
                self.on_text(event.data.decode(), now)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed in the handshake"))
        if not self.closed.done():
            self.closed.set_result(exc)

    def send_text(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        self._flush()

    def _handshake_done(self) -> None:
        failed = self.protocol.handshake_exc
        if failed is not None:
            self.opened.set_exception(failed)
        else:
            self.opened.set_result(None)

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()


class Clients:
    """``count`` subscribers of one kind in this process; reports to the
    driver when all of them hold a version, and their times at the end."""

    def __init__(self, kind: str, url: str, token: str, count: int, pipe) -> None:
        self.kind = kind
        self.url = url
        self.token = token
        self.count = count
        self.pipe = pipe
        self.receipts: list[tuple[int, float]] = []
        self.recorded: dict[int, float] = {}
        self.holding: dict[int, int] = {}
        self.problems: list[str] = []

    def receive(self, raw: str, now: float, last: list[int]) -> None:
        version = int(VERSION.search(raw).group(1))
        if version not in self.recorded:
            recorded_at = json.loads(raw)["event"]["recorded_at"]
            self.recorded[version] = datetime.fromisoformat(recorded_at).timestamp()
        if last and version != last[0] + 1:
            self.problems.append(f"version {version} after {last[0]}")
        last[:] = [version]
        self.receipts.append((version, now))
        self.holding[version] = self.holding.get(version, 0) + 1
        if self.holding[version] == self.count:
            self.pipe.send(("got", version))

    async def websocket(self, ready: asyncio.Event) -> None:
        headers = {"Authorization": f"Token {self.token}"}
        if self.kind == "trivial":
            url = f"{self.url.replace('http', 'ws')}/bench/trivial/?topic={TOPIC}"
        else:
            url = f"{self.url.replace('http', 'ws')}/ws/v1/"
        last: list[int] = []

        def on_text(raw: str, now: float) -> None:
            # Lookout first answers the subscribe frame.
            if not ready.is_set():
                ready.set()
            else:
                self.receive(raw, now, last)

        address = urlsplit(self.url)
        loop = asyncio.get_running_loop()
        _, reader = await loop.create_connection(
            lambda: FrameReader(url, headers, on_text), address.hostname, address.port
        )
        try:
            await reader.opened
            if self.kind == "websocket":
                reader.send_text(json.dumps({"type": "subscribe", "topic": TOPIC}))
            else:
                ready.set()
            await reader.closed
        finally:
            reader.transport.close()

    async def sse(self, client: httpx.AsyncClient, ready: asyncio.Event) -> None:
        headers = {"Accept": "text/event-stream"}
        path = f"/api/v1/{TOPIC}/watch"
        async with client.stream("GET", path, headers=headers) as response:
            event, last = "", []
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                    if event == "subscribed":
                        ready.set()
                elif line.startswith("data:") and event == "change":
                    self.receive(line[5:].strip(), time.time(), last)

    async def run(self) -> None:
        client = httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Token {self.token}"},
            timeout=None,
            limits=httpx.Limits(max_connections=None),
        )
        tasks = []
        for start in range(0, self.count, CONNECTS_AT_ONCE):
            batch = [asyncio.Event() for _ in range(start, start + CONNECTS_AT_ONCE)]
            batch = batch[: self.count - start]
            for ready in batch:
                if self.kind == "sse":
                    tasks.append(asyncio.create_task(self.sse(client, ready)))
                else:
                    tasks.append(asyncio.create_task(self.websocket(ready)))
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in batch)), 60)
        self.pipe.send(("ready", None))

        # Until the driver says stop.
        stop = asyncio.Event()
        asyncio.get_running_loop().add_reader(self.pipe.fileno(), stop.set)
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()
        latencies = [(v, t - self.recorded[v]) for v, t in self.receipts]
        self.pipe.send(("done", (latencies, self.problems)))


def client_process(kind: str, url: str, token: str, count: int, pipe) -> None:
    asyncio.run(Clients(kind, url, token, count, pipe).run())


# The driver


def run_setting(server: FanoutServer, token: str, kind: str, n: int, changes: int):
    """Latencies of every (subscriber, change) pair, and the problems seen."""
    spawn = multiprocessing.get_context("spawn")
    sizes = [SOCKETS_PER_PROCESS] * (n // SOCKETS_PER_PROCESS)
    if n % SOCKETS_PER_PROCESS:
        sizes.append(n % SOCKETS_PER_PROCESS)
    pipes: list[Connection] = []
    processes = []
    for size in sizes:
        ours, theirs = spawn.Pipe()
        process = spawn.Process(
            target=client_process, args=(kind, server.url, token, size, theirs)
        )
        process.start()
        pipes.append(ours)
        processes.append(process)
    for pipe in pipes:
        if not pipe.poll(120):
            raise RuntimeError(f"{kind} clients did not connect in time")
        pipe.recv()

    headers = {"Authorization": f"Token {token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as c:
        answer = c.get(f"/api/v1/{TOPIC}")
        version = answer.json()["version"] if answer.status_code == 200 else 0
        for _ in range(WARM_UP_CHANGES + changes):
            c.post("/api/v1/orders/", json=ORDER).raise_for_status()
            version += 1
            for pipe in pipes:
                wait_for_version(pipe, version)
    first_measured = version - changes + 1

    latencies, problems = [], []
    for pipe in pipes:
        pipe.send(("stop", None))
    for pipe, process in zip(pipes, processes, strict=True):
        _, (pairs, seen) = pipe.recv()
        latencies.extend(secs for v, secs in pairs if v >= first_measured)
        problems.extend(seen)
        process.join(30)
    return latencies, problems


def wait_for_version(pipe: Connection, version: int) -> None:
    deadline = time.monotonic() + CHANGE_TIMEOUT_SECS
    while time.monotonic() < deadline:
        if not pipe.poll(deadline - time.monotonic()):
            break
        kind, got = pipe.recv()
        if kind == "got" and got >= version:
            return
    raise RuntimeError(f"subscribers did not all get version {version} in time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=30, help="changes per setting")
    parser.add_argument(
        "--sizes", default="1,100,1000", help="WebSocket subscriber counts"
    )
    parser.add_argument("--sse", type=int, default=100, help="SSE subscribers")
    parser.add_argument(
        "--postgres-redis",
        action="store_true",
        help=f"PostgreSQL and Redis ({LOCAL_POSTGRES}, {LOCAL_REDIS} unless set)",
    )
    args = parser.parse_args()
    if args.postgres_redis:
        os.environ.setdefault("DATABASE_URL", LOCAL_POSTGRES)
        os.environ.setdefault("REDIS_URL", LOCAL_REDIS)

    # 1,000 sockets on each side; the server and the clients inherit this.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    settings: list[tuple[str, str, int]] = []
    for n in (int(s) for s in args.sizes.split(",")):
        settings.append(("Lookout WebSocket", "websocket", n))
        settings.append(("baseline: trivial consumer", "trivial", n))
    if args.sse:
        settings.append(("Lookout SSE", "sse", args.sse))

    with FanoutServer() as server:
        token = server.create_token("bench-fanout", "--customer", CUSTOMER)
        print(f"lookout fanout: {server.mode}")
        print(
            f"python {platform.python_version()}, {os.cpu_count()} cores; "
            f"{args.changes} changes per setting on {TOPIC}, one at a time; "
            f"clients in processes of up to {SOCKETS_PER_PROCESS} sockets"
        )
        print()
        print(f"server log: {server.log_path}")
        rows, all_problems = [], []
        for name, kind, n in settings:
            latencies, problems = run_setting(server, token, kind, n, args.changes)
            figures = summarize(latencies)
            rows.append([name, n, len(latencies), *figures.values()])
            all_problems.extend(f"{name} x{n}: {p}" for p in problems)
            expected = n * args.changes
            if len(latencies) != expected:
                all_problems.append(
                    f"{name} x{n}: {len(latencies)} receipts, expected {expected}"
                )

    print_table(
        ["path", "subscribers", "receipts", "median ms", "p90 ms", "p99 ms", "max ms"],
        rows,
    )
    print()
    print("time from the event's recorded_at to receipt at each subscriber")
    for problem in all_problems[:10]:
        print(f"problem: {problem}")
    if all_problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
