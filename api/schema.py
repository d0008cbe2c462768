"""OpenAPI for what drf-spectacular cannot see by itself: the watch routes
(plain async Django views and WebSocket consumers) and the message shapes
they send."""

from __future__ import annotations

from typing import Any

WATCH_ROUTES = {
    "/api/v1/orders/{order_id}/watch": ("orders/{order_id}", "order_id"),
    "/api/v1/customers/{customer_id}/orders/watch": (
        "customers/{customer_id}/orders",
        "customer_id",
    ),
    "/api/v1/dashboard/watch": ("dashboard", None),
    "/api/v1/events/watch": ("events", None),
}

_REF = "#/components/schemas/"

SCHEMAS: dict[str, Any] = {
    "ChangeEvent": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "type": {"type": "string"},
            "stream_id": {"type": "string"},
            "stream_version": {"type": "integer"},
            "recorded_at": {"type": "string", "format": "date-time"},
        },
    },
    "Change": {
        "type": "object",
        "description": "The same object on every transport.",
        "required": ["type", "topic", "version", "position", "op", "key", "data"],
        "properties": {
            "type": {"type": "string", "enum": ["change"]},
            "topic": {"type": "string", "example": "orders/7f3c"},
            "version": {"type": "integer", "minimum": 1},
            "position": {"type": "integer"},
            "op": {"type": "string", "enum": ["upsert", "delete"]},
            "key": {"type": "string"},
            "data": {
                "type": "object",
                "nullable": True,
                "description": "The item's whole representation, as REST returns it.",
            },
            "event": {"$ref": _REF + "ChangeEvent"},
        },
    },
    "Reset": {
        "type": "object",
        "description": "The changes cannot be served: fetch the resource again.",
        "properties": {
            "type": {"type": "string", "enum": ["reset"]},
            "topic": {"type": "string"},
            "version": {"type": "integer"},
            "reason": {
                "type": "string",
                "enum": ["history_expired", "version_ahead", "rebuilt"],
                "description": "rebuilt: a rebuild of the read model changed it.",
            },
        },
    },
    "LongPollAnswer": {
        "type": "object",
        "properties": {
            "topic": {"type": "string"},
            "version": {"type": "integer"},
            "changes": {"type": "array", "items": {"$ref": _REF + "Change"}},
        },
    },
    "Error": {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {},
                },
            }
        },
    },
}

_SSE_DESCRIPTION = """\
With `Accept: text/event-stream`: Server-Sent Events. The stream opens with
`retry:`, then `event: subscribed`, then one `event: change` per change
(`id:` is the topic version; resume with `Last-Event-ID` or `?since=`),
`event: reset` when history cannot be served, and a comment line when idle.

With any other `Accept`: long polling. Answers as soon as a change above
`since` exists, or with no changes when `timeout` passes; 410 with the reset
object when history cannot be served.

A WebSocket upgrade on the same path watches the same topic: the server
sends `subscribed`, then `change` and `reset` frames."""


def _parameters(path_key: str | None) -> list[dict[str, Any]]:
    parameters = [
        {
            "name": "since",
            "in": "query",
            "schema": {"type": "integer", "minimum": 0},
            "description": "The last version applied; changes above it are sent.",
        },
        {
            "name": "timeout",
            "in": "query",
            "schema": {"type": "number", "minimum": 0, "maximum": 60, "default": 25},
            "description": "Long polling only: seconds to wait for a change.",
        },
        {
            "name": "ticket",
            "in": "query",
            "schema": {"type": "string"},
            "description": "From POST /api/v1/watch-tickets/; for browsers.",
        },
        {
            "name": "Last-Event-ID",
            "in": "header",
            "schema": {"type": "string"},
            "description": "SSE only: the last `id:` seen, sent by browsers.",
        },
    ]
    if path_key:
        parameters.insert(
            0,
            {
                "name": path_key,
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
            },
        )
    return parameters


def _error(description: str) -> dict[str, Any]:
    content = {"application/json": {"schema": {"$ref": _REF + "Error"}}}
    return {"description": description, "content": content}


def _watch_operation(topic: str, path_key: str | None) -> dict[str, Any]:
    return {
        "operationId": "watch_"
        + topic.replace("/", "_").replace("{", "").replace("}", ""),
        "summary": f"Watch topic {topic}",
        "description": _SSE_DESCRIPTION,
        "tags": ["watch"],
        "parameters": _parameters(path_key),
        "responses": {
            "200": {
                "description": "Changes (long poll) or an event stream (SSE).",
                "content": {
                    "application/json": {"schema": {"$ref": _REF + "LongPollAnswer"}},
                    "text/event-stream": {"schema": {"type": "string"}},
                },
            },
            "400": _error("`since`, `timeout` or `Last-Event-ID` is not valid."),
            "401": _error("No credentials."),
            "403": _error("The user may not watch this topic."),
            "404": _error("No such topic."),
            "410": {
                "description": (
                    "Long polling: history expired, version ahead, or the "
                    "read model was rebuilt."
                ),
                "content": {"application/json": {"schema": {"$ref": _REF + "Reset"}}},
            },
        },
    }


# Collections end in a slash, as the protocol writes them; every other
# path is written without one (the routes answer both ways).
COLLECTIONS = {"/api/v1/orders/", "/api/v1/events/", "/api/v1/watch-tickets/"}


def add_watch_routes(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the watch routes, and every
    path in the form the protocol documents."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(SCHEMAS)
    result["paths"] = {
        path if path in COLLECTIONS else path.rstrip("/"): operations
        for path, operations in result.get("paths", {}).items()
    }
    paths = result["paths"]
    for path, (topic, path_key) in WATCH_ROUTES.items():
        paths[path] = {"get": _watch_operation(topic, path_key)}
    paths["/ws/v1/"] = {
        "get": {
            "operationId": "watch_multiplexed",
            "summary": "Multiplexed WebSocket: one connection, many topics",
            "description": (
                "Upgrade to WebSocket. Client frames: subscribe {topic, since, ref}, "
                "unsubscribe {topic}, ping. Server frames: subscribed, change, "
                "reset, unsubscribed, pong, error {code, message, topic, ref}. "
                "Handshake refusals close with 4401 or 4403. A connection "
                "too far behind is closed with 4008, reason "
                '{"versions": {topic: V}}: resume with since=V. A server '
                "shutting down closes with 1012: reconnect and resume."
            ),
            "tags": ["watch"],
            "responses": {"101": {"description": "Switching protocols"}},
        }
    }
    return result
