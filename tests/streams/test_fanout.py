"""Fan-out inside one process: one group membership per topic, shared by
the process's subscribers, and a bounded queue per subscriber."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from readmodels.projections.event_feed import EventFeedProjection
from readmodels.worker import ProjectionWorker
from streams.fanout import topic_hub
from streams.live import TopicFollower
from streams.watch import group_name
from tests.streams.test_websocket import connect, place, receive, subscribe

pytestmark = pytest.mark.django_db(transaction=True)

TOPIC = "customers/c-alice/orders"


def count_memberships(monkeypatch) -> dict[str, list[str]]:
    """Record the channels the layer adds to and drops from each group."""
    layer = get_channel_layer()
    calls: dict[str, list[str]] = {"add": [], "discard": []}
    add, discard = layer.group_add, layer.group_discard

    async def group_add(group: str, channel: str) -> None:
        calls["add"].append(group)
        await add(group, channel)

    async def group_discard(group: str, channel: str) -> None:
        calls["discard"].append(group)
        await discard(group, channel)

    monkeypatch.setattr(layer, "group_add", group_add)
    monkeypatch.setattr(layer, "group_discard", group_discard)
    return calls


async def test_subscribers_on_one_topic_share_one_membership_and_each_get_every_change(
    alice, monkeypatch
):
    _, token = alice
    calls = count_memberships(monkeypatch)
    sockets = [await connect("/ws/v1/", token) for _ in range(3)]
    for ws in sockets:
        await subscribe(ws, TOPIC)

    for _ in range(3):
        await place(token)
    received = [[(await receive(ws))["version"] for _ in range(3)] for ws in sockets]
    for ws in sockets:
        await ws.disconnect()

    assert received == [[1, 2, 3]] * 3
    assert calls["add"].count(group_name(TOPIC)) == 1
    assert calls["discard"].count(group_name(TOPIC)) == 1


async def test_a_follower_too_far_behind_is_told_so_and_gets_nothing_more(
    alice, settings
):
    settings.STREAMS = {"MAX_SUBSCRIBER_LAG": 3}
    async with TopicFollower(TOPIC) as follower:
        first = await follower.start(0)
        hub = topic_hub()
        for version in range(1, 6):
            hub.deliver(TOPIC, version, f'{{"version":{version}}}')
        deliveries = [d async for d in follower.deliveries(first, idle_secs=5)]

    assert len(deliveries) == 1
    assert deliveries[0].behind
    assert deliveries[0].version == 0


async def test_a_batch_of_changes_sent_in_one_group_message_arrives_in_order(
    alice, staff, monkeypatch
):
    """The worker applies two events in one batch; the relay sends the
    feed's two changes as one group message, and a watcher gets both."""
    _, alice_token = alice
    _, staff_token = staff
    layer = get_channel_layer()
    sent_types: list[str] = []
    group_send = layer.group_send

    async def noting_group_send(group: str, message: dict) -> None:
        if group == group_name("events"):
            sent_types.append(message["type"])
        await group_send(group, message)

    monkeypatch.setattr(layer, "group_send", noting_group_send)
    ws = await connect("/ws/v1/", staff_token)
    await subscribe(ws, "events")

    await place(alice_token)
    await place(alice_token)
    await database_sync_to_async(ProjectionWorker([EventFeedProjection()]).step)()
    received = [await receive(ws) for _ in range(2)]
    await ws.disconnect()

    assert [frame["version"] for frame in received] == [1, 2]
    assert [frame["event"]["type"] for frame in received] == ["OrderPlaced"] * 2
    assert sent_types == ["changes.message"]
