"""The lean reads (profiles, orders, a customer's orders, the CSV export) answer exactly what
their documented response models would render: same fields, order, numbers and text; and a
key revoked after the process cached it is refused by them at once."""

import csv
import io
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from returnstack.customers.schemas import CustomerProfileOut, OrderPage
from returnstack.orders.schemas import Order
from returnstack.tenants.service import create_key, find_tenant, revoke_key
from tests.conftest import DatabaseFixture, TenantFixture
from tests.factories import purchase, unique
from tests.returns.helpers import Api, line


@pytest.fixture
def api(client: TestClient, tenant: TenantFixture) -> Api:
    return Api(client, tenant)


def as_model_renders(model: type[BaseModel], body: bytes) -> None:
    """The body is byte for byte what FastAPI would write for it through `model`."""
    assert body == model.model_validate_json(body).model_dump_json().encode()


def test_profiles_render_as_their_response_model(api: Api) -> None:
    who = {"id": unique("kundé-✓"), "email": f"{unique('z')}@example.com"}
    # Whole seconds and microseconds; a currency with returns and one without (rates 0).
    first = purchase(
        customer=who,
        timestamp="2026-11-02T14:03:00Z",
        items=[line("1", quantity=3, unit_price=1799, name="Größe 42 ✓", variant_id=None)],
    )
    api.send(
        first,
        purchase(customer=who, timestamp="2026-11-03T09:00:00.120000Z", currency="USD"),
    )
    api.record_return(
        first,
        {"line_id": "1", "product_id": first["items"][0]["product_id"], "quantity": 1},
        refund={"amount": 1799, "method": "original_payment"},
    )
    guest = f"{unique('guest')}@example.com"
    api.send(purchase(customer={"email": guest}, timestamp="2026-11-04T10:00:00.000001Z"))

    by_id = api.get(f"/v1/customers/{who['id']}")
    assert by_id.status_code == 200, by_id.text
    as_model_renders(CustomerProfileOut, by_id.content)
    body = by_id.json()
    assert list(body) == list(CustomerProfileOut.model_fields)
    assert body["customer"]["id"] == who["id"]
    assert body["first_order_at"] == "2026-11-02T14:03:00Z"
    assert body["last_order_at"] == "2026-11-03T09:00:00.120000Z"
    assert body["totals"]["USD"]["return_rate_value"] == 0.0
    assert b'"return_rate_value":0.0' in by_id.content  # a float, never the integer 0
    assert body["totals"]["EUR"]["refunded"] == 1799

    by_email = api.get("/v1/customers/lookup", params={"email": who["email"].upper()})
    assert by_email.status_code == 200, by_email.text
    assert by_email.content == by_id.content

    as_guest = api.get("/v1/customers/lookup", params={"email": guest})
    assert as_guest.status_code == 200, as_guest.text
    as_model_renders(CustomerProfileOut, as_guest.content)
    assert as_guest.json()["customer"] == {"id": None, "email": guest, "emails": [guest]}
    assert as_guest.json()["last_return_at"] is None
    assert as_guest.json()["first_order_at"] == "2026-11-04T10:00:00.000001Z"


def test_orders_render_as_their_response_model(api: Api) -> None:
    who = {"id": unique("cust"), "email": f"{unique('u')}@example.com"}
    order = purchase(
        customer=who,
        timestamp="2026-11-02T14:03:00Z",
        channel="offline",
        store={"id": unique("store"), "name": "Zürich Hbf"},  # city and country unknown
        items=[
            line("1", quantity=2, unit_price=999_999_999_999, name="Ünïcødé ✓"),
            line("2", variant_id=None, category=None),
        ],
    )
    email_only = purchase(customer={"email": who["email"]}, timestamp="2026-11-03T10:00:00.500000Z")
    api.send(order, email_only)
    api.record_return(
        order,
        {"line_id": "1", "product_id": order["items"][0]["product_id"], "quantity": 1},
    )

    single = api.get(f"/v1/orders/{order['order_id']}")
    assert single.status_code == 200, single.text
    as_model_renders(Order, single.content)
    body = single.json()
    assert list(body) == list(Order.model_fields)
    assert body["store"] == {
        "id": order["store"]["id"],
        "name": "Zürich Hbf",
        "city": None,
        "country": None,
    }
    assert body["placed_at"] == "2026-11-02T14:03:00Z"
    first, second = body["lines"]
    assert first["unit_price"] == 999_999_999_999
    assert (first["claimed_quantity"], first["returned_quantity"]) == (1, 1)
    assert first["returnable_quantity"] == 1
    assert (second["variant_id"], second["category"]) == (None, None)

    page = api.get(f"/v1/customers/{who['id']}/orders")
    assert page.status_code == 200, page.text
    as_model_renders(OrderPage, page.content)
    data = page.json()["data"]
    assert [o["order_id"] for o in data] == [email_only["order_id"], order["order_id"]]
    assert data[0]["customer"] == {"id": None, "email": who["email"]}
    assert data[0]["store"] is None
    assert data[1] == body

    walked = api.get(f"/v1/customers/{who['id']}/orders", params={"limit": 1})
    cursor = walked.json()["next_cursor"]
    rest = api.get(f"/v1/customers/{who['id']}/orders", params={"limit": 1, "cursor": cursor})
    assert [o["order_id"] for o in walked.json()["data"] + rest.json()["data"]] == [
        email_only["order_id"],
        order["order_id"],
    ]
    assert rest.json()["next_cursor"] is None


def test_a_key_revoked_after_it_was_cached_is_refused_by_the_reads_at_once(
    client: TestClient, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    with database.db.transaction() as session:
        key = create_key(session, tenant=find_tenant(session, tenant.id), kind="secret")
        publishable = create_key(
            session, tenant=find_tenant(session, tenant.id), kind="publishable"
        )
    headers = {"Authorization": f"Bearer {key.key}"}
    public = {"Authorization": f"Bearer {publishable.key}"}
    reads = [
        "/v1/customers/nobody",
        "/v1/orders/none",
        "/v1/customers/nobody/orders",
        "/v1/products/none/stats",
    ]
    for path in reads:
        assert client.get(path, headers=headers).status_code == 404  # the key is cached now
        assert client.get(path, headers=public).status_code == 403
    too_short = "/v1/customers/lookup?email=ab"
    assert client.get(too_short, headers=headers).status_code == 400
    ranking = {"product_ids": ["p1", "p2"]}
    keyed = headers | {"Idempotency-Key": "rank-1"}
    for rank_headers in (headers, keyed):
        assert client.post("/v1/rankings", json=ranking, headers=rank_headers).status_code == 200
    assert client.post("/v1/rankings", json=ranking, headers=public).status_code == 403

    with database.db.transaction() as session:
        revoke_key(session, key_id=key.id)
        revoke_key(session, key_id=publishable.id)
    for path in [*reads, too_short]:
        response = client.get(path, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert client.get(path, headers=public).status_code == 401, path
    # A ranking is a lean read too (one with an Idempotency-Key also confirms the key),
    # and a body that fails validation does not hide the revocation.
    for rank_headers in (headers, keyed, headers | {"Idempotency-Key": "rank-2"}):
        response = client.post("/v1/rankings", json=ranking, headers=rank_headers)
        assert response.status_code == 401, response.text
    bad = client.post("/v1/rankings", json={"product_ids": "p1"}, headers=headers)
    assert bad.status_code == 401, bad.text


def test_the_csv_export_writes_what_the_json_rows_hold(
    client: TestClient, api: Api, tenant: TenantFixture
) -> None:
    api.send(
        purchase(
            customer={"id": "=cmd|' /C calc'!A0", "email": f"{unique('u')}@example.com"},
            timestamp="2026-11-02T14:03:00Z",
        ),
        purchase(
            customer={"email": f"+{unique('g')}@example.com"},
            timestamp="2026-11-03T09:00:00.000100Z",
        ),
        purchase(customer={"id": unique("ünï")}, currency="USD"),
    )
    rows = client.get("/v1/customers", headers=tenant.headers).json()["data"]
    response = client.get("/v1/customers", headers=tenant.headers | {"Accept": "text/csv"})
    assert response.status_code == 200
    cells = list(csv.reader(io.StringIO(response.text)))
    assert cells[0] == list(rows[0])

    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, list):
            return ";".join(value)
        if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
            return "'" + value
        return str(value)

    assert cells[1:] == [[cell(value) for value in row.values()] for row in rows]
    assert any(row[0] == "'=cmd|' /C calc'!A0" for row in cells)
    assert "2026-11-03T09:00:00.000100Z" in response.text
    assert "2026-11-02T14:03:00Z" in response.text
