"""Optimove OOTB events (COMPAT.md "Optimove OOTB events") through the app on both
backends: the documented phone-case return at 25.00, orders built from one event per item,
dedup keys, per-index rejections, whole-request errors, keys and tenant isolation."""

from typing import Any

import orjson
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select

from returnstack.customers.profiles import rebuild as rebuild_profiles
from returnstack.models import Event, ReportedEvent
from returnstack.products.rebuild import rebuild as rebuild_products
from tests.conftest import DatabaseFixture, TenantFixture
from tests.factories import unique


def order_event(
    order_id: str, product_id: str, price: str, quantity: int, customer: str, **context: Any
) -> dict[str, Any]:
    return {
        "tenant": 567,
        "timestamp": "2024-05-20 09:00:00.000000 UTC",
        "event": "ootb_product_order_completed",
        "customer": customer,
        "context": {
            "ootb_session_id": "248rhdbuw2her1",
            "ootb_order_id": order_id,
            "ootb_product_id": product_id,
            "ootb_item_name": "Phone Case",
            "ootb_category": "Accessories",
            "ootb_item_price": orjson.Fragment(price.encode()),
            "ootb_quantity": quantity,
            "ootb_store_type": "Online",
        }
        | context,
    }


def return_event(order_id: str, return_id: str, customer: str, **context: Any) -> dict[str, Any]:
    """Seed 003's example."""
    return {
        "tenant": 567,
        "timestamp": "2024-05-27 10:30:00.000000 UTC",
        "event": "ootb_product_return",
        "customer": customer,
        "context": {
            "ootb_session_id": "248rhdbuw2her1",
            "ootb_return_id": return_id,
            "ootb_order_id": order_id,
            "ootb_product_id": "SKU98765",
            "ootb_item_name": "Phone Case",
            "ootb_item_description": "Durable silicone phone case",
            "ootb_category": "Accessories",
            "ootb_item_price": orjson.Fragment(b"25.00"),
            "ootb_quantity": 1,
            "ootb_reason": "Item not as described",
            "ootb_refund_method": "Original Payment Method",
            "ootb_total_return_value": orjson.Fragment(b"25.00"),
            "ootb_item_image_url": "https://example.com/products/sku98765.jpg",
            "ootb_item_page_link": "https://example.com/product/sku98765",
        }
        | context,
    }


def clone(event: dict[str, Any]) -> dict[str, Any]:
    return event | {"context": dict(event["context"])}


def send(
    client: TestClient, headers: dict[str, str], body: Any, path: str = "/optimove/events"
) -> Response:
    return client.post(
        path, content=orjson.dumps(body), headers=headers | {"Content-Type": "application/json"}
    )


def count(database: DatabaseFixture, model: Any, tenant_id: str) -> int:
    with database.db.transaction(write=False) as session:
        return int(
            session.scalar(
                select(func.count()).select_from(model).where(model.tenant_id == tenant_id)
            )
            or 0
        )


def rebuilt_alike(database: DatabaseFixture, tenant_id: str) -> None:
    """Profiles and product signals kept as facts arrive equal those rebuilt from the facts."""
    with database.db.transaction() as session:
        profiles = rebuild_profiles(session, tenant_id=tenant_id, write=False)
        products = rebuild_products(session, tenant_id=tenant_id, write=False)
    assert profiles.differences == 0, profiles.examples
    assert products.differences == 0, products.examples


def test_the_documented_return_and_its_order(client: TestClient, tenant: TenantFixture) -> None:
    order_id, customer = unique("o987654321"), unique("customerId1")
    events = [
        order_event(order_id, "SKU98765", "25.00", 1, customer),
        order_event(order_id, "SKU-2", "17.99", 2, customer, ootb_item_order_id="line-2"),
    ]
    response = send(client, tenant.headers, events, "/optimove/events/batch")
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    order = client.get(f"/v1/orders/{order_id}", headers=tenant.headers).json()
    assert order["channel"] == "online"
    assert order["placed_at"] == "2024-05-20T09:00:00Z"
    # One event per item: each is the first line of its event, so lines are compared as a set.
    assert sorted(
        (line["line_id"], line["product_id"], line["quantity"], line["unit_price"])
        for line in order["lines"]
    ) == [
        ("SKU98765", "SKU98765", 1, 2500),
        ("line-2", "SKU-2", 2, 1799),
    ]

    response = send(
        client, {"X-API-Key": tenant.secret_key}, return_event(order_id, unique("r"), customer)
    )
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    (ret,) = client.get(
        "/v1/returns", params={"order_id": order_id}, headers=tenant.headers
    ).json()["data"]
    assert (ret["status"], ret["source"]) == ("closed", "event")
    assert ret["refund"]["amount"] == 2500
    assert ret["refund"]["method"] == "original_payment"
    (item,) = ret["items"]
    assert (item["product_id"], item["quantity"], item["unit_price"]) == ("SKU98765", 1, 2500)
    assert (item["reason"], item["note"]) == ("other", "Item not as described")
    totals = client.get(f"/v1/customers/{customer}", headers=tenant.headers).json()["totals"]["EUR"]
    assert (totals["gross_revenue"], totals["refunded"]) == (2500 + 2 * 1799, 2500)


def test_items_of_one_return_make_one_return_and_repeats_are_duplicates(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    order_id, return_id, customer = unique("o"), unique("r"), unique("c")
    first = return_event(order_id, return_id, customer)
    second = return_event(
        order_id,
        return_id,
        customer,
        ootb_product_id="SKU-2",
        ootb_quantity=2,
        ootb_item_price=orjson.Fragment(b"10.5"),
        ootb_total_return_value=None,
        ootb_reason="defective",
    )
    del second["context"]["ootb_total_return_value"]
    assert send(client, tenant.headers, [first, second]).json() == {
        "accepted": 2,
        "duplicates": 0,
        "rejected": [],
    }
    (ret,) = client.get(
        "/v1/returns", params={"order_id": order_id}, headers=tenant.headers
    ).json()["data"]
    assert ret["refund"]["amount"] == 2500 + 2 * 1050  # price x quantity when no total
    assert [i["reason"] for i in ret["items"]] == ["other", "defective"]
    events = count(database, Event, tenant.id)
    assert send(client, tenant.headers, [first, second]).json() == {
        "accepted": 0,
        "duplicates": 2,
        "rejected": [],
    }
    assert count(database, Event, tenant.id) == events
    purchase = order_event(order_id, "SKU98765", "25.00", 1, customer)
    assert send(client, tenant.headers, [purchase, purchase]).json() == {
        "accepted": 1,
        "duplicates": 1,
        "rejected": [],
    }


def test_in_store_orders_and_visitors(client: TestClient, tenant: TenantFixture) -> None:
    order_id = unique("o")
    event = order_event(
        order_id, "SKU-1", "5", 3, "x", ootb_store_type="Berlin Mitte", ootb_currency="usd"
    )
    del event["customer"]
    event["visitor"] = "visitor-1"
    assert send(client, tenant.headers, event).json()["accepted"] == 1
    order = client.get(f"/v1/orders/{order_id}", headers=tenant.headers).json()
    assert (order["channel"], order["store"]["id"], order["currency"]) == (
        "offline",
        "Berlin Mitte",
        "USD",
    )
    assert order["customer"] is None
    assert order["lines"][0]["unit_price"] == 500


def test_invalid_events_are_rejected_by_index_and_the_valid_ones_written(
    client: TestClient, tenant: TenantFixture
) -> None:
    order_id, customer = unique("o"), unique("c")
    good = order_event(order_id, "SKU-1", "25.00", 1, customer)
    no_customer = clone(good)
    del no_customer["customer"]
    too_precise = order_event(unique("o"), "SKU-1", "25.001", 1, customer)
    long_text = order_event(unique("o"), "SKU-1", "1", 1, customer, ootb_item_name="x" * 256)
    bad_time = clone(good) | {"timestamp": "yesterday"}
    no_reason = return_event(order_id, unique("r"), customer)
    del no_reason["context"]["ootb_reason"]
    half_unit = order_event(
        unique("o"), "SKU-1", "1", 1, customer, ootb_quantity=orjson.Fragment(b"1.5")
    )
    unknown_event = clone(good) | {"event": "ootb_login"}
    body = [
        good,
        no_customer,
        too_precise,
        long_text,
        bad_time,
        no_reason,
        half_unit,
        unknown_event,
    ]
    result = send(client, tenant.headers, body).json()
    assert result["accepted"] == 1
    assert [(r["index"], r["message"].split(":")[0]) for r in result["rejected"]] == [
        (1, "customer"),
        (2, "context.ootb_item_price"),
        (3, "context.ootb_item_name"),
        (4, "timestamp"),
        (5, "context.ootb_reason"),
        (6, "context.ootb_quantity"),
        (7, "event"),
    ]
    assert client.get(f"/v1/orders/{order_id}", headers=tenant.headers).status_code == 200


def test_whole_request_errors_in_optimoves_shape(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    event = order_event(unique("o"), "SKU-1", "1", 1, "c")
    response = send(client, tenant.headers, [event] * 1001)
    assert response.status_code == 400
    body = response.json()
    assert (body["status"], body["error"]) == (400, "Bad Request")
    assert body["message"].startswith("events")
    assert send(client, tenant.headers, []).status_code == 400
    response = client.post("/optimove/events", content=b"[{", headers=tenant.headers)
    assert response.status_code == 400
    for headers in ({}, {"Authorization": "Bearer sk_nobody"}, {"X-API-Key": "pk_nobody"}):
        response = send(client, headers, event)
        assert response.status_code == 401
        assert response.json()["status"] == 401
    assert count(database, Event, tenant.id) == 0


def test_tenants_are_isolated(
    client: TestClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    order_id = unique("o")
    assert (
        send(client, tenant.headers, order_event(order_id, "A", "1", 1, "c")).json()["accepted"]
        == 1
    )
    assert client.get(f"/v1/orders/{order_id}", headers=other_tenant.headers).status_code == 404
    # The same event for the other tenant is new there, not a duplicate.
    assert (
        send(client, other_tenant.headers, order_event(order_id, "A", "1", 1, "c")).json()[
            "accepted"
        ]
        == 1
    )


def test_a_publishable_key_reports_signals_only(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    order_id, customer = unique("o"), unique("c")
    events = [
        order_event(order_id, "SKU98765", "25.00", 1, customer),
        return_event(order_id, unique("r"), customer),
    ]
    response = send(client, tenant.publishable_headers, events)
    assert response.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    assert count(database, ReportedEvent, tenant.id) == 2
    assert count(database, Event, tenant.id) == 0
    assert client.get(f"/v1/orders/{order_id}", headers=tenant.headers).status_code == 404
    assert client.get(f"/v1/customers/{customer}", headers=tenant.headers).status_code == 404
    assert send(client, {"X-API-Key": tenant.publishable_key}, events).json()["duplicates"] == 2


def test_items_of_one_order_sent_one_by_one_make_one_order(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    order_id, customer = unique("o"), unique("c")
    first = order_event(order_id, "A", "10.00", 1, customer)
    second = order_event(order_id, "B", "20.00", 2, customer)
    third = order_event(order_id, "C", "30.00", 3, customer)
    assert send(client, tenant.headers, first).json()["accepted"] == 1
    assert send(client, tenant.headers, second).json()["accepted"] == 1
    # A retry of one item alone, and a batch of an old item with a new one.
    assert send(client, tenant.headers, first).json() == {
        "accepted": 0,
        "duplicates": 1,
        "rejected": [],
    }
    assert send(client, tenant.headers, [second, third]).json() == {
        "accepted": 1,
        "duplicates": 1,
        "rejected": [],
    }
    order = client.get(f"/v1/orders/{order_id}", headers=tenant.headers).json()
    assert sorted((line["product_id"], line["quantity"]) for line in order["lines"]) == [
        ("A", 1),
        ("B", 2),
        ("C", 3),
    ]
    totals = client.get(f"/v1/customers/{customer}", headers=tenant.headers).json()["totals"]
    assert totals["EUR"]["orders"] == 1
    assert totals["EUR"]["gross_revenue"] == 1000 + 2 * 2000 + 3 * 3000


def refund_event(order_id: str, refund_id: str, customer: str, **context: Any) -> dict[str, Any]:
    """Money back without goods, for the seed's phone case at 25.00."""
    return {
        "tenant": 567,
        "timestamp": "2024-05-28 08:00:00.000000 UTC",
        "event": "ootb_product_refund",
        "customer": customer,
        "context": {
            "ootb_refund_id": refund_id,
            "ootb_order_id": order_id,
            "ootb_product_id": "SKU98765",
            "ootb_refund_amount": orjson.Fragment(b"25.00"),
            "ootb_refund_reason": "Item not as described",
        }
        | context,
    }


def second_item(order_id: str, return_id: str, customer: str, **context: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "ootb_product_id": "SKU-2",
        "ootb_quantity": 2,
        "ootb_item_price": orjson.Fragment(b"17.99"),
        "ootb_reason": "defective",
    }
    event = return_event(order_id, return_id, customer, **(defaults | context))
    del event["context"]["ootb_total_return_value"]
    return event


def test_one_return_sent_over_several_requests_is_one_return(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    order_id, return_id, customer = unique("o"), unique("r"), unique("c")
    purchase = [
        order_event(order_id, "SKU98765", "25.00", 1, customer),
        order_event(order_id, "SKU-2", "17.99", 2, customer),
    ]
    assert send(client, tenant.headers, purchase).json()["accepted"] == 2
    first = return_event(order_id, return_id, customer)
    second = second_item(order_id, return_id, customer)
    assert send(client, tenant.headers, first).json() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": [],
    }
    assert send(client, tenant.headers, second).json() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": [],
    }
    # Repeats, alone or together, change nothing.
    events = count(database, Event, tenant.id)
    assert send(client, tenant.headers, second).json() == {
        "accepted": 0,
        "duplicates": 1,
        "rejected": [],
    }
    assert send(client, tenant.headers, [first, second]).json() == {
        "accepted": 0,
        "duplicates": 2,
        "rejected": [],
    }
    assert count(database, Event, tenant.id) == events

    (ret,) = client.get(
        "/v1/returns", params={"order_id": order_id}, headers=tenant.headers
    ).json()["data"]
    assert (ret["status"], ret["source"]) == ("closed", "event")
    assert [(i["product_id"], i["quantity"], i["reason"]) for i in ret["items"]] == [
        ("SKU98765", 1, "other"),
        ("SKU-2", 2, "defective"),
    ]
    assert ret["refund"]["amount"] == 2500 + 2 * 1799
    order = client.get(f"/v1/orders/{order_id}", headers=tenant.headers).json()
    assert sorted((line["product_id"], line["returned_quantity"]) for line in order["lines"]) == [
        ("SKU-2", 2),
        ("SKU98765", 1),
    ]
    totals = client.get(f"/v1/customers/{customer}", headers=tenant.headers).json()["totals"]
    assert (totals["EUR"]["returns"], totals["EUR"]["items_returned"]) == (1, 3)
    assert totals["EUR"]["refunded"] == 2500 + 2 * 1799
    stats = client.get("/v1/products/SKU-2/stats", headers=tenant.headers).json()
    assert (stats["units_returned"], stats["refunded"]) == (2, {"EUR": 2 * 1799})
    phone = client.get("/v1/products/SKU98765/stats", headers=tenant.headers).json()
    assert (phone["units_returned"], phone["refunded"]) == (1, {"EUR": 2500})

    # An item of that return naming another order, customer or currency is not joined.
    strays = [
        second_item(unique("o"), return_id, customer, ootb_product_id="SKU-3"),
        second_item(order_id, return_id, unique("c"), ootb_product_id="SKU-4"),
        second_item(order_id, return_id, customer, ootb_product_id="SKU-5", ootb_currency="USD"),
    ]
    result = send(client, tenant.headers, strays).json()
    assert result["accepted"] == 0
    assert [(r["index"], r["message"].split(":")[0]) for r in result["rejected"]] == [
        (0, "context.ootb_order_id"),
        (1, "customer"),
        (2, "context.ootb_currency"),
    ]
    (ret,) = client.get(
        "/v1/returns", params={"order_id": order_id}, headers=tenant.headers
    ).json()["data"]
    assert len(ret["items"]) == 2
    rebuilt_alike(database, tenant.id)


def test_a_return_without_currency_takes_its_orders(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    """The audit's case: an order in USD, then its return naming no currency, is a USD
    return, not a EUR profile row with negative net revenue."""
    order_id, customer = unique("o"), unique("c")
    order = order_event(order_id, "SKU98765", "25.00", 1, customer, ootb_currency="USD")
    assert send(client, tenant.headers, order).json()["accepted"] == 1
    assert send(client, tenant.headers, return_event(order_id, unique("r"), customer)).json() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": [],
    }
    (ret,) = client.get(
        "/v1/returns", params={"order_id": order_id}, headers=tenant.headers
    ).json()["data"]
    assert ret["currency"] == "USD"
    totals = client.get(f"/v1/customers/{customer}", headers=tenant.headers).json()["totals"]
    assert set(totals) == {"USD"}
    assert (totals["USD"]["gross_revenue"], totals["USD"]["refunded"]) == (2500, 2500)
    rebuilt_alike(database, tenant.id)


def test_a_refund_without_goods_lowers_revenue_and_returns_no_units(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    order_id, customer = unique("o"), unique("c")
    assert (
        send(
            client, tenant.headers, order_event(order_id, "SKU98765", "25.00", 1, customer)
        ).json()["accepted"]
        == 1
    )
    refund = refund_event(order_id, unique("f"), customer)
    assert send(client, tenant.headers, refund).json() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": [],
    }
    assert send(client, tenant.headers, refund).json() == {
        "accepted": 0,
        "duplicates": 1,
        "rejected": [],
    }
    (ret,) = client.get(
        "/v1/returns", params={"order_id": order_id}, headers=tenant.headers
    ).json()["data"]
    assert (ret["status"], ret["source"]) == ("closed", "event")
    assert ret["refund"]["amount"] == 2500
    (item,) = ret["items"]
    assert (item["product_id"], item["quantity"], item["received_quantity"]) == ("SKU98765", 1, 0)
    assert (item["reason"], item["note"]) == ("other", "Item not as described")
    # The goods stay with the customer: nothing returned or claimed on the order...
    (line,) = client.get(f"/v1/orders/{order_id}", headers=tenant.headers).json()["lines"]
    assert (line["returned_quantity"], line["claimed_quantity"], line["returnable_quantity"]) == (
        0,
        0,
        1,
    )
    # ...but the money is back: the customer's net revenue and the product's refunded value.
    totals = client.get(f"/v1/customers/{customer}", headers=tenant.headers).json()["totals"]
    eur = totals["EUR"]
    assert (eur["gross_revenue"], eur["refunded"], eur["net_revenue"]) == (2500, 2500, 0)
    assert (eur["returns"], eur["items_returned"]) == (0, 0)
    stats = client.get("/v1/products/SKU98765/stats", headers=tenant.headers).json()
    assert (stats["units_sold"], stats["units_returned"], stats["refunded"]) == (
        1,
        0,
        {"EUR": 2500},
    )

    # A second product of the same refund, sent later, joins it.
    more = refund_event(
        order_id,
        refund["context"]["ootb_refund_id"],
        customer,
        ootb_product_id="SKU-2",
        ootb_refund_amount=orjson.Fragment(b"5"),
    )
    assert send(client, tenant.headers, more).json()["accepted"] == 1
    (ret,) = client.get(
        "/v1/returns", params={"order_id": order_id}, headers=tenant.headers
    ).json()["data"]
    assert ret["refund"]["amount"] == 3000
    assert [i["product_id"] for i in ret["items"]] == ["SKU98765", "SKU-2"]
    rebuilt_alike(database, tenant.id)

    # Bad refunds are rejected by index; a publishable key cannot send money back.
    no_amount = refund_event(order_id, unique("f"), customer)
    del no_amount["context"]["ootb_refund_amount"]
    too_precise = refund_event(
        order_id, unique("f"), customer, ootb_refund_amount=orjson.Fragment(b"1.001")
    )
    no_id = refund_event(order_id, unique("f"), customer)
    del no_id["context"]["ootb_refund_id"]
    result = send(client, tenant.headers, [no_amount, too_precise, no_id]).json()
    assert [(r["index"], r["message"].split(":")[0]) for r in result["rejected"]] == [
        (0, "context.ootb_refund_amount"),
        (1, "context.ootb_refund_amount"),
        (2, "context.ootb_refund_id"),
    ]
    reported = send(client, tenant.publishable_headers, refund_event(order_id, unique("f"), "x"))
    assert reported.json()["accepted"] == 0
    assert reported.json()["rejected"][0]["message"].startswith("event")


def test_errors_before_the_route_are_in_optimoves_shape_too(client: TestClient) -> None:
    for response in (
        client.get("/optimove/events"),
        client.delete("/optimove/events/batch"),
        client.post(
            "/optimove/events/batch",
            content=b"[" + b" " * (6 * 1024 * 1024) + b"]",
            headers={"Content-Type": "application/json"},
        ),
    ):
        assert response.status_code in (405, 413)
        body = response.json()
        assert set(body) == {"status", "error", "message"}
        assert body["status"] == response.status_code
