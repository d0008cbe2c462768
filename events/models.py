"""The event store's tables: one table of immutable events, and the
responses remembered for idempotency keys."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import models


class ImmutableEventError(Exception):
    """Events are facts: once stored they are never changed or deleted."""


class EventQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> int:
        raise ImmutableEventError("stored events cannot be updated")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise ImmutableEventError("stored events cannot be deleted")


class StoredEvent(models.Model):
    """One event. ``position`` orders the whole store, ``stream_version``
    orders one stream.

    On PostgreSQL, appends insert through the stored function
    ``lookout_append`` (migration 0003), not through this model: a change
    to these columns needs a migration that replaces that function too.
    """

    position = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    stream_id = models.CharField(max_length=100)
    stream_type = models.CharField(max_length=50)
    stream_version = models.PositiveIntegerField()
    type = models.CharField(max_length=100)
    data = models.JSONField()
    metadata = models.JSONField(default=dict)
    recorded_at = models.DateTimeField()

    objects = EventQuerySet.as_manager()

    class Meta:
        db_table = "events_event"
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(
                fields=["stream_id", "stream_version"], name="events_stream_version"
            )
        ]
        indexes = [
            models.Index(fields=["type", "position"], name="events_type_position"),
            models.Index(fields=["recorded_at"], name="events_recorded_at"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.stream_id}@{self.stream_version}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise ImmutableEventError(
                f"event at position {self.position} cannot be changed"
            )
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise ImmutableEventError(
            f"event at position {self.position} cannot be deleted"
        )


class CommandRecord(models.Model):
    """The answer given to a command sent with an idempotency key.

    Stored in the command's own transaction, so a key is remembered exactly
    when its events were appended.
    """

    actor = models.CharField(max_length=150)
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    status = models.PositiveSmallIntegerField()
    body = models.JSONField()
    headers = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "events_command_record"
        constraints = [
            models.UniqueConstraint(fields=["actor", "key"], name="events_command_key")
        ]

    def __str__(self) -> str:
        return f"{self.actor}:{self.key}"


class Snapshot(models.Model):
    """A stream's folded state at one version, so that loading a long
    stream reads only the events after it. A cache: deleting every
    snapshot changes nothing but speed."""

    stream_id = models.CharField(max_length=100, primary_key=True)
    stream_type = models.CharField(max_length=50)
    version = models.PositiveIntegerField()
    # Bumped when the state's shape changes; a snapshot of another schema
    # is ignored and the stream is folded from its events.
    schema = models.PositiveSmallIntegerField()
    state = models.JSONField()
    taken_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "events_snapshot"

    def __str__(self) -> str:
        return f"snapshot of {self.stream_id}@{self.version}"
