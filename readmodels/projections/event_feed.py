"""The ``events`` projection: every stored event, published on topic
``events`` for staff. Its read model is the event store itself."""

from __future__ import annotations

from typing import Any

from events.records import RecordedEvent, format_time

from ..topics import UPSERT, CountingPublisher, Publisher

TOPIC = "events"


def event_representation(event: RecordedEvent) -> dict[str, Any]:
    return {
        "id": str(event.id),
        "position": event.position,
        "stream_id": event.stream_id,
        "stream_type": event.stream_type,
        "stream_version": event.stream_version,
        "type": event.type,
        "data": event.data,
        "metadata": event.metadata,
        "recorded_at": format_time(event.recorded_at),
    }


class EventFeedProjection:
    name = "events"
    stream_types = None
    models = ()

    def builder(self) -> EventFeedFold:
        return EventFeedFold()

    def changed_topics(self, model: type, row: dict[str, Any]) -> list[str]:
        return []

    def topic_row(self, topic: str) -> None:
        return None

    def apply_batch(self, events: list[RecordedEvent], publisher: Publisher) -> None:
        for event in events:
            version = publisher.next_version(TOPIC)
            data = event_representation(event)
            publisher.publish(TOPIC, version, UPSERT, str(event.id), data, event)


class EventFeedFold:
    """A rebuild of the feed has no rows to write: the store is its read
    model, and the topic's history is what was published live."""

    def __init__(self) -> None:
        self.publisher = CountingPublisher()

    def apply_batch(self, events: list[RecordedEvent]) -> None:
        pass

    def take_rows(self) -> dict[type, list]:
        return {}
