"""The order domain's pure ``decide_*`` functions: no database."""

from __future__ import annotations

from decimal import Decimal

import pytest

from events.errors import RuleViolation
from events.orders import (
    MAX_TOTAL,
    Order,
    decide_add_item,
    decide_cancel,
    decide_pay,
    decide_place,
    decide_remove_item,
    decide_ship,
    money,
)
from events.records import NewEvent

TEA = ("tea", 2, Decimal("6.15"))


def applied(order: Order, events: list[NewEvent]) -> Order:
    """``order`` moved past ``events``, as the store would number them."""
    for event in events:
        order.apply(event.type, event.data)
        order.version += 1
    return order


def placed(*items: tuple[str, int, Decimal]) -> Order:
    order = Order("o-1")
    return applied(order, decide_place(order, "c-1", list(items or [TEA])))


def paid() -> Order:
    order = placed()
    return applied(order, decide_pay(order, Decimal("12.30")))


def shipped() -> Order:
    order = paid()
    return applied(order, decide_ship(order))


def cancelled() -> Order:
    order = placed()
    return applied(order, decide_cancel(order, "changed my mind"))


def rule_broken_by(decide, *args) -> str:
    with pytest.raises(RuleViolation) as raised:
        decide(*args)
    return raised.value.rule


# Placing.


def test_place_decides_one_order_placed_event_with_two_place_prices():
    order = Order("o-1")

    events = decide_place(
        order, "c-1", [("tea", 2, Decimal("6.1")), ("cake", 1, Decimal("3"))]
    )

    assert events == [
        NewEvent(
            "OrderPlaced",
            {
                "order_id": "o-1",
                "customer_id": "c-1",
                "items": [
                    {"sku": "tea", "quantity": 2, "unit_price": "6.10"},
                    {"sku": "cake", "quantity": 1, "unit_price": "3.00"},
                ],
            },
        )
    ]


def test_placed_order_folds_to_status_items_total_and_version_one():
    order = placed(("tea", 2, Decimal("6.15")), ("cake", 1, Decimal("0.99")))

    assert (order.status, order.customer_id, order.version) == ("placed", "c-1", 1)
    assert sorted(order.items) == ["cake", "tea"]
    assert order.total == Decimal("13.29")


def test_place_accepts_a_free_item():
    events = decide_place(Order("o-1"), "c-1", [("gift", 1, Decimal("0"))])

    assert events[0].data["items"][0]["unit_price"] == "0.00"


def test_place_stores_a_price_of_minus_zero_as_zero():
    events = decide_place(Order("o-1"), "c-1", [("gift", 1, Decimal("-0.00"))])

    assert events[0].data["items"][0]["unit_price"] == "0.00"


def test_place_accepts_trailing_zeros_beyond_two_places_as_the_same_price():
    events = decide_place(Order("o-1"), "c-1", [("tea", 1, Decimal("6.150"))])

    assert events[0].data["items"][0]["unit_price"] == "6.15"


def test_place_without_items_is_refused():
    rule = rule_broken_by(decide_place, Order("o-1"), "c-1", [])

    assert rule == "order_empty"


@pytest.mark.parametrize("quantity", [0, -1])
def test_place_with_a_non_positive_quantity_is_refused(quantity):
    items = [("tea", quantity, Decimal("6.15"))]

    rule = rule_broken_by(decide_place, Order("o-1"), "c-1", items)

    assert rule == "quantity_not_positive"


def test_place_with_a_negative_price_is_refused():
    items = [("tea", 1, Decimal("-0.01"))]

    rule = rule_broken_by(decide_place, Order("o-1"), "c-1", items)

    assert rule == "price_negative"


@pytest.mark.parametrize("price", ["6.155", "0.001", "1.0000001"])
def test_place_with_a_price_of_more_than_two_decimal_places_is_refused(price):
    items = [("tea", 1, Decimal(price))]

    rule = rule_broken_by(decide_place, Order("o-1"), "c-1", items)

    assert rule == "price_precision"


def test_place_with_a_repeated_sku_is_refused():
    items = [("tea", 1, Decimal("6.15")), ("tea", 2, Decimal("6.15"))]

    rule = rule_broken_by(decide_place, Order("o-1"), "c-1", items)

    assert rule == "sku_repeated"


def test_place_up_to_the_largest_total_is_accepted():
    items = [("gold", 1, MAX_TOTAL - 1), ("pin", 1, Decimal("1"))]

    events = decide_place(Order("o-1"), "c-1", items)

    assert events[0].type == "OrderPlaced"


def test_place_with_a_total_beyond_the_largest_amount_is_refused():
    items = [("gold", 1_000_000, Decimal("9999999.99")), ("pin", 1, Decimal("1"))]

    rule = rule_broken_by(decide_place, Order("o-1"), "c-1", items)

    assert rule == "total_too_large"


def test_place_with_an_empty_sku_is_refused():
    rule = rule_broken_by(decide_place, Order("o-1"), "c-1", [("", 1, Decimal("1"))])

    assert rule == "sku_required"


def test_place_without_a_customer_is_refused():
    rule = rule_broken_by(decide_place, Order("o-1"), "", [TEA])

    assert rule == "customer_required"


def test_placing_an_existing_order_again_is_refused():
    rule = rule_broken_by(decide_place, placed(), "c-1", [TEA])

    assert rule == "order_exists"


# Adding and removing items.


def test_add_item_to_a_placed_order_decides_item_added():
    events = decide_add_item(placed(), "cake", 3, Decimal("2.5"))

    assert events == [
        NewEvent("ItemAdded", {"sku": "cake", "quantity": 3, "unit_price": "2.50"})
    ]


def test_adding_more_of_an_item_at_its_price_raises_its_quantity():
    order = placed()

    applied(order, decide_add_item(order, "tea", 3, Decimal("6.15")))

    assert order.items["tea"].quantity == 5
    assert order.total == Decimal("30.75")


def test_adding_an_item_at_another_price_than_in_the_order_is_refused():
    rule = rule_broken_by(decide_add_item, placed(), "tea", 1, Decimal("6.16"))

    assert rule == "price_mismatch"


def test_an_item_removed_can_be_added_again_at_a_new_price():
    order = placed(TEA, ("cake", 1, Decimal("1")))
    applied(order, decide_remove_item(order, "tea"))

    events = decide_add_item(order, "tea", 1, Decimal("7.00"))

    assert events[0].data["unit_price"] == "7.00"


def test_adding_an_item_that_takes_the_total_beyond_the_largest_is_refused():
    order = placed(("gold", 1, MAX_TOTAL - Decimal("0.01")))

    rule = rule_broken_by(decide_add_item, order, "pin", 2, Decimal("0.01"))

    assert rule == "total_too_large"


@pytest.mark.parametrize("quantity", [0, -3])
def test_add_item_with_a_non_positive_quantity_is_refused(quantity):
    rule = rule_broken_by(decide_add_item, placed(), "cake", quantity, Decimal("1"))

    assert rule == "quantity_not_positive"


def test_add_item_with_a_negative_price_is_refused():
    rule = rule_broken_by(decide_add_item, placed(), "cake", 1, Decimal("-1"))

    assert rule == "price_negative"


def test_add_item_with_more_than_two_decimal_places_is_refused():
    rule = rule_broken_by(decide_add_item, placed(), "cake", 1, Decimal("1.005"))

    assert rule == "price_precision"


@pytest.mark.parametrize(
    ("state", "expected_rule"),
    [
        (paid, "order_paid"),
        (shipped, "order_shipped"),
        (cancelled, "order_cancelled"),
    ],
)
def test_items_cannot_be_added_once_the_order_is_not_open(state, expected_rule):
    rule = rule_broken_by(decide_add_item, state(), "cake", 1, Decimal("1"))

    assert rule == expected_rule


def test_remove_item_decides_item_removed_and_lowers_the_total():
    order = placed(TEA, ("cake", 1, Decimal("1.00")))

    events = decide_remove_item(order, "tea")
    applied(order, events)

    assert events == [NewEvent("ItemRemoved", {"sku": "tea"})]
    assert (list(order.items), order.total) == (["cake"], Decimal("1.00"))


def test_removing_an_item_not_in_the_order_is_refused():
    rule = rule_broken_by(decide_remove_item, placed(), "cake")

    assert rule == "item_not_in_order"


@pytest.mark.parametrize(
    ("state", "expected_rule"),
    [
        (paid, "order_paid"),
        (shipped, "order_shipped"),
        (cancelled, "order_cancelled"),
    ],
)
def test_items_cannot_be_removed_once_the_order_is_not_open(state, expected_rule):
    rule = rule_broken_by(decide_remove_item, state(), "tea")

    assert rule == expected_rule


# Paying.


def test_paying_the_exact_total_decides_order_paid():
    events = decide_pay(placed(), Decimal("12.30"))

    assert events == [
        NewEvent("OrderPaid", {"amount": "12.30", "method": "card"}, schema_version=2)
    ]


def test_paying_by_an_unknown_method_breaks_a_rule():
    rule = rule_broken_by(decide_pay, placed(), Decimal("12.30"), "barter")

    assert rule == "payment_method_unknown"


def test_paying_the_total_written_with_fewer_places_is_the_exact_total():
    events = decide_pay(placed(), Decimal("12.3"))

    assert events[0].data["amount"] == "12.30"


@pytest.mark.parametrize("amount", ["12.29", "12.31", "0", "24.60"])
def test_paying_another_amount_than_the_total_is_refused(amount):
    rule = rule_broken_by(decide_pay, placed(), Decimal(amount))

    assert rule == "amount_mismatch"


def test_paying_twice_is_refused():
    rule = rule_broken_by(decide_pay, paid(), Decimal("12.30"))

    assert rule == "order_not_payable"


@pytest.mark.parametrize("state", [shipped, cancelled])
def test_a_shipped_or_cancelled_order_cannot_be_paid(state):
    rule = rule_broken_by(decide_pay, state(), Decimal("12.30"))

    assert rule == "order_not_payable"


def test_an_order_whose_items_were_all_removed_cannot_be_paid():
    order = placed()
    applied(order, decide_remove_item(order, "tea"))

    rule = rule_broken_by(decide_pay, order, Decimal("0"))

    assert rule == "order_empty"


# Shipping and cancelling.


def test_shipping_a_paid_order_decides_order_shipped():
    events = decide_ship(paid())

    assert events == [NewEvent("OrderShipped", {})]


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (placed, "order_not_paid"),
        (shipped, "order_shipped"),
        (cancelled, "order_cancelled"),
    ],
)
def test_only_a_paid_order_ships_and_the_rule_says_why(state, expected):
    rule = rule_broken_by(decide_ship, state())

    assert rule == expected


@pytest.mark.parametrize("state", [placed, paid])
def test_an_order_not_shipped_can_be_cancelled_with_a_reason(state):
    order = state()

    events = decide_cancel(order, "too slow")
    applied(order, events)

    assert events == [NewEvent("OrderCancelled", {"reason": "too slow"})]
    assert (order.status, order.cancel_reason) == ("cancelled", "too slow")


def test_a_shipped_order_cannot_be_cancelled():
    rule = rule_broken_by(decide_cancel, shipped(), "too late")

    assert rule == "order_shipped"


def test_an_order_cannot_be_cancelled_twice():
    rule = rule_broken_by(decide_cancel, cancelled(), "again")

    assert rule == "order_cancelled"


# Orders that do not exist, and the fold itself.


@pytest.mark.parametrize(
    ("decide", "args"),
    [
        (decide_add_item, ("tea", 1, Decimal("1"))),
        (decide_remove_item, ("tea",)),
        (decide_pay, (Decimal("0"),)),
        (decide_ship, ()),
        (decide_cancel, ("",)),
    ],
)
def test_commands_on_an_order_that_was_never_placed_are_refused(decide, args):
    rule = rule_broken_by(decide, Order("o-404"), *args)

    assert rule == "order_not_found"


def test_the_fold_ignores_event_types_it_does_not_know():
    order = placed()

    order.apply("OrderGiftWrapped", {"paper": "gold"})

    assert (order.status, order.total) == ("placed", Decimal("12.30"))


def test_decide_functions_do_not_change_the_order_they_are_given():
    order = placed()

    decide_add_item(order, "cake", 1, Decimal("1"))
    decide_pay(order, Decimal("12.30"))

    assert (order.status, sorted(order.items), order.version) == (
        "placed",
        ["tea"],
        1,
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12.3", "12.30"),
        ("0", "0.00"),
        (Decimal("6.150"), "6.15"),
        (Decimal("-0"), "0.00"),
        ("-0.00", "0.00"),
    ],
)
def test_money_is_a_string_with_two_decimal_places(value, expected):
    assert money(value) == expected
