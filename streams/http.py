"""The watch routes over plain HTTP: Server-Sent Events when the client
accepts ``text/event-stream``, long polling otherwise. (A WebSocket upgrade
on the same path never reaches here: Channels routes it.)

Both are async views: a waiting watcher holds a channel on the layer, not
a thread or a database connection.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from django.contrib.auth import get_user
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from accounts.access import Access
from api.errors import error_body

from . import conf, shutdown
from .auth import redeem_ticket, user_for_token
from .live import Delivery, TopicFollower
from .watch import (
    HISTORY_EXPIRED,
    VERSION_AHEAD,
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
        # Not request.auser(): its connection would stay checked out of
        # the pool until the response ends, which for a stream is when the
        # watcher leaves.
        user = await off_loop(get_user)(request)
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


_SECONDS = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6})?", re.ASCII)


def _timeout(request: HttpRequest) -> float:
    raw = request.GET.get("timeout")
    most = conf.get("LONG_POLL_MAX_TIMEOUT_SECS")
    if raw is None:
        return conf.get("LONG_POLL_TIMEOUT_SECS")
    # Seconds as plain ASCII decimals: float() would also take "1e1",
    # "nan" and other scripts' digits.
    value = float(raw) if _SECONDS.fullmatch(raw) else -1.0
    if not 0 <= value <= most:
        raise WatchError(
            400, "validation_error", f"timeout must be a number of seconds, 0 to {most}"
        )
    return value


def wants_event_stream(request: HttpRequest) -> bool:
    """Whether the client names an event stream in its Accept header and
    prefers it to JSON, by q-values (``q=0`` refuses one)."""
    if "text/event-stream" not in request.headers.get("Accept", "").lower():
        return False
    preferred = request.get_preferred_type(["application/json", "text/event-stream"])
    return preferred == "text/event-stream"


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
            response = await long_poll(topic, since, _timeout(request))
            if response.get("Connection") == "close" and _http2(request):
                # HTTP/2 has no such header; its streams cost nothing to end.
                del response["Connection"]
            return response
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
        retry = f"retry: {conf.get('SSE_RETRY_MS')}\n"
        yield retry + "\n"
        async with follower, shutdown.watching() as subscriber:
            first = await follower.start(since)
            subscribed = {
                "type": "subscribed",
                "topic": topic,
                "version": follower.version,
            }
            yield f"event: subscribed\ndata: {encode(subscribed)}\n\n"
            deliveries = follower.deliveries(first, conf.get("HEARTBEAT_SECS"))
            async for delivery in subscriber.until_told(deliveries):
                if delivery.behind:
                    # Cut off for lag: the client reconnects after the
                    # retry time with the Last-Event-ID of its last change.
                    yield retry + ": too far behind; resume from Last-Event-ID\n\n"
                    return
                if not delivery.idle:
                    yield sse_frame(delivery)
                    continue
                if not await off_loop(_still_allowed)(user, topic):
                    error = error_body("forbidden", f"you may no longer watch {topic}")
                    yield f"event: error\ndata: {encode(error)}\n\n"
                    return
                yield ": keep-alive\n\n"

        # The server is shutting down: the client comes back after the
        # retry time, with the Last-Event-ID of the last change above.
        yield retry + ": server restarting\n\n"

    response = StreamingHttpResponse(frames(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache, no-transform"
    # Tells nginx-like proxies not to buffer the stream.
    response["X-Accel-Buffering"] = "no"
    # Keeps compression middleware (Django's GZipMiddleware among them)
    # away: it leaves alone a response that names its encoding. Compressed,
    # the stream either waits for a full block or, from Django's async
    # path, sends each event as a gzip member of its own, which clients
    # such as httpx stop reading after the first.
    response["Content-Encoding"] = "identity"
    return response


# Long polling


async def long_poll(topic: str, since: int | None, timeout: float) -> HttpResponse:
    """Answer as soon as a change above ``since`` exists, or empty-handed
    when ``timeout`` passes or the server shuts down. Without ``since``,
    wait for the next one."""
    async with TopicFollower(topic) as follower, shutdown.watching() as subscriber:
        first = await follower.start(since)
        start = follower.version
        if first.reset:
            return _gone(first.reset)
        messages = list(first.messages)
        version = first.version if messages else start
        if not messages and timeout > 0:
            # The first delivery, or none if the server shuts down first.
            waiting = subscriber.until_told(follower.deliveries(first, timeout))
            async with aclosing(waiting):
                delivery = await anext(waiting, None)
            if delivery and delivery.reset:
                return _gone(delivery.reset)
            if delivery and delivery.message is not None:
                messages.append(delivery.message or "")
                version = delivery.version
    body = (
        f'{{"topic":{encode(topic)},"version":{version},'
        f'"changes":[{",".join(messages)}]}}'
    )
    response = HttpResponse(body, content_type="application/json")
    if subscriber.told:
        # Else the client's next poll comes back over the same kept-alive
        # connection, to be answered at once again until the server stops.
        response["Connection"] = "close"
    return response


def _http2(request: HttpRequest) -> bool:
    return not str(request.scope.get("http_version", "1.1")).startswith("1")


def _gone(reset: dict[str, Any]) -> JsonResponse:
    """410 with the reset object, which also carries the error."""
    reason = reset["reason"]
    body = {**reset, **error_body(reason, _reset_text(reason))}
    return JsonResponse(body, status=410)


def _reset_text(reason: str) -> str:
    if reason == HISTORY_EXPIRED:
        return "the changes after since are no longer held; fetch the resource again"
    if reason == VERSION_AHEAD:
        return "since is above the topic's version; fetch the resource again"
    return "the read model was rebuilt and differs; fetch the resource again"


class OrderWatchView(TopicWatchView):
    topic_format = "orders/{order_id}"


class CustomerOrdersWatchView(TopicWatchView):
    topic_format = "customers/{customer_id}/orders"


class DashboardWatchView(TopicWatchView):
    topic_format = "dashboard"


class EventsWatchView(TopicWatchView):
    topic_format = "events"
