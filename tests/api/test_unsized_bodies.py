"""Bodies sent in chunks, with no Content-Length, through the ASGI
application as a server hands them over."""

from __future__ import annotations

import json

import pytest
from asgiref.testing import ApplicationCommunicator

from events.models import StoredEvent
from project.asgi import application
from tests.conftest import ONE_ITEM

pytestmark = pytest.mark.django_db(transaction=True)


async def post_in_chunks(path: str, token: str, chunks: list[bytes]) -> tuple:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"transfer-encoding", b"chunked"),
            (b"authorization", f"Token {token}".encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    server = ApplicationCommunicator(application, scope)
    for n, chunk in enumerate(chunks):
        more = n < len(chunks) - 1
        await server.send_input(
            {"type": "http.request", "body": chunk, "more_body": more}
        )
    start = await server.receive_output(timeout=5)
    body = b""
    while True:
        part = await server.receive_output(timeout=5)
        body += part.get("body", b"")
        if not part.get("more_body"):
            break
    await server.wait(timeout=5)
    return start["status"], json.loads(body)


async def test_a_command_sent_in_chunks_is_read_whole(alice):
    _, token = alice
    body = json.dumps(ONE_ITEM).encode()

    status, order = await post_in_chunks(
        "/api/v1/orders/", token, [body[:10], body[10:30], body[30:]]
    )

    assert status == 201, order
    assert order["items"][0]["sku"] == ONE_ITEM["items"][0]["sku"]


async def test_a_chunked_body_above_the_upload_limit_is_a_413(alice, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    _, token = alice
    filler = {"items": ONE_ITEM["items"], "note": "x" * 5000}
    body = json.dumps(filler).encode()

    status, error = await post_in_chunks(
        "/api/v1/orders/", token, [body[i : i + 700] for i in range(0, len(body), 700)]
    )

    assert status == 413
    assert error["error"]["code"] == "payload_too_large"
    assert await StoredEvent.objects.acount() == 0
