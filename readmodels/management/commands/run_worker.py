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
        "(dashboard, events). Several may run; one holds each projection."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument("--poll-secs", type=float, default=1.0)
        parser.add_argument("--lease-secs", type=float, default=5.0)

    def handle(self, *args, batch_size: int, poll_secs: float, lease_secs: float, **_):
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())

        worker = ProjectionWorker(
            batch_size=batch_size, poll_secs=poll_secs, lease_secs=lease_secs
        )
        if connection.vendor == "postgresql":
            threading.Thread(
                target=listen_for_appends, args=(worker.wakeup, stop), daemon=True
            ).start()
        self.stderr.write(f"worker {worker.owner} started")
        worker.run(stop)
        self.stderr.write(f"worker {worker.owner} stopped")
