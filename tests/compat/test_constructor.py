"""Constructor's behavioral actions (COMPAT.md "Constructor"), through the app on both
backends: the documented examples (one item at 34.99 and two at 17.99) land as orders,
returns and profiles; duplicates, bad input, credentials, trust and tenant isolation."""

import base64
import copy
import time
from typing import Any

import orjson
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select

from returnstack.models import Event, Order, ReportedEvent, Return
from tests.conftest import DatabaseFixture, TenantFixture
from tests.factories import unique

OFFLINE = "/v1/offline_behavioral_actions"


def example(order_id: str, ui: str) -> dict[str, Any]:
    """COMPAT.md's example batch: a purchase in store, then a partial return."""
    dt = int(time.time()) - 7 * 86400
    return {
        "behavioral_actions": [
            {
                "action": "purchase",
                "data": {
                    "_dt": dt,
                    "ui": ui,
                    "order_id": order_id,
                    "store_id": "store-42",
                    "lat": "40.7128",
                    "lon": "-74.0060",
                    "revenue": 70.97,
                    "items": [
                        {"item_id": "A1", "item_name": "Mug", "price": 34.99, "count": 1},
                        {"item_id": "B2", "variation_id": "B2-L", "price": 17.99, "count": 2},
                    ],
                },
            },
            {
                "action": "return",
                "data": {
                    "_dt": dt + 86400,
                    "ui": ui,
                    "order_id": order_id,
                    "items_returned": [{"item_id": "B2", "price": 17.99, "count": 1}],
                    "items_kept": [{"item_id": "A1", "price": 34.99, "count": 1}],
                    "refund": 17.99,
                    "return_shipping_cost": 0,
                    "return_reason": "wrong size",
                    "return_type": "partial",
                    "return_preference": "refund",
                    "return_drop_off": "store-42",
                },
            },
        ]
    }


def basic(token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{token}:".encode()).decode()}


def send(
    client: TestClient,
    tenant: TenantFixture,
    body: Any,
    *,
    headers: dict[str, str] | None = None,
    key: str | None = None,
) -> Response:
    # The body goes as raw JSON text so that 34.99 travels as written (no float round trip).
    return client.post(
        OFFLINE,
        params={"key": key if key is not None else tenant.publishable_key},
        content=body if isinstance(body, bytes) else orjson.dumps(body),
        headers={"Content-Type": "application/json"}
        | (basic(tenant.secret_key) if headers is None else headers),
    )


def count(database: DatabaseFixture, model: Any, tenant_id: str) -> int:
    with database.db.transaction(write=False) as session:
        return int(
            session.scalar(
                select(func.count()).select_from(model).where(model.tenant_id == tenant_id)
            )
            or 0
        )


def test_the_documented_example_lands_as_order_return_and_profile(
    client: TestClient, tenant: TenantFixture
) -> None:
    order_id, ui = unique("POS"), unique("u")
    response = send(client, tenant, example(order_id, ui))
    assert response.status_code == 204, response.text
    assert response.content == b""

    order = client.get(f"/v1/orders/{order_id}", headers=tenant.headers).json()
    assert order["channel"] == "offline"
    assert order["store"]["id"] == "store-42"
    assert order["currency"] == "EUR"  # the tenant's default: Constructor sends none
    assert order["customer"]["id"] == ui
    lines = {line["product_id"]: line for line in order["lines"]}
    assert (lines["A1"]["quantity"], lines["A1"]["unit_price"], lines["A1"]["name"]) == (
        1,
        3499,
        "Mug",
    )
    assert (lines["B2"]["quantity"], lines["B2"]["unit_price"]) == (2, 1799)
    assert lines["B2"]["variant_id"] == "B2-L"
    assert lines["B2"]["returned_quantity"] == 1
    assert lines["A1"]["returned_quantity"] == 0

    returns = client.get(
        "/v1/returns", params={"order_id": order_id}, headers=tenant.headers
    ).json()["data"]
    assert len(returns) == 1
    ret = returns[0]
    assert (ret["status"], ret["source"], ret["channel"]) == ("closed", "event", "offline")
    assert ret["store"]["id"] == "store-42"  # the drop-off place
    assert ret["refund"]["amount"] == 1799
    assert ret["refund"]["method"] == "original_payment"
    (item,) = ret["items"]
    assert (item["product_id"], item["quantity"], item["unit_price"]) == ("B2", 1, 1799)
    assert (item["reason"], item["note"]) == ("other", "wrong size")

    profile = client.get(f"/v1/customers/{ui}", headers=tenant.headers).json()
    totals = profile["totals"]["EUR"]
    assert totals["gross_revenue"] == 3499 + 2 * 1799
    assert totals["refunded"] == 1799
    assert totals["net_revenue"] == 3499 + 1799
    assert (totals["orders"], totals["items_purchased"], totals["items_returned"]) == (1, 3, 1)


def test_a_return_without_currency_takes_its_orders(
    client: TestClient, tenant: TenantFixture
) -> None:
    """The purchase in USD, its return (same batch) naming no currency: a USD return."""
    order_id, ui = unique("POS"), unique("u")
    body = example(order_id, ui)
    body["behavioral_actions"][0]["data"]["currency"] = "USD"
    assert send(client, tenant, body).status_code == 204
    (ret,) = client.get(
        "/v1/returns", params={"order_id": order_id}, headers=tenant.headers
    ).json()["data"]
    assert ret["currency"] == "USD"


def test_a_repeated_request_is_a_duplicate(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    body = example(unique("POS"), unique("u"))
    assert send(client, tenant, body).status_code == 204
    events, returns = count(database, Event, tenant.id), count(database, Return, tenant.id)
    assert send(client, tenant, body).status_code == 204
    assert count(database, Event, tenant.id) == events
    assert count(database, Return, tenant.id) == returns
    # The same order sent again in another batch, with the same lines: still one order.
    assert (
        send(client, tenant, {"behavioral_actions": body["behavioral_actions"][:1]}).status_code
        == 204
    )
    assert count(database, Event, tenant.id) == events


def test_a_second_purchase_of_an_order_adds_its_new_lines(
    client: TestClient, tenant: TenantFixture
) -> None:
    order_id = unique("POS")
    first = example(order_id, unique("u"))["behavioral_actions"][0]
    second = copy.deepcopy(first)
    second["data"]["items"] = [{"item_id": "C3", "price": "5.00", "count": 3}]
    assert send(client, tenant, {"behavioral_actions": [first]}).status_code == 204
    assert send(client, tenant, {"behavioral_actions": [second]}).status_code == 204
    order = client.get(f"/v1/orders/{order_id}", headers=tenant.headers).json()
    assert {line["product_id"]: line["unit_price"] for line in order["lines"]} == {
        "A1": 3499,
        "B2": 1799,
        "C3": 500,
    }


def test_dt_in_milliseconds_and_anonymous_purchases(
    client: TestClient, tenant: TenantFixture
) -> None:
    order_id = unique("POS")
    dt = int(time.time()) - 3600
    body = {
        "behavioral_actions": [
            {
                "action": "purchase",
                "data": {
                    "_dt": dt * 1000,
                    "order_id": order_id,
                    "items": [{"item_name": "Phone case", "price": 25, "count": 2}],
                },
            }
        ]
    }
    assert send(client, tenant, body).status_code == 204
    order = client.get(f"/v1/orders/{order_id}", headers=tenant.headers).json()
    assert order["customer"] is None
    assert order["placed_at"].startswith(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(dt)))
    assert order["store"]["id"] == "unknown"  # in store, but no store named
    assert order["lines"][0]["product_id"] == "Phone case"
    assert order["lines"][0]["unit_price"] == 2500


def test_the_secret_token_as_x_cnstrc_token(client: TestClient, tenant: TenantFixture) -> None:
    order_id = unique("POS")
    response = send(
        client,
        tenant,
        example(order_id, unique("u")),
        headers={"x-cnstrc-token": tenant.secret_key},
    )
    assert response.status_code == 204, response.text
    assert client.get(f"/v1/orders/{order_id}", headers=tenant.headers).status_code == 200


def test_credentials_that_are_wrong_are_401_in_constructors_shape(
    client: TestClient,
    tenant: TenantFixture,
    other_tenant: TenantFixture,
    database: DatabaseFixture,
) -> None:
    body = example(unique("POS"), unique("u"))
    attempts = [
        dict(headers=basic("sk_not_a_key")),
        dict(headers={"x-cnstrc-token": other_tenant.secret_key}),  # another tenant's secret
        dict(headers={"x-cnstrc-token": tenant.publishable_key}),  # not a secret
        dict(headers=basic(tenant.secret_key), key="pk_unknown"),
        dict(headers=basic(tenant.secret_key), key=""),
        dict(headers={"Authorization": "Basic !!!"}),
    ]
    for attempt in attempts:
        response = send(client, tenant, body, **attempt)  # type: ignore[arg-type]
        assert response.status_code == 401, (attempt, response.text)
        assert set(response.json()) == {"message"}
    assert count(database, Event, tenant.id) == 0


def test_bad_input_is_400_naming_the_field_and_writes_nothing(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    good = example(unique("POS"), unique("u"))
    purchase = good["behavioral_actions"][0]

    too_many = {"behavioral_actions": [copy.deepcopy(purchase) for _ in range(101)]}
    unknown_field = copy.deepcopy(good)
    unknown_field["behavioral_actions"][1]["data"]["colour"] = "red"
    unknown_item_field = copy.deepcopy(good)
    unknown_item_field["behavioral_actions"][0]["data"]["items"][0]["quantity"] = 1
    missing_dt = copy.deepcopy(good)
    del missing_dt["behavioral_actions"][1]["data"]["_dt"]
    too_precise = copy.deepcopy(good)
    too_precise["behavioral_actions"][0]["data"]["items"][1]["price"] = orjson.Fragment(b"17.999")
    unnamed_item = copy.deepcopy(good)
    unnamed_item["behavioral_actions"][0]["data"]["items"][0] = {"price": 1, "count": 1}
    future = copy.deepcopy(good)
    future["behavioral_actions"][0]["data"]["_dt"] = int(time.time()) + 86400
    zero_count = copy.deepcopy(good)
    zero_count["behavioral_actions"][0]["data"]["items"][0]["count"] = 0
    bad_action = copy.deepcopy(good)
    bad_action["behavioral_actions"][0]["action"] = "refund"
    items_on_a_return = copy.deepcopy(good)
    items_on_a_return["behavioral_actions"][1]["data"]["store_id"] = "store-42"

    cases = [
        (too_many, "behavioral_actions"),
        (unknown_field, "behavioral_actions[1].data.colour"),
        (unknown_item_field, "behavioral_actions[0].data.items[0].quantity"),
        (missing_dt, "behavioral_actions[1].data._dt"),
        (too_precise, "behavioral_actions[0].data.items[1].price"),
        (unnamed_item, "behavioral_actions[0].data.items[0]"),
        (future, "behavioral_actions[0].data._dt"),
        (zero_count, "behavioral_actions[0].data.items[0].count"),
        (bad_action, "behavioral_actions[0].action"),
        (items_on_a_return, "behavioral_actions[1].data.store_id"),
        ({"behavioral_actions": []}, "behavioral_actions"),
        ({"actions": []}, "actions"),
    ]
    for body, field in cases:
        response = send(client, tenant, body)
        assert response.status_code == 400, (field, response.text)
        message = response.json()["message"]
        assert message.startswith(field), (field, message)
    assert send(client, tenant, b"{not json").status_code == 400
    assert count(database, Event, tenant.id) == 0
    assert count(database, Order, tenant.id) == 0


def test_online_purchase_as_constructors_node_client_sends_it(
    client: TestClient, tenant: TenantFixture
) -> None:
    """constructorio-node's trackPurchase: a text/plain JSON body repeating the common
    parameters (_dt in milliseconds), the secret token as x-cnstrc-token."""
    order_id, ui = unique("ORDER"), unique("u")
    dt_ms = int(time.time() * 1000) - 60_000
    body = (
        '{"items":[{"item_id":"KMH876","variation_id":"KMH876-RED-L","item_name":"Red T-Shirt",'
        '"price":29.99,"count":1},{"item_id":"KMH140","price":19.99,"count":2}],'
        f'"order_id":"{order_id}","revenue":69.97,"key":"{tenant.publishable_key}",'
        f'"i":"6c73138f-c87b-49f0-872d-63b00ed0e395","s":1,"c":"cio-node-5.0.0","ui":"{ui}",'
        f'"_dt":{dt_ms},"beacon":true,"origin_referrer":"https://shop.example/cart",'
        '"analytics_tags":{"app":"web"},"ef-test1":"cell-a"}'
    )
    response = client.post(
        "/v2/behavioral_action/purchase",
        params={"key": tenant.publishable_key, "c": "cio-node-5.0.0", "section": "Products"},
        content=body,
        headers={"Content-Type": "text/plain", "x-cnstrc-token": tenant.secret_key},
    )
    assert response.status_code == 204, response.text
    order = client.get(f"/v1/orders/{order_id}", headers=tenant.headers).json()
    assert order["channel"] == "online"
    assert order["customer"]["id"] == ui
    assert [
        (line["product_id"], line["quantity"], line["unit_price"]) for line in order["lines"]
    ] == [
        ("KMH876", 1, 2999),
        ("KMH140", 2, 1999),
    ]


def test_online_return_takes_ui_and_dt_from_the_query_and_the_body_overrides(
    client: TestClient, tenant: TenantFixture
) -> None:
    order_id, ui = unique("ORDER"), unique("u")
    dt = int(time.time()) - 600
    response = client.post(
        "/v2/behavioral_action/return",
        params={
            "key": tenant.publishable_key,
            "ui": "someone-else",
            "_dt": str(dt),
            "i": "d",
            "s": "2",
        },
        content=orjson.dumps(
            {
                "ui": ui,
                "order_id": order_id,
                "items_returned": [{"item_id": "KMH140", "price": "19.99", "count": 1}],
                "return_reason": "defective",
            }
        ),
        headers=basic(tenant.secret_key),
    )
    assert response.status_code == 204, response.text
    (ret,) = client.get(
        "/v1/returns", params={"order_id": order_id}, headers=tenant.headers
    ).json()["data"]
    assert ret["channel"] == "online"
    assert ret["customer"]["id"] == ui
    assert ret["items"][0]["reason"] == "defective"
    assert ret["refund"]["amount"] == 1999  # price x count, no refund given


def test_a_return_without_ui_or_with_too_many_items_is_refused(
    client: TestClient, tenant: TenantFixture
) -> None:
    response = client.post(
        "/v2/behavioral_action/return",
        params={"key": tenant.publishable_key},
        content=orjson.dumps({"order_id": "o-1", "items_returned": [{"item_id": "A", "count": 1}]}),
        headers=basic(tenant.secret_key),
    )
    assert response.status_code == 400
    assert response.json()["message"].startswith("ui")
    response = client.post(
        "/v2/behavioral_action/purchase",
        params={"key": tenant.publishable_key},
        content=orjson.dumps({"order_id": "o-1", "items": [{"item_id": "A"}] * 101}),
        headers=basic(tenant.secret_key),
    )
    assert response.status_code == 400
    assert response.json()["message"].startswith("items")


def test_tenants_are_isolated(
    client: TestClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    order_id = unique("POS")
    assert send(client, tenant, example(order_id, unique("u"))).status_code == 204
    assert client.get(f"/v1/orders/{order_id}", headers=other_tenant.headers).status_code == 404
    # The same order id in the other tenant is an order of its own.
    assert send(client, other_tenant, example(order_id, unique("u"))).status_code == 204
    assert client.get(f"/v1/orders/{order_id}", headers=other_tenant.headers).status_code == 200


def test_the_key_alone_reports_and_never_makes_facts(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    """As Constructor's browser clients send it: no secret token, so the actions are
    reported signals (API.md section 2), never orders, returns or profiles."""
    order_id, ui = unique("POS"), unique("u")
    body = example(order_id, ui)
    response = send(client, tenant, body, headers={})
    assert response.status_code == 204, response.text
    assert count(database, ReportedEvent, tenant.id) == 2
    assert count(database, Event, tenant.id) == 0
    assert client.get(f"/v1/orders/{order_id}", headers=tenant.headers).status_code == 404
    assert client.get(f"/v1/customers/{ui}", headers=tenant.headers).status_code == 404
    assert (
        client.get("/v1/returns", params={"order_id": order_id}, headers=tenant.headers).json()[
            "data"
        ]
        == []
    )
    # A repeat is a duplicate among reported events; the same actions with the secret token
    # are verified facts all the same (ids are scoped by trust).
    assert send(client, tenant, body, headers={}).status_code == 204
    assert count(database, ReportedEvent, tenant.id) == 2
    assert send(client, tenant, body).status_code == 204
    assert client.get(f"/v1/orders/{order_id}", headers=tenant.headers).status_code == 200
    assert count(database, Event, tenant.id) == 2


def test_errors_before_the_route_are_in_constructors_shape_too(client: TestClient) -> None:
    for response in (
        client.get("/v1/offline_behavioral_actions"),
        client.get("/v2/behavioral_action/purchase"),
        client.post(
            "/v2/behavioral_action/return",
            content=b"{" + b" " * (6 * 1024 * 1024) + b"}",
            headers={"Content-Type": "text/plain"},
        ),
    ):
        assert response.status_code in (405, 413)
        assert set(response.json()) == {"message"}
