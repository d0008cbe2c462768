"""Running a command: load the stream, decide, append, answer.

A command runs in one transaction that holds its appended events, the
inline projections they feed, and the answer remembered for its
idempotency key. Any error rolls all of them back: a failed command
appends nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError

from . import conf
from .errors import (
    IdempotencyKeyReused,
    RuleViolation,
    StreamNotFound,
    VersionConflict,
)
from .models import CommandRecord
from .orders import ORDER_STREAM_TYPE, Order
from .records import CommandMetadata, NewEvent, RecordedEvent
from .snapshots import load_snapshot, save_snapshot_if_due
from .store import append_to_stream, read_stream, write_transaction

__all__ = [
    "CommandOutcome",
    "IdempotencyClaim",
    "execute_order_command",
    "fingerprint",
    "load_order",
]

logger = logging.getLogger(__name__)

Decide = Callable[[Order], list[NewEvent]]


@dataclass(frozen=True)
class CommandOutcome:
    """The answer to a command, as it is sent and as it is remembered."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    replayed: bool = False


@dataclass(frozen=True)
class IdempotencyClaim:
    actor: str
    key: str
    fingerprint: str


Respond = Callable[[Order, list[RecordedEvent]], CommandOutcome]


def fingerprint(*parts: Any) -> str:
    """A digest of the request a key was first used with."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def load_order(order_id: str) -> Order:
    """The order as of its last event: from its snapshot, if any, then the
    events after it, read in bounded batches."""
    snapshot = load_snapshot(order_id, Order.SNAPSHOT_SCHEMA)
    order = Order.from_state(order_id, *snapshot) if snapshot else Order(order_id)
    order.snapshot_version = order.version
    order.apply_all(read_stream(order_id, after_version=order.version))
    return order


def execute_order_command(
    order_id: str,
    decide: Decide,
    respond: Respond,
    *,
    metadata: CommandMetadata,
    expected_version: int | None = None,
    must_exist: bool = True,
    idempotency: IdempotencyClaim | None = None,
) -> CommandOutcome:
    """Decide and append a command on one order, then build its answer.

    ``expected_version`` is the caller's precondition (``If-Match``): a
    mismatch raises ``VersionConflict`` with ``precondition`` set. Without
    it, a command that loses a race is decided again on the new state, a
    few times, before the conflict is raised.
    """
    if idempotency:
        remembered = _remembered_outcome(idempotency)
        if remembered:
            return remembered

    attempts = conf.get("COMMAND_RETRIES") + 1
    for attempt in range(1, attempts + 1):
        try:
            return _execute_once(
                order_id,
                decide,
                respond,
                metadata,
                expected_version,
                must_exist,
                idempotency,
            )
        except VersionConflict as conflict:
            if expected_version is None and attempt < attempts:
                logger.debug(
                    "stream %s moved to version %d, deciding again (attempt %d)",
                    order_id,
                    conflict.actual,
                    attempt,
                )
                continue
            answered = _answered_meanwhile(idempotency)
            if answered:
                return answered
            if expected_version is not None and not conflict.precondition:
                # The stream was at the caller's version when loaded and
                # moved on before the append: the precondition failed.
                raise VersionConflict(
                    order_id, expected_version, conflict.actual, precondition=True
                ) from conflict
            raise
        except (IntegrityError, RuleViolation, StreamNotFound):
            # A request with the same idempotency key may have committed
            # first (the key's row is unique, or the order moved on).
            answered = _answered_meanwhile(idempotency)
            if answered:
                return answered
            raise
    raise AssertionError("unreachable: the last attempt returns or raises")


def _execute_once(
    order_id: str,
    decide: Decide,
    respond: Respond,
    metadata: CommandMetadata,
    expected_version: int | None,
    must_exist: bool,
    idempotency: IdempotencyClaim | None,
) -> CommandOutcome:
    with write_transaction():
        order = load_order(order_id)
        if must_exist and not order.exists:
            raise StreamNotFound(order_id)
        if expected_version is not None and order.version != expected_version:
            raise VersionConflict(
                order_id, expected_version, order.version, precondition=True
            )

        new_events = decide(order)
        recorded = append_to_stream(
            order_id, ORDER_STREAM_TYPE, order.version, new_events, metadata
        )
        order.apply_all(recorded)
        save_snapshot_if_due(
            order_id,
            ORDER_STREAM_TYPE,
            order.snapshot_version,
            order.version,
            Order.SNAPSHOT_SCHEMA,
            order.to_state(),
        )

        outcome = respond(order, recorded)
        if idempotency:
            CommandRecord.objects.create(
                actor=idempotency.actor,
                key=idempotency.key,
                fingerprint=idempotency.fingerprint,
                status=outcome.status,
                body=outcome.body,
                headers=outcome.headers,
            )
    return outcome


def _answered_meanwhile(claim: IdempotencyClaim | None) -> CommandOutcome | None:
    """The answer of a request with the same idempotency key that committed
    while this one ran; it is this request's answer too."""
    return _remembered_outcome(claim) if claim else None


def _remembered_outcome(claim: IdempotencyClaim) -> CommandOutcome | None:
    record = CommandRecord.objects.filter(actor=claim.actor, key=claim.key).first()
    if record is None:
        return None
    if record.fingerprint != claim.fingerprint:
        raise IdempotencyKeyReused(claim.key)
    return CommandOutcome(record.status, record.body, record.headers, replayed=True)
