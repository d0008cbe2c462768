"""Request bodies sent without a ``Content-Length``.

A client that streams its body (``Transfer-Encoding: chunked``) sends no
length. Django's ASGI request reads exactly ``Content-Length`` bytes of
the body, and so, without one, reads none: a command would be refused for
fields that were in fact sent. This ASGI middleware reads such a body
first and gives Django its length. It keeps no more than the first chunk
past ``DATA_UPLOAD_MAX_MEMORY_SIZE``, enough for the request to be refused
with 413 as any oversized body is (``api.errors``).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

METHODS_WITH_BODIES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _has_length(scope: dict) -> bool:
    return any(name.lower() == b"content-length" for name, _ in scope["headers"])


class MeasureUnsizedBodies:
    """Wraps Django's ASGI application for HTTP."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        if (
            scope["type"] != "http"
            or scope["method"] not in METHODS_WITH_BODIES
            or _has_length(scope)
        ):
            return await self.app(scope, receive, send)

        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client left before its body ended
            # Past the limit the rest is read, to end the body, and dropped.
            if limit is None or size <= limit:
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
            if not message.get("more_body"):
                break

        body = b"".join(chunks)
        length = (b"content-length", str(len(body)).encode())
        scope = {**scope, "headers": [*scope["headers"], length]}
        given = False

        async def receive_body() -> dict:
            nonlocal given
            if given:
                return await receive()
            given = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, receive_body, send)
