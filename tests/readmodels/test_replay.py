"""Replaying projections from the event store into fresh tables."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from events.models import StoredEvent
from readmodels import topics
from readmodels.models import Change, CustomerOrders, OrderView, Topic
from readmodels.projector import projection_named, replay
from tests.conftest import place_order

pytestmark = pytest.mark.django_db

CAKE = {"sku": "cake", "quantity": 3, "unit_price": "1.10"}


def read_model_rows() -> dict[str, list[dict]]:
    return {
        "orders": list(OrderView.objects.order_by("order_id").values()),
        "customers": list(CustomerOrders.objects.order_by("customer_id").values()),
    }


def outbox() -> tuple[list[tuple], list[tuple]]:
    changes = list(Change.objects.order_by("id").values_list("topic", "version"))
    topics = list(Topic.objects.order_by("name").values_list("name", "version"))
    return changes, topics


def run(client, method: str, path: str, body: dict | None = None) -> None:
    response = getattr(client, method)(path, body, format="json")
    assert response.status_code == 200, response.content


@pytest.fixture
def history(alice_client, bob_client) -> list[str]:
    """Orders in every state, for two customers."""
    shipped = place_order(alice_client)["id"]
    run(alice_client, "post", f"/api/v1/orders/{shipped}/items", CAKE)
    run(alice_client, "delete", f"/api/v1/orders/{shipped}/items/tea")
    run(alice_client, "post", f"/api/v1/orders/{shipped}/pay", {"amount": "3.30"})
    run(alice_client, "post", f"/api/v1/orders/{shipped}/ship")
    paid = place_order(alice_client)["id"]
    run(alice_client, "post", f"/api/v1/orders/{paid}/pay", {"amount": "12.30"})
    open_order = place_order(alice_client)["id"]
    run(alice_client, "post", f"/api/v1/orders/{open_order}/items", CAKE)
    cancelled = place_order(bob_client)["id"]
    run(bob_client, "post", f"/api/v1/orders/{cancelled}/cancel", {"reason": "oops"})
    return [shipped, paid, open_order, cancelled]


def test_replay_rebuilds_rows_equal_to_the_live_ones(history):
    live = read_model_rows()

    replay(projection_named("orders"))

    assert read_model_rows() == live
    assert len(live["orders"]) == 4
    assert len(live["customers"]) == 2


def test_replay_returns_the_number_of_events_applied(history):
    applied = replay(projection_named("orders"))

    assert applied == StoredEvent.objects.count() == 11


def without_versions(rows: dict[str, list[dict]]) -> dict[str, list[dict]]:
    return {
        name: [{k: v for k, v in row.items() if k != "version"} for row in table]
        for name, table in rows.items()
    }


def test_replay_restores_hand_edited_deleted_and_stray_rows(history):
    live = read_model_rows()
    shipped, paid, *_ = history
    OrderView.objects.filter(order_id=shipped).update(
        status="placed", total=Decimal("999.99"), version=1
    )
    OrderView.objects.filter(order_id=paid).delete()
    CustomerOrders.objects.filter(customer_id="c-bob").update(order_count=9)
    stray = OrderView.objects.get(order_id=history[2])
    stray.order_id, stray.placed_position = "stray", 10**9
    stray.save()

    replay(projection_named("orders"))

    assert without_versions(read_model_rows()) == without_versions(live)


def test_replay_moves_topics_that_differ_to_a_new_version_and_resets_them(
    history, alice_client, monkeypatch, django_capture_on_commit_callbacks
):
    shipped, paid, open_order, cancelled = history
    live_versions = dict(Topic.objects.values_list("name", "version"))
    OrderView.objects.filter(order_id=shipped).update(status="placed")
    CustomerOrders.objects.filter(customer_id="c-bob").update(order_count=9)
    announced = []
    monkeypatch.setattr(topics, "_reset_hooks", [])
    topics.on_topics_reset(
        lambda versions, reason: announced.append((versions, reason))
    )

    with django_capture_on_commit_callbacks(execute=True):
        replay(projection_named("orders"))

    changed = {
        f"orders/{shipped}": live_versions[f"orders/{shipped}"] + 1,
        "customers/c-alice/orders": live_versions["customers/c-alice/orders"] + 1,
        "customers/c-bob/orders": live_versions["customers/c-bob/orders"] + 1,
    }
    assert announced == [(changed, "rebuilt")]
    for topic, version in changed.items():
        assert Topic.objects.get(name=topic).version == version
        # Older history would rebuild the old state: it is gone.
        assert not Change.objects.filter(topic=topic).exists()
    assert (
        OrderView.objects.get(order_id=shipped).version == changed[f"orders/{shipped}"]
    )
    assert OrderView.objects.get(order_id=shipped).status == "shipped"
    # Untouched topics keep their version and their history.
    assert (
        OrderView.objects.get(order_id=paid).version
        == (live_versions[f"orders/{paid}"])
    )
    assert (
        Change.objects.filter(topic=f"orders/{paid}").count()
        == (live_versions[f"orders/{paid}"])
    )
    # Live publishing goes on from the new version.
    place_order(alice_client)
    alice = CustomerOrders.objects.get(customer_id="c-alice")
    assert alice.version == changed["customers/c-alice/orders"] + 1


def test_replay_twice_gives_the_same_rows(history):
    live = read_model_rows()
    projection = projection_named("orders")
    replay(projection)

    replay(projection)

    assert read_model_rows() == live


def test_replay_publishes_no_changes_and_moves_no_topic_version(history):
    before = outbox()

    replay(projection_named("orders"))

    assert outbox() == before


def test_replay_reports_progress_up_to_the_head_position(history):
    seen = []

    replay(
        projection_named("orders"),
        batch_size=5,
        progress=lambda position, head: seen.append((position, head)),
    )

    head = StoredEvent.objects.order_by("-position").first().position
    assert [position for position, _ in seen] == sorted({p for p, _ in seen})
    assert len(seen) == 3
    assert seen[-1] == (head, head)


def test_replay_of_an_empty_store_empties_the_read_model(db):
    OrderView.objects.create(
        order_id="ghost",
        customer_id="c-1",
        status="placed",
        total=Decimal("1"),
        created_at="2026-01-01T00:00:00Z",
        updated_at="2026-01-01T00:00:00Z",
        placed_position=1,
        last_position=1,
    )

    applied = replay(projection_named("orders"))

    assert applied == 0
    assert read_model_rows() == {"orders": [], "customers": []}


def test_replay_projections_command_rebuilds_every_projection(history):
    live = read_model_rows()
    OrderView.objects.filter(order_id=history[0]).update(status="cancelled")
    out = io.StringIO()

    call_command("replay_projections", "--no-progress", stdout=out)

    assert without_versions(read_model_rows()) == without_versions(live)
    last_line = out.getvalue().strip().splitlines()[-1]
    head = StoredEvent.objects.order_by("-position").first().position
    assert last_line.startswith(
        f"projection orders: 11 events replayed to position {head};"
    )
    # The hand edit touched the order's topic and its customer's list.
    assert last_line.endswith("; 2 topics differed and were reset")


def test_replay_projections_command_rebuilds_a_named_projection(history):
    live = read_model_rows()
    CustomerOrders.objects.all().delete()

    call_command(
        "replay_projections",
        "orders",
        "--batch-size",
        "2",
        "--no-progress",
        stdout=io.StringIO(),
    )

    assert without_versions(read_model_rows()) == without_versions(live)


def test_replay_projections_command_refuses_an_unknown_projection(history):
    live = read_model_rows()

    with pytest.raises(CommandError, match="no projection named 'nope'"):
        call_command("replay_projections", "nope", stdout=io.StringIO())

    assert read_model_rows() == live
