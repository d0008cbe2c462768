"""Watchers of a topic whose read model a rebuild changed are told to
start over, with reason ``rebuilt``, and then follow the new versions."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async

from readmodels.models import OrderView
from readmodels.projector import projection_named, replay
from streams.live import TopicFollower
from tests.streams.test_websocket import (
    add_item,
    connect,
    place,
    receive,
    receive_all,
    subscribe,
)

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def edit_by_hand_and_rebuild(order_id: str) -> None:
    """A hand edit the events do not explain, which the rebuild undoes."""
    OrderView.objects.filter(order_id=order_id).update(status="edited by hand")
    replay(projection_named("orders"))


@database_sync_to_async
def rebuild_orders() -> None:
    replay(projection_named("orders"))


async def test_a_websocket_watcher_is_reset_when_a_rebuild_changes_its_topic(alice):
    _, token = alice
    order = await place(token)
    other = await place(token)
    topic, other_topic = f"orders/{order['id']}", f"orders/{other['id']}"
    ws = await connect("/ws/v1/", token)
    await subscribe(ws, topic)
    await subscribe(ws, other_topic)

    await edit_by_hand_and_rebuild(order["id"])
    reset = await receive(ws)
    await add_item(token, order["id"], "after-rebuild")
    after = await receive(ws)
    quiet = await receive_all(ws)
    await ws.disconnect()

    # The order's topic moved one version past the edit; the other order's
    # rebuilt rows equal the live ones, so its watchers hear nothing.
    assert reset == {
        "type": "reset",
        "topic": topic,
        "version": order["version"] + 1,
        "reason": "rebuilt",
    }
    assert (after["type"], after["topic"]) == ("change", topic)
    assert after["version"] == order["version"] + 2
    assert quiet == []


async def test_a_rebuild_that_changes_nothing_resets_no_watcher(alice):
    _, token = alice
    order = await place(token)
    ws = await connect(f"/api/v1/orders/{order['id']}/watch", token)
    subscribed = await receive(ws)

    await rebuild_orders()
    quiet = await receive_all(ws)
    await add_item(token, order["id"], "after-rebuild")
    after = await receive(ws)
    await ws.disconnect()

    assert subscribed["version"] == order["version"]
    assert quiet == []
    assert after["version"] == order["version"] + 1


async def test_an_sse_or_long_poll_follower_gets_the_rebuilt_reset_in_turn(alice):
    _, token = alice
    order = await place(token)
    topic = f"orders/{order['id']}"

    async with TopicFollower(topic) as follower:
        first = await follower.start(order["version"])
        deliveries = follower.deliveries(first, idle_secs=5)
        waiting = asyncio.ensure_future(anext(deliveries))
        await asyncio.sleep(0.1)
        await edit_by_hand_and_rebuild(order["id"])
        reset = await asyncio.wait_for(waiting, 5)
        await add_item(token, order["id"], "after-rebuild")
        after = await asyncio.wait_for(anext(deliveries), 5)
        await deliveries.aclose()

    assert reset.reset == {
        "type": "reset",
        "topic": topic,
        "version": order["version"] + 1,
        "reason": "rebuilt",
    }
    assert reset.version == order["version"] + 1
    assert after.version == order["version"] + 2
    assert json.loads(after.message)["version"] == order["version"] + 2
