"""Fan-out of live changes inside one server process.

The subscribers of a topic in one process share one membership of the
topic's Channels group: the process's ``TopicHub`` (one per event loop)
joins the group when the topic's first local subscriber arrives and leaves
it when the last one goes. A change reaches the hub once, as the JSON text
encoded at commit, and the hub appends that same text to the queue of each
local subscriber without awaiting any of them. The relay's group send so
costs one message per process, whatever the number of subscribers; each
subscriber's own task sends from its queue.

A queue holds at most ``MAX_SUBSCRIBER_LAG`` changes. A subscriber that
falls further behind is cut off (its queue is emptied and marked), and its
transport tells the client to resume from the last version it was sent:
the hub, commands and other subscribers never wait for it.

A reset (a rebuilt read model that differs from the one watchers
followed) reaches the hub as a ``topic.reset`` message and is queued like
a change, as a ``ResetMessage``: the reset object's JSON text, which
transports send as a reset instead of a change.

``TransportFlow`` lets a WebSocket subscriber see its socket fill up under
daphne, so that a client that stops reading builds up lag in its queue
instead of in the server's unbounded write buffer. It also writes a frame
to an idle plain-TCP socket at once: Twisted would buffer it, ask the
event loop to watch the socket, and send it on the loop's next turn,
which for a thousand sockets costs as much again as the frames.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
import weakref
from collections import deque
from typing import Any

from channels.layers import get_channel_layer

from . import conf, metrics
from .collector import QuietCollector
from .watch import group_name

__all__ = [
    "ChangeQueue",
    "ResetMessage",
    "SubscriberTooSlow",
    "TopicHub",
    "TransportFlow",
    "topic_hub",
    "transport_flow",
]

logger = logging.getLogger(__name__)

# The last message framed by TransportFlow.send_now, and its frame.
_prepared: tuple[str | None, Any] = (None, None)
_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TopicHub] = (
    weakref.WeakKeyDictionary()
)


class ResetMessage(str):
    """The JSON text of a reset object, queued in turn with changes."""


class SubscriberTooSlow(Exception):
    """More live changes waited for a subscriber than its queue holds."""


class ChangeQueue:
    """Live changes waiting for one subscriber, in arrival order."""

    def __init__(self, transport: str, limit: int | None = None) -> None:
        self.transport = transport
        self.limit = limit or conf.get("MAX_SUBSCRIBER_LAG")
        self.items: deque[tuple[str, int, str]] = deque()
        self.ready = asyncio.Event()
        self.cut_off = asyncio.Event()

    def offer(self, topic: str, version: int, message: str) -> None:
        """Called by the hub; never blocks."""
        if self.cut_off.is_set():
            return
        if len(self.items) >= self.limit:
            metrics.SLOW_SUBSCRIBERS.labels(self.transport).inc()
            metrics.DROPPED_CHANGES.labels(self.transport).inc(len(self.items) + 1)
            self.items.clear()
            self.cut_off.set()
        else:
            self.items.append((topic, version, message))
        self.ready.set()

    async def next(self, timeout: float | None = None) -> tuple[str, int, str] | None:
        """The next change; None when ``timeout`` passes without one."""
        if not self.items and not self.cut_off.is_set():
            self.ready.clear()
            try:
                await asyncio.wait_for(self.ready.wait(), timeout)
            except TimeoutError:
                return None
        if self.cut_off.is_set():
            raise SubscriberTooSlow(f"more than {self.limit} changes behind")
        return self.items.popleft()


class TopicHub:
    """This event loop's one membership per watched topic."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.channel = ""
        # Each topic's local subscribers in the order they joined, which
        # is the order each change reaches them.
        self.subscribers: dict[str, dict[ChangeQueue, None]] = {}
        self.joined: set[str] = set()
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._tasks: list[asyncio.Task] = []
        self.collector = QuietCollector()

    async def join(self, topic: str, queue: ChangeQueue) -> None:
        """Deliver ``topic``'s changes to ``queue``; on return the process
        is in the topic's group, so no later change can pass it by."""
        self.subscribers.setdefault(topic, {})[queue] = None
        self.collector.subscriber_joined()
        await self._settle(topic)

    async def leave(self, topic: str, queue: ChangeQueue) -> None:
        members = self.subscribers.get(topic)
        if members is not None:
            members.pop(queue, None)
            if not members:
                del self.subscribers[topic]
        await self._settle(topic)

    def deliver(self, topic: str, version: int, message: str) -> None:
        started = time.perf_counter()
        queues = tuple(self.subscribers.get(topic, ()))
        for queue in queues:
            queue.offer(topic, version, message)
        self.collector.change_delivered()
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "topic hub handed version %d of %s to %d subscribers in %.1f ms",
                version,
                topic,
                len(queues),
                (time.perf_counter() - started) * 1000,
            )

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.collector.stop()

    async def _settle(self, topic: str) -> None:
        """Bring the group membership in line with the local subscribers,
        one change of membership per topic at a time."""
        lock, users = self._locks.setdefault(topic, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                wanted = topic in self.subscribers
                if wanted and topic not in self.joined:
                    channel = await self._channel()
                    await self.layer.group_add(group_name(topic), channel)
                    self.joined.add(topic)
                    logger.debug("topic hub joined %s", topic)
                elif not wanted and topic in self.joined:
                    self.joined.discard(topic)
                    await self.layer.group_discard(group_name(topic), self.channel)
                    logger.debug("topic hub left %s", topic)
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[topic]

    async def _channel(self) -> str:
        if not self.channel:
            self.channel = await self.layer.new_channel()
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._receive_forever()),
                loop.create_task(self._refresh_forever()),
            ]
        return self.channel

    async def _receive_forever(self) -> None:
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Subscribers fill what they miss from the outbox on their
                # next tick; keep listening.
                logger.exception("topic hub failed to receive a change; retrying")
                await asyncio.sleep(1)
                continue
            kind = message.get("type")
            if kind == "change.message":
                self.deliver(message["topic"], message["version"], message["message"])
            elif kind == "changes.message":
                for version, text in message["changes"]:
                    self.deliver(message["topic"], version, text)
            elif kind == "topic.reset":
                reset = ResetMessage(message["message"])
                self.deliver(message["topic"], message["version"], reset)

    async def _refresh_forever(self) -> None:
        # Layers forget group members after a while (channels-redis: a day);
        # the hub stays a member as long as it has subscribers.
        while True:
            await asyncio.sleep(conf.get("GROUP_REFRESH_SECS"))
            for topic in list(self.joined):
                try:
                    await self.layer.group_add(group_name(topic), self.channel)
                except Exception:
                    logger.exception("topic hub failed to refresh %s", topic)


def topic_hub() -> TopicHub:
    """The hub of the running event loop and the current channel layer."""
    loop = asyncio.get_running_loop()
    layer = get_channel_layer()
    hub = _hubs.get(loop)
    if hub is None or hub.layer is not layer:
        if hub is not None:
            hub.stop()
        hub = _hubs[loop] = TopicHub(layer)
    return hub


class TransportFlow:
    """Whether one connection's socket takes more data now.

    Under daphne it is registered as a Twisted streaming producer on the
    connection: the transport pauses it when its write buffer passes 64 KiB
    and resumes it when the buffer is empty. Elsewhere it is always open.
    """

    def __init__(self, protocol: Any = None, consumer: Any = None) -> None:
        self.protocol = protocol
        # What the flow is registered with: the transport, or the HTTP
        # channel that holds it (a WebSocket starts as an HTTP request).
        self.consumer = consumer
        self.open = asyncio.Event()
        self.open.set()
        self.direct = protocol is not None and _writes_directly(protocol)

    @property
    def watched(self) -> bool:
        return self.protocol is not None

    async def writable(self, give_up: asyncio.Event) -> bool:
        """Wait until the socket takes data (True) or ``give_up`` is set."""
        if self.open.is_set() or give_up.is_set():
            return not give_up.is_set()
        waits = [asyncio.ensure_future(e.wait()) for e in (self.open, give_up)]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        return not give_up.is_set()

    def send_now(self, message: str) -> bool:
        """Write ``message`` as a text frame at once, if under daphne and
        open. The frame is built once for all the connections that are
        sent the same message object in a row (autobahn's prepared
        messages, made for broadcasting)."""
        global _prepared
        protocol = self.protocol
        if protocol is None or protocol.state != protocol.STATE_OPEN:
            return False
        if _prepared[0] is not message:
            payload = message.encode()
            _prepared = (message, protocol.factory.prepareMessage(payload))
        if not (self.direct and _send_directly(protocol, _prepared[1].payloadHybi)):
            protocol.sendPreparedMessage(_prepared[1])
        return True

    def close(self, code: int, reason: str, grace_secs: float) -> bool:
        """Close with ``reason`` behind what the socket still buffers; the
        client gets ``grace_secs`` to read it all. False when not under
        daphne (the caller closes through ASGI then)."""
        if self.protocol is None:
            return False
        # daphne drops the reason of an ASGI close, so close through
        # autobahn, which daphne's protocol is.
        self.protocol.closeHandshakeTimeout = grace_secs
        self.protocol.sendClose(code=code, reason=reason)
        return True

    def release(self) -> None:
        if self.consumer is not None:
            try:
                self.consumer.unregisterProducer()
            except Exception:
                logger.debug("connection flow already gone with its transport")
        self.protocol = self.consumer = None
        self.open.set()

    # Twisted's IPushProducer.

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.open.clear()

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.open.set()

    def stopProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.open.set()


def transport_flow(send: Any) -> TransportFlow:
    """A flow for the connection behind an ASGI ``send`` callable.

    Limit: only daphne's WebSocket connections are watched (daphne's send
    is a partial over its autobahn protocol, under Channels' session
    wrapper). Under another server a
    subscriber's lag counts only what its own task has not sent yet, and a
    client that stops reading is buffered by the server.
    """
    protocol = _server_protocol(send)
    needed = ("registerProducer", "sendClose", "transport")
    if protocol is None or not all(hasattr(protocol, n) for n in needed):
        return TransportFlow()
    # When autobahn fails a connection (a frame over daphne's 1 MiB limit, a
    # protocol error) it drops the TCP connection by default, and the client
    # sees only 1006; a close frame first tells it why (1009 too big).
    protocol.failByDrop = False
    # Daphne's HTTP channel stays the transport's producer after the
    # upgrade, and passes pauses on to a producer registered with it.
    transport = protocol.transport
    holder = getattr(transport, "producer", None)
    consumer = holder if hasattr(holder, "registerProducer") else transport
    flow = TransportFlow(protocol, consumer)
    try:
        consumer.registerProducer(flow, True)
    except Exception:
        logger.warning("connection flow not watched", exc_info=True)
        return TransportFlow()
    send_buffer = conf.get("SOCKET_SEND_BUFFER_BYTES")
    if send_buffer:
        handle = transport.getHandle()
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    return flow


def _writes_directly(protocol: Any) -> bool:
    """Whether frames may skip Twisted's buffer: a plain TCP connection,
    not TLS, whose transport encrypts."""
    from twisted.internet import tcp

    return isinstance(protocol.transport, tcp.Connection) and hasattr(
        protocol, "send_queue"
    )


def _send_directly(protocol: Any, frame: bytes) -> bool:
    """Send ``frame`` on the socket now, if nothing is waiting before it
    in autobahn's queue or Twisted's buffer; what the socket does not take
    goes to Twisted's buffer, which sends it, or finds the error, as it
    would have. False when the frame must go the usual way."""
    transport = protocol.transport
    if (
        protocol.send_queue
        # Compression is settled with the handshake, after the flow is made.
        or getattr(protocol, "_perMessageCompress", None) is not None
        or transport.dataBuffer
        or transport._tempDataBuffer
        or not transport.connected
        or transport.disconnecting
    ):
        return False
    try:
        sent = transport.socket.send(frame)
    except OSError:
        # Full, reset or closed: Twisted's own write deals with it.
        sent = 0
    if sent < len(frame):
        transport.write(frame[sent:])
    return True


def _server_protocol(send: Any) -> Any:
    """Daphne's protocol object behind ``send``, or None."""
    for _ in range(4):
        if isinstance(send, functools.partial):
            return send.args[0] if send.args else None
        # Channels' SessionMiddleware wraps send in a bound method.
        send = getattr(getattr(send, "__self__", None), "real_send", None)
        if send is None:
            return None
    return None
