"""Old event shapes read as current ones; stored rows never change."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from events.models import StoredEvent
from events.records import CommandMetadata, NewEvent
from events.store import append_to_stream, read_stream
from readmodels.models import OrderView
from tests.conftest import place_order

pytestmark = pytest.mark.django_db


def pay_with_a_schema_1_event(order_id: str) -> None:
    """A payment as it was stored before payments had a method."""
    old = NewEvent("OrderPaid", {"amount": "12.30"}, schema_version=1)
    append_to_stream(order_id, "order", 1, [old], CommandMetadata(actor="legacy"))


def test_a_schema_1_payment_reads_as_schema_2_with_an_unknown_method(alice_client):
    order = place_order(alice_client)

    pay_with_a_schema_1_event(order["id"])
    paid = list(read_stream(order["id"]))[-1]

    stored = StoredEvent.objects.get(stream_id=order["id"], stream_version=2)
    assert (paid.type, paid.schema_version) == ("OrderPaid", 2)
    assert paid.data == {"amount": "12.30", "method": "unknown"}
    assert stored.data == {"amount": "12.30"}
    assert stored.metadata["schema_version"] == 1


def test_old_payments_replay_into_the_current_read_model(alice_client):
    order = place_order(alice_client)
    pay_with_a_schema_1_event(order["id"])
    OrderView.objects.filter(order_id=order["id"]).update(payment_method="tampered")

    call_command("replay_projections", "orders", "--no-progress")

    row = OrderView.objects.get(order_id=order["id"])
    assert (row.status, row.payment_method) == ("paid", "unknown")


def test_new_payments_are_stored_in_schema_2_with_their_method(alice_client):
    order = place_order(alice_client)

    response = alice_client.post(
        f"/api/v1/orders/{order['id']}/pay",
        {"amount": "12.30", "method": "transfer"},
        format="json",
    )

    stored = StoredEvent.objects.get(stream_id=order["id"], stream_version=2)
    assert response.json()["payment_method"] == "transfer"
    assert stored.data == {"amount": "12.30", "method": "transfer"}
    assert stored.metadata["schema_version"] == 2
