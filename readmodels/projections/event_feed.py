"""The ``events`` projection: every stored event, published on topic
``events`` for staff. Its read model is the event store itself."""

from __future__ import annotations

from typing import Any

from events.records import RecordedEvent, format_time

from ..topics import UPSERT, Publisher

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
    models = ()

    def apply_batch(self, events: list[RecordedEvent], publisher: Publisher) -> None:
        for event in events:
            version = publisher.next_version(TOPIC)
            data = event_representation(event)
            publisher.publish(TOPIC, version, UPSERT, str(event.id), data, event)
