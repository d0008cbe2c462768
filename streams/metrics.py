"""Prometheus metrics of the watch routes, served at ``/metrics``."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

WATCH_GAPS = Counter(
    "lookout_watch_gaps_total",
    "Live changes a subscriber missed (a send dropped or overtaken) and "
    "read from the outbox instead",
    ["transport"],
)
CHANGES_SENT = Counter(
    "lookout_changes_sent_total", "Changes the outbox relay sent to topic groups"
)
SLOW_SUBSCRIBERS = Counter(
    "lookout_watch_slow_subscribers_total",
    "Subscribers cut off because more live changes waited for them than "
    "STREAMS['MAX_SUBSCRIBER_LAG'], and told to resume",
    ["transport"],
)
DROPPED_CHANGES = Counter(
    "lookout_watch_dropped_changes_total",
    "Live changes dropped from the queues of subscribers that were cut off "
    "(they read them from the outbox when they resume)",
    ["transport"],
)


def metrics_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
