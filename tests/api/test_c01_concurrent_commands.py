"""Field case C01: commands racing on one order, each on its own database
connection.

Each command runs in its own thread with its own test client; Django gives
every thread its own connection, so the commands really do meet in the
database. A barrier releases them together.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection

from events.models import StoredEvent
from readmodels.models import OrderView
from tests.conftest import client_for, place_order

pytestmark = pytest.mark.django_db(transaction=True)

CONCURRENT_COMMANDS = 20
TEA = {"sku": "tea", "quantity": 1, "unit_price": "6.15"}


def versions_of(order_id: str) -> list[int]:
    return list(
        StoredEvent.objects.filter(stream_id=order_id)
        .order_by("stream_version")
        .values_list("stream_version", flat=True)
    )


def add_tea_concurrently(
    token: str, order_id: str, headers: dict[str, str]
) -> list[tuple[int, dict]]:
    """Send ``CONCURRENT_COMMANDS`` add-item commands at once; return each
    answer's status and body."""
    barrier = threading.Barrier(CONCURRENT_COMMANDS)
    answers: list[tuple[int, dict] | Exception] = [None] * CONCURRENT_COMMANDS

    def send(index: int) -> None:
        try:
            client = client_for(token)
            barrier.wait(timeout=30)
            response = client.post(
                f"/api/v1/orders/{order_id}/items", TEA, format="json", headers=headers
            )
            answers[index] = (response.status_code, response.json())
        except Exception as exc:
            answers[index] = exc
        finally:
            connection.close()

    threads = [
        threading.Thread(target=send, args=(i,)) for i in range(CONCURRENT_COMMANDS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    failures = [a for a in answers if not isinstance(a, tuple)]
    assert not failures, failures
    return answers


@pytest.fixture
def order_at_version_3(alice, alice_client) -> dict:
    order = place_order(alice_client)
    for sku in ("cake", "jam"):
        item = {"sku": sku, "quantity": 1, "unit_price": "2.00"}
        response = alice_client.post(
            f"/api/v1/orders/{order['id']}/items", item, format="json"
        )
        assert response.status_code == 200, response.content
    assert versions_of(order["id"]) == [1, 2, 3]
    return order


def test_c01_of_twenty_commands_if_matching_version_3_exactly_one_is_applied(
    alice, order_at_version_3
):
    _, token = alice
    order_id = order_at_version_3["id"]

    answers = add_tea_concurrently(token, order_id, {"If-Match": '"3"'})

    statuses = Counter(status for status, _ in answers)
    assert statuses == {200: 1, 412: CONCURRENT_COMMANDS - 1}, statuses
    for status, body in answers:
        if status == 412:
            assert body["error"]["code"] == "version_conflict"
            assert body["error"]["details"]["expected_version"] == 3
    assert versions_of(order_id) == [1, 2, 3, 4]


def test_c01_twenty_commands_without_if_match_each_apply_on_fresh_state_or_409(
    alice, order_at_version_3
):
    _, token = alice
    order_id = order_at_version_3["id"]
    add_tea_concurrently(token, order_id, {"If-Match": '"3"'})

    answers = add_tea_concurrently(token, order_id, {})

    statuses = Counter(status for status, _ in answers)
    applied = [body for status, body in answers if status == 200]
    assert set(statuses) <= {200, 409}, statuses
    for status, body in answers:
        if status == 409:
            assert body["error"]["code"] == "version_conflict"
    # No hole and no repeat, and one event per 2xx answer.
    versions = versions_of(order_id)
    assert versions == list(range(1, 5 + len(applied)))
    # Each applied command was decided on the state its predecessors left:
    # step 1 left 3 teas, and the n-th applied command answers 3 + n.
    answered = sorted((body["version"], _quantity(body, "tea")) for body in applied)
    assert answered == [(4 + n, 3 + n) for n in range(1, len(applied) + 1)]
    row = OrderView.objects.get(order_id=order_id)
    assert (row.version, row.stream_version) == (versions[-1], versions[-1])
    assert _quantity({"items": row.items}, "tea") == 3 + len(applied)


def test_c01_after_the_races_a_command_at_the_current_version_succeeds(
    alice, alice_client, order_at_version_3
):
    _, token = alice
    order_id = order_at_version_3["id"]
    add_tea_concurrently(token, order_id, {"If-Match": '"3"'})
    add_tea_concurrently(token, order_id, {})
    current = versions_of(order_id)[-1]

    response = alice_client.post(
        f"/api/v1/orders/{order_id}/items",
        TEA,
        format="json",
        headers={"If-Match": f'"{current}"'},
    )

    assert response.status_code == 200, response.content
    assert response["ETag"] == f'"{current + 1}"'
    assert versions_of(order_id) == list(range(1, current + 2))


def _quantity(order: dict, sku: str) -> int:
    return next(i["quantity"] for i in order["items"] if i["sku"] == sku)


def test_commands_of_one_process_take_turns_instead_of_polling_sqlite(
    alice, monkeypatch
):
    """With SQLite's busy timeout at zero, a command that found the
    database locked would fail at once: every command still succeeds,
    because this process's writers queue on a lock of their own. (On
    PostgreSQL there is no such polling; the commands simply all pass.)"""
    from django.db import connections

    _, token = alice
    if connection.vendor == "sqlite":
        options = connections.settings["default"]["OPTIONS"]
        monkeypatch.setitem(options, "timeout", 0)
    orders = [place_order(client_for(token)) for _ in range(CONCURRENT_COMMANDS)]
    barrier = threading.Barrier(CONCURRENT_COMMANDS)
    statuses: list[int | Exception] = [0] * CONCURRENT_COMMANDS

    def pay(index: int) -> None:
        order = orders[index]
        try:
            client = client_for(token)
            barrier.wait(timeout=30)
            response = client.post(
                f"/api/v1/orders/{order['id']}/pay",
                {"amount": order["total"]},
                format="json",
            )
            statuses[index] = response.status_code
        except Exception as exc:
            statuses[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=pay, args=(i,)) for i in range(len(orders))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert statuses == [200] * CONCURRENT_COMMANDS
    assert Counter(OrderView.objects.values_list("status", flat=True)) == {
        "paid": CONCURRENT_COMMANDS
    }
