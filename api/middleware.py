"""Middleware for kinds of request that no view can answer well.

A percent-encoded NUL (``%00``) decodes into an id, a topic or a ticket
that SQLite looks up and finds nothing for, but that PostgreSQL refuses
outright, which Django reports as a server error. No name in Lookout
holds one, so such a request is answered 400 before any view runs.

A body declared larger than ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is answered
413 before any view runs, whether or not the view would read it: Django
checks the limit only when a body is read.

A request that found every pooled database connection busy for the whole
pool timeout (PostgreSQL, see settings) is answered 503 with
``Retry-After``: the server is overloaded, nothing failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from .errors import error_body, payload_too_large

__all__ = ["DatabaseBusyMiddleware", "EarlyRefusalMiddleware", "holds_nul"]

logger = logging.getLogger(__name__)

# Seconds a client is asked to wait before it tries again.
BUSY_RETRY_AFTER_SECS = 1


def holds_nul(request: HttpRequest) -> bool:
    if "\x00" in request.path:
        return True
    return any("\x00" in key or "\x00" in value for key, value in _query(request))


def _query(request: HttpRequest) -> list[tuple[str, str]]:
    return [(key, value) for key, values in request.GET.lists() for value in values]


def _declared_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _refusal(request: HttpRequest) -> HttpResponse | None:
    if holds_nul(request):
        body = error_body("validation_error", "the URL holds a NUL character (%00)")
        return JsonResponse(body, status=400)
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    length = _declared_length(request)
    if limit is not None and length > limit:
        return payload_too_large()
    return None


class EarlyRefusalMiddleware:
    """Answers a URL with a NUL (400) or a body over the limit (413);
    both sync and async, so that the async watch views pay no thread hop
    for it."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        return _refusal(request) or self.get_response(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        return _refusal(request) or await self.get_response(request)


class DatabaseBusyMiddleware:
    """Answers 503 when a view failed for want of a pooled connection.
    Passes requests on untouched, sync or async (it costs the async watch
    views no thread hop)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        # Under ASGI, the response's coroutine, which Django awaits.
        return self.get_response(request)

    def process_exception(
        self, request: HttpRequest, exception: Exception
    ) -> HttpResponse | None:
        if not pool_exhausted(exception):
            return None
        logger.warning(
            "every database connection stayed busy; answered 503 to %s %s",
            request.method,
            request.path,
        )
        body = error_body(
            "unavailable", "the server is busy; try again in a moment", None
        )
        response = JsonResponse(body, status=503)
        response["Retry-After"] = str(BUSY_RETRY_AFTER_SECS)
        return response


def pool_exhausted(exception: BaseException) -> bool:
    """Whether ``exception`` comes of a connection pool's timeout."""
    from psycopg_pool import PoolTimeout

    seen: BaseException | None = exception
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, PoolTimeout):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
