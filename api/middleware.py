"""Refusing requests whose URL holds a NUL character.

A percent-encoded NUL (``%00``) decodes into an id, a topic or a ticket
that SQLite looks up and finds nothing for, but that PostgreSQL refuses
outright, which Django reports as a server error. No name in Lookout
holds one, so such a request is answered 400 before any view runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse, JsonResponse

from .errors import error_body

__all__ = ["RejectNulMiddleware", "holds_nul"]


def holds_nul(request: HttpRequest) -> bool:
    if "\x00" in request.path:
        return True
    return any("\x00" in key or "\x00" in value for key, value in _query(request))


def _query(request: HttpRequest) -> list[tuple[str, str]]:
    return [(key, value) for key, values in request.GET.lists() for value in values]


def _refusal() -> HttpResponse:
    body = error_body("validation_error", "the URL holds a NUL character (%00)")
    return JsonResponse(body, status=400)


class RejectNulMiddleware:
    """Answers 400 to a URL with a NUL; both sync and async, so that the
    async watch views pay no thread hop for it."""

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
        if holds_nul(request):
            return _refusal()
        return self.get_response(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        if holds_nul(request):
            return _refusal()
        return await self.get_response(request)
