"""The admin shows events and checkpoints and lets nobody change them."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from readmodels.models import Checkpoint
from tests.conftest import place_order

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


def test_a_stopped_projection_shows_its_error_in_the_admin(admin_client):
    Checkpoint.objects.create(
        name="dashboard",
        position=41,
        state=Checkpoint.FAILED,
        failed_position=42,
        last_error="ValueError: cannot apply (stream s version 3, OrderPaid)",
    )

    listing = admin_client.get("/admin/readmodels/checkpoint/")
    detail = admin_client.get("/admin/readmodels/checkpoint/dashboard/change/")

    assert listing.status_code == 200
    assert b"failed" in listing.content
    assert b"ValueError: cannot apply" in detail.content


def test_events_are_listed_read_only_in_the_admin(admin_client, alice_client):
    order = place_order(alice_client)

    listing = admin_client.get("/admin/events/storedevent/", {"q": order["id"]})
    add = admin_client.get("/admin/events/storedevent/add/")

    assert listing.status_code == 200
    assert b"OrderPlaced" in listing.content
    assert add.status_code == 403
