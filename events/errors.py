"""Errors of the write side. One root, one class per thing that went wrong.

EventStoreError
├── VersionConflict      the stream is not at the version the writer read
├── StreamNotFound       no event was ever appended to the stream
├── RuleViolation        a command broke a business rule
└── IdempotencyKeyReused a key came back with another request
"""

from __future__ import annotations

__all__ = [
    "EventStoreError",
    "IdempotencyKeyReused",
    "RuleViolation",
    "StreamNotFound",
    "VersionConflict",
]


class EventStoreError(Exception):
    """Root of every error raised by ``events``."""


class VersionConflict(EventStoreError):
    """The stream moved on since the writer read it.

    ``precondition`` is true when the caller named the version it expected
    (HTTP ``If-Match``); such a conflict is never retried.
    """

    def __init__(
        self, stream_id: str, expected: int, actual: int, precondition: bool = False
    ) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        self.precondition = precondition
        super().__init__(str(self))

    def __str__(self) -> str:
        return (
            f"stream {self.stream_id} is at version {self.actual}, not "
            f"{self.expected}: read it again and retry"
        )


class StreamNotFound(EventStoreError):
    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        super().__init__(f"stream {stream_id} has no events")


class RuleViolation(EventStoreError):
    """A command was refused by a business rule; ``rule`` names which."""

    def __init__(self, rule: str, message: str) -> None:
        self.rule = rule
        self.message = message
        super().__init__(f"{rule}: {message}")


class IdempotencyKeyReused(EventStoreError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(
            f"idempotency key {key!r} was used before with another request; "
            "use a new key for a new request"
        )
