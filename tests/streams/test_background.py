"""The relay thread of a process without a server loop: commits hand their
changes over and go on; the thread sends them."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from readmodels.models import Change
from readmodels.worker import ProjectionWorker
from streams import relay
from streams.background import RelayThread
from streams.watch import group_name
from tests.readmodels.test_worker import NamedCounter, append_events

pytestmark = pytest.mark.django_db(transaction=True)


def private_counter() -> NamedCounter:
    """A counter on a topic of its own: test runs side by side may share
    the Redis layer."""
    return NamedCounter(f"counter-{uuid.uuid4().hex[:8]}")


def unsent_count() -> int:
    return Change.objects.filter(sent_at__isnull=True).count()


def changes_in(message: dict) -> list[tuple[str, int]]:
    """(topic, version) of each change in a group message: changes of one
    topic sent together share a message."""
    if message["type"] == "changes.message":
        return [(message["topic"], version) for version, _ in message["changes"]]
    return [(message["topic"], message["version"])]


async def receive(channel: str, count: int) -> list[tuple[str, int]]:
    layer = get_channel_layer()
    changes: list[tuple[str, int]] = []
    while len(changes) < count:
        changes += changes_in(await asyncio.wait_for(layer.receive(channel), 5))
    return changes


async def receive_versions(channel: str, wanted: int) -> set[int]:
    """Versions received until ``wanted`` distinct ones came, or the
    channel stayed quiet for a second. A change may come twice."""
    layer = get_channel_layer()
    versions: set[int] = set()
    while len(versions) < wanted:
        try:
            message = await asyncio.wait_for(layer.receive(channel), 1)
        except TimeoutError:
            break
        versions.update(version for _, version in changes_in(message))
    return versions


def wait_for(condition, timeout_secs: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def sending_threads(monkeypatch) -> list[str]:
    """Names of the threads that send changes to the layer."""
    names: list[str] = []
    send = relay.send_changes

    async def noting_send(changes) -> None:
        names.append(threading.current_thread().name)
        await send(changes)

    monkeypatch.setattr(relay, "send_changes", noting_send)
    return names


def test_the_relay_thread_sends_a_workers_changes_and_marks_them_sent(
    sending_threads,
):
    counter = private_counter()
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(group_name(counter.topic), channel)
    append_events(3)
    background = RelayThread().start()

    try:
        while ProjectionWorker([counter]).step():
            pass
        all_sent = wait_for(lambda: unsent_count() == 0)
    finally:
        background.stop()
    changes = async_to_sync(receive)(channel, 3)

    assert all_sent
    assert changes == [(counter.topic, 1), (counter.topic, 2), (counter.topic, 3)]
    assert sending_threads and set(sending_threads) == {"outbox-relay"}
    assert not background.thread.is_alive()


def test_stopping_the_relay_thread_sends_what_it_had_not_sent_yet(monkeypatch):
    """The relay's first send hangs; stopping sends the rows anyway."""
    counter = private_counter()
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(group_name(counter.topic), channel)
    send = relay.send_changes
    calls = []

    async def first_send_hangs(changes) -> None:
        calls.append(len(changes))
        while len(calls) == 1:
            await asyncio.sleep(0.01)
        await send(changes)

    monkeypatch.setattr(relay, "send_changes", first_send_hangs)
    append_events(3)
    background = RelayThread().start()
    while ProjectionWorker([counter]).step():
        pass
    hanging = wait_for(lambda: len(calls) == 1)

    background.stop()
    # The hung send goes on once stopping sends the same rows: some
    # changes may come twice, which subscribers ignore.
    versions = async_to_sync(receive_versions)(channel, 3)

    assert hanging
    assert unsent_count() == 0
    assert versions == {1, 2, 3}
    assert not background.thread.is_alive()


def test_once_the_relay_thread_stopped_commits_send_their_changes_themselves(
    sending_threads,
):
    counter = private_counter()
    background = RelayThread().start()
    background.stop()
    append_events(2)

    while ProjectionWorker([counter]).step():
        pass

    assert unsent_count() == 0
    assert sending_threads and "outbox-relay" not in sending_threads
