"""GET /v1/orders/{order_id}: the order object and its per-line quantities (API.md 5, 11)."""

from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from tests.conftest import TenantFixture
from tests.factories import batch, item, purchase, return_event, unique

ORDER_KEYS = {"order_id", "customer", "channel", "store", "currency", "placed_at", "lines"}
LINE_KEYS = {
    "line_id",
    "product_id",
    "variant_id",
    "name",
    "category",
    "quantity",
    "unit_price",
    "claimed_quantity",
    "returned_quantity",
    "returnable_quantity",
}


def send(client: TestClient, tenant: TenantFixture, *events: dict[str, Any]) -> None:
    response = client.post("/v1/events", json=batch(*events), headers=tenant.headers)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(events)


def order(client: TestClient, tenant: TenantFixture, order_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/orders/{order_id}", headers=tenant.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def quantities(body: dict[str, Any]) -> dict[str, tuple[int, int, int, int]]:
    """line_id -> (quantity, claimed, returned, returnable)."""
    return {
        line["line_id"]: (
            line["quantity"],
            line["claimed_quantity"],
            line["returned_quantity"],
            line["returnable_quantity"],
        )
        for line in body["lines"]
    }


def returned(order_id: str, *items: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return return_event(order_id=order_id, items=list(items), **fields)


def test_order_object_has_exactly_the_documented_shape(
    client: TestClient, tenant: TenantFixture
) -> None:
    store = {"id": unique("store"), "name": "Berlin Mitte", "city": "Berlin", "country": "DE"}
    customer = {"id": unique("cust"), "email": "ann@example.com"}
    sale = purchase(
        timestamp="2026-02-01T08:15:30Z",
        channel="offline",
        store=store,
        customer=customer,
        currency="EUR",
        items=[
            {
                "line_id": "1",
                "product_id": "SKU-1",
                "variant_id": "SKU-1-M",
                "quantity": 2,
                "unit_price": 1799,
                "name": "Tee",
                "category": "Apparel/Tops",
                "url": "https://shop.example/p/sku-1",
            }
        ],
    )
    send(client, tenant, sale)
    body = order(client, tenant, sale["order_id"])
    assert set(body) == ORDER_KEYS
    assert body["order_id"] == sale["order_id"]
    assert body["customer"] == customer
    assert body["channel"] == "offline"
    assert body["store"] == store
    assert body["currency"] == "EUR"
    assert body["placed_at"] == "2026-02-01T08:15:30Z"
    [line] = body["lines"]
    assert set(line) == LINE_KEYS
    assert line == {
        "line_id": "1",
        "product_id": "SKU-1",
        "variant_id": "SKU-1-M",
        "name": "Tee",
        "category": "Apparel/Tops",
        "quantity": 2,
        "unit_price": 1799,
        "claimed_quantity": 0,
        "returned_quantity": 0,
        "returnable_quantity": 2,
    }


def test_optional_parts_are_null(client: TestClient, tenant: TenantFixture) -> None:
    sale = purchase(items=[{"product_id": "SKU-9", "quantity": 1, "unit_price": 100}])
    del sale["customer"]
    send(client, tenant, sale)
    body = order(client, tenant, sale["order_id"])
    assert body["customer"] is None
    assert body["store"] is None
    [line] = body["lines"]
    assert (line["variant_id"], line["name"], line["category"]) == (None, None, None)


def test_placed_at_is_returned_in_utc(client: TestClient, tenant: TenantFixture) -> None:
    sale = purchase(timestamp="2026-03-01T01:30:00+05:30")
    send(client, tenant, sale)
    assert order(client, tenant, sale["order_id"])["placed_at"] == "2026-02-28T20:00:00Z"


def test_line_id_defaults_to_the_position(client: TestClient, tenant: TenantFixture) -> None:
    items = [
        {k: v for k, v in item(product_id=f"P{n}").items() if k != "line_id"} for n in range(3)
    ]
    sale = purchase(items=items)
    send(client, tenant, sale)
    lines = order(client, tenant, sale["order_id"])["lines"]
    assert [(line["line_id"], line["product_id"]) for line in lines] == [
        ("1", "P0"),
        ("2", "P1"),
        ("3", "P2"),
    ]


def test_lines_keep_the_order_of_the_event(client: TestClient, tenant: TenantFixture) -> None:
    sale = purchase(items=[item(line_id=line_id) for line_id in ("z", "10", "a", "2")])
    send(client, tenant, sale)
    lines = order(client, tenant, sale["order_id"])["lines"]
    assert [line["line_id"] for line in lines] == ["z", "10", "a", "2"]


def test_recorded_returns_count_as_returned_and_claimed(
    client: TestClient, tenant: TenantFixture
) -> None:
    sale = purchase(
        items=[
            item(line_id="1", product_id="SKU-1", quantity=3),
            item(line_id="2", product_id="SKU-2", quantity=1),
        ]
    )
    send(client, tenant, sale)
    send(
        client,
        tenant,
        returned(sale["order_id"], {"line_id": "1", "product_id": "SKU-1", "quantity": 1}),
    )
    assert quantities(order(client, tenant, sale["order_id"])) == {
        "1": (3, 1, 1, 2),
        "2": (1, 0, 0, 1),
    }
    send(
        client,
        tenant,
        returned(
            sale["order_id"],
            {"line_id": "1", "product_id": "SKU-1", "quantity": 1},
            {"line_id": "2", "product_id": "SKU-2", "quantity": 1},
        ),
    )
    assert quantities(order(client, tenant, sale["order_id"])) == {
        "1": (3, 2, 2, 1),
        "2": (1, 1, 1, 0),
    }


def test_a_duplicate_return_event_is_not_counted_twice(
    client: TestClient, tenant: TenantFixture
) -> None:
    sale = purchase(items=[item(line_id="1", product_id="SKU-1", quantity=3)])
    ret = returned(sale["order_id"], {"product_id": "SKU-1", "quantity": 1})
    send(client, tenant, sale, ret)
    again = client.post("/v1/events", json=batch(ret), headers=tenant.headers)
    assert again.json()["duplicates"] == 1
    assert quantities(order(client, tenant, sale["order_id"])) == {"1": (3, 1, 1, 2)}


@pytest.mark.parametrize("same_request", [False, True], ids=["later_request", "same_request"])
def test_a_return_recorded_before_its_purchase_joins_the_order(
    client: TestClient, tenant: TenantFixture, same_request: bool
) -> None:
    order_id = unique("o")
    early = returned(
        order_id,
        {"product_id": "SKU-1", "variant_id": "SKU-1-L", "quantity": 1, "reason": "color"},
        timestamp="2026-03-05T10:00:00Z",
    )
    sale = purchase(
        order_id=order_id,
        timestamp="2026-03-01T10:00:00Z",
        items=[
            item(line_id="1", product_id="SKU-1", variant_id="SKU-1-M", quantity=1),
            item(line_id="2", product_id="SKU-1", variant_id="SKU-1-L", quantity=2),
        ],
    )
    if same_request:
        send(client, tenant, early, sale)
    else:
        send(client, tenant, early)
        unknown = client.get(f"/v1/orders/{order_id}", headers=tenant.headers)
        assert unknown.status_code == 404  # an order exists once a purchase names it
        send(client, tenant, sale)
    assert quantities(order(client, tenant, order_id)) == {
        "1": (1, 0, 0, 1),
        "2": (2, 1, 1, 1),
    }


def test_a_return_naming_only_the_product_fills_its_lines_in_order(
    client: TestClient, tenant: TenantFixture
) -> None:
    sale = purchase(
        items=[
            item(line_id="1", product_id="SKU-1", variant_id="M", quantity=2),
            item(line_id="2", product_id="SKU-2", quantity=5),
            item(line_id="3", product_id="SKU-1", variant_id="L", quantity=2),
        ]
    )
    send(client, tenant, sale)
    send(client, tenant, returned(sale["order_id"], {"product_id": "SKU-1", "quantity": 3}))
    assert quantities(order(client, tenant, sale["order_id"])) == {
        "1": (2, 2, 2, 0),
        "2": (5, 0, 0, 5),
        "3": (2, 1, 1, 1),
    }


def test_a_return_naming_a_variant_is_matched_to_that_variant(
    client: TestClient, tenant: TenantFixture
) -> None:
    sale = purchase(
        items=[
            item(line_id="1", product_id="SKU-1", variant_id="M", quantity=1),
            item(line_id="2", product_id="SKU-1", variant_id="L", quantity=1),
        ]
    )
    send(client, tenant, sale)
    send(
        client,
        tenant,
        returned(sale["order_id"], {"product_id": "SKU-1", "variant_id": "L", "quantity": 1}),
    )
    assert quantities(order(client, tenant, sale["order_id"])) == {
        "1": (1, 0, 0, 1),
        "2": (1, 1, 1, 0),
    }


def test_a_return_of_another_product_does_not_touch_the_order(
    client: TestClient, tenant: TenantFixture
) -> None:
    sale = purchase(items=[item(line_id="1", product_id="SKU-1", quantity=1)])
    send(client, tenant, sale)
    send(client, tenant, returned(sale["order_id"], {"product_id": "SKU-404", "quantity": 1}))
    assert quantities(order(client, tenant, sale["order_id"])) == {"1": (1, 0, 0, 1)}


def test_returnable_never_goes_below_zero(client: TestClient, tenant: TenantFixture) -> None:
    sale = purchase(items=[item(line_id="1", product_id="SKU-1", quantity=2)])
    send(client, tenant, sale)
    # A recorded return is a fact from another system: kept even when it exceeds the sale.
    send(
        client,
        tenant,
        returned(sale["order_id"], {"line_id": "1", "product_id": "SKU-1", "quantity": 2}),
        returned(sale["order_id"], {"product_id": "SKU-1", "quantity": 3}),
    )
    [line] = order(client, tenant, sale["order_id"])["lines"]
    assert line["returnable_quantity"] == 0
    assert line["claimed_quantity"] >= line["quantity"]
    assert line["returned_quantity"] == 5


def test_return_of_another_order_does_not_count(client: TestClient, tenant: TenantFixture) -> None:
    first = purchase(items=[item(line_id="1", product_id="SKU-1", quantity=1)])
    second = purchase(items=[item(line_id="1", product_id="SKU-1", quantity=1)])
    send(client, tenant, first, second)
    send(client, tenant, returned(first["order_id"], {"product_id": "SKU-1", "quantity": 1}))
    assert quantities(order(client, tenant, first["order_id"])) == {"1": (1, 1, 1, 0)}
    assert quantities(order(client, tenant, second["order_id"])) == {"1": (1, 0, 0, 1)}


def test_unknown_order_is_404_in_the_error_shape(client: TestClient, tenant: TenantFixture) -> None:
    response = client.get(f"/v1/orders/{unique('nope')}", headers=tenant.headers)
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["type"] == "not_found"
    assert error["message"]
    assert isinstance(error["details"], list)


def test_order_ids_with_url_special_characters(client: TestClient, tenant: TenantFixture) -> None:
    order_id = unique("#1001 ü?&x")
    sale = purchase(order_id=order_id)
    send(client, tenant, sale)
    response = client.get(f"/v1/orders/{quote(order_id, safe='')}", headers=tenant.headers)
    assert response.status_code == 200, response.text
    assert response.json()["order_id"] == order_id


def test_a_second_purchase_for_an_order_adds_new_lines_and_keeps_old_ones(
    client: TestClient, tenant: TenantFixture
) -> None:
    order_id = unique("o")
    send(client, tenant, purchase(order_id=order_id, items=[item(line_id="1", quantity=1)]))
    send(
        client,
        tenant,
        purchase(order_id=order_id, items=[item(line_id="1", quantity=7), item(line_id="2")]),
    )
    lines = order(client, tenant, order_id)["lines"]
    assert [(line["line_id"], line["quantity"]) for line in lines] == [("1", 1), ("2", 1)]


def test_returns_naming_a_line_and_naming_only_the_product_add_up(
    client: TestClient, tenant: TenantFixture
) -> None:
    sale = purchase(
        items=[
            item(line_id="1", product_id="SKU-1", quantity=2),
            item(line_id="2", product_id="SKU-1", quantity=2),
        ]
    )
    send(client, tenant, sale)
    send(
        client,
        tenant,
        returned(sale["order_id"], {"line_id": "1", "product_id": "SKU-1", "quantity": 1}),
        returned(sale["order_id"], {"product_id": "SKU-1", "quantity": 2}),
    )
    # 3 of the 4 units came back: line 1 took one by name, the other two fill line 1 first.
    assert quantities(order(client, tenant, sale["order_id"])) == {
        "1": (2, 2, 2, 0),
        "2": (2, 1, 1, 1),
    }
