"""Full garbage collections wait for a quiet moment after a burst of new
subscribers, so that their pause does not fall in the middle of a
fan-out."""

from __future__ import annotations

import asyncio
import gc

import pytest

from streams import collector as collector_module
from streams.collector import QuietCollector, apply_gc_thresholds

QUIET_SECS = 0.05


@pytest.fixture
def collections(monkeypatch, settings) -> list[float]:
    """The loop times at which the collector ran a full collection."""
    settings.STREAMS = {
        "QUIET_COLLECT_AFTER_SUBSCRIBERS": 3,
        "QUIET_COLLECT_SECS": QUIET_SECS,
    }
    times: list[float] = []

    def collect() -> int:
        times.append(asyncio.get_running_loop().time())
        return 0

    monkeypatch.setattr(collector_module.gc, "collect", collect)
    return times


async def test_a_burst_of_subscribers_is_collected_once_when_quiet(collections):
    collector = QuietCollector()

    for _ in range(5):
        collector.subscriber_joined()
    await asyncio.sleep(QUIET_SECS * 3)

    assert len(collections) == 1
    assert collector.joined == 0 and collector.task is None


async def test_no_collection_while_changes_keep_coming(collections):
    collector = QuietCollector()
    loop = asyncio.get_running_loop()
    for _ in range(3):
        collector.subscriber_joined()

    busy_until = loop.time() + QUIET_SECS * 4
    while loop.time() < busy_until:
        last_change = loop.time()
        collector.change_delivered()
        await asyncio.sleep(QUIET_SECS / 5)
    assert collections == []

    await asyncio.sleep(QUIET_SECS * 3)
    assert len(collections) == 1
    assert collections[0] >= last_change + QUIET_SECS


async def test_too_few_subscribers_or_switched_off_means_no_collection(
    collections, settings
):
    collector = QuietCollector()
    collector.subscriber_joined()
    collector.subscriber_joined()
    await asyncio.sleep(QUIET_SECS * 3)
    assert collections == []

    settings.STREAMS = {"QUIET_COLLECT_AFTER_SUBSCRIBERS": None}
    for _ in range(10):
        collector.subscriber_joined()
    await asyncio.sleep(QUIET_SECS * 3)
    assert collections == []


def test_server_processes_get_the_configured_thresholds(settings):
    before = gc.get_threshold()
    try:
        settings.STREAMS = {"GC_THRESHOLDS": (12_345, 11, 9)}
        apply_gc_thresholds()
        assert gc.get_threshold() == (12_345, 11, 9)

        settings.STREAMS = {"GC_THRESHOLDS": None}
        apply_gc_thresholds()
        assert gc.get_threshold() == (12_345, 11, 9)
    finally:
        gc.set_threshold(*before)
