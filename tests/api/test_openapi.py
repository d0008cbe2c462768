"""Discovery: REST representations link their watch routes, and the
OpenAPI document describes those routes and the messages they send."""

from __future__ import annotations

import re

import pytest

from tests.conftest import place_order

pytestmark = pytest.mark.django_db


def openapi(client) -> dict:
    response = client.get("/api/v1/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def documented_path(document: dict, href: str) -> str | None:
    """The OpenAPI path template that ``href`` matches, if any."""
    for template in document["paths"]:
        pattern = re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, href):
            return template
    return None


def test_every_rest_representation_links_a_documented_watch_route(
    alice_client, staff_client
):
    order = place_order(alice_client)
    customer = order["customer_id"]
    bodies = [
        order,
        alice_client.get(f"/api/v1/orders/{order['id']}").json(),
        alice_client.get(f"/api/v1/customers/{customer}/orders").json(),
        staff_client.get("/api/v1/dashboard").json(),
    ]
    document = openapi(alice_client)

    for body in bodies:
        watch = body["_links"]["watch"]
        template = documented_path(document, watch["href"])
        assert template is not None, watch["href"]
        assert template.endswith("/watch")
        assert "get" in document["paths"][template]
    assert bodies[0]["_links"]["watch"]["topic"] == f"orders/{order['id']}"


def test_the_watch_routes_document_their_parameters_and_messages(alice_client):
    document = openapi(alice_client)
    schemas = document["components"]["schemas"]
    watch_paths = [p for p in document["paths"] if p.endswith("/watch")]

    assert len(watch_paths) == 4
    for path in watch_paths:
        operation = document["paths"][path]["get"]
        names = {p["name"] for p in operation["parameters"]}
        assert {"since", "timeout", "Last-Event-ID"} <= names
        answers = operation["responses"]
        assert set(answers["200"]["content"]) == {
            "application/json",
            "text/event-stream",
        }
        assert answers["410"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Reset"
        }
    assert "/ws/v1/" in document["paths"]
    assert schemas["Change"]["properties"]["type"]["enum"] == ["change"]
    assert set(schemas["Reset"]["properties"]["reason"]["enum"]) == {
        "history_expired",
        "version_ahead",
        "rebuilt",
    }


COMMANDS = {
    ("/api/v1/orders/", "post"): "PlaceOrder",
    ("/api/v1/orders/{order_id}/items", "post"): "Item",
    ("/api/v1/orders/{order_id}/items/{sku}", "delete"): None,
    ("/api/v1/orders/{order_id}/pay", "post"): "Pay",
    ("/api/v1/orders/{order_id}/ship", "post"): None,
    ("/api/v1/orders/{order_id}/cancel", "post"): "Cancel",
}


def schema_name(content: dict) -> str:
    return content["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]


def test_commands_document_their_body_answer_headers_and_errors(alice_client):
    document = openapi(alice_client)

    # The routes take an optional trailing slash; the document shows one.
    paths = {path.rstrip("/"): item for path, item in document["paths"].items()}
    for (path, method), body in COMMANDS.items():
        operation = paths[path.rstrip("/")][method]
        if body is None:
            assert "requestBody" not in operation, path
        else:
            assert schema_name(operation["requestBody"]["content"]) == body, path
        ok = "201" if method == "post" and path == "/api/v1/orders/" else "200"
        assert schema_name(operation["responses"][ok]["content"]) == "OrderView"
        for code in ("400", "401", "403", "404", "409", "412", "422"):
            error = operation["responses"][code]["content"]
            assert schema_name(error) == "Error", (path, code)
        headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
        assert {"If-Match", "Idempotency-Key"} <= headers, path

    schemas = document["components"]["schemas"]
    error = schemas["ErrorBody"]
    assert set(error["properties"]) == {"code", "message", "details"}
    codes = schemas[error["properties"]["code"]["$ref"].rsplit("/", 1)[-1]]
    assert {"rule_violation", "version_conflict"} <= set(codes["enum"])


def test_every_rest_operation_documents_what_it_answers(alice_client):
    document = openapi(alice_client)

    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method == "parameters" or path.endswith("/watch") or "/ws/" in path:
                continue
            answers = [
                answer
                for code, answer in operation["responses"].items()
                if code.startswith("2")
            ]
            assert answers, (path, method)
            assert all(
                "content" in answer or "No response body" in answer["description"]
                for answer in answers
            ), (path, method)


def test_documented_paths_are_the_protocols_and_lead_to_real_routes(alice_client):
    from django.urls import resolve

    document = openapi(alice_client)

    for template in document["paths"]:
        if template.startswith("/ws/"):
            continue  # WebSocket routes live in project.asgi, not urls.py
        path = re.sub(r"\{[^}]+\}", "x-1", template)
        assert resolve(path), template
    # As PROTOCOL.md writes them: collections with a slash, the rest without.
    assert "/api/v1/orders/" in document["paths"]
    assert "/api/v1/orders/{order_id}/pay" in document["paths"]
    assert "/api/v1/customers/{customer_id}/orders" in document["paths"]
    assert "/api/v1/dashboard" in document["paths"]
    assert "/api/v1/orders/{order_id}/pay/" not in document["paths"]
