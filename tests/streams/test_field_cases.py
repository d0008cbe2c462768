"""Field cases C05, C06, C09 and C10 across transports."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model

from readmodels.models import Change, Topic
from readmodels.topics import trim_changes
from tests.conftest import ONE_ITEM
from tests.streams.conftest import sse_events
from tests.streams.test_websocket import connect, receive, receive_all, subscribe

pytestmark = pytest.mark.django_db(transaction=True)

SSE = {"Accept": "text/event-stream"}
TOPIC = "customers/c-alice/orders"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


def make_history(topic: str, versions: int, keep: int) -> None:
    """A topic at ``versions`` whose history was trimmed to the last
    ``keep`` changes."""
    Topic.objects.create(name=topic, version=versions)
    Change.objects.bulk_create(
        Change(
            topic=topic,
            version=v,
            position=v,
            message=json.dumps({"type": "change", "topic": topic, "version": v}),
            sent_at="2026-01-01T00:00:00Z",
        )
        for v in range(1, versions + 1)
    )
    trim_changes(keep_versions=keep, keep_secs=10**9)


async def test_c09_resume_before_retention_is_reset_on_every_transport(server, alice):
    _, token = alice
    await database_sync_to_async(make_history)(TOPIC, 500, keep=100)
    kept = await database_sync_to_async(Change.objects.filter(topic=TOPIC).count)()
    path = f"/api/v1/{TOPIC}/watch"

    async with httpx.AsyncClient(base_url=server, headers=auth(token), timeout=10) as c:
        long_poll = await c.get(f"{path}?since=10&timeout=1")
        sse_reset = None
        async with c.stream("GET", f"{path}?since=10", headers=SSE) as response:
            async for event in sse_events(response):
                if event.get("event") == "reset":
                    sse_reset = event["json"]
                    break
    ws = await connect("/ws/v1/", token)
    subscribed = await subscribe(ws, TOPIC, since=10)
    ws_reset = await receive(ws)
    await ws.disconnect()

    expected = {
        "type": "reset",
        "topic": TOPIC,
        "version": 500,
        "reason": "history_expired",
    }
    assert kept == 100
    assert long_poll.status_code == 410
    assert {k: long_poll.json()[k] for k in expected} == expected
    assert long_poll.json()["error"]["code"] == "history_expired"
    assert sse_reset == expected
    assert subscribed["version"] == 500
    assert ws_reset == expected


async def test_c09_resume_at_the_head_after_trimming_is_up_to_date(server, alice):
    _, token = alice
    await database_sync_to_async(make_history)(TOPIC, 500, keep=0)
    path = f"/api/v1/{TOPIC}/watch"

    async with httpx.AsyncClient(base_url=server, headers=auth(token), timeout=10) as c:
        long_poll = await c.get(f"{path}?since=500&timeout=0")
        first_sse = []
        async with c.stream("GET", f"{path}?since=500", headers=SSE) as response:
            async for event in sse_events(response):
                first_sse.append(event)
                if "comment" in event:
                    break
    ws = await connect("/ws/v1/", token)
    subscribed = await subscribe(ws, TOPIC, since=500)
    after = await receive_all(ws)
    await ws.disconnect()

    assert long_poll.status_code == 200
    assert long_poll.json() == {"topic": TOPIC, "version": 500, "changes": []}
    assert [e.get("event") for e in first_sse if "event" in e] == ["subscribed"]
    assert subscribed["version"] == 500
    assert after == []


async def test_c10_a_deactivated_user_is_closed_on_websocket(alice, settings):
    settings.STREAMS = {"HEARTBEAT_SECS": 0.2}
    user, token = alice
    ws = await connect("/ws/v1/", token)
    await subscribe(ws, TOPIC)

    await database_sync_to_async(get_user_model().objects.filter(pk=user.pk).update)(
        is_active=False
    )
    started = time.monotonic()
    error = await receive(ws, timeout=3)
    closed = await ws.receive_output(timeout=3)

    assert error["code"] == "forbidden"
    assert closed == {"type": "websocket.close", "code": 4403}
    assert time.monotonic() - started < 1.5


async def test_c10_a_deactivated_user_loses_sse_and_long_poll(server, alice):
    user, token = alice
    path = f"/api/v1/{TOPIC}/watch"
    async with httpx.AsyncClient(base_url=server, headers=auth(token), timeout=10) as c:
        events = []
        async with c.stream("GET", path, headers=SSE) as response:
            async for event in sse_events(response):
                events.append(event)
                if event.get("event") == "subscribed":
                    await database_sync_to_async(
                        get_user_model().objects.filter(pk=user.pk).update
                    )(is_active=False)
                    started = time.monotonic()
            ended_after = time.monotonic() - started
        long_poll = await c.get(f"{path}?timeout=0")

    assert events[-1]["event"] == "error"
    assert events[-1]["json"]["error"]["code"] == "forbidden"
    assert ended_after < 2
    assert long_poll.status_code == 401


async def test_c06_text_money_and_times_are_identical_on_rest_websocket_and_sse(
    server, alice
):
    _, token = alice
    note = "Zürich – 東京 ✓"
    item = {"sku": "café-東京", "quantity": 3, "unit_price": "4.10"}
    async with httpx.AsyncClient(base_url=server, headers=auth(token), timeout=10) as c:
        order = (await c.post("/api/v1/orders/", json={"items": [item]})).json()
        path = f"/api/v1/orders/{order['id']}/watch"
        ws = await websockets.connect(
            server.replace("http", "ws") + path + "?since=0",
            additional_headers=auth(token),
        )
        await c.post(f"/api/v1/orders/{order['id']}/cancel", json={"reason": note})
        rest = (await c.get(f"/api/v1/orders/{order['id']}")).json()
        sse = []
        async with c.stream("GET", f"{path}?since=1", headers=SSE) as response:
            async for event in sse_events(response):
                if event.get("event") == "change":
                    sse.append(event)
                    break
    ws_frames = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(3)]
    await ws.close()

    ws_change = ws_frames[-1]
    sse_change = json.loads(sse[0]["data"])
    assert ws_change == sse_change
    assert ws_change["data"] == rest
    assert rest["total"] == "12.30"
    assert rest["cancel_reason"] == note
    assert rest["items"][0]["sku"] == "café-東京"
    assert rest["updated_at"].endswith("Z")
    assert ws_change["event"]["recorded_at"].endswith("Z")
    assert note in sse[0]["data"]


def test_c06_a_value_json_cannot_carry_fails_in_the_projection(
    alice_client, monkeypatch
):
    from events.models import StoredEvent
    from readmodels.projections import orders

    def unencodable(row):
        return {"total": float("nan")}

    monkeypatch.setattr(orders, "order_representation", unencodable)

    with pytest.raises(ValueError):
        alice_client.post("/api/v1/orders/", ONE_ITEM, format="json")

    assert StoredEvent.objects.count() == 0
    assert Change.objects.count() == 0


async def test_c05_a_slow_subscriber_never_blocks_commands_and_ends_at_the_last_version(
    server, alice
):
    """The subscriber reads nothing at all during the burst, then one
    change every 50 ms: commands that finish while it is stalled did not
    wait for it."""
    _, token = alice
    async with httpx.AsyncClient(base_url=server, headers=auth(token), timeout=30) as c:
        # The client library buffers what the application does not read
        # yet, as a slow application's socket would.
        ws = await websockets.connect(
            server.replace("http", "ws") + "/ws/v1/",
            additional_headers=auth(token),
            max_queue=2048,
            ping_interval=None,
        )
        await ws.send(json.dumps({"type": "subscribe", "topic": TOPIC, "since": 0}))
        await ws.recv()
        seen: list[int] = []
        burst_done = asyncio.Event()

        async def read_slowly() -> None:
            await burst_done.wait()
            while not seen or seen[-1] < 501:
                frame = json.loads(await ws.recv())
                seen.append(frame["version"])
                await asyncio.sleep(0.05)

        reader = asyncio.create_task(read_slowly())
        semaphore = asyncio.Semaphore(8)
        answers = []

        async def place() -> None:
            async with semaphore:
                response = await c.post("/api/v1/orders/", json=ONE_ITEM)
                answers.append(response.status_code)

        await asyncio.gather(*[place() for _ in range(500)])
        read_during_burst = len(seen)
        burst_done.set()
        await asyncio.sleep(1)
        await place()
        await asyncio.wait_for(reader, 90)
        await ws.close()
        metrics_text = (await c.get("/metrics")).text

    assert answers == [201] * 501
    assert read_during_burst == 0
    assert seen == list(range(1, 502))
    assert "lookout_watch_gaps_total" in metrics_text
