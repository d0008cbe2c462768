"""Fixtures shared by every test: users with tokens, API clients, orders,
and a fresh channel layer per test."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from channels.layers import channel_layers
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.models import CustomerAccount
from streams import relay


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """The test database, which can be dropped at the end.

    An async test runs database calls in its event loop's executor
    threads; when the loop ends, a connection such a thread opened may
    stay open until it is garbage collected, and PostgreSQL refuses to drop
    a database that has sessions. They are closed here first.
    """
    yield
    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid()"
                )
        connection.close()


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """Each test gets its own layer (and event loop), and no relay left
    over from another test's loop."""
    channel_layers.backends.clear()
    relay._relay = None
    yield
    channel_layers.backends.clear()
    relay._relay = None


@pytest.fixture
def make_user(db) -> Callable[..., tuple[Any, str]]:
    """``make_user(name, customer=..., staff=...)`` -> (user, token key)."""

    def make(
        username: str, customer: str | None = None, staff: bool = False
    ) -> tuple[Any, str]:
        user = get_user_model().objects.create(username=username, is_staff=staff)
        if customer:
            CustomerAccount.objects.create(user=user, customer_id=customer)
        token = Token.objects.create(user=user)
        return user, token.key

    return make


def client_for(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.fixture
def alice(make_user) -> tuple[Any, str]:
    """A customer user acting for customer ``c-alice``."""
    return make_user("alice", customer="c-alice")


@pytest.fixture
def bob(make_user) -> tuple[Any, str]:
    return make_user("bob", customer="c-bob")


@pytest.fixture
def staff(make_user) -> tuple[Any, str]:
    return make_user("staff", staff=True)


@pytest.fixture
def alice_client(alice) -> APIClient:
    return client_for(alice[1])


@pytest.fixture
def bob_client(bob) -> APIClient:
    return client_for(bob[1])


@pytest.fixture
def staff_client(staff) -> APIClient:
    return client_for(staff[1])


ONE_ITEM = {"items": [{"sku": "tea", "quantity": 2, "unit_price": "6.15"}]}


def session_cookie(user: Any) -> str:
    """A ``Cookie`` header value signing ``user`` in by session."""
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def place_order(client: APIClient, body: dict | None = None, **headers: str) -> dict:
    """Place an order and return its representation; fails the test on
    anything but 201."""
    response = client.post(
        "/api/v1/orders/", body or ONE_ITEM, format="json", **headers
    )
    assert response.status_code == 201, response.content
    return response.json()


def pytest_configure(config) -> None:
    # Threads that run database_sync_to_async keep their own connections;
    # closing them after each use lets the test database be dropped.
    from django.conf import settings

    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
    # Tests run the projection worker themselves, when they need it.
    settings.READMODELS = {**settings.READMODELS, "WORKER_IN_SERVER": False}
