"""Field case C03: rebuilding a projection twice, with a hand edit between,
while readers keep reading."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from events.store import head_position
from readmodels.models import Checkpoint, Dashboard, DashboardOrder, OrderView
from readmodels.projector import projection_named, replay
from readmodels.worker import ProjectionWorker
from tests.readmodels.test_replay import (  # noqa: F401
    history,
    read_model_rows,
    run,
    without_versions,
)

pytestmark = pytest.mark.django_db(transaction=True)


def dashboard_rows() -> list[list[dict]]:
    return [
        list(Dashboard.objects.values()),
        list(DashboardOrder.objects.order_by("order_id").values()),
    ]


def versions(rows: dict[str, list[dict]]) -> dict[str, int]:
    found = {row["order_id"]: row["version"] for row in rows["orders"]}
    found.update({row["customer_id"]: row["version"] for row in rows["customers"]})
    return found


def test_c03_rebuilds_equal_live_rows_and_readers_never_see_a_half_built_table(
    history,  # noqa: F811
    alice_client,
    staff_client,
):
    run(alice_client, "post", f"/api/v1/orders/{history[2]}/pay", {"amount": "15.60"})
    while ProjectionWorker().step():
        pass
    live, live_dashboard = read_model_rows(), dashboard_rows()
    orders = projection_named("orders")

    replay(orders)
    after_first = read_model_rows()
    OrderView.objects.filter(order_id=history[0]).update(status="edited by hand")
    halfway = threading.Event()
    resume = threading.Event()
    seen_during_rebuild = []

    def pause_halfway(position: int, head: int) -> None:
        halfway.set()
        resume.wait(10)

    def rebuild() -> None:
        try:
            replay(orders, batch_size=5, progress=pause_halfway)
        finally:
            connection.close()

    rebuilding = threading.Thread(target=rebuild)
    rebuilding.start()
    halfway.wait(10)
    for order_id in history:
        response = staff_client.get(f"/api/v1/orders/{order_id}")
        seen_during_rebuild.append((response.status_code, response.json()["status"]))
    resume.set()
    rebuilding.join(20)
    dashboard = projection_named("dashboard")
    replay(dashboard)

    assert after_first == live
    # Row for row the same, but for the versions of the topics the hand
    # edit touched: one above, so that watchers who saw it start over.
    rebuilt = read_model_rows()
    assert without_versions(rebuilt) == without_versions(live)
    assert versions(rebuilt) == {
        **versions(live),
        history[0]: versions(live)[history[0]] + 1,
        "c-alice": versions(live)["c-alice"] + 1,
    }
    assert OrderView.objects.get(order_id=history[0]).status == "shipped"
    # Readers saw the old rows, hand edit and all, never an empty table.
    assert seen_during_rebuild == [
        (200, "edited by hand"),
        (200, "paid"),
        (200, "paid"),
        (200, "cancelled"),
    ]
    assert dashboard_rows() == live_dashboard
    assert Checkpoint.objects.get(name="dashboard").position == head_position()
