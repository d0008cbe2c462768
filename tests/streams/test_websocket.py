"""Watching over WebSocket, through Channels' communicator."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from events import store
from project.asgi import application
from readmodels.models import Change, Topic
from streams import relay
from streams.auth import issue_ticket
from streams.watch import InvalidSince, parse_since
from tests.conftest import ONE_ITEM, client_for, place_order, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


async def connect(path: str, token: str | None = None) -> WebsocketCommunicator:
    headers = [(b"authorization", f"Token {token}".encode())] if token else []
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def receive(communicator: WebsocketCommunicator, timeout: float = 3) -> dict:
    return json.loads(await communicator.receive_from(timeout=timeout))


async def receive_all(communicator: WebsocketCommunicator) -> list[dict]:
    """Every frame until the socket stays quiet for a moment."""
    frames = []
    while not await communicator.receive_nothing(timeout=0.3):
        frames.append(await receive(communicator))
    return frames


async def subscribe(ws, topic: str, since: Any = None, ref: Any = None) -> dict:
    frame = {"type": "subscribe", "topic": topic, "ref": ref}
    if since is not None:
        frame["since"] = since
    await ws.send_json_to(frame)
    return await receive(ws)


def _command(token: str, path: str, body: dict | None = None) -> dict:
    response = client_for(token).post(path, body or {}, format="json")
    assert response.status_code in (200, 201), response.content
    return response.json()


command = database_sync_to_async(_command)


async def place(token: str) -> dict:
    return await command(token, "/api/v1/orders/", ONE_ITEM)


async def add_item(token: str, order_id: str, sku: str) -> dict:
    body = {"sku": sku, "quantity": 1, "unit_price": "1.00"}
    return await command(token, f"/api/v1/orders/{order_id}/items", body)


async def test_multiplexed_watch_sends_backlog_then_live_changes(alice):
    _, token = alice
    order = await place(token)
    ws = await connect("/ws/v1/", token)

    subscribed = await subscribe(ws, f"orders/{order['id']}", since=0, ref="a")
    backlog = await receive(ws)
    await command(token, f"/api/v1/orders/{order['id']}/pay", {"amount": "12.30"})
    live = await receive(ws)

    assert subscribed == {
        "type": "subscribed",
        "topic": f"orders/{order['id']}",
        "version": 0,
        "ref": "a",
    }
    assert (backlog["version"], backlog["data"]["status"]) == (1, "placed")
    assert (live["version"], live["data"]["status"]) == (2, "paid")
    await ws.disconnect()


async def test_snapshot_then_watch_gets_changes_made_in_between_once(alice):
    _, token = alice
    order = await place(token)
    snapshot = await database_sync_to_async(
        lambda: client_for(token).get(f"/api/v1/orders/{order['id']}").json()
    )()
    for sku in ("a", "b", "c"):
        await add_item(token, order["id"], sku)
    ws = await connect("/ws/v1/", token)

    await subscribe(ws, f"orders/{order['id']}", since=snapshot["version"])
    await add_item(token, order["id"], "d")
    frames = await receive_all(ws)

    assert [f["version"] for f in frames] == [2, 3, 4, 5]
    assert [f["event"]["type"] for f in frames] == ["ItemAdded"] * 4
    await ws.disconnect()


async def test_changes_committed_while_subscribing_arrive_once_in_order(alice):
    _, token = alice
    order = await place(token)
    topic = "customers/c-alice/orders"
    ws = await connect("/ws/v1/", token)
    writer = asyncio.gather(*[add_item(token, order["id"], f"s{n}") for n in range(8)])

    await subscribe(ws, topic, since=0)
    await writer
    frames = await receive_all(ws)

    assert [f["version"] for f in frames] == list(range(1, 10))
    await ws.disconnect()


async def test_resume_after_disconnect_gets_exactly_the_missed_changes(alice):
    _, token = alice
    order = await place(token)
    topic = f"orders/{order['id']}"
    ws = await connect("/ws/v1/", token)
    await subscribe(ws, topic, since=0)
    first = await receive_all(ws)
    await ws.disconnect()

    await add_item(token, order["id"], "x")
    await add_item(token, order["id"], "y")
    ws = await connect("/ws/v1/", token)
    await subscribe(ws, topic, since=first[-1]["version"])
    missed = await receive_all(ws)

    assert [f["version"] for f in first] == [1]
    assert [f["version"] for f in missed] == [2, 3]
    assert [f["data"]["items"][-1]["sku"] for f in missed] == ["x", "y"]
    await ws.disconnect()


async def test_watch_without_since_starts_at_the_current_version(alice):
    _, token = alice
    order = await place(token)
    await add_item(token, order["id"], "x")
    ws = await connect("/ws/v1/", token)

    subscribed = await subscribe(ws, f"orders/{order['id']}")
    quiet = await receive_all(ws)
    await add_item(token, order["id"], "y")
    live = await receive_all(ws)

    assert subscribed["version"] == 2
    assert quiet == []
    assert [f["version"] for f in live] == [3]
    await ws.disconnect()


async def test_since_ahead_of_the_topic_gets_a_reset(alice):
    _, token = alice
    order = await place(token)
    ws = await connect("/ws/v1/", token)

    subscribed = await subscribe(ws, f"orders/{order['id']}", since=999)
    reset = await receive(ws)

    assert subscribed["version"] == 1
    assert reset == {
        "type": "reset",
        "topic": f"orders/{order['id']}",
        "version": 1,
        "reason": "version_ahead",
    }
    await ws.disconnect()


# "²" and "١٢" pass str.isdigit; 5,000 digits are past int()'s limit.
@pytest.mark.parametrize(
    "since", [-1, "abc", 1.5, True, 2**64, "²", "١٢", " 0 ", "9" * 5000]
)
async def test_a_bad_since_gets_an_error_frame_and_the_socket_stays_open(alice, since):
    _, token = alice
    order = await place(token)
    ws = await connect("/ws/v1/", token)

    error = await subscribe(ws, f"orders/{order['id']}", since=since, ref=7)
    pong = await ws.send_json_to({"type": "ping"}) or await receive(ws)

    assert (error["type"], error["code"], error["ref"]) == (
        "error",
        "validation_error",
        7,
    )
    assert pong["type"] == "pong"
    await ws.disconnect()


@pytest.mark.parametrize(
    "since, message",
    [
        ("abc", "since must be a whole number of 0 or more, not 'abc'"),
        (-1, "since must be 0 or more, not -1"),
        (str(2**63), "since is larger than any version (9223372036854775807)"),
        ("9" * 40, "since is larger than any version (9223372036854775807)"),
        (2**64, "since is larger than any version (9223372036854775807)"),
    ],
)
def test_a_bad_since_is_told_what_is_wrong_with_it(since, message):
    with pytest.raises(InvalidSince) as refused:
        parse_since(since)

    assert str(refused.value) == message


async def test_a_failed_command_sends_nothing_and_leaves_the_version(alice):
    _, token = alice
    order = await place(token)
    ws = await connect("/ws/v1/", token)
    await subscribe(ws, f"orders/{order['id']}")

    response = await database_sync_to_async(
        lambda: client_for(token).post(f"/api/v1/orders/{order['id']}/ship")
    )()
    frames = await receive_all(ws)

    assert response.status_code == 422
    assert frames == []
    assert await database_sync_to_async(Topic.objects.get)(name=f"orders/{order['id']}")
    assert (
        await database_sync_to_async(Topic.objects.get)(name=f"orders/{order['id']}")
    ).version == 1
    await ws.disconnect()


async def test_c07_rolled_back_change_is_never_sent_and_slow_commit_sent_after(
    alice,
):
    _, token = alice
    order = await place(token)
    topic = f"orders/{order['id']}"
    ws = await connect("/ws/v1/", token)
    await subscribe(ws, topic)
    behaviour = {"mode": "raise"}

    def after_projection(events):
        if behaviour["mode"] == "raise":
            raise RuntimeError("the command fails after updating the read model")
        time.sleep(1)
        behaviour["committing_at"] = time.monotonic()

    store.on_append(after_projection)
    try:
        with pytest.raises(RuntimeError):
            await add_item(token, order["id"], "rolled-back")
        rolled_back = await receive_all(ws)
        version_after_failure = (
            await database_sync_to_async(Topic.objects.get)(name=topic)
        ).version

        behaviour["mode"] = "sleep"
        slow = asyncio.create_task(add_item(token, order["id"], "slow"))
        pushed = await receive(ws, timeout=5)
        arrived_at = time.monotonic()
        snapshot = await database_sync_to_async(
            lambda: client_for(token).get(f"/api/v1/orders/{order['id']}").json()
        )()
        await slow
    finally:
        store._append_hooks.remove(after_projection)

    assert rolled_back == []
    assert version_after_failure == 1
    assert pushed["version"] == 2
    assert arrived_at >= behaviour["committing_at"]
    assert snapshot["version"] >= pushed["version"]
    await ws.disconnect()


async def test_watch_without_credentials_is_closed_with_4401():
    ws = await connect("/ws/v1/")

    closed = await ws.receive_output(timeout=3)

    assert closed == {"type": "websocket.close", "code": 4401}


async def test_a_customer_is_refused_another_customers_order_on_watch(alice, bob):
    _, alice_token = alice
    _, bob_token = bob
    order = await place(alice_token)
    ws = await connect("/ws/v1/", bob_token)

    refused = await subscribe(ws, f"orders/{order['id']}", ref=1)
    refused_list = await subscribe(ws, "customers/c-alice/orders", ref=2)
    per_resource = await connect(f"/api/v1/orders/{order['id']}/watch", bob_token)
    error = await receive(per_resource)
    closed = await per_resource.receive_output(timeout=3)
    await add_item(alice_token, order["id"], "secret")
    leaked = await receive_all(ws)

    assert (refused["code"], refused["ref"]) == ("forbidden", 1)
    assert (refused_list["code"], refused_list["ref"]) == ("forbidden", 2)
    assert error["code"] == "forbidden"
    assert closed == {"type": "websocket.close", "code": 4403}
    assert leaked == []
    await ws.disconnect()


async def test_staff_may_watch_any_customer(alice, staff):
    _, alice_token = alice
    _, staff_token = staff
    order = await place(alice_token)
    ws = await connect("/ws/v1/", staff_token)

    subscribed = await subscribe(ws, "customers/c-alice/orders", since=0)
    frames = await receive_all(ws)

    assert subscribed["type"] == "subscribed"
    assert [f["key"] for f in frames] == [order["id"]]
    await ws.disconnect()


async def test_per_resource_watch_resumes_from_since_in_the_query(alice):
    _, token = alice
    order = await place(token)
    await add_item(token, order["id"], "x")

    ws = await connect(f"/api/v1/orders/{order['id']}/watch?since=1", token)
    subscribed = await receive(ws)
    frames = await receive_all(ws)

    assert subscribed["version"] == 1
    assert [f["version"] for f in frames] == [2]
    await ws.disconnect()


async def test_unknown_topic_and_unknown_order_get_not_found(alice):
    _, token = alice
    ws = await connect("/ws/v1/", token)

    unknown = await subscribe(ws, "weather/today")
    no_order = await subscribe(ws, "orders/does-not-exist")

    assert unknown["code"] == "not_found"
    assert no_order["code"] == "not_found"
    await ws.disconnect()


async def test_bad_frames_get_errors_and_leave_other_subscriptions_working(alice):
    _, token = alice
    order = await place(token)
    ws = await connect("/ws/v1/", token)
    await subscribe(ws, f"orders/{order['id']}")

    await ws.send_to(text_data="{not json")
    not_json = await receive(ws)
    await ws.send_to(text_data=json.dumps({"type": "dance"}))
    unknown = await receive(ws)
    await ws.send_to(text_data="x" * (64 * 1024 + 1))
    too_large = await receive(ws)
    # Bytes, not characters: 40,000 "é" are 80,000 bytes of UTF-8.
    await ws.send_to(text_data="é" * 40_000)
    too_large_in_bytes = await receive(ws)
    # A ping of exactly 64 KiB in UTF-8 is within the limit.
    ref = "é" * ((64 * 1024 - len('{"type":"ping","ref":""}')) // 2)
    await ws.send_to(text_data=f'{{"type":"ping","ref":"{ref}"}}')
    pong_at_the_limit = await receive(ws)
    await ws.send_json_to({"type": "subscribe", "ref": 7})
    no_topic = await receive(ws)
    await ws.send_json_to({"type": "unsubscribe", "topic": 5})
    number_topic = await receive(ws)
    # Valid JSON whose topic holds a lone surrogate: no text, no topic.
    await ws.send_to(
        text_data='{"type": "subscribe", "topic": "customers/\\ud800/orders"}'
    )
    surrogate = await receive(ws)
    await add_item(token, order["id"], "still-here")
    change = await receive(ws)

    assert not_json["code"] == "invalid_frame"
    assert unknown["code"] == "unknown_type"
    assert too_large["code"] == "frame_too_large"
    assert too_large_in_bytes["code"] == "frame_too_large"
    assert pong_at_the_limit == {"type": "pong", "ref": ref}
    assert (no_topic["code"], no_topic["ref"]) == ("invalid_frame", 7)
    assert number_topic["code"] == "invalid_frame"
    assert surrogate["code"] == "invalid_frame"
    assert change["version"] == 2
    await ws.disconnect()


@pytest.mark.parametrize(
    "since", ["abc", "-1", str(10**30), "1.5", "%C2%B2", "9" * 5000]
)
async def test_a_bad_since_on_a_resource_watch_is_an_error_then_close_4400(
    alice, since
):
    _, token = alice
    order = await place(token)

    ws = await connect(f"/api/v1/orders/{order['id']}/watch?since={since}", token)
    error = await receive(ws)
    closed = await ws.receive_output(timeout=3)

    assert error["code"] == "validation_error"
    assert (closed["type"], closed["code"]) == ("websocket.close", 4400)


@pytest.mark.parametrize("path", ["/api/v1/nope/watch", "/", "/ws/v2/"])
async def test_a_websocket_on_no_route_is_closed_with_4404(alice, path):
    _, token = alice

    ws = await connect(path, token)
    error = await receive(ws)
    closed = await ws.receive_output(timeout=3)

    assert error["code"] == "not_found"
    assert closed["code"] == 4404


async def test_unsubscribe_stops_changes(alice):
    _, token = alice
    order = await place(token)
    ws = await connect("/ws/v1/", token)
    await subscribe(ws, f"orders/{order['id']}")

    await ws.send_json_to({"type": "unsubscribe", "topic": f"orders/{order['id']}"})
    unsubscribed = await receive(ws)
    await add_item(token, order["id"], "x")
    frames = await receive_all(ws)

    assert unsubscribed["type"] == "unsubscribed"
    assert frames == []
    await ws.disconnect()


async def test_a_ticket_opens_one_connection_only(alice):
    user, token = alice
    order = await place(token)
    ticket = await database_sync_to_async(issue_ticket)(user)

    first = await connect(f"/ws/v1/?ticket={ticket.key}")
    subscribed = await subscribe(first, f"orders/{order['id']}")
    second = await connect(f"/ws/v1/?ticket={ticket.key}")
    refused = await second.receive_output(timeout=3)

    assert subscribed["type"] == "subscribed"
    assert refused == {"type": "websocket.close", "code": 4401}
    await first.disconnect()


async def test_a_gap_in_live_changes_is_filled_from_the_outbox(alice, monkeypatch):
    _, token = alice
    order = await place(token)
    ws = await connect("/ws/v1/", token)
    await subscribe(ws, f"orders/{order['id']}")
    original = relay.send_changes
    dropped = []

    async def drop_first(changes):
        if not dropped:
            dropped.extend(changes)
            return
        await original(changes)

    monkeypatch.setattr(relay, "send_changes", drop_first)
    await add_item(token, order["id"], "lost-in-transit")
    await add_item(token, order["id"], "arrives")
    frames = await receive_all(ws)

    assert [c.version for c in dropped if c.topic.startswith("orders/")] == [2]
    assert [f["version"] for f in frames] == [2, 3]
    await ws.disconnect()


async def test_changes_left_unsent_are_sent_when_a_relay_starts(alice):
    _, token = alice
    order = await place(token)
    ws = await connect("/ws/v1/", token)
    await subscribe(ws, f"orders/{order['id']}")

    # A crash between commit and send leaves the row unsent.
    await database_sync_to_async(
        lambda: Change.objects.filter(topic=f"orders/{order['id']}").update(
            sent_at=None
        )
    )()
    sent = await relay.sweep_unsent(older_than_secs=0)
    unsent_after = await database_sync_to_async(
        lambda: Change.objects.filter(sent_at__isnull=True).count()
    )()

    assert sent >= 1
    assert unsent_after == 0
    await ws.disconnect()


async def test_a_deeply_nested_frame_gets_an_error_and_other_subscriptions_live_on(
    alice,
):
    _, token = alice
    order = await place(token)
    ws = await connect("/ws/v1/", token)
    await subscribe(ws, f"orders/{order['id']}")

    await ws.send_to(text_data="[" * 30000 + "]" * 30000)
    error = await receive(ws)
    await add_item(token, order["id"], "after-the-bad-frame")
    change = await receive(ws)

    assert error["code"] == "invalid_frame"
    assert change["version"] == 2
    await ws.disconnect()


def test_watches_on_short_lived_event_loops_give_connections_back(alice):
    # Each async_to_sync call from plain code runs on an event loop of its
    # own, whose threads end with it: a database connection left open in
    # one of them would never go back to the pool.
    _, token = alice
    order = place_order(client_for(token))

    async def watch_once() -> list[int]:
        ws = await connect(f"/api/v1/orders/{order['id']}/watch?since=0", token)
        subscribed, change = await receive(ws), await receive(ws)
        await ws.disconnect()
        return [subscribed["version"], change["version"]]

    seen = [async_to_sync(watch_once)() for _ in range(30)]

    assert seen == [[0, 1]] * 30


@pytest.mark.parametrize(
    "host, origin, signed_in",
    [
        (b"testserver", None, True),
        (b"testserver", b"http://testserver", True),
        (b"testserver", b"https://testserver", True),
        (b"TestServer:80", b"http://testserver", True),
        (b"testserver:8000", b"http://testserver:8000", True),
        (b"testserver:8000", b"http://testserver:8001", False),
        (b"testserver", b"http://evil.example", False),
        (b"testserver", b"http://testserver.evil.example", False),
        (b"testserver", b"http://evil.example@testserver", False),
        (b"testserver", b"null", False),
    ],
)
async def test_the_session_signs_a_websocket_in_only_from_this_sites_pages(
    alice, host, origin, signed_in
):
    # Browsers send the cookie with a handshake from any page; a page on
    # another site must not watch as the user signed in here.
    assert await _signed_in_by_session(alice, host, origin) is signed_in


async def test_trusted_origins_and_a_forwarded_host_sign_in_by_session(alice, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://shop.example", "https://*.example.org"]
    proxied = [(b"x-forwarded-host", b"shop.example")]

    assert await _signed_in_by_session(alice, b"internal", b"https://shop.example")
    assert await _signed_in_by_session(alice, b"internal", b"https://a.example.org")
    assert not await _signed_in_by_session(alice, b"internal", b"http://shop.example")
    assert not await _signed_in_by_session(alice, b"internal", b"https://example.net")
    settings.CSRF_TRUSTED_ORIGINS = []
    assert not await _signed_in_by_session(
        alice, b"internal", b"https://shop.example", proxied
    )
    settings.USE_X_FORWARDED_HOST = True
    assert await _signed_in_by_session(
        alice, b"internal", b"https://shop.example", proxied
    )


async def _signed_in_by_session(
    alice, host: bytes, origin: bytes | None, extra: list | None = None
) -> bool:
    """Whether a handshake with alice's session cookie, sent to ``host``
    from ``origin``, is signed in (else it is closed with 4401)."""
    user, _ = alice
    cookie = await database_sync_to_async(session_cookie)(user)
    headers = [(b"host", host), (b"cookie", cookie.encode()), *(extra or [])]
    if origin is not None:
        headers.append((b"origin", origin))
    ws = WebsocketCommunicator(application, "/ws/v1/", headers=headers)
    assert (await ws.connect())[0]

    await ws.send_json_to({"type": "ping", "ref": "here"})
    answer = await ws.receive_output(timeout=3)
    await ws.disconnect()
    if answer == {"type": "websocket.close", "code": 4401}:
        return False
    assert json.loads(answer["text"]) == {"type": "pong", "ref": "here"}
    return True


async def test_a_token_signs_a_websocket_in_from_any_origin(alice):
    _, token = alice
    headers = [
        (b"host", b"testserver"),
        (b"origin", b"http://elsewhere.example"),
        (b"authorization", f"Token {token}".encode()),
    ]
    ws = WebsocketCommunicator(application, "/ws/v1/", headers=headers)
    assert (await ws.connect())[0]

    await ws.send_json_to({"type": "ping", "ref": "here"})

    assert await receive(ws) == {"type": "pong", "ref": "here"}
    await ws.disconnect()
