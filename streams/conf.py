"""Tunables of the watch routes, read from ``settings.STREAMS`` when used."""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Topics one multiplexed connection may watch at once.
    "MAX_SUBSCRIPTIONS": 100,
    # Largest client frame accepted, per the protocol.
    "MAX_FRAME_BYTES": 64 * 1024,
    # Changes read per query when a subscriber catches up from the outbox.
    "BACKLOG_PAGE": 500,
    # A browser's watch ticket is good for one connection within this time.
    "TICKET_TTL_SECS": 60,
    # Unsent outbox rows older than this are sent by the relay's sweep; the
    # grace keeps it from racing a transaction that is announcing its own.
    "RELAY_SWEEP_GRACE_SECS": 5,
    # An idle SSE stream gets a comment this often, so that proxies keep it
    # open and clients notice a dead one; the protocol asks for 15 s at most.
    "HEARTBEAT_SECS": 15.0,
    # How long a browser waits before reconnecting a dropped SSE stream.
    "SSE_RETRY_MS": 2000,
    # On SIGTERM the server asks its subscribers to reconnect elsewhere,
    # spread over this window so that they do not all come back at once;
    # well inside Kubernetes' default 30 s grace before SIGKILL.
    "DRAIN_SECS": 5.0,
    # Long polls wait this long by default, and at most MAX.
    "LONG_POLL_TIMEOUT_SECS": 25.0,
    "LONG_POLL_MAX_TIMEOUT_SECS": 60.0,
    # Live changes that may wait for one subscriber (a WebSocket connection
    # or an SSE stream) before it is cut off and told to resume: enough for
    # a burst of commits, small enough that a stalled socket holds little.
    "MAX_SUBSCRIBER_LAG": 1000,
    # A WebSocket subscriber cut off for lag gets this long to read what
    # the server already buffered for it and the close frame, then the
    # connection is dropped.
    "SLOW_CLOSE_GRACE_SECS": 10.0,
    # The kernel's send buffer of each WebSocket under daphne, in bytes;
    # None leaves it to the kernel, which lets it grow to 4 MiB here. A
    # client that stops reading first fills this buffer, then daphne's
    # (64 KiB), then its queue of MAX_SUBSCRIBER_LAG changes.
    "SOCKET_SEND_BUFFER_BYTES": None,
    # After this many subscribers join a server process, it runs a full
    # garbage collection at the next moment with no change and no join for
    # QUIET_COLLECT_SECS, so the pause falls between changes (see
    # streams.collector). None turns it off.
    "QUIET_COLLECT_AFTER_SUBSCRIBERS": 100,
    "QUIET_COLLECT_SECS": 0.2,
    # The garbage collector's thresholds in server processes (CPython's
    # are 700, 10, 10); None leaves them alone. See streams.collector.
    "GC_THRESHOLDS": (50_000, 20, 10),
    # A process renews its membership of the topics' groups this often;
    # channels-redis forgets members after a day.
    "GROUP_REFRESH_SECS": 3600.0,
    # Let /watch/?token=...&auth=session log the token's user into the
    # session: a development convenience, off unless asked for (or DEBUG).
    "WATCH_PAGE_LOGIN": False,
}


def get(name: str) -> Any:
    return getattr(settings, "STREAMS", {}).get(name, DEFAULTS[name])
