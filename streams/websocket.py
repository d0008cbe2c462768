"""Watching over WebSocket: the multiplexed ``/ws/v1/`` endpoint and the
per-resource upgrade on ``.../watch``.

Close codes: 4401 not authenticated, 4403 forbidden, 4404 no such topic
(per-resource only; the multiplexed endpoint answers with ``error``
frames and stays open).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import parse_qs

from channels.exceptions import ChannelFull
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth import get_user_model

from accounts.access import Access
from readmodels.models import Topic

from . import conf, metrics
from .watch import (
    InvalidSince,
    Subscription,
    UnknownTopic,
    check_topic,
    encode,
    error_message,
    group_name,
    off_loop,
    parse_since,
    read_backlog,
)

logger = logging.getLogger(__name__)

CLOSE_NOT_AUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404


class WatchRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


class BaseWatchConsumer(AsyncWebsocketConsumer):
    """Holds subscriptions, catches them up, and relays live changes."""

    async def connect(self) -> None:
        self.subscriptions: dict[str, Subscription] = {}
        user = self.scope.get("user")
        await self.accept()
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_NOT_AUTHENTICATED)
            return
        self.access = await off_loop(Access)(user)
        self.ticker = asyncio.create_task(self._tick_forever())
        await self.start()

    async def start(self) -> None:
        """Called once the connection is accepted and authenticated."""

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        # The server cancels a consumer that outstays it without calling
        # disconnect(); leave no ticker or group membership behind then.
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.release()

    async def disconnect(self, code: int) -> None:
        await self.release()

    async def release(self) -> None:
        ticker = getattr(self, "ticker", None)
        if ticker:
            ticker.cancel()
        subscriptions = getattr(self, "subscriptions", {})
        while subscriptions:
            topic, _ = subscriptions.popitem()
            await self.channel_layer.group_discard(group_name(topic), self.channel_name)

    async def _tick_forever(self) -> None:
        # The tick goes through the consumer's own channel, so it is handled
        # in turn with changes and frames, never alongside them.
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
        for topic, subscription in list(self.subscriptions.items()):
            if versions.get(topic, 0) > subscription.version:
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
        """Check, join the topic's group, send the backlog, go live."""
        since = parse_since(since)
        topic = await self._authorize(topic)
        if topic in self.subscriptions:
            raise WatchRefused("already_subscribed", f"already watching {topic}")

        # Join first: a change committed while the backlog is read then
        # waits in this consumer's queue instead of being lost.
        await self.channel_layer.group_add(group_name(topic), self.channel_name)
        subscription = Subscription(topic, version=0, ref=ref)
        self.subscriptions[topic] = subscription

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
        await self.channel_layer.group_discard(group_name(topic), self.channel_name)
        return True

    async def change_message(self, event: dict[str, Any]) -> None:
        """A live change from the topic's group."""
        subscription = self.subscriptions.get(event["topic"])
        if subscription is None or event["version"] <= subscription.version:
            return
        if event["version"] == subscription.version + 1:
            await self.send(text_data=event["message"])
            subscription.version = event["version"]
            return
        # A gap: a send was dropped or overtaken. Read it from the outbox.
        await self.catch_up(subscription)

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
            for message in backlog.messages:
                await self.send(text_data=message)
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


class MultiplexWatchConsumer(BaseWatchConsumer):
    """``/ws/v1/``: one connection, many topics, typed frames both ways."""

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None
    ) -> None:
        raw = text_data if text_data is not None else bytes_data or b""
        if len(raw) > conf.get("MAX_FRAME_BYTES"):
            limit = conf.get("MAX_FRAME_BYTES")
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
        await self.handle_frame(frame)

    async def handle_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        topic, ref = frame.get("topic"), frame.get("ref")
        try:
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
            await self.close(code=1008)
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


class OrderWatchConsumer(ResourceWatchConsumer):
    topic_format = "orders/{order_id}"


class CustomerOrdersWatchConsumer(ResourceWatchConsumer):
    topic_format = "customers/{customer_id}/orders"


class DashboardWatchConsumer(ResourceWatchConsumer):
    topic_format = "dashboard"


class EventsWatchConsumer(ResourceWatchConsumer):
    topic_format = "events"
