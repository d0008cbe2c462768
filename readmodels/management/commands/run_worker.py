"""Run the asynchronous projections until stopped."""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand
from django.db import connection

from readmodels.worker import ProjectionWorker, listen_for_appends


class Command(BaseCommand):
    help = (
        "Tail the event store and apply the asynchronous projections "
        "(dashboard, events), each in a thread of its own. Several may run; "
        "one holds each projection."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument("--poll-secs", type=float, default=1.0)
        parser.add_argument("--lease-secs", type=float, default=5.0)

    def handle(self, *args, batch_size: int, poll_secs: float, lease_secs: float, **_):
        # The watch routes own the relay; imported here so that the read
        # side does not depend on them.
        from streams.background import start_relay_thread

        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())

        # Commits hand their changes to the relay's thread and go on.
        relay = start_relay_thread()
        worker = ProjectionWorker(
            batch_size=batch_size, poll_secs=poll_secs, lease_secs=lease_secs
        )
        if connection.vendor == "postgresql":
            threading.Thread(
                target=listen_for_appends,
                args=(worker.wake, stop),
                name="projection-listener",
                daemon=True,
            ).start()
        self.stderr.write(f"worker {worker.owner} started")
        try:
            worker.run(stop)
        finally:
            relay.stop()
        self.stderr.write(f"worker {worker.owner} stopped")
