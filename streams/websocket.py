"""Watching over WebSocket: the multiplexed ``/ws/v1/`` endpoint and the
per-resource upgrade on ``.../watch``.

Close codes: 4400 a bad ``since`` (per-resource only), 4401 not
authenticated, 4403 forbidden, 4404 no such topic (per-resource only) or
no such WebSocket route; the multiplexed endpoint answers a bad frame
with an ``error`` frame and stays open. 4008 too far behind: more than
``MAX_SUBSCRIBER_LAG`` live changes waited for the connection. The 4008
reason is JSON with the last version sent, ``{"version": V}`` per resource
and ``{"versions": {topic: V, ...}}`` on ``/ws/v1/`` (``{}`` when that does
not fit the 123 bytes of a close reason); every change up to it came
before the close frame. Resume with ``since=V``.

Live changes come from the process's topic hub (``fanout``) into one queue
per connection, which the connection's own sending task drains.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import parse_qs

from autobahn.exception import Disconnected
from channels.exceptions import ChannelFull
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth import get_user_model

from accounts.access import Access
from api.parsers import is_storable
from readmodels.models import Topic

from . import conf, metrics, shutdown
from .fanout import ChangeQueue, ResetMessage, topic_hub, transport_flow
from .watch import (
    InvalidSince,
    Subscription,
    UnknownTopic,
    check_topic,
    encode,
    error_message,
    off_loop,
    parse_since,
    read_backlog,
)

logger = logging.getLogger(__name__)

CLOSE_BAD_REQUEST = 4400
CLOSE_NOT_AUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_SLOW = 4008
# A close reason holds at most 123 bytes of UTF-8.
MAX_CLOSE_REASON_BYTES = 123


class WatchRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


class ConnectionQueue(ChangeQueue):
    """The queue of one WebSocket connection. A change that finds the
    connection idle (nothing queued or being sent, socket open) and is the
    next version of its topic is written to the socket at once, without
    waking the connection's task; anything else waits in the queue."""

    def __init__(self, consumer: BaseWatchConsumer) -> None:
        super().__init__("websocket")
        self.consumer = consumer

    def offer(self, topic: str, version: int, message: str) -> None:
        consumer = self.consumer
        idle = not (self.items or consumer.sending.locked() or self.cut_off.is_set())
        if idle and consumer.flow.open.is_set():
            subscription = consumer.subscriptions.get(topic)
            if (
                subscription is not None
                and version == subscription.version + 1
                and consumer.flow.send_now(message)
            ):
                subscription.version = version
                return
        super().offer(topic, version, message)


class BaseWatchConsumer(AsyncWebsocketConsumer):
    """Holds subscriptions, catches them up, and relays live changes."""

    async def connect(self) -> None:
        self.subscriptions: dict[str, Subscription] = {}
        self.queue = ConnectionQueue(self)
        # Held while change frames of any topic go out, so that a backlog
        # and live changes never interleave.
        self.sending = asyncio.Lock()
        self.hub = topic_hub()
        user = self.scope.get("user")
        await self.accept()
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_NOT_AUTHENTICATED)
            return
        self.access = await off_loop(Access)(user)
        self.ticker = asyncio.create_task(self._tick_forever())
        self.sender = asyncio.create_task(self._send_forever())
        shutdown.register(self)
        await self.start()

    async def start(self) -> None:
        """Called once the connection is accepted and authenticated."""

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        # The server cancels a consumer that outstays it without calling
        # disconnect(); leave no ticker or group membership behind then.
        self.flow = transport_flow(send)
        try:
            await super().__call__(scope, receive, send)
        except Disconnected:
            # Under daphne, a send after the client closed: it left while
            # frames were on their way, which is no error of ours.
            logger.debug("watcher %s left while being sent to", self.channel_name)
        finally:
            await self.release()
            self.flow.release()

    async def disconnect(self, code: int) -> None:
        await self.release()

    async def release(self) -> None:
        shutdown.unregister(self)
        for name in ("ticker", "sender"):
            task = getattr(self, name, None)
            if task and task is not asyncio.current_task():
                task.cancel()
        subscriptions = getattr(self, "subscriptions", {})
        while subscriptions:
            topic, _ = subscriptions.popitem()
            await self.hub.leave(topic, self.queue)

    async def _send_forever(self) -> None:
        """Send live changes from the queue while the socket takes them;
        cut the connection off when the queue overflows."""
        queue = self.queue
        while True:
            await queue.ready.wait()
            queue.ready.clear()
            while queue.items:
                if not await self.flow.writable(give_up=queue.cut_off):
                    break
                topic, version, message = queue.items.popleft()
                async with self.sending:
                    if queue.cut_off.is_set():
                        break
                    await self.relay_change(topic, version, message)
            if queue.cut_off.is_set():
                await self.close_too_slow()
                return

    async def relay_change(self, topic: str, version: int, message: str) -> None:
        subscription = self.subscriptions.get(topic)
        if subscription is None or version <= subscription.version:
            return
        if version == subscription.version + 1 or isinstance(message, ResetMessage):
            await self.send(text_data=message)
            subscription.version = version
            return
        # A gap: a send was dropped or overtaken. Read it from the outbox.
        await self.catch_up(subscription)

    async def close_too_slow(self) -> None:
        """Close with 4008 and the versions sent, behind the frames that
        carried them."""
        versions = {t: s.version for t, s in self.subscriptions.items()}
        logger.warning(
            "subscriber %s dropped: more than %d changes behind on %s",
            self.channel_name,
            self.queue.limit,
            ", ".join(versions) or "no topic",
        )
        reason = self.resume_reason(versions)
        await self.release()
        grace = conf.get("SLOW_CLOSE_GRACE_SECS")
        if not self.flow.close(CLOSE_TOO_SLOW, reason, grace):
            await self.close(code=CLOSE_TOO_SLOW, reason=reason)

    def resume_reason(self, versions: dict[str, int]) -> str:
        reason = encode({"versions": versions})
        if len(reason.encode()) > MAX_CLOSE_REASON_BYTES:
            return "{}"
        return reason

    async def _tick_forever(self) -> None:
        # The tick goes through the consumer's own channel, so it is handled
        # in turn with client frames; it sends changes under ``sending``.
        interval = conf.get("HEARTBEAT_SECS")
        while True:
            await asyncio.sleep(interval)
            try:
                await self.channel_layer.send(self.channel_name, {"type": "watch.tick"})
            except ChannelFull:
                # The consumer is busy enough; the next tick will do.
                logger.debug(
                    "subscriber %s skipped a tick: channel full", self.channel_name
                )

    async def leave_for_restart(self) -> None:
        """Asked by the server's drain; handled in turn, like a tick."""
        try:
            await self.channel_layer.send(self.channel_name, {"type": "watch.restart"})
        except ChannelFull:
            await self.close(code=shutdown.CLOSE_SERVICE_RESTART)

    async def watch_restart(self, event: dict[str, Any]) -> None:
        """The server is shutting down: stop relaying and ask the client to
        reconnect (close code 1012) and resume from its versions."""
        await self.release()
        await self.close(code=shutdown.CLOSE_SERVICE_RESTART)

    async def watch_tick(self, event: dict[str, Any]) -> None:
        """Check that the user may still watch, and catch up subscriptions
        whose last change was dropped on the way."""
        allowed, versions = await off_loop(self._recheck)()
        if not allowed:
            logger.info("subscriber %s lost access; closing", self.channel_name)
            await self.send_json(
                error_message("forbidden", "your access to these topics was withdrawn")
            )
            await self.close(code=CLOSE_FORBIDDEN)
            return
        if self.queue.items:
            # Changes are still on their way from the queue.
            return
        for topic, subscription in list(self.subscriptions.items()):
            if versions.get(topic, 0) > subscription.version:
                async with self.sending:
                    await self.catch_up(subscription)

    def _recheck(self) -> tuple[bool, dict[str, int]]:
        user = get_user_model().objects.filter(pk=self.access.user.pk).first()
        self.access = Access(user)
        topics = list(self.subscriptions)
        if not self.access.active or not all(self.access.may_watch(t) for t in topics):
            return False, {}
        found = Topic.objects.filter(name__in=topics).values_list("name", "version")
        return True, dict(found)

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.send(text_data=encode(message))

    async def subscribe(self, topic: Any, since: Any, ref: Any = None) -> None:
        """Check, join the topic through the hub, send the backlog, go live."""
        since = parse_since(since)
        topic = await self._authorize(topic)
        if topic in self.subscriptions:
            raise WatchRefused("already_subscribed", f"already watching {topic}")

        async with self.sending:
            # Join first: a change committed while the backlog is read then
            # waits in this connection's queue instead of being lost.
            subscription = Subscription(topic, version=0, ref=ref)
            self.subscriptions[topic] = subscription
            await self.hub.join(topic, self.queue)

            backlog = await off_loop(read_backlog)(topic, since)
            start = backlog.version if backlog.reset or since is None else since
            await self.send_json(
                {"type": "subscribed", "topic": topic, "version": start, "ref": ref}
            )
            await self._deliver(subscription, backlog, since)
        logger.debug(
            "subscriber %s watches %s from version %d", self.channel_name, topic, start
        )

    async def unsubscribe(self, topic: str) -> bool:
        if self.subscriptions.pop(topic, None) is None:
            return False
        await self.hub.leave(topic, self.queue)
        return True

    async def catch_up(self, subscription: Subscription) -> None:
        metrics.WATCH_GAPS.labels("websocket").inc()
        logger.info(
            "subscriber %s missed changes of %s after version %d; "
            "reading them from the outbox",
            self.channel_name,
            subscription.topic,
            subscription.version,
        )
        backlog = await off_loop(read_backlog)(subscription.topic, subscription.version)
        await self._deliver(subscription, backlog, subscription.version)

    async def _deliver(
        self, subscription: Subscription, backlog, since: int | None
    ) -> None:
        while True:
            if backlog.reset:
                await self.send_json(backlog.reset)
            first = backlog.version - len(backlog.messages) + 1
            for version, message in enumerate(backlog.messages, first):
                # A backlog waits for the socket like live changes do.
                if not await self.flow.writable(give_up=self.queue.cut_off):
                    return
                await self.send(text_data=message)
                subscription.version = version
            subscription.version = backlog.version
            if not backlog.more:
                return
            backlog = await off_loop(read_backlog)(
                subscription.topic, subscription.version
            )

    async def _authorize(self, topic: Any) -> str:
        def check() -> str:
            try:
                checked = check_topic(topic)
            except UnknownTopic as exc:
                raise WatchRefused("not_found", str(exc)) from exc
            if not self.access.may_watch(checked):
                raise WatchRefused("forbidden", f"you may not watch {checked}")
            return checked

        return await off_loop(check)()


def _frame_size(raw: str | bytes, limit: int) -> int:
    """The frame's size in bytes, as sent (UTF-8 for text). Encodes only
    a text frame whose size the character count leaves open."""
    if isinstance(raw, bytes) or len(raw) > limit or len(raw) * 4 <= limit:
        return len(raw)
    return len(raw.encode("utf-8", "surrogatepass"))


class MultiplexWatchConsumer(BaseWatchConsumer):
    """``/ws/v1/``: one connection, many topics, typed frames both ways."""

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None
    ) -> None:
        raw = text_data if text_data is not None else bytes_data or b""
        limit = conf.get("MAX_FRAME_BYTES")
        if _frame_size(raw, limit) > limit:
            await self.send_json(
                error_message("frame_too_large", f"frames are limited to {limit} bytes")
            )
            return
        try:
            frame = json.loads(raw)
        except (ValueError, RecursionError):
            await self.send_json(
                error_message("invalid_frame", "the frame is not valid JSON")
            )
            return
        if not isinstance(frame, dict):
            await self.send_json(
                error_message("invalid_frame", "a frame is a JSON object")
            )
            return
        if not is_storable(frame):
            await self.send_json(
                error_message(
                    "invalid_frame",
                    "the frame holds a NUL character or a lone surrogate escape "
                    "(\\ud800-\\udfff), which are not text",
                )
            )
            return
        await self.handle_frame(frame)

    async def handle_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        topic, ref = frame.get("topic"), frame.get("ref")
        try:
            if kind in ("subscribe", "unsubscribe") and not isinstance(topic, str):
                raise WatchRefused(
                    "invalid_frame", f"a {kind} frame needs a topic string"
                )
            if kind == "subscribe":
                most = conf.get("MAX_SUBSCRIPTIONS")
                if len(self.subscriptions) >= most:
                    raise WatchRefused(
                        "too_many_subscriptions", f"at most {most} topics a connection"
                    )
                await self.subscribe(topic, frame.get("since"), ref)
            elif kind == "unsubscribe":
                if not await self.unsubscribe(topic):
                    raise WatchRefused("not_subscribed", f"not watching {topic!r}")
                await self.send_json(
                    {"type": "unsubscribed", "topic": topic, "ref": ref}
                )
            elif kind == "ping":
                await self.send_json({"type": "pong", "ref": ref})
            else:
                raise WatchRefused(
                    "unknown_type",
                    f"unknown frame type {kind!r}: use subscribe, unsubscribe or ping",
                )
        except InvalidSince as exc:
            await self.send_json(
                error_message("validation_error", str(exc), topic, ref)
            )
        except WatchRefused as exc:
            await self.send_json(error_message(exc.code, exc.message, topic, ref))


class ResourceWatchConsumer(BaseWatchConsumer):
    """``<resource>/watch`` upgraded to WebSocket: one topic, from the URL."""

    topic_format = ""

    async def start(self) -> None:
        topic = self.topic_format.format(**self.scope["url_route"]["kwargs"])
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        try:
            await self.subscribe(topic, query.get("since", [None])[0])
        except InvalidSince as exc:
            await self.send_json(error_message("validation_error", str(exc), topic))
            await self.close(code=CLOSE_BAD_REQUEST)
        except WatchRefused as exc:
            await self.send_json(error_message(exc.code, exc.message, topic))
            code = CLOSE_NOT_FOUND if exc.code == "not_found" else CLOSE_FORBIDDEN
            await self.close(code=code)

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None
    ) -> None:
        """Clients only listen here; a ``ping`` frame is answered."""
        try:
            frame = json.loads(text_data or bytes_data or b"")
        except (ValueError, RecursionError):
            frame = None
        if isinstance(frame, dict) and frame.get("type") == "ping":
            await self.send_json({"type": "pong", "ref": frame.get("ref")})
            return
        await self.send_json(
            error_message("invalid_frame", "this watch takes only ping frames")
        )

    def resume_reason(self, versions: dict[str, int]) -> str:
        return encode({"version": next(iter(versions.values()), 0)})


class NoRouteConsumer(AsyncWebsocketConsumer):
    """Any other WebSocket path: closed with 4404, as HTTP answers 404
    (Channels' router would fail the handshake with a 500)."""

    async def connect(self) -> None:
        await self.accept()
        await self.send(
            text_data=encode(
                error_message("not_found", f"no WebSocket route at /{self.path()}")
            )
        )
        await self.close(code=CLOSE_NOT_FOUND)

    def path(self) -> str:
        return self.scope.get("path", "/").lstrip("/")


class OrderWatchConsumer(ResourceWatchConsumer):
    topic_format = "orders/{order_id}"


class CustomerOrdersWatchConsumer(ResourceWatchConsumer):
    topic_format = "customers/{customer_id}/orders"


class DashboardWatchConsumer(ResourceWatchConsumer):
    topic_format = "dashboard"


class EventsWatchConsumer(ResourceWatchConsumer):
    topic_format = "events"
