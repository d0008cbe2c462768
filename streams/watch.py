"""What every watch transport shares: topic names and groups, reading the
backlog of a topic from the outbox, and the messages around changes.

A subscriber is at a version. It is sent every change above it, once, in
order: first the backlog from the ``Change`` table, then live changes from
the topic's Channels group. A live change that does not follow the
subscriber's version directly is never trusted to fill a gap: the gap is
read from the table. The group is joined before the backlog is read, so no
change can fall between the two.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from api.parsers import whole_number
from readmodels.models import ID_MAX_LENGTH, Change, OrderView
from readmodels.topics import current_version

from . import conf

__all__ = [
    "Backlog",
    "InvalidSince",
    "UnknownTopic",
    "Subscription",
    "check_topic",
    "encode",
    "error_message",
    "group_name",
    "off_loop",
    "parse_since",
    "read_backlog",
    "reset_message",
]

HISTORY_EXPIRED = "history_expired"
VERSION_AHEAD = "version_ahead"

# Versions fit PostgreSQL's bigint; anything larger is not a version.
MAX_VERSION = 2**63 - 1

_TOPIC_FORMS = (
    re.compile(rf"orders/(?P<order_id>[^/]{{1,{ID_MAX_LENGTH}}})"),
    re.compile(rf"customers/(?P<customer_id>[^/]{{1,{ID_MAX_LENGTH}}})/orders"),
    re.compile(r"dashboard"),
    re.compile(r"events"),
)


def off_loop(function: Any) -> Any:
    """Wrap a database function for async code, to run in a pool thread.

    Not Channels' default, which runs every such call of the process in
    one thread, one after another: a burst of watchers connecting would
    then queue behind each other and behind commands.

    The connection the call used is closed (given back to the pool) as
    it returns, from inside the call. Channels' ``database_sync_to_async``
    closes connections around the call instead, and with asgiref 3.13 we
    saw connections it opened stay checked out: held by the threads of
    event loops that had ended, they were never given back, and a test
    run emptied the pool.
    """

    @functools.wraps(function)
    def call_and_close(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(call_and_close, thread_sensitive=False)


class InvalidSince(ValueError):
    """``since`` is not a version: not a whole number, or negative."""


class UnknownTopic(LookupError):
    """No such topic, or nothing behind it yet (an order that does not
    exist)."""


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def group_name(topic: str) -> str:
    """The Channels group of a topic. Hashed: topic names may hold
    characters that group names may not."""
    return "topic." + hashlib.blake2s(topic.encode(), digest_size=16).hexdigest()


def parse_since(raw: Any) -> int | None:
    """A client's ``since``: None when absent, else a version."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        raise InvalidSince("since must be a whole number, not a boolean")
    value = raw if isinstance(raw, int) else None
    if isinstance(raw, str):
        # No more digits than the largest version has.
        value = whole_number(raw, len(str(MAX_VERSION)))
        if value is None and raw.isascii() and raw.isdigit():
            raise InvalidSince(f"since is larger than any version ({MAX_VERSION})")
    if value is None:
        shown = raw if len(str(raw)) <= 40 else f"{str(raw)[:40]}..."
        raise InvalidSince(f"since must be a whole number of 0 or more, not {shown!r}")
    if value < 0:
        raise InvalidSince(f"since must be 0 or more, not {value}")
    if value > MAX_VERSION:
        raise InvalidSince(f"since is larger than any version ({MAX_VERSION})")
    return value


def check_topic(topic: Any) -> str:
    """Return ``topic`` if it names something watchable, else raise."""
    if not isinstance(topic, str):
        raise UnknownTopic("topic must be a string")
    for form in _TOPIC_FORMS:
        match = form.fullmatch(topic)
        if not match:
            continue
        order_id = match.groupdict().get("order_id")
        if order_id and not OrderView.objects.filter(order_id=order_id).exists():
            raise UnknownTopic(f"order {order_id} does not exist")
        return topic
    raise UnknownTopic(
        f"{topic!r} is not a topic; topics are orders/{{id}}, "
        "customers/{id}/orders, dashboard and events"
    )


def reset_message(topic: str, version: int, reason: str) -> dict[str, Any]:
    return {"type": "reset", "topic": topic, "version": version, "reason": reason}


def error_message(
    code: str, message: str, topic: str | None = None, ref: Any = None
) -> dict[str, Any]:
    return {
        "type": "error",
        "code": code,
        "message": message,
        "topic": topic,
        "ref": ref,
    }


@dataclass
class Subscription:
    """One subscriber's place on one topic."""

    topic: str
    version: int
    ref: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Backlog:
    """What a subscriber at ``since`` must be sent before live changes.

    ``version`` is where the subscriber stands after it. ``reset`` is set
    when the changes cannot be served; ``more`` when another page follows.
    """

    version: int
    messages: list[str]
    reset: dict[str, Any] | None = None
    more: bool = False


def read_backlog(topic: str, since: int | None, limit: int | None = None) -> Backlog:
    """Read the changes of ``topic`` above ``since``, one page at most."""
    limit = limit or conf.get("BACKLOG_PAGE")
    current = current_version(topic)
    if since is None or since == current:
        return Backlog(current, [])
    if since > current:
        return Backlog(current, [], reset_message(topic, current, VERSION_AHEAD))

    rows = list(
        Change.objects.filter(topic=topic, version__gt=since)
        .order_by("version")
        .values_list("version", "message")[:limit]
    )
    if not rows or rows[0][0] != since + 1:
        # Limit: changes older than the retention window are trimmed; a
        # watcher resuming from before it must fetch the snapshot again.
        return Backlog(current, [], reset_message(topic, current, HISTORY_EXPIRED))
    return Backlog(
        rows[-1][0], [message for _, message in rows], more=len(rows) == limit
    )
