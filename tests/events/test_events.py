"""POST /v1/events: what a sender of purchases and recorded returns relies on (API.md 3, 11)."""

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select

from returnstack.models import Event, Order, OrderLine, Return, ReturnHistory, ReturnItem, Store
from tests.conftest import DatabaseFixture, TenantFixture, make_tenant
from tests.factories import batch, item, purchase, return_event, ts, unique

EVT_ID = re.compile(r"^evt_[0-9A-HJKMNP-TV-Z]{26}$")


def post(
    client: TestClient, tenant: TenantFixture, *events: dict[str, Any], **params: str
) -> Response:
    return client.post("/v1/events", json=batch(*events), headers=tenant.headers, params=params)


def ok(response: Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def event_ids(database: DatabaseFixture, tenant_id: str) -> dict[str, str]:
    """client id -> server id of every event recorded for the tenant."""
    with database.db.transaction(write=False) as session:
        rows = session.execute(
            select(Event.client_id, Event.id).where(Event.tenant_id == tenant_id)
        ).all()
    return {client_id: server_id for client_id, server_id in rows}


def count(database: DatabaseFixture, model: Any, tenant_id: str) -> int:
    with database.db.transaction(write=False) as session:
        return int(
            session.scalar(
                select(func.count()).select_from(model).where(model.tenant_id == tenant_id)
            )
            or 0
        )


def recorded_returns(database: DatabaseFixture, tenant_id: str) -> list[dict[str, Any]]:
    """The tenant's returns with their items, oldest number first."""
    with database.db.transaction(write=False) as session:
        returns = session.scalars(
            select(Return).where(Return.tenant_id == tenant_id).order_by(Return.number)
        ).all()
        result = []
        for ret in returns:
            items = session.scalars(
                select(ReturnItem)
                .where(ReturnItem.tenant_id == tenant_id, ReturnItem.return_id == ret.id)
                .order_by(ReturnItem.position)
            ).all()
            history = session.scalars(
                select(ReturnHistory).where(
                    ReturnHistory.tenant_id == tenant_id, ReturnHistory.return_id == ret.id
                )
            ).all()
            result.append({"return": ret, "items": list(items), "history": list(history)})
    return result


def get_order(client: TestClient, tenant: TenantFixture, order_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/orders/{order_id}", headers=tenant.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# -- happy paths ------------------------------------------------------------------------------


def test_online_purchase_is_recorded_as_an_order(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    event = purchase(
        timestamp="2026-01-10T12:30:00+02:00",
        customer={"id": unique("cust"), "email": "Ann.Buyer@Example.COM"},
        items=[
            item(
                line_id="a", product_id="SKU-1", variant_id="SKU-1-M", quantity=2, unit_price=1799
            ),
            item(line_id="b", product_id="SKU-2", quantity=1, unit_price=500, name="Socks"),
        ],
    )
    body = ok(post(client, tenant, event))
    assert body["accepted"] == 1
    assert body["duplicates"] == 0
    assert body["rejected"] == []
    assert len(body["ids"]) == 1
    assert EVT_ID.match(body["ids"][0])
    assert event_ids(database, tenant.id) == {event["id"]: body["ids"][0]}

    order = get_order(client, tenant, event["order_id"])
    assert order["channel"] == "online"
    assert order["store"] is None
    assert order["currency"] == "EUR"
    assert order["placed_at"] == "2026-01-10T10:30:00Z"
    assert order["customer"] == {"id": event["customer"]["id"], "email": "ann.buyer@example.com"}
    assert [(line["line_id"], line["product_id"], line["quantity"]) for line in order["lines"]] == [
        ("a", "SKU-1", 2),
        ("b", "SKU-2", 1),
    ]
    assert order["lines"][0]["variant_id"] == "SKU-1-M"
    assert order["lines"][0]["unit_price"] == 1799
    assert order["lines"][1]["name"] == "Socks"


def test_offline_purchase_keeps_its_store(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    store = {"id": "berlin-01", "name": "Berlin Mitte", "city": "Berlin", "country": "DE"}
    anonymous = purchase(channel="offline", store=store)
    del anonymous["customer"]
    assert ok(post(client, tenant, anonymous))["accepted"] == 1

    order = get_order(client, tenant, anonymous["order_id"])
    assert order["channel"] == "offline"
    assert order["store"] == store
    assert order["customer"] is None  # anonymous in-store sales still count
    assert count(database, Store, tenant.id) == 1


@pytest.mark.parametrize("same_request", [False, True], ids=["later_request", "same_request"])
def test_an_event_naming_only_the_store_id_keeps_the_store_details(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture, same_request: bool
) -> None:
    store = {"id": "hh-02", "name": "Hamburg", "city": "Hamburg", "country": "DE"}
    first = purchase(channel="offline", store=store)
    later = purchase(channel="offline", store={"id": "hh-02"})
    if same_request:
        assert ok(post(client, tenant, first, later))["accepted"] == 2
    else:
        ok(post(client, tenant, first))
        ok(post(client, tenant, later))
    assert get_order(client, tenant, first["order_id"])["store"] == store
    assert get_order(client, tenant, later["order_id"])["store"] == store
    assert count(database, Store, tenant.id) == 1


def test_recorded_return_becomes_a_closed_return_from_an_event(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    sale = purchase(items=[item(line_id="1", product_id="SKU-1", quantity=2, unit_price=1799)])
    ret = return_event(
        order_id=sale["order_id"],
        timestamp="2026-01-12T09:00:00Z",
        customer={"email": sale["customer"]["email"]},
        items=[{"product_id": "SKU-1", "quantity": 1, "reason": "size_too_small"}],
        refund={"amount": 1799, "method": "store_credit"},
    )
    body = ok(post(client, tenant, sale, ret))
    assert body["accepted"] == 2
    return_event_id = body["ids"][1]

    [recorded] = recorded_returns(database, tenant.id)
    row = recorded["return"]
    assert row.status == "closed"
    assert row.source == "event"
    assert row.event_id == return_event_id
    assert row.id.startswith("ret_")
    assert row.email == sale["customer"]["email"]
    assert row.currency == "EUR"
    assert row.refund_amount == 1799
    assert row.refund_method == "store_credit"
    assert row.closed_at is not None
    assert row.closed_at.isoformat() == "2026-01-12T09:00:00+00:00"
    [ret_item] = recorded["items"]
    assert (ret_item.order_id, ret_item.product_id, ret_item.quantity) == (
        sale["order_id"],
        "SKU-1",
        1,
    )
    assert ret_item.received_quantity == 1
    assert ret_item.reason == "size_too_small"
    assert [entry.to_status for entry in recorded["history"]] == ["closed"]

    order = get_order(client, tenant, sale["order_id"])
    assert order["lines"][0]["returned_quantity"] == 1
    assert order["lines"][0]["returnable_quantity"] == 1


def test_returns_are_numbered_per_tenant_in_order(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    ok(post(client, tenant, return_event(), return_event()))
    ok(post(client, tenant, return_event()))
    numbers = [entry["return"].number for entry in recorded_returns(database, tenant.id)]
    assert numbers == [1, 2, 3]


def test_ids_follow_request_order(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    events = [purchase(), return_event(), purchase(), return_event(), purchase()]
    body = ok(post(client, tenant, *events))
    assert body["accepted"] == 5
    assert len(set(body["ids"])) == 5
    assert all(EVT_ID.match(server_id) for server_id in body["ids"])
    recorded = event_ids(database, tenant.id)
    assert [recorded[event["id"]] for event in events] == body["ids"]


def test_duplicate_within_one_request_is_counted_once(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    first = purchase(items=[item(quantity=1)])
    again = first | {"items": [item(quantity=5)]}  # same id, different content
    other = purchase()
    body = ok(post(client, tenant, first, other, again))
    assert body["accepted"] == 2
    assert body["duplicates"] == 1
    assert body["ids"][0] == body["ids"][2]
    assert body["ids"][1] != body["ids"][0]
    assert count(database, Event, tenant.id) == 2
    order = get_order(client, tenant, first["order_id"])
    assert [line["quantity"] for line in order["lines"]] == [1]


def test_duplicate_across_requests_changes_nothing(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    sale = purchase(items=[item(line_id="1", quantity=2, unit_price=1000)])
    ret = return_event(order_id=sale["order_id"], items=[{"product_id": "X", "quantity": 1}])
    first = ok(post(client, tenant, sale, ret))
    order_before = get_order(client, tenant, sale["order_id"])
    returns_before = count(database, Return, tenant.id)

    changed_sale = sale | {
        "currency": "USD",
        "items": [item(line_id="1", quantity=9, unit_price=1), item(line_id="2")],
    }
    changed_return = ret | {"items": [{"product_id": "X", "quantity": 3}]}
    new = purchase()
    second = ok(post(client, tenant, changed_return, new, changed_sale))
    assert second["accepted"] == 1
    assert second["duplicates"] == 2
    # A duplicate reports the id of the event first recorded under its id.
    assert second["ids"][0] == first["ids"][1]
    assert second["ids"][2] == first["ids"][0]
    assert second["ids"][1] not in first["ids"]

    assert get_order(client, tenant, sale["order_id"]) == order_before
    assert count(database, Return, tenant.id) == returns_before == 1
    assert count(database, Event, tenant.id) == 3

    # Sending the very same request again is all duplicates, with the same ids.
    third = ok(post(client, tenant, sale, ret))
    assert third == {"accepted": 0, "duplicates": 2, "rejected": [], "ids": first["ids"]}


def test_default_currency_of_the_tenant_applies(
    client: TestClient, database: DatabaseFixture
) -> None:
    yen = make_tenant(database.db, currency="JPY")
    sale = purchase()
    del sale["currency"]
    ret = return_event(order_id=sale["order_id"])
    del ret["currency"]
    explicit = purchase(currency="USD")
    ok(post(client, yen, sale, ret, explicit))
    assert get_order(client, yen, sale["order_id"])["currency"] == "JPY"
    assert get_order(client, yen, explicit["order_id"])["currency"] == "USD"
    [recorded] = recorded_returns(database, yen.id)
    assert recorded["return"].currency == "JPY"


def test_a_return_without_currency_takes_its_orders(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    """A return naming no currency is in its order's (stored, or bought earlier in the same
    request); only for an unknown order is it in the tenant's default (EUR)."""
    earlier = purchase(currency="USD")
    ok(post(client, tenant, earlier))
    email = earlier["customer"]["email"]
    later = purchase(currency="GBP", customer=earlier["customer"])
    returns = [
        return_event(order_id=order["order_id"], customer={"email": email})
        for order in (earlier, later)
    ] + [return_event(customer={"email": email})]  # an unknown order
    for ret in returns:
        del ret["currency"]
    ok(post(client, tenant, later, *returns))
    assert [r["return"].currency for r in recorded_returns(database, tenant.id)] == [
        "USD",
        "GBP",
        "EUR",
    ]
    totals = client.get(f"/v1/customers/{earlier['customer']['id']}", headers=tenant.headers)
    assert totals.status_code == 200, totals.text
    by_currency = totals.json()["totals"]
    assert (by_currency["USD"]["returns"], by_currency["GBP"]["returns"]) == (1, 1)
    assert by_currency["EUR"]["orders"] == 0


def test_free_text_reason_becomes_other_with_the_text_as_note(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    ret = return_event(
        items=[
            {"product_id": "A", "quantity": 1, "reason": "defective"},
            {"product_id": "B", "quantity": 1, "reason": "Fell apart after one wash"},
            {"product_id": "C", "quantity": 1, "reason": "too itchy", "note": "customer called"},
            {"product_id": "D", "quantity": 1, "reason": "wrong_item", "note": "sent blue"},
        ]
    )
    ok(post(client, tenant, ret))
    [recorded] = recorded_returns(database, tenant.id)
    assert [(i.product_id, i.reason, i.note) for i in recorded["items"]] == [
        ("A", "defective", None),
        ("B", "other", "Fell apart after one wash"),
        ("C", "other", "too itchy: customer called"),
        ("D", "wrong_item", "sent blue"),
    ]


def test_partial_writes_exactly_the_valid_events(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    good_1 = purchase()
    bad_quantity = purchase(items=[item(quantity="2")])
    good_2 = return_event()
    bad_many = purchase(items=[item(), item(unit_price=-1, foo=1)])
    bad_id = purchase(id=123)
    body = ok(post(client, tenant, good_1, bad_quantity, good_2, bad_many, bad_id, partial="true"))

    assert body["accepted"] == 2
    assert body["duplicates"] == 0
    assert body["accepted"] + body["duplicates"] + len(body["rejected"]) == 5
    assert len(body["ids"]) == 2
    assert [r["index"] for r in body["rejected"]] == [1, 3, 4]
    assert [r["id"] for r in body["rejected"]] == [bad_quantity["id"], bad_many["id"], None]
    paths = [sorted(e["path"] for e in r["errors"]) for r in body["rejected"]]
    assert paths == [["items[0].quantity"], ["items[1].foo", "items[1].unit_price"], ["id"]]
    for rejection in body["rejected"]:
        assert all(error["message"] for error in rejection["errors"])

    assert event_ids(database, tenant.id) == {
        good_1["id"]: body["ids"][0],
        good_2["id"]: body["ids"][1],
    }
    assert count(database, Order, tenant.id) == 1
    assert count(database, Return, tenant.id) == 1
    missing = client.get(f"/v1/orders/{bad_quantity['order_id']}", headers=tenant.headers)
    assert missing.status_code == 404


def test_partial_with_every_event_invalid_writes_nothing(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    body = ok(post(client, tenant, purchase(currency="XXY"), partial="true"))
    assert body["accepted"] == 0
    assert body["ids"] == []
    assert [r["errors"][0]["path"] for r in body["rejected"]] == ["currency"]
    assert count(database, Event, tenant.id) == 0


def test_a_thousand_events_in_one_request(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    sales = [
        purchase(items=[item(line_id="1", product_id="SKU-1", quantity=2)]) for _ in range(600)
    ]
    returns = [
        return_event(order_id=sale["order_id"], items=[{"product_id": "SKU-1", "quantity": 1}])
        for sale in sales[:400]
    ]
    events = [*sales, *returns]
    assert len(events) == 1000
    body = ok(post(client, tenant, *events))
    assert body["accepted"] == 1000
    assert body["duplicates"] == 0
    assert len(set(body["ids"])) == 1000
    recorded = event_ids(database, tenant.id)
    assert [recorded[event["id"]] for event in events] == body["ids"]
    assert count(database, Order, tenant.id) == 600
    assert count(database, OrderLine, tenant.id) == 600
    assert count(database, Return, tenant.id) == 400
    returned = get_order(client, tenant, sales[0]["order_id"])["lines"][0]
    assert (returned["returned_quantity"], returned["returnable_quantity"]) == (1, 1)
    untouched = get_order(client, tenant, sales[-1]["order_id"])["lines"][0]
    assert (untouched["returned_quantity"], untouched["returnable_quantity"]) == (0, 2)


def test_old_events_are_accepted(client: TestClient, tenant: TenantFixture) -> None:
    backfill = purchase(timestamp=ts(days_ago=3650))
    assert ok(post(client, tenant, backfill))["accepted"] == 1
