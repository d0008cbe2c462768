"""Rebuilding into new tables while commands go on, then switching over."""

from __future__ import annotations

import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from events.store import head_position
from readmodels import rebuild as rebuild_module
from readmodels.models import Checkpoint, CustomerOrders, Dashboard, OrderView
from readmodels.projector import projection_named, replay
from readmodels.rebuild import RebuildFailed, ShadowTable, rebuild
from readmodels.worker import ProjectionWorker
from tests.conftest import place_order
from tests.readmodels.test_replay import history, read_model_rows, run  # noqa: F401

CAKE = {"sku": "cake", "quantity": 3, "unit_price": "1.10"}


def table_names() -> set[str]:
    with connection.cursor() as cursor:
        return set(connection.introspection.table_names(cursor))


def keys_and_indexes(model: type) -> dict[str, dict]:
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, model._meta.db_table)
    return {
        name: {k: v for k, v in details.items() if k != "definition"}
        for name, details in found.items()
    }


@pytest.mark.django_db(transaction=True)
def test_commands_go_on_during_a_rebuild_and_the_switch_takes_them_in(
    history,  # noqa: F811
    alice_client,
):
    halfway = threading.Event()
    resume = threading.Event()
    failures = []

    def pause_once(position: int, head: int) -> None:
        if not halfway.is_set():
            halfway.set()
            resume.wait(10)

    def rebuild() -> None:
        try:
            replay(projection_named("orders"), batch_size=3, progress=pause_once)
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(exc)
        finally:
            connection.close()

    rebuilding = threading.Thread(target=rebuild)
    rebuilding.start()
    assert halfway.wait(10)
    # The rebuild is under way: commands still append and project.
    placed = place_order(alice_client)["id"]
    run(alice_client, "post", f"/api/v1/orders/{placed}/items", CAKE)
    live = read_model_rows()
    resume.set()
    rebuilding.join(20)

    assert failures == []
    assert read_model_rows() == live
    assert OrderView.objects.get(order_id=placed).stream_version == 2


@pytest.mark.django_db
def test_a_rebuild_keeps_the_tables_keys_and_indexes_and_leaves_no_twin(
    history,  # noqa: F811
):
    before = {m: keys_and_indexes(m) for m in (OrderView, CustomerOrders)}
    tables = table_names()

    replay(projection_named("orders"))
    replay(projection_named("orders"))

    assert {m: keys_and_indexes(m) for m in before} == before
    assert table_names() == tables


@pytest.mark.django_db
def test_a_rebuild_that_fails_leaves_the_live_tables_as_they_were(
    history,  # noqa: F811
    monkeypatch,
):
    live = read_model_rows()
    tables = table_names()
    projection = projection_named("orders")
    real_builder = projection.builder

    def failing_builder():
        fold = real_builder()

        def apply_batch(events):
            raise RuntimeError("projector bug")

        fold.apply_batch = apply_batch
        return fold

    monkeypatch.setattr(projection, "builder", failing_builder)

    with pytest.raises(RebuildFailed, match="RuntimeError: projector bug"):
        replay(projection)
    # An operator gets the positions and the error, not a traceback.
    with pytest.raises(CommandError, match=r"orders could not apply the events at"):
        call_command("replay_projections", "orders", "--no-progress")

    assert read_model_rows() == live
    assert table_names() == tables


@pytest.mark.django_db
def test_rebuilding_an_async_projection_moves_its_checkpoint_and_keeps_skips(
    history,  # noqa: F811
    alice_client,
):
    while ProjectionWorker().step():
        pass
    live = list(Dashboard.objects.values())
    # As if the last event had stopped the projection and been skipped.
    checkpoint = Checkpoint.objects.get(name="dashboard")
    checkpoint.state = Checkpoint.FAILED
    checkpoint.failed_position = head_position()
    checkpoint.position = head_position() - 1
    checkpoint.save()
    call_command("skip_event", "dashboard", "--position", str(head_position()))
    last = OrderView.objects.get(order_id=history[3])

    replay(projection_named("dashboard"))

    rebuilt = Dashboard.objects.get()
    # The cancel of the last order was skipped: it still counts as placed.
    before = live[0]["by_status"]
    assert rebuilt.by_status.get("cancelled", 0) == before["cancelled"] - 1
    assert rebuilt.by_status["placed"] == before["placed"] + 1
    assert last.status == "cancelled"
    assert Checkpoint.objects.get(name="dashboard").position == head_position()
    skipped = Checkpoint.objects.get(name="dashboard").skipped_positions
    assert [skip["position"] for skip in skipped] == [head_position()]


@pytest.mark.django_db
def test_a_second_rebuild_after_a_reset_keeps_versions_and_resets_nothing(
    history,  # noqa: F811
):
    OrderView.objects.filter(order_id=history[0]).update(status="edited by hand")
    orders = projection_named("orders")
    replay(orders)
    after_first = read_model_rows()

    result = rebuild(orders)

    assert result.reset_topics == {}
    assert read_model_rows() == after_first


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("whole_table", [False, True], ids=["by-key", "whole-table"])
def test_rows_that_change_after_the_comparison_are_compared_again_at_the_switch(
    history,  # noqa: F811
    alice_client,
    monkeypatch,
    whole_table,
):
    """The switch compares the rows found different before and the rows
    written since, by key; or, past ``WHOLE_TABLE_ABOVE`` of them (as when
    the live tables start empty), the whole tables."""
    if whole_table:
        monkeypatch.setattr(rebuild_module, "WHOLE_TABLE_ABOVE", 0)
    shipped, paid, open_order, _ = history
    OrderView.objects.filter(order_id=shipped).update(status="edited by hand")
    compare = ShadowTable.start_comparing
    commands_done = []

    def compare_then_command(self) -> None:
        compare(self)
        if not commands_done:
            # Lands between the comparison and the switch.
            run(alice_client, "post", f"/api/v1/orders/{open_order}/items", CAKE)
            OrderView.objects.filter(order_id=paid).update(status="edited late")
            commands_done.append(True)

    monkeypatch.setattr(ShadowTable, "start_comparing", compare_then_command)

    result = rebuild(projection_named("orders"))

    # The early hand edit is reset; the command's row is rebuilt with it,
    # at the version live publishing gave it.
    expected = {f"orders/{shipped}", "customers/c-alice/orders"}
    if whole_table:
        # Comparing the whole tables also finds the late hand edit.
        expected.add(f"orders/{paid}")
    assert set(result.reset_topics) == expected
    row = OrderView.objects.get(order_id=open_order)
    assert row.stream_version == 3
    assert row.version == 3
    # By key, a hand edit after the comparison on a row no event touched
    # is a stated limit: the rebuilt row replaces it without a reset.
    assert OrderView.objects.get(order_id=paid).status == "paid"
