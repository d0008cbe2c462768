"""The watch routes over plain HTTP: Server-Sent Events when the client
accepts ``text/event-stream``, long polling otherwise. (A WebSocket upgrade
on the same path never reaches here: Channels routes it.)

Both are async views: a waiting watcher holds a channel on the layer, not
a thread or a database connection.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from accounts.access import Access
from api.errors import error_body

from . import conf
from .auth import redeem_ticket, user_for_token
from .live import Delivery, TopicFollower
from .watch import (
    HISTORY_EXPIRED,
    InvalidSince,
    UnknownTopic,
    check_topic,
    encode,
    off_loop,
    parse_since,
)

logger = logging.getLogger(__name__)


class WatchError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(message)

    def response(self) -> JsonResponse:
        return JsonResponse(error_body(self.code, self.message), status=self.status)


async def authenticate(request: HttpRequest) -> Any:
    """A ticket, a token, or the session, in that order."""
    ticket = request.GET.get("ticket")
    if ticket:
        user = await off_loop(redeem_ticket)(ticket)
    elif request.headers.get("Authorization"):
        scheme, _, key = request.headers["Authorization"].partition(" ")
        found = scheme.lower() == "token" and key.strip()
        user = await off_loop(user_for_token)(key.strip()) if found else None
    else:
        user = await request.auser()
    if user is None or not user.is_active:
        return AnonymousUser()
    return user


def _authorize(user: Any, topic: str) -> None:
    try:
        check_topic(topic)
    except UnknownTopic as exc:
        raise WatchError(404, "not_found", str(exc)) from exc
    if not Access(user).may_watch(topic):
        raise WatchError(403, "forbidden", f"you may not watch {topic}")


def _since(request: HttpRequest) -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.GET.get("since")
    try:
        return parse_since(raw)
    except InvalidSince as exc:
        raise WatchError(400, "validation_error", str(exc)) from exc


def _timeout(request: HttpRequest) -> float:
    raw = request.GET.get("timeout")
    most = conf.get("LONG_POLL_MAX_TIMEOUT_SECS")
    if raw is None:
        return conf.get("LONG_POLL_TIMEOUT_SECS")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= most:
        raise WatchError(
            400, "validation_error", f"timeout must be a number of seconds, 0 to {most}"
        )
    return value


def wants_event_stream(request: HttpRequest) -> bool:
    return "text/event-stream" in request.headers.get("Accept", "")


@method_decorator(csrf_exempt, name="dispatch")
class TopicWatchView(View):
    """``<resource>/watch``: one topic, named by the URL. Only GET: the
    exemption from CSRF lets other methods get a JSON 405, not Django's
    HTML page."""

    topic_format = ""

    def http_method_not_allowed(self, request: HttpRequest, *args, **kwargs):
        response = JsonResponse(
            error_body("method_not_allowed", f"{request.method} is not allowed here"),
            status=405,
        )
        response["Allow"] = "GET, HEAD"
        if self.view_is_async:

            async def answer() -> HttpResponse:
                return response

            return answer()
        return response

    async def get(self, request: HttpRequest, **kwargs: str) -> HttpResponse:
        topic = self.topic_format.format(**kwargs)
        try:
            user = await authenticate(request)
            if not user.is_authenticated:
                raise WatchError(401, "not_authenticated", "credentials are required")
            await off_loop(_authorize)(user, topic)
            since = _since(request)
            if wants_event_stream(request):
                return await event_stream(user, topic, since)
            return await long_poll(topic, since, _timeout(request))
        except WatchError as exc:
            return exc.response()


# Server-Sent Events


def sse_frame(delivery: Delivery) -> str:
    if delivery.reset:
        data = encode(delivery.reset)
        return f"id: {delivery.version}\nevent: reset\ndata: {data}\n\n"
    return f"id: {delivery.version}\nevent: change\ndata: {delivery.message}\n\n"


def _still_allowed(user: Any, topic: str) -> bool:
    fresh = type(user).objects.filter(pk=user.pk).first()
    return fresh is not None and Access(fresh).may_watch(topic)


async def event_stream(
    user: Any, topic: str, since: int | None
) -> StreamingHttpResponse:
    """Stream changes; while idle, send a comment and check that the user
    may still watch (a deactivated user's stream ends within one idle
    interval)."""
    follower = TopicFollower(topic)

    async def frames() -> AsyncIterator[str]:
        yield f"retry: {conf.get('SSE_RETRY_MS')}\n\n"
        async with follower:
            first = await follower.start(since)
            subscribed = {
                "type": "subscribed",
                "topic": topic,
                "version": follower.version,
            }
            yield f"event: subscribed\ndata: {encode(subscribed)}\n\n"
            idle_secs = conf.get("HEARTBEAT_SECS")
            async for delivery in follower.deliveries(first, idle_secs):
                if not delivery.idle:
                    yield sse_frame(delivery)
                    continue
                if not await off_loop(_still_allowed)(user, topic):
                    error = error_body("forbidden", f"you may no longer watch {topic}")
                    yield f"event: error\ndata: {encode(error)}\n\n"
                    return
                yield ": keep-alive\n\n"

    response = StreamingHttpResponse(frames(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache, no-transform"
    # Tells nginx-like proxies not to buffer the stream.
    response["X-Accel-Buffering"] = "no"
    return response


# Long polling


async def long_poll(topic: str, since: int | None, timeout: float) -> HttpResponse:
    """Answer as soon as a change above ``since`` exists, or empty-handed
    when ``timeout`` passes. Without ``since``, wait for the next one."""
    async with TopicFollower(topic) as follower:
        first = await follower.start(since)
        start = follower.version
        if first.reset:
            reason = first.reset["reason"]
            body = {**first.reset, **error_body(reason, _reset_text(reason))}
            return JsonResponse(body, status=410)
        messages = list(first.messages)
        version = first.version if messages else start
        if not messages and timeout > 0:
            async for delivery in follower.deliveries(first, timeout):
                if delivery.idle or delivery.reset:
                    break
                messages.append(delivery.message or "")
                version = delivery.version
                break
    body = (
        f'{{"topic":{encode(topic)},"version":{version},'
        f'"changes":[{",".join(messages)}]}}'
    )
    return HttpResponse(body, content_type="application/json")


def _reset_text(reason: str) -> str:
    if reason == HISTORY_EXPIRED:
        return "the changes after since are no longer held; fetch the resource again"
    return "since is above the topic's version; fetch the resource again"


class OrderWatchView(TopicWatchView):
    topic_format = "orders/{order_id}"


class CustomerOrdersWatchView(TopicWatchView):
    topic_format = "customers/{customer_id}/orders"


class DashboardWatchView(TopicWatchView):
    topic_format = "dashboard"


class EventsWatchView(TopicWatchView):
    topic_format = "events"
