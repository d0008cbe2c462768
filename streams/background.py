"""The outbox relay for a process that serves no event loop.

Under daphne the relay (``streams.relay``) runs on the server's event loop,
and a committing thread only hands its changes over. A process without a
loop, such as ``manage.py run_worker``, would instead send each
transaction's changes in the committing thread, on a new event loop each
time: every commit would wait for its sends, and the first for the layer's
connection. ``RelayThread`` runs the relay on an event loop in a thread of
its own, so that in such a process too, commits never wait for sends.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from .relay import ensure_relay, sweep_unsent

__all__ = ["RelayThread", "start_relay_thread"]

logger = logging.getLogger(__name__)

# The loop starts in well under a second; past this, commits meanwhile send
# in their own thread, as without a relay.
START_TIMEOUT_SECS = 10.0
# On stop, the time given to send what is still unsent.
STOP_TIMEOUT_SECS = 10.0


class RelayThread:
    """An event loop in a daemon thread, running this process's relay.

    ``start()`` returns once the relay takes changes; ``stop()`` sends what
    is still unsent in the outbox, then ends the loop.
    """

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started = threading.Event()
        self.thread = threading.Thread(
            target=self._run, name="outbox-relay", daemon=True
        )
        self._stopping: asyncio.Event | None = None

    def start(self, timeout_secs: float = START_TIMEOUT_SECS) -> RelayThread:
        self.thread.start()
        if not self.started.wait(timeout_secs):
            logger.warning(
                "outbox relay did not start within %.0f s; changes are sent "
                "by the committing thread meanwhile",
                timeout_secs,
            )
        return self

    def stop(self, timeout_secs: float = STOP_TIMEOUT_SECS) -> None:
        """Send the outbox rows left unsent, then end the loop. Returns
        within about ``timeout_secs``."""
        loop, stopping = self.loop, self._stopping
        if loop is None or stopping is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(stopping.set)
        except RuntimeError:
            return  # the loop closed meanwhile
        self.thread.join(timeout_secs)
        if self.thread.is_alive():
            logger.warning("outbox relay did not stop within %.0f s", timeout_secs)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        try:
            loop.run_until_complete(self._serve())
        except Exception:
            # Commits go on, sending in their own thread as without a relay.
            logger.exception("outbox relay stopped on an error")
        finally:
            loop.run_until_complete(_cancel_pending(loop))
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        ensure_relay()
        self.started.set()
        logger.info("outbox relay started on an event loop of its own")
        await self._stopping.wait()

        # Changes handed over but not sent yet are unsent rows: send them
        # all. One the relay is sending this moment may go out twice, which
        # subscribers ignore.
        try:
            sent = await asyncio.wait_for(
                sweep_unsent(older_than_secs=0), STOP_TIMEOUT_SECS
            )
        except Exception:
            logger.exception("outbox relay failed to send unsent rows on stop")
        else:
            logger.info("outbox relay stopped (%d unsent changes sent)", sent)


async def _cancel_pending(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [
        task for task in asyncio.all_tasks(loop) if task is not asyncio.current_task()
    ]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def start_relay_thread() -> RelayThread:
    """Run this process's relay on an event loop thread of its own."""
    return RelayThread().start()
