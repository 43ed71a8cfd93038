"""POST /v1/returns, POST /v1/returns/preview, GET /v1/returns and GET /v1/returns/{id}:
the return object, every eligibility rule with its code and item path, the money of a
preview, list filters and pagination, and who may call what (API.md 4, 4.2, 11)."""

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import DatabaseFixture, TenantFixture, make_tenant
from tests.factories import return_event, unique
from tests.returns.helpers import (
    HISTORY_KEYS,
    ITEM_KEYS,
    RETURN_KEYS,
    Api,
    all_outbox,
    error_codes,
    line,
    person,
    wanted,
)


@pytest.fixture
def api(client: TestClient, tenant: TenantFixture) -> Api:
    return Api(client, tenant)


def assert_nothing_written(api: Api, database: DatabaseFixture, *orders: dict[str, Any]) -> None:
    """No return, no outbox message about a return, no claimed unit."""
    assert api.list() == []
    assert not [m for m in all_outbox(database, api.tenant.id) if m.type.startswith("return.")]
    for order in orders:
        for quantity, claimed, returned, returnable in api.lines(order).values():
            assert (claimed, returned, returnable) == (0, 0, quantity)


# --- creating a return --------------------------------------------------------------------


def test_create_answers_201_with_the_return_object(api: Api, client: TestClient) -> None:
    customer = person()
    order = api.buy(
        line("1", product_id="SKU-A", variant_id="SKU-A-M", quantity=2, unit_price=1799),
        customer=customer,
    )
    response = api.post(
        "/v1/returns",
        {
            "customer": {"id": customer["id"]},
            "items": [
                wanted(
                    order, quantity=2, reason="defective", note="seam split", resolution="refund"
                )
            ],
            "external_id": "zendesk-5512",
            "metadata": {"ticket": "5512"},
        },
    )
    assert response.status_code == 201, response.text
    assert response.headers["etag"] == '"1"'
    ret = response.json()
    assert set(ret) >= RETURN_KEYS, RETURN_KEYS - set(ret)
    assert ret["id"].startswith("ret_")
    assert ret["number"] == "R-000001"
    assert ret["status"] == "requested"
    assert ret["source"] == "api"
    assert ret["channel"] == "online"
    assert ret["customer"] == {"id": customer["id"], "email": customer["email"]}
    assert ret["currency"] == "EUR"
    assert ret["external_id"] == "zendesk-5512"
    assert ret["metadata"] == {"ticket": "5512"}
    assert ret["refund"] is None
    assert ret["fees"] == {"restocking": 0, "shipping": 0}
    assert ret["attachments"] == []
    assert ret["closed_at"] is None
    assert ret["version"] == 1
    assert ret["created_at"].endswith("Z")
    [returned] = ret["items"]
    assert set(returned) == ITEM_KEYS
    assert returned == {
        "order_id": order["order_id"],
        "line_id": "1",
        "product_id": "SKU-A",
        "variant_id": "SKU-A-M",
        "quantity": 2,
        "received_quantity": 0,
        "reason": "defective",
        "note": "seam split",
        "resolution": "refund",
        "unit_price": 1799,
        "outcome": None,
        "disposition": None,
    }
    [entry] = ret["history"]
    assert set(entry) == HISTORY_KEYS
    assert entry["from"] is None
    assert entry["to"] == "requested"
    assert entry["actor"]  # who did it
    # The same object is served by id and by number.
    assert api.read(ret["id"]) == ret
    assert api.read("R-000001") == ret


def test_numbers_count_per_tenant(
    api: Api, client: TestClient, other_tenant: TenantFixture
) -> None:
    other = Api(client, other_tenant)
    for n in (1, 2, 3):
        order = api.buy()
        assert api.open(wanted(order))["number"] == f"R-{n:06d}"
    order = other.buy()
    assert other.open(wanted(order))["number"] == "R-000001"
    assert api.read("R-000002")["number"] == "R-000002"


def test_one_return_takes_items_from_two_orders_of_one_customer(api: Api) -> None:
    customer = person()
    first = api.buy(line("1", quantity=2, unit_price=1000), customer=customer)
    second = api.buy(line("1", quantity=1, unit_price=2500), line("2"), customer=customer)
    ret = api.open(wanted(first, quantity=2), wanted(second, line_id="2"))
    assert [(i["order_id"], i["line_id"], i["quantity"]) for i in ret["items"]] == [
        (first["order_id"], "1", 2),
        (second["order_id"], "2", 1),
    ]
    assert ret["customer"]["id"] == customer["id"]
    assert api.lines(first)["1"] == (2, 2, 0, 0)
    assert api.lines(second) == {"1": (1, 0, 0, 1), "2": (1, 1, 0, 0)}


def test_a_customer_named_by_email_alone_owns_its_orders(api: Api) -> None:
    customer = person()
    order = api.buy(customer=customer)
    ret = api.open(wanted(order), customer={"email": customer["email"].upper()})
    assert ret["customer"] == customer


def test_an_item_may_name_its_line_by_product_id_when_unambiguous(api: Api) -> None:
    order = api.buy(line("1", product_id="SKU-A"), line("2", product_id="SKU-B", unit_price=700))
    ret = api.open(wanted(order, line_id=None, product_id="SKU-B"))
    assert (ret["items"][0]["line_id"], ret["items"][0]["unit_price"]) == ("2", 700)
    assert api.lines(order)["2"][1] == 1


def test_a_product_on_two_lines_is_ambiguous(api: Api, database: DatabaseFixture) -> None:
    order = api.buy(line("1", product_id="SKU-A"), line("2", product_id="SKU-A"))
    response = api.post("/v1/returns", {"items": [wanted(order, line_id=None, product_id="SKU-A")]})
    assert error_codes(response) == {("items[0]", "ambiguous_line")}
    assert_nothing_written(api, database, order)


def test_line_id_and_product_id_must_agree(api: Api) -> None:
    order = api.buy(line("1", product_id="SKU-A"))
    response = api.post("/v1/returns", {"items": [wanted(order, product_id="SKU-OTHER")]})
    assert error_codes(response) == {("items[0]", "line_not_found")}


# --- eligibility: each code names its item ------------------------------------------------


def test_unknown_order(api: Api, database: DatabaseFixture) -> None:
    order = api.buy()
    response = api.post(
        "/v1/returns", {"items": [wanted(order), {**wanted(order), "order_id": unique("nope")}]}
    )
    assert error_codes(response) == {("items[1]", "order_not_found")}
    assert_nothing_written(api, database, order)


def test_staff_naming_another_customer_gets_order_not_owned(
    api: Api, database: DatabaseFixture
) -> None:
    order = api.buy()
    response = api.post(
        "/v1/returns", {"customer": {"id": unique("someone")}, "items": [wanted(order)]}
    )
    assert error_codes(response) == {("items[0]", "order_not_owned")}
    assert_nothing_written(api, database, order)


def test_orders_of_two_customers_cannot_share_a_return(api: Api, database: DatabaseFixture) -> None:
    mine, theirs = api.buy(), api.buy()
    response = api.post("/v1/returns", {"items": [wanted(mine), wanted(theirs)]})
    assert error_codes(response) == {("items[1]", "order_not_owned")}
    assert_nothing_written(api, database, mine, theirs)


def test_unknown_line(api: Api) -> None:
    order = api.buy(line("1", product_id="SKU-A"))
    response = api.post(
        "/v1/returns",
        {
            "items": [
                wanted(order, line_id="9"),
                wanted(order, line_id=None, product_id="SKU-NOT-BOUGHT"),
            ]
        },
    )
    assert error_codes(response) == {("items[0]", "line_not_found"), ("items[1]", "line_not_found")}


def test_more_than_bought(api: Api, database: DatabaseFixture) -> None:
    order = api.buy(line("1", quantity=2))
    response = api.post("/v1/returns", {"items": [wanted(order, quantity=3)]})
    assert error_codes(response) == {("items[0]", "quantity_exceeds_returnable")}
    assert_nothing_written(api, database, order)


def test_the_same_line_twice_in_one_return_adds_up(api: Api, database: DatabaseFixture) -> None:
    order = api.buy(line("1", quantity=2))
    response = api.post(
        "/v1/returns",
        {"items": [wanted(order, quantity=1), wanted(order, quantity=2, reason="color")]},
    )
    assert error_codes(response) == {("items[1]", "quantity_exceeds_returnable")}
    assert_nothing_written(api, database, order)
    # Within what was bought, it is fine.
    ret = api.open(wanted(order), wanted(order, reason="color"))
    assert [i["quantity"] for i in ret["items"]] == [1, 1]
    assert api.lines(order)["1"] == (2, 2, 0, 0)


def test_units_claimed_by_another_open_return_are_not_returnable(api: Api) -> None:
    order = api.buy(line("1", quantity=3))
    api.open(wanted(order, quantity=2))
    assert api.returnable(order) == 1
    response = api.post("/v1/returns", {"items": [wanted(order, quantity=2)]})
    assert error_codes(response) == {("items[0]", "quantity_exceeds_returnable")}
    api.open(wanted(order, quantity=1))
    assert api.lines(order)["1"] == (3, 3, 0, 0)


def test_returns_recorded_from_events_count_against_returnable(api: Api) -> None:
    order = api.buy(line("1", product_id="SKU-A", quantity=3))
    api.record_return(order, {"product_id": "SKU-A", "quantity": 2, "reason": "color"})
    assert api.lines(order)["1"] == (3, 2, 2, 1)
    response = api.post("/v1/returns", {"items": [wanted(order, quantity=2)]})
    assert error_codes(response) == {("items[0]", "quantity_exceeds_returnable")}
    api.open(wanted(order, quantity=1))


def test_outside_the_policy_window(api: Api, database: DatabaseFixture) -> None:
    old = api.buy(days_ago=31)
    response = api.post("/v1/returns", {"items": [wanted(old)]})
    assert error_codes(response) == {("items[0]", "outside_return_window")}
    assert_nothing_written(api, database, old)
    api.set_policy(return_window_days=10)
    recent = api.buy(days_ago=11)
    response = api.post("/v1/returns", {"items": [wanted(recent)]})
    assert error_codes(response) == {("items[0]", "outside_return_window")}
    fresh = api.buy(days_ago=9)
    api.open(wanted(fresh))


def test_a_product_rule_extends_the_window(api: Api) -> None:
    api.set_policy(rules=[{"match": {"product_id": "SKU-LONG"}, "return_window_days": 60}])
    customer = person()
    order = api.buy(
        line("1", product_id="SKU-LONG"),
        line("2", product_id="SKU-SHORT"),
        customer=customer,
        days_ago=45,
    )
    response = api.post("/v1/returns", {"items": [wanted(order), wanted(order, line_id="2")]})
    assert error_codes(response) == {("items[1]", "outside_return_window")}
    ret = api.open(wanted(order))
    assert ret["items"][0]["product_id"] == "SKU-LONG"


def test_a_category_rule_makes_items_final_sale(api: Api, database: DatabaseFixture) -> None:
    api.set_policy(rules=[{"match": {"category_prefix": "Apparel/Underwear"}, "returnable": False}])
    order = api.buy(
        line("1", category="Apparel/Underwear"),
        line("2", category="Apparel/Underwear/Socks"),
        line("3", category="Apparel/UnderwearX"),  # not a subcategory
        line("4", category="Apparel/Tops"),
    )
    items = [wanted(order, line_id=str(n)) for n in (1, 2, 3, 4)]
    response = api.post("/v1/returns", {"items": items})
    assert error_codes(response) == {("items[0]", "final_sale"), ("items[1]", "final_sale")}
    assert_nothing_written(api, database, order)
    api.open(*items[2:])


def test_rules_apply_most_specific_first(api: Api) -> None:
    api.set_policy(
        rules=[
            {"match": {"category_prefix": "Apparel"}, "returnable": False},
            {"match": {"category_prefix": "Apparel/Tops"}, "returnable": True},
            {"match": {"product_id": "SKU-FINAL"}, "returnable": False},
            {"match": {"category_prefix": "Apparel/Tops/Silk"}, "returnable": False},
        ]
    )
    order = api.buy(
        line("1", product_id="SKU-SHIRT", category="Apparel/Tops"),  # longer prefix: returnable
        line("2", product_id="SKU-FINAL", category="Apparel/Tops"),  # product rule: final sale
        line("3", product_id="SKU-PANTS", category="Apparel/Bottoms"),  # Apparel: final sale
        line("4", product_id="SKU-SILK", category="Apparel/Tops/Silk"),  # longest: final
    )
    items = [wanted(order, line_id=str(n)) for n in (1, 2, 3, 4)]
    response = api.post("/v1/returns", {"items": items})
    assert error_codes(response) == {
        ("items[1]", "final_sale"),
        ("items[2]", "final_sale"),
        ("items[3]", "final_sale"),
    }
    api.open(items[0])


def test_a_product_rule_can_make_an_excluded_category_returnable(api: Api) -> None:
    api.set_policy(
        rules=[
            {"match": {"product_id": "SKU-OK"}, "returnable": True},
            {"match": {"category_prefix": "Sale"}, "returnable": False},
        ]
    )
    order = api.buy(line("1", product_id="SKU-OK", category="Sale/Shoes"))
    api.open(wanted(order))


def test_unknown_reason_and_other_without_note(api: Api, database: DatabaseFixture) -> None:
    order = api.buy(line("1", quantity=5))
    response = api.post(
        "/v1/returns",
        {
            "items": [
                wanted(order, reason="too_ugly"),
                wanted(order, reason="other"),
                wanted(order, reason="other", note="   "),
                wanted(order, reason="other", note="gift duplicate"),
            ]
        },
    )
    assert error_codes(response) == {
        ("items[0]", "unknown_reason"),
        ("items[1]", "note_required"),
        ("items[2]", "note_required"),
    }
    assert_nothing_written(api, database, order)
    ret = api.open(wanted(order, reason="other", note="gift duplicate"))
    assert (ret["items"][0]["reason"], ret["items"][0]["note"]) == ("other", "gift duplicate")


def test_a_custom_reason_of_the_policy_is_accepted(api: Api) -> None:
    api.set_policy(reasons=[{"code": "arrived_late", "label": "Arrived late"}])
    order = api.buy(line("1", quantity=2))
    api.open(wanted(order, reason="arrived_late"))
    response = api.post("/v1/returns", {"items": [wanted(order, reason="unwanted")]})
    assert error_codes(response) == {("items[0]", "unknown_reason")}


def test_orders_in_two_currencies_cannot_share_a_return(
    api: Api, database: DatabaseFixture
) -> None:
    customer = person()
    euros = api.buy(customer=customer, currency="EUR")
    dollars = api.buy(customer=customer, currency="USD")
    response = api.post("/v1/returns", {"items": [wanted(euros), wanted(dollars)]})
    assert error_codes(response) == {("items[1]", "currency_mismatch")}
    assert_nothing_written(api, database, euros, dollars)
    assert api.open(wanted(dollars))["currency"] == "USD"


def test_every_invalid_item_is_listed_at_once(api: Api, database: DatabaseFixture) -> None:
    order = api.buy(line("1", quantity=1), days_ago=2)
    response = api.post(
        "/v1/returns",
        {
            "items": [
                wanted(order),
                wanted(order, line_id="7"),
                wanted(order, reason="nope"),
                {**wanted(order), "order_id": unique("missing")},
            ]
        },
    )
    assert error_codes(response) == {
        ("items[1]", "line_not_found"),
        ("items[2]", "unknown_reason"),
        ("items[2]", "quantity_exceeds_returnable"),
        ("items[3]", "order_not_found"),
    }
    assert_nothing_written(api, database, order)


@pytest.mark.parametrize(
    ("patch", "path"),
    [
        ({"quantity": 0}, "items[0].quantity"),
        ({"quantity": -1}, "items[0].quantity"),
        ({"quantity": "1"}, "items[0].quantity"),
        ({"resolution": "voucher"}, "items[0].resolution"),
        ({"order_id": ""}, "items[0].order_id"),
        ({"reason": ""}, "items[0].reason"),
        ({"unexpected": 1}, "items[0].unexpected"),
    ],
)
def test_malformed_items_are_422_naming_the_field(
    api: Api, database: DatabaseFixture, patch: dict[str, Any], path: str
) -> None:
    order = api.buy()
    response = api.post("/v1/returns", {"items": [wanted(order) | patch]})
    assert response.status_code == 422, response.text
    assert path in {d["path"] for d in response.json()["error"]["details"]}, response.text
    assert_nothing_written(api, database, order)


def test_an_item_must_name_a_line_and_a_return_needs_items(api: Api) -> None:
    order = api.buy()
    bodies: list[dict[str, Any]] = [
        {"items": [{"order_id": order["order_id"], "quantity": 1, "reason": "unwanted"}]},
        {"items": []},
        {},
    ]
    for body in bodies:
        response = api.post("/v1/returns", body)
        assert response.status_code == 422, (body, response.text)


def test_a_refused_return_does_not_use_up_a_number(api: Api) -> None:
    order = api.buy()
    response = api.post("/v1/returns", {"items": [wanted(order, quantity=9)]})
    assert response.status_code == 422
    assert api.open(wanted(order))["number"] == "R-000001"


def test_a_known_store_is_shown_and_an_unknown_one_is_not_lost(api: Api) -> None:
    store = {"id": unique("store"), "name": "Mitte", "city": "Berlin", "country": "DE"}
    order = api.buy(line("1", quantity=2), channel="offline", store=store)
    ret = api.open(wanted(order), channel="offline", store={"id": store["id"]})
    assert ret["channel"] == "offline"
    assert ret["store"]["id"] == store["id"]
    assert ret["store"]["name"] == "Mitte"
    # A store the service has not seen in a purchase yet: the reference must still show.
    elsewhere = unique("store")
    ret = api.open(wanted(order), channel="offline", store={"id": elsewhere})
    assert ret["store"] is not None, ret
    assert ret["store"]["id"] == elsewhere
    assert [r["id"] for r in api.list(store_id=elsewhere)] == [ret["id"]]


def test_idempotency_key_replays_the_creation(api: Api, database: DatabaseFixture) -> None:
    order = api.buy(line("1", quantity=3))
    body = {"items": [wanted(order)]}
    key = {"Idempotency-Key": unique("key")}
    first = api.post("/v1/returns", body, key)
    again = api.post("/v1/returns", body, key)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json()
    assert len(api.list()) == 1
    assert api.lines(order)["1"] == (3, 1, 0, 2)
    different = api.post("/v1/returns", {"items": [wanted(order, quantity=2)]}, key)
    assert different.status_code == 409, different.text
    assert len(api.list()) == 1


def test_a_replayed_creation_still_carries_the_etag(api: Api) -> None:
    order = api.buy()
    key = {"Idempotency-Key": unique("key")}
    first = api.post("/v1/returns", {"items": [wanted(order)]}, key)
    again = api.post("/v1/returns", {"items": [wanted(order)]}, key)
    assert first.headers["etag"] == '"1"'
    assert again.headers.get("etag") == '"1"', dict(again.headers)


# --- preview ------------------------------------------------------------------------------


def preview(api: Api, *items: dict[str, Any], **fields: Any) -> dict[str, Any]:
    response = api.post("/v1/returns/preview", {"items": list(items)} | fields)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_preview_of_an_eligible_return_shows_the_money_and_writes_nothing(
    api: Api, database: DatabaseFixture
) -> None:
    customer = person()
    first = api.buy(line("1", quantity=2, unit_price=1000), customer=customer)
    second = api.buy(line("1", unit_price=2500), customer=customer)
    body = preview(api, wanted(first, quantity=2), wanted(second))
    assert body["eligible"] is True
    assert body["currency"] == "EUR"
    assert [
        (i["order_id"], i["line_id"], i["eligible"], i["errors"], i["refundable"], i["fee"])
        for i in body["items"]
    ] == [
        (first["order_id"], "1", True, [], 2000, 0),
        (second["order_id"], "1", True, [], 2500, 0),
    ]
    assert body["fees"] == {"restocking": 0, "shipping": 0}
    assert body["total"] == 4500
    assert_nothing_written(api, database, first, second)


def test_preview_runs_the_same_checks(api: Api, database: DatabaseFixture) -> None:
    api.set_policy(rules=[{"match": {"category_prefix": "Final"}, "returnable": False}])
    customer = person()
    order = api.buy(
        line("1", quantity=1),
        line("2", category="Final/Sale"),
        line("3", product_id="SKU-D"),
        line("4", product_id="SKU-D"),
        customer=customer,
    )
    old = api.buy(customer=customer, days_ago=40)
    dollars = api.buy(customer=customer, currency="USD")
    foreign = api.buy()
    body = preview(
        api,
        wanted(order, quantity=2),
        wanted(order, line_id="2"),
        wanted(order, line_id=None, product_id="SKU-D"),
        wanted(order, line_id="9"),
        wanted(old),
        wanted(dollars),
        wanted(foreign),
        {**wanted(order), "order_id": unique("missing")},
        wanted(order, line_id="3", reason="bogus"),
        wanted(order, line_id="4", reason="other"),
    )
    assert body["eligible"] is False
    codes = [(i["index"], [e["code"] for e in i["errors"]]) for i in body["items"]]
    assert codes == [
        (0, ["quantity_exceeds_returnable"]),
        (1, ["final_sale"]),
        (2, ["ambiguous_line"]),
        (3, ["line_not_found"]),
        (4, ["outside_return_window"]),
        (5, ["currency_mismatch"]),
        (6, ["order_not_owned"]),
        (7, ["order_not_found"]),
        (8, ["unknown_reason"]),
        (9, ["note_required"]),
    ]
    assert all(i["eligible"] is False for i in body["items"])
    assert_nothing_written(api, database, order, old, dollars, foreign)


def test_preview_restocking_fee_is_exact_and_the_refund_rounds_down(api: Api) -> None:
    api.set_policy(restocking_fee_percent=15)
    order = api.buy(line("1", unit_price=1999, quantity=2))
    body = preview(api, wanted(order))
    [only] = body["items"]
    assert (only["unit_price"], only["refundable"]) == (1999, 1999)
    assert body["total"] == 1699  # floor(1999 - 299.85)
    assert only["fee"] == 300  # 299.85, rounded so that value - fee is the refund
    assert body["fees"]["restocking"] == 300
    assert body["fees"]["shipping"] == 0
    two = preview(api, wanted(order, quantity=2))
    assert two["total"] == 3398  # floor(3998 - 599.7)


def test_preview_charges_no_fee_on_merchant_fault_reasons(api: Api) -> None:
    api.set_policy(restocking_fee_percent=15, return_shipping_fee=495)
    order = api.buy(line("1", unit_price=1999, quantity=4))
    for reason in ("defective", "damaged_in_transit", "not_as_described", "wrong_item"):
        body = preview(api, wanted(order, reason=reason))
        assert body["items"][0]["fee"] == 0, reason
        assert body["fees"] == {"restocking": 0, "shipping": 0}, reason
        assert body["total"] == 1999, reason


def test_preview_charges_the_return_shipping_fee(api: Api) -> None:
    api.set_policy(return_shipping_fee=495)
    order = api.buy(line("1", unit_price=1999, quantity=2))
    body = preview(api, wanted(order))
    assert body["fees"] == {"restocking": 0, "shipping": 495}
    assert body["total"] == 1999 - 495


def test_a_product_rule_sets_its_own_fee(api: Api) -> None:
    api.set_policy(
        restocking_fee_percent=10,
        rules=[{"match": {"product_id": "SKU-9"}, "restocking_fee_percent": 15}],
    )
    order = api.buy(line("1", product_id="SKU-9", unit_price=1999), line("2", unit_price=1000))
    body = preview(api, wanted(order), wanted(order, line_id="2"))
    assert [i["refundable"] for i in body["items"]] == [1999, 1000]
    assert body["total"] == 2599  # floor(1999 - 299.85 + 1000 - 100)
    ret = api.open(wanted(order), wanted(order, line_id="2"))
    assert ret["fees"]["restocking"] == body["fees"]["restocking"]


def test_the_created_return_carries_the_fees_of_its_preview(api: Api) -> None:
    api.set_policy(restocking_fee_percent=15, return_shipping_fee=300)
    order = api.buy(line("1", unit_price=1999))
    body = preview(api, wanted(order))
    ret = api.open(wanted(order))
    assert ret["fees"] == body["fees"]
    assert ret["fees"]["shipping"] == 300
    assert ret["fees"]["restocking"] == 300  # 299.85: 1999 - 300 is the refund, 1699


# --- list ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog(app: FastAPI, database: DatabaseFixture) -> Iterator[dict[str, Any]]:
    """Returns spread over customers, statuses, channels, stores, sources and dates; built
    once per backend (on a tenant of its own) for the read-only list tests."""
    with TestClient(app, raise_server_exceptions=False) as client:
        api = Api(client, make_tenant(database.db))
        ann, bob = person(), person()
        store = {"id": unique("store"), "name": "Mitte", "city": "Berlin", "country": "DE"}
        ann_order = api.buy(
            line("1", product_id="SKU-A", quantity=5),
            line("2", product_id="SKU-B", quantity=5),
            customer=ann,
        )
        bob_order = api.buy(
            line("1", product_id="SKU-A", quantity=5), customer=bob, channel="offline", store=store
        )
        old_order = api.buy(line("1", product_id="SKU-C", quantity=2), customer=ann, days_ago=20)
        api.record_return(
            old_order,
            {"product_id": "SKU-C", "quantity": 1, "reason": "size_too_small"},
            timestamp=(datetime.now(UTC) - timedelta(days=10)).isoformat(),
        )
        first = api.open(
            wanted(ann_order, reason="color"), external_id="zendesk-77", note="customer called"
        )
        second = api.open(wanted(ann_order, line_id="2", reason="defective", note="zipper broke"))
        api.act(second, "approve")
        third = api.open(
            wanted(bob_order, reason="style"), channel="offline", store={"id": store["id"]}
        )
        api.act(third, "decline", {"reason": "other"})
        [recorded] = api.list(source="event")
        yield {
            "api": api,
            "ann": ann,
            "bob": bob,
            "store": store,
            "ann_order": ann_order,
            "bob_order": bob_order,
            "old_order": old_order,
            "first": first["id"],
            "second": second["id"],
            "third": third["id"],
            "recorded": recorded["id"],
        }


LIST_CASES: list[tuple[str, Any]] = [
    ("all", lambda c: ({}, ["third", "second", "first", "recorded"])),
    ("customer_id", lambda c: ({"customer_id": c["bob"]["id"]}, ["third"])),
    ("email", lambda c: ({"email": c["ann"]["email"].upper()}, ["second", "first", "recorded"])),
    ("status", lambda c: ({"status": "approved"}, ["second"])),
    ("status repeated", lambda c: ({"status": ["declined", "closed"]}, ["third", "recorded"])),
    ("order_id", lambda c: ({"order_id": c["ann_order"]["order_id"]}, ["second", "first"])),
    ("product_id", lambda c: ({"product_id": "SKU-A"}, ["third", "first"])),
    ("channel", lambda c: ({"channel": "offline"}, ["third"])),
    ("store_id", lambda c: ({"store_id": c["store"]["id"]}, ["third"])),
    ("source api", lambda c: ({"source": "api"}, ["third", "second", "first"])),
    ("source event", lambda c: ({"source": "event"}, ["recorded"])),
    ("reason", lambda c: ({"reason": "defective"}, ["second"])),
    ("reason of recorded", lambda c: ({"reason": "size_too_small"}, ["recorded"])),
    (
        "created_after",
        lambda c: (
            {"created_after": (datetime.now(UTC) - timedelta(days=1)).isoformat()},
            ["third", "second", "first"],
        ),
    ),
    (
        "created_before",
        lambda c: (
            {"created_before": (datetime.now(UTC) - timedelta(days=1)).isoformat()},
            ["recorded"],
        ),
    ),
    ("q number", lambda c: ({"q": "R-000003"}, ["second"])),
    ("q external id", lambda c: ({"q": "ZENDESK-77"}, ["first"])),
    ("q email", lambda c: ({"q": c["bob"]["email"]}, ["third"])),
    ("q return note", lambda c: ({"q": "customer called"}, ["first"])),
    ("q item note", lambda c: ({"q": "zipper"}, ["second"])),
    ("q nothing", lambda c: ({"q": "no such text"}, [])),
    ("q percent is literal", lambda c: ({"q": "%"}, [])),
    ("q underscore is literal", lambda c: ({"q": "_"}, [])),
    (
        "combined",
        lambda c: ({"customer_id": c["ann"]["id"], "status": "requested"}, ["first"]),
    ),
]


@pytest.mark.parametrize("case", [case for _, case in LIST_CASES], ids=[n for n, _ in LIST_CASES])
def test_list_filters(catalog: dict[str, Any], case: Any) -> None:
    params, expected = case(catalog)
    response = catalog["api"].get("/v1/returns", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_cursor"] is None
    names = {catalog[name]: name for name in ("first", "second", "third", "recorded")}
    assert [names.get(r["id"], r["id"]) for r in body["data"]] == expected


def test_list_shows_recorded_returns_as_closed_event_returns(catalog: dict[str, Any]) -> None:
    recorded = catalog["api"].read(catalog["recorded"])
    assert (recorded["status"], recorded["source"]) == ("closed", "event")
    assert recorded["items"][0]["order_id"] == catalog["old_order"]["order_id"]


def test_list_is_newest_first_and_pages_without_gaps_or_duplicates(api: Api) -> None:
    customer = person()
    order = api.buy(line("1", quantity=20), customer=customer)
    for days in (3, 2):
        api.record_return(
            order,
            {"product_id": order["items"][0]["product_id"], "quantity": 1, "reason": "color"},
            timestamp=(datetime.now(UTC) - timedelta(days=days)).isoformat(),
        )
    created = [api.open(wanted(order))["id"] for _ in range(9)]
    recorded = [r["id"] for r in api.list(source="event")]
    assert len(recorded) == 2
    expected = list(reversed(created)) + recorded  # recorded ones are oldest
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        response = api.get("/v1/returns", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["data"]) <= 3
        seen.extend(r["id"] for r in page["data"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 10
    assert seen == expected
    assert pages == 4  # 3 + 3 + 3 + 2
    # The default page holds them all; with limit equal to the count there is no next page.
    full = api.get("/v1/returns", params={"limit": 11}).json()
    assert ([r["id"] for r in full["data"]], full["next_cursor"]) == (expected, None)


def test_a_cursor_keeps_its_place_when_newer_returns_arrive(api: Api) -> None:
    order = api.buy(line("1", quantity=10))
    created = [api.open(wanted(order))["id"] for _ in range(4)]
    first = api.get("/v1/returns", params={"limit": 2}).json()
    api.open(wanted(order))  # newer than everything: must not show up on the next pages
    rest = api.get("/v1/returns", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [r["id"] for r in first["data"] + rest["data"]] == list(reversed(created))


@pytest.mark.parametrize("limit", ["0", "201", "-1", "many"])
def test_list_limit_outside_1_to_200_is_400(api: Api, limit: str) -> None:
    response = api.get("/v1/returns", params={"limit": limit})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


BAD_CURSORS = {
    "not base64": "not-a-cursor",
    "symbols": "%%%",
    "three items": _b64(b"[1, 2, 3]"),
    "object": _b64(b'{"a": 1}'),
    "not a time": _b64(b'["yesterday", "ret_1"]'),
    "time without offset": _b64(b'["2026-01-01T00:00:00", "ret_1"]'),
    "not utf-8": _b64(b"\xff\xfe"),
}


@pytest.mark.parametrize("cursor", list(BAD_CURSORS.values()), ids=list(BAD_CURSORS))
def test_a_bad_cursor_is_400(api: Api, cursor: str) -> None:
    order = api.buy()
    api.open(wanted(order))
    response = api.get("/v1/returns", params={"cursor": cursor})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request"


@pytest.mark.parametrize(
    "params",
    [
        {"status": "lost"},
        {"source": "fax"},
        {"channel": "mail"},
        {"created_after": "yesterday"},
        {"email": "not an email"},
    ],
)
def test_bad_filters_are_400(api: Api, params: dict[str, str]) -> None:
    response = api.get("/v1/returns", params=params)
    assert response.status_code == 400, response.text


def test_bad_filters_answer_the_same_bodies(api: Api) -> None:
    """Every unknown status is its own detail; a malformed value names its parameter."""
    response = api.get("/v1/returns", params={"status": ["lost", "closed", "gone"]})
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "type": "invalid_request",
            "message": "The request is invalid.",
            "details": [
                {"path": "status", "message": "unknown status 'lost'"},
                {"path": "status", "message": "unknown status 'gone'"},
            ],
        }
    }
    response = api.get("/v1/returns", params={"email": "not an email"})
    assert response.json()["error"]["details"] == [
        {"path": "email", "message": "is not a valid email address"}
    ]
    response = api.get("/v1/returns", params={"source": "fax"})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Invalid parameters."
    assert [detail["path"] for detail in response.json()["error"]["details"]] == ["source"]


def test_a_nul_in_a_text_filter_matches_nothing(api: Api) -> None:
    order = api.buy()
    api.open(wanted(order))
    for name in ("customer_id", "order_id", "product_id", "store_id", "reason", "q"):
        response = api.get("/v1/returns", params={name: "a\x00b", "cursor": "not-a-cursor"})
        assert response.status_code == 200, response.text
        assert response.json() == {"data": [], "next_cursor": None}


def test_unknown_return_is_404(api: Api) -> None:
    for reference in ("ret_01NOPE", "R-999999", "nothing"):
        response = api.get(f"/v1/returns/{reference}")
        assert response.status_code == 404, response.text
        assert response.json()["error"]["type"] == "not_found"


# --- auth ---------------------------------------------------------------------------------

RECEIPT = {"items": [{"order_id": "o", "line_id": "1", "quantity": 1}]}
ITEM = {"order_id": "o", "line_id": "1", "quantity": 1, "reason": "unwanted"}
# Every staff call with a well-formed body, so that only the key decides the answer.
STAFF_CALLS: list[tuple[str, str, Any]] = [
    ("POST", "/v1/returns", {"items": [ITEM]}),
    ("POST", "/v1/returns/preview", {"items": [ITEM]}),
    ("GET", "/v1/returns", None),
    ("GET", "/v1/returns/{id}", None),
    ("PATCH", "/v1/returns/{id}", {"note": "x"}),
    ("DELETE", "/v1/returns/{id}", None),
    ("POST", "/v1/returns/{id}/approve", {}),
    ("POST", "/v1/returns/{id}/decline", {"reason": "other"}),
    ("POST", "/v1/returns/{id}/receive", RECEIPT),
    ("POST", "/v1/returns/{id}/refund", {"method": "cash"}),
    ("POST", "/v1/returns/{id}/close", {}),
    ("POST", "/v1/returns/{id}/cancel", {}),
    ("POST", "/v1/returns/{id}/reopen", {}),
    ("GET", "/v1/policy", None),
    ("PUT", "/v1/policy", {}),
]
ON_A_RETURN = [call for call in STAFF_CALLS if "{id}" in call[1]]


@pytest.fixture
def existing(api: Api) -> dict[str, Any]:
    order = api.buy()
    return api.open(wanted(order))


@pytest.mark.parametrize(("method", "path", "body"), STAFF_CALLS)
def test_staff_endpoints_need_a_secret_key(
    client: TestClient,
    api: Api,
    existing: dict[str, Any],
    method: str,
    path: str,
    body: Any,
) -> None:
    url = path.format(id=existing["id"])
    missing = client.request(method, url, json=body)
    assert missing.status_code == 401, missing.text
    assert missing.json()["error"]["type"] == "authentication_failed"
    wrong = client.request(method, url, json=body, headers={"Authorization": "Bearer sk_wrong"})
    assert wrong.status_code == 401, wrong.text
    publishable = client.request(method, url, json=body, headers=api.tenant.publishable_headers)
    assert publishable.status_code == 403, publishable.text
    assert publishable.json()["error"]["type"] == "forbidden"
    assert api.read(existing) == existing  # nothing happened to the return
    assert len(api.list()) == 1


@pytest.mark.parametrize(("method", "path", "body"), ON_A_RETURN)
def test_another_tenants_return_is_404(
    client: TestClient,
    api: Api,
    other_tenant: TenantFixture,
    existing: dict[str, Any],
    method: str,
    path: str,
    body: Any,
) -> None:
    for reference in (existing["id"], existing["number"]):  # the other tenant has no R-000001
        response = client.request(
            method, path.format(id=reference), json=body, headers=other_tenant.headers
        )
        assert response.status_code == 404, response.text
        assert response.json()["error"]["type"] == "not_found"
    assert api.read(existing) == existing


def test_another_tenant_sees_none_of_our_returns(
    client: TestClient, api: Api, other_tenant: TenantFixture, existing: dict[str, Any]
) -> None:
    other = Api(client, other_tenant)
    assert other.list() == []
    theirs = other.open(wanted(other.buy()))
    assert theirs["number"] == existing["number"] == "R-000001"
    assert other.read("R-000001")["id"] == theirs["id"]
    other.act("R-000001", "approve")
    assert api.read("R-000001") == existing
    assert [r["id"] for r in other.list()] == [theirs["id"]]


def test_a_return_cannot_be_opened_on_another_tenants_order(
    client: TestClient, api: Api, other_tenant: TenantFixture
) -> None:
    order = api.buy()
    other = Api(client, other_tenant)
    response = other.post("/v1/returns", {"items": [wanted(order)]})
    assert error_codes(response) == {("items[0]", "order_not_found")}
    preview_response = other.post("/v1/returns/preview", {"items": [wanted(order)]})
    assert preview_response.json()["items"][0]["errors"][0]["code"] == "order_not_found"
    assert api.lines(order)["1"][1] == 0


def test_the_customer_id_filter_finds_returns_recorded_under_a_linked_email(api: Api) -> None:
    """API.md 3's example: a purchase names the customer's id and email, the return event
    only the email. The return is that customer's (as on /v1/customers/{id}/returns)."""
    customer = person()
    order = api.buy(customer=customer)
    api.send(
        return_event(
            order_id=order["order_id"],
            customer={"email": customer["email"].upper()},
            items=[{"product_id": order["items"][0]["product_id"], "quantity": 1}],
        )
    )
    listed = api.list(customer_id=customer["id"])
    assert [(r["source"], r["items"][0]["order_id"]) for r in listed] == [
        ("event", order["order_id"])
    ]
    mine = api.get(f"/v1/customers/{customer['id']}/returns").json()["data"]
    assert [r["id"] for r in mine] == [r["id"] for r in listed]
    # Another customer's id finds nothing of it.
    assert api.list(customer_id=unique("cust")) == []
