"""Field case C12: ETags are topic versions.

GET gives ``ETag: "<version>"``; ``If-None-Match`` with it gives 304 and no
body; a command with ``If-Match`` of it succeeds and returns the new ETag;
the same command with the now-stale ETag gets 412 and appends nothing. The
ETag depends only on the version, equals the version pushed on the topic,
and is the same for GET and HEAD and for any encoding.
"""

from __future__ import annotations

import gzip
import json

import pytest
from rest_framework.test import APIRequestFactory, force_authenticate

from api.views import OrderDetailView
from events.models import StoredEvent
from readmodels.models import Change, OrderView
from tests.conftest import place_order

pytestmark = pytest.mark.django_db

PAY = {"amount": "12.30"}


def order_url(order_id: str, suffix: str = "") -> str:
    return f"/api/v1/orders/{order_id}{suffix}"


def last_pushed(topic: str) -> Change:
    return Change.objects.filter(topic=topic).order_by("-version").first()


def json_body(response) -> dict:
    content = response.content
    if response.get("Content-Encoding") == "gzip":
        content = gzip.decompress(content)
    return json.loads(content)


@pytest.fixture
def order(alice_client) -> dict:
    return place_order(alice_client)


def test_c12_get_answers_the_version_as_a_strong_etag(alice_client, order):
    response = alice_client.get(order_url(order["id"]))

    assert response.status_code == 200
    assert response["ETag"] == '"1"'
    assert response.json()["version"] == 1


def test_c12_get_with_the_current_etag_answers_304_without_a_body(alice, order):
    # Through the view itself: the test client would strip a 304's body.
    request = APIRequestFactory().get(
        order_url(order["id"]), headers={"If-None-Match": '"1"'}
    )
    force_authenticate(request, user=alice[0])

    response = OrderDetailView.as_view()(request, order_id=order["id"])

    assert response.status_code == 304
    assert response.content == b""
    assert response["ETag"] == '"1"'


@pytest.mark.parametrize("if_none_match", ['W/"1"', '"7", "1"', "*"])
def test_c12_weak_listed_and_star_etags_also_answer_304(
    alice_client, order, if_none_match
):
    response = alice_client.get(
        order_url(order["id"]), headers={"If-None-Match": if_none_match}
    )

    assert response.status_code == 304


def test_c12_get_with_an_old_etag_answers_200_with_the_new_one(alice_client, order):
    old = alice_client.get(order_url(order["id"]))["ETag"]
    alice_client.post(order_url(order["id"], "/pay"), PAY, format="json")

    response = alice_client.get(order_url(order["id"]), headers={"If-None-Match": old})

    assert response.status_code == 200
    assert response["ETag"] == '"2"'
    assert response.json()["status"] == "paid"


def test_c12_a_command_with_the_current_etag_succeeds_and_returns_the_new_etag(
    alice_client, order
):
    etag = alice_client.get(order_url(order["id"]))["ETag"]

    response = alice_client.post(
        order_url(order["id"], "/pay"), PAY, format="json", headers={"If-Match": etag}
    )

    assert response.status_code == 200
    assert response["ETag"] == '"2"'
    assert response.json()["version"] == 2
    assert alice_client.get(order_url(order["id"]))["ETag"] == '"2"'


def test_c12_the_same_command_with_the_stale_etag_answers_412_and_appends_nothing(
    alice_client, order
):
    etag = alice_client.get(order_url(order["id"]))["ETag"]
    item = {"sku": "cake", "quantity": 1, "unit_price": "1.00"}
    path = order_url(order["id"], "/items")
    alice_client.post(path, item, format="json", headers={"If-Match": etag})
    changes_before = Change.objects.count()

    response = alice_client.post(path, item, format="json", headers={"If-Match": etag})

    assert response.status_code == 412
    error = response.json()["error"]
    assert error["code"] == "version_conflict"
    assert error["details"] == {
        "stream_id": order["id"],
        "expected_version": 1,
        "current_version": 2,
    }
    assert response["ETag"] == '"2"'
    assert StoredEvent.objects.filter(stream_id=order["id"]).count() == 2
    assert OrderView.objects.get(order_id=order["id"]).version == 2
    assert Change.objects.count() == changes_before


def test_c12_a_stale_etag_is_refused_before_the_rules_are_checked(alice_client, order):
    path = order_url(order["id"], "/pay")
    alice_client.post(path, PAY, format="json", headers={"If-Match": '"1"'})

    response = alice_client.post(path, PAY, format="json", headers={"If-Match": '"1"'})

    assert response.status_code == 412
    assert StoredEvent.objects.filter(stream_id=order["id"]).count() == 2


def test_c12_if_match_star_makes_the_command_unconditional(alice_client, order):
    response = alice_client.post(
        order_url(order["id"], "/pay"), PAY, format="json", headers={"If-Match": "*"}
    )

    assert response.status_code == 200


def test_c12_head_has_the_same_etag_as_get(alice_client, order):
    alice_client.post(order_url(order["id"], "/pay"), PAY, format="json")
    get = alice_client.get(order_url(order["id"]))

    head = alice_client.head(order_url(order["id"]))

    assert head.status_code == 200
    assert head["ETag"] == get["ETag"] == '"2"'


def test_c12_head_with_the_current_etag_answers_304(alice_client, order):
    response = alice_client.head(
        order_url(order["id"]), headers={"If-None-Match": '"1"'}
    )

    assert response.status_code == 304
    assert response["ETag"] == '"1"'


def test_c12_the_etag_is_the_same_with_and_without_gzip(alice_client, order):
    plain = alice_client.get(order_url(order["id"]))

    zipped = alice_client.get(
        order_url(order["id"]), headers={"Accept-Encoding": "gzip"}
    )
    not_modified = alice_client.get(
        order_url(order["id"]),
        headers={"Accept-Encoding": "gzip", "If-None-Match": plain["ETag"]},
    )

    assert zipped.status_code == 200
    assert zipped["ETag"] == plain["ETag"] == '"1"'
    assert json_body(zipped) == json_body(plain)
    assert not_modified.status_code == 304


def test_c12_the_etag_depends_only_on_the_version_not_on_who_reads(
    alice_client, staff_client, order
):
    as_owner = alice_client.get(order_url(order["id"]))

    as_staff = staff_client.get(order_url(order["id"]))
    again = alice_client.get(order_url(order["id"]))

    assert as_owner["ETag"] == as_staff["ETag"] == again["ETag"] == '"1"'
    assert as_owner.json() == as_staff.json()


def test_c12_the_etag_equals_the_version_pushed_on_the_order_topic(alice_client, order):
    topic = f"orders/{order['id']}"
    alice_client.post(order_url(order["id"], "/pay"), PAY, format="json")

    response = alice_client.get(order_url(order["id"]))

    pushed = last_pushed(topic)
    message = json.loads(pushed.message)
    assert response["ETag"] == f'"{pushed.version}"'
    assert message["version"] == pushed.version == response.json()["version"]
    assert message["data"] == response.json()


def test_c12_every_command_answers_the_etag_of_the_change_it_pushed(
    alice_client, order
):
    topic = f"orders/{order['id']}"
    commands = [
        ("/items", {"sku": "cake", "quantity": 1, "unit_price": "1.00"}),
        ("/pay", {"amount": "13.30"}),
        ("/ship", None),
    ]

    etags = []
    for suffix, body in commands:
        response = alice_client.post(
            order_url(order["id"], suffix), body, format="json"
        )
        assert response.status_code == 200, response.content
        etags.append(response["ETag"])

    pushed = Change.objects.filter(topic=topic).order_by("version")
    assert etags == [f'"{change.version}"' for change in pushed][1:]
    assert etags == ['"2"', '"3"', '"4"']


def test_c12_the_customer_orders_etag_equals_the_version_pushed_on_its_topic(
    alice_client, order
):
    place_order(alice_client)
    url = "/api/v1/customers/c-alice/orders"

    response = alice_client.get(url)
    not_modified = alice_client.get(url, headers={"If-None-Match": response["ETag"]})

    pushed = last_pushed("customers/c-alice/orders")
    assert response["ETag"] == f'"{pushed.version}"' == '"2"'
    assert response.json()["version"] == 2
    assert not_modified.status_code == 304
