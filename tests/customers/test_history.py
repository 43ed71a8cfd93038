"""GET /v1/customers/{id}/orders and /returns (API.md 5): a customer's own orders and returns,
newest first, in cursor pages; another customer's or another tenant's never appear."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import TenantFixture
from tests.factories import unique
from tests.returns.helpers import Api, line, person, wanted


@pytest.fixture
def api(client: TestClient, tenant: TenantFixture) -> Api:
    return Api(client, tenant)


def pages(api: Api, path: str, limit: int) -> list[list[dict[str, Any]]]:
    """Every page of a list, following next_cursor."""
    found: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        response = api.get(path, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        found.append(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return found


def test_orders_are_the_customers_own_newest_first_in_pages(api: Api) -> None:
    ann = person()
    bought = [api.buy(line(), customer=ann, days_ago=days) for days in (5, 4, 3, 2, 1)]
    api.buy(line())  # someone else's order

    result = pages(api, f"/v1/customers/{ann['id']}/orders", limit=2)

    assert [len(page) for page in result] == [2, 2, 1]
    order_ids = [order["order_id"] for page in result for order in page]
    assert order_ids == [event["order_id"] for event in reversed(bought)]
    first = result[0][0]
    assert first["customer"]["id"] == ann["id"]
    assert first["lines"][0]["returnable_quantity"] == 1


def test_orders_include_those_made_as_a_guest_before_the_email_was_linked(api: Api) -> None:
    ann = person()
    as_guest = api.buy(line(), customer={"email": ann["email"]}, days_ago=3)
    signed_in = api.buy(line(), customer=ann, days_ago=1)

    response = api.get(f"/v1/customers/{ann['id']}/orders")

    assert response.status_code == 200, response.text
    assert {order["order_id"] for order in response.json()["data"]} == {
        as_guest["order_id"],
        signed_in["order_id"],
    }


def test_returns_are_the_customers_own_in_pages(api: Api) -> None:
    ann = person()
    opened = []
    for _ in range(3):
        order = api.buy(line(), customer=ann)
        opened.append(api.open(wanted(order), customer={"id": ann["id"]}))
    other = api.buy(line())
    api.open(wanted(other), customer={"id": other["customer"]["id"]})

    result = pages(api, f"/v1/customers/{ann['id']}/returns", limit=2)

    assert [len(page) for page in result] == [2, 1]
    assert [ret["id"] for page in result for ret in page] == [r["id"] for r in reversed(opened)]


def test_a_customer_with_nothing_has_empty_lists(api: Api) -> None:
    ann = person()
    order = api.buy(line(), customer=ann)
    assert order  # the customer exists, with one order and no returns

    response = api.get(f"/v1/customers/{ann['id']}/returns")

    assert response.status_code == 200, response.text
    assert response.json() == {"data": [], "next_cursor": None}


@pytest.mark.parametrize("kind", ["orders", "returns"])
def test_unknown_customer_is_404(api: Api, kind: str) -> None:
    response = api.get(f"/v1/customers/{unique('nobody')}/{kind}")

    assert response.status_code == 404, response.text
    assert response.json()["error"]["type"] == "not_found"


@pytest.mark.parametrize("kind", ["orders", "returns"])
def test_another_tenants_customer_is_404(
    api: Api, client: TestClient, other_tenant: TenantFixture, kind: str
) -> None:
    ann = person()
    order = api.buy(line(), customer=ann)
    api.open(wanted(order), customer={"id": ann["id"]})

    response = client.get(f"/v1/customers/{ann['id']}/{kind}", headers=other_tenant.headers)

    assert response.status_code == 404, response.text


@pytest.mark.parametrize("kind", ["orders", "returns"])
def test_bad_paging_is_400_naming_the_parameter(api: Api, kind: str) -> None:
    ann = person()
    api.buy(line(), customer=ann)

    too_big = api.get(f"/v1/customers/{ann['id']}/{kind}", params={"limit": 201})
    bad_cursor = api.get(f"/v1/customers/{ann['id']}/{kind}", params={"cursor": "not-a-cursor"})

    assert too_big.status_code == 400, too_big.text
    assert too_big.json()["error"]["details"][0]["path"] == "limit"
    assert bad_cursor.status_code == 400, bad_cursor.text
    assert bad_cursor.json()["error"]["details"][0]["path"] == "cursor"


@pytest.mark.parametrize("kind", ["orders", "returns"])
def test_publishable_key_is_403(
    api: Api, client: TestClient, tenant: TenantFixture, kind: str
) -> None:
    ann = person()
    api.buy(line(), customer=ann)

    response = client.get(f"/v1/customers/{ann['id']}/{kind}", headers=tenant.publishable_headers)

    assert response.status_code == 403, response.text
