"""Graceful shutdown of a watch server.

On SIGTERM the server stops taking new connections and asks each of its
subscribers to come back later: a WebSocket is closed with 1012 (service
restart), an SSE stream gets a ``retry:`` hint and ends, a waiting long
poll answers at once with what it has. The requests are spread over
``STREAMS["DRAIN_SECS"]`` so that the clients do not all reconnect at the
same moment. Once they are gone (or shortly after the last was told) the
server stops as SIGTERM would have stopped it, with exit status 0.

Nothing is lost by leaving: every client resumes from the last version it
applied (``since=``, ``Last-Event-ID``) on another server or this one,
restarted.

Subscribers register here while they watch; the registry and the drain are
per process.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Protocol, TypeVar

from . import conf

__all__ = [
    "CLOSE_SERVICE_RESTART",
    "HttpSubscriber",
    "Leaving",
    "drain",
    "drain_on_sigterm",
    "in_flight",
    "register",
    "registry",
    "unregister",
    "watching",
]

logger = logging.getLogger(__name__)

# RFC 6455's close code for "the service is restarting; reconnect".
CLOSE_SERVICE_RESTART = 1012

# After the last subscriber was told to leave, wait at most this long for
# close handshakes, last SSE frames and requests in flight to finish.
FAREWELL_SECS = 2.0

# How often the drain looks whether everyone has gone.
_POLL_SECS = 0.05

T = TypeVar("T")

# Tasks started here, held until done: the loop keeps only weak references.
_tasks: set[asyncio.Future] = set()


def _keep(task: asyncio.Future) -> None:
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


class Leaving(Protocol):
    """A subscriber the drain can ask to leave."""

    async def leave_for_restart(self) -> None:
        """Tell the client to reconnect later; do not wait for it to go."""


class Registry:
    """The subscribers of this process, in the order they arrived, and the
    count of requests and connections being served."""

    def __init__(self) -> None:
        self.subscribers: dict[Leaving, None] = {}
        self.in_flight = 0
        self.draining = False

    def register(self, subscriber: Leaving) -> None:
        self.subscribers[subscriber] = None
        if self.draining:
            # Arrived during the drain (a kept-alive connection, or one
            # accepted just before listening stopped): it leaves at once.
            _keep(asyncio.get_running_loop().create_task(tell(subscriber)))

    def unregister(self, subscriber: Leaving) -> None:
        self.subscribers.pop(subscriber, None)

    @property
    def idle(self) -> bool:
        return not self.subscribers and self.in_flight == 0


registry = Registry()


def register(subscriber: Leaving) -> None:
    registry.register(subscriber)


def unregister(subscriber: Leaving) -> None:
    registry.unregister(subscriber)


@contextmanager
def in_flight() -> Iterator[None]:
    """Count one request or connection while it is served."""
    registry.in_flight += 1
    try:
        yield
    finally:
        registry.in_flight -= 1


class HttpSubscriber:
    """An SSE stream or a long poll in the registry. Told to leave, it
    stops waiting for changes, so that its view can answer."""

    def __init__(self) -> None:
        self.told = False
        self._waiting: asyncio.Timeout | None = None

    async def leave_for_restart(self) -> None:
        self.told = True
        if self._waiting is not None:
            # Ends the wait in progress, as a timeout that falls due now.
            self._waiting.reschedule(0)

    async def until_told(
        self, items: AsyncGenerator[T, None]
    ) -> AsyncGenerator[T, None]:
        """The items of ``items`` until this subscriber is told to leave.
        An item that was being awaited then is abandoned with ``items``."""
        try:
            while not self.told:
                try:
                    async with asyncio.timeout(None) as self._waiting:
                        item = await anext(items)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    if self.told:
                        return
                    raise
                finally:
                    self._waiting = None
                yield item
        finally:
            await items.aclose()


@asynccontextmanager
async def watching() -> AsyncIterator[HttpSubscriber]:
    """Register an HTTP subscriber for as long as the block runs."""
    subscriber = HttpSubscriber()
    register(subscriber)
    try:
        yield subscriber
    finally:
        unregister(subscriber)


async def tell(subscriber: Leaving) -> None:
    try:
        await subscriber.leave_for_restart()
    except Exception:
        # It stays until the server stops, which then drops it.
        logger.exception("subscriber %r could not be told to leave", subscriber)


async def drain(window_secs: float | None = None) -> None:
    """Tell every subscriber to leave, spread evenly over the window, then
    wait until they and the requests in flight are gone, for
    ``FAREWELL_SECS`` at most."""
    window = conf.get("DRAIN_SECS") if window_secs is None else window_secs
    loop = asyncio.get_running_loop()
    started = loop.time()
    registry.draining = True
    subscribers = list(registry.subscribers)
    logger.info(
        "server draining: %d subscribers told to leave over %.1f s",
        len(subscribers),
        window,
    )

    # The n-th of N is told at n * window / N: the first at once, the last
    # one share of the window before its end.
    share = window / len(subscribers) if subscribers else 0.0
    for n, subscriber in enumerate(subscribers):
        await asyncio.sleep(max(0.0, started + n * share - loop.time()))
        if subscriber in registry.subscribers:
            await tell(subscriber)

    deadline = loop.time() + FAREWELL_SECS
    while not registry.idle and loop.time() < deadline:
        await asyncio.sleep(_POLL_SECS)
    logger.info(
        "server drained in %.1f s: %d subscribers and %d requests left",
        loop.time() - started,
        len(registry.subscribers),
        registry.in_flight,
    )


def drain_on_sigterm() -> None:
    """Under daphne, answer SIGTERM with a drain once the server runs.

    Daphne runs Twisted's reactor, which on start installs a SIGTERM
    handler that stops it at once (cancelling every connection). This
    replaces it, and calls it when the drain is over.
    """
    reactor: Any = sys.modules.get("twisted.internet.reactor")
    if reactor is None:
        # Limit: only daphne is hooked. Under another server SIGTERM stops
        # the server its own way; clients still resume, all at once.
        return
    reactor.callWhenRunning(_take_over_sigterm, reactor)


def _take_over_sigterm(reactor: Any) -> None:
    if threading.current_thread() is not threading.main_thread():
        # Signals reach only the main thread; a server run in another one
        # (runserver with its reloader) keeps the reactor's behaviour.
        return
    _let_daphne_close_with_restart()
    stop_now = signal.getsignal(signal.SIGTERM)
    started = False

    def stop() -> None:
        if callable(stop_now):
            stop_now(signal.SIGTERM, None)
        else:
            reactor.stop()

    async def drain_then_stop() -> None:
        try:
            ports = _stop_listening(reactor)
            logger.info("server stopped listening on %d ports", ports)
            await drain()
        finally:
            stop()

    def start() -> None:
        nonlocal started
        if started:
            # A second SIGTERM: stop without waiting for the drain.
            stop()
            return
        started = True
        _keep(asyncio.ensure_future(drain_then_stop()))

    def on_sigterm(number: int, frame: Any) -> None:
        reactor.callFromThread(start)

    signal.signal(signal.SIGTERM, on_sigterm)


def _let_daphne_close_with_restart() -> None:
    """Daphne closes a WebSocket with autobahn's ``sendClose``, which takes
    only the codes a browser's ``close()`` may send (1000, 3000-4999); a
    server may also send 1012, as daphne itself sends 1011 on a crash.

    Compatibility shim: drop it once autobahn accepts the registered
    server codes in ``sendClose``.
    """
    from daphne.ws_protocol import WebSocketProtocol

    close = WebSocketProtocol.serverClose
    if getattr(close, "sends_restart", False):
        return

    def server_close(self: Any, code: int | None = None) -> None:
        if code == CLOSE_SERVICE_RESTART:
            self.sendCloseFrame(code=code)
        else:
            close(self, code)

    server_close.sends_restart = True  # type: ignore[attr-defined]
    WebSocketProtocol.serverClose = server_close


def _stop_listening(reactor: Any) -> int:
    """Close the server's listening sockets: new connections are refused
    (and may go to a new server on the same port), open ones go on."""
    from twisted.internet.interfaces import IListeningPort

    ports = [r for r in reactor.getReaders() if IListeningPort.providedBy(r)]
    for port in ports:
        port.stopListening()
    return len(ports)
