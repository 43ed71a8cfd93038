"""Emporix's Returns Service (COMPAT.md "Emporix returns") through the app on both backends:
a return of several orders, Emporix's object shape (decimal unit prices), the list with
pageSize, pageNumber, sort, q and X-Total-Count, JSON Patch with the version, delete,
errors in Emporix's shape, keys and tenant isolation."""

from typing import Any

from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import event

from tests.conftest import DatabaseFixture, TenantFixture
from tests.factories import batch, item, purchase, unique


def buy(
    client: TestClient, tenant: TenantFixture, customer: dict[str, str], *items: dict[str, Any]
) -> str:
    event = purchase(customer=customer, items=list(items))
    response = client.post("/v1/events", json=batch(event), headers=tenant.headers)
    assert response.status_code == 200, response.text
    return str(event["order_id"])


def base(tenant: TenantFixture, by: str = "name") -> str:
    return f"/return/{tenant.name if by == 'name' else tenant.id}/returns"


def create(client: TestClient, tenant: TenantFixture, body: dict[str, Any]) -> Response:
    return client.post(base(tenant), json=body, headers=tenant.headers)


def two_orders(client: TestClient, tenant: TenantFixture) -> tuple[dict[str, str], str, str]:
    customer = {"id": unique("cust"), "email": f"{unique('u')}@example.com"}
    first = buy(
        client, tenant, customer, item(line_id="1", product_id="A1", name="Mug", unit_price=3499)
    )
    second = buy(
        client,
        tenant,
        customer,
        item(line_id="1", product_id="B2", name="Tee", unit_price=1799, quantity=2),
    )
    return customer, first, second


def request_body(customer: dict[str, str], first: str, second: str) -> dict[str, Any]:
    return {
        "orders": [
            {
                "id": first,
                "items": [
                    {
                        "id": "1",
                        "quantity": 1,
                        "reason": {"code": "defective", "details": "cracked"},
                    }
                ],
            },
            {"id": second, "items": [{"id": "1", "quantity": 2}]},
        ],
        "reason": {"code": "too big", "details": "ordered two sizes"},
        "requestor": {"customerId": customer["id"]},
        "mixins": {"returnLabel": {"carrier": "DHL"}},
    }


def test_create_a_return_of_two_orders_and_read_it_in_emporix_shape(
    client: TestClient, tenant: TenantFixture
) -> None:
    customer, first, second = two_orders(client, tenant)
    response = create(client, tenant, request_body(customer, first, second))
    assert response.status_code == 201, response.text
    return_id = response.json()["id"]
    assert set(response.json()) == {"id"}

    response = client.get(f"{base(tenant, 'id')}/{return_id}", headers=tenant.headers)
    assert response.status_code == 200, response.text
    view = response.json()
    assert (view["approvalStatus"], view["received"]) == ("PENDING", False)
    assert view["requestor"] == {
        "customerId": customer["id"],
        "email": customer["email"],
        "anonymous": False,
    }
    assert view["mixins"] == {"returnLabel": {"carrier": "DHL"}}
    assert view["metadata"]["version"] == 1
    assert view["metadata"]["createdAt"].endswith("Z")
    orders = {order["id"]: order["items"] for order in view["orders"]}
    (mug,) = orders[first]
    assert (mug["name"], mug["quantity"]) == ("Mug", 1)
    assert mug["unitPrice"] == {"value": 34.99, "currency": "EUR"}
    assert b'"value":34.99' in response.content  # written as a decimal, exactly
    assert mug["reason"] == {"code": "defective", "details": "cracked"}
    (tees,) = orders[second]
    assert tees["total"] == {"value": 35.98, "currency": "EUR"}
    # No reason on the item: the return's; a code the tenant does not know is `other`.
    assert tees["reason"] == {"code": "other", "details": "too big: ordered two sizes"}
    assert view["total"]["value"] == 70.97

    # The same return through /v1/returns: one path for each fact.
    native = client.get(f"/v1/returns/{return_id}", headers=tenant.headers).json()
    assert native["status"] == "requested"
    assert native["source"] == "api"
    order = client.get(f"/v1/orders/{second}", headers=tenant.headers).json()
    assert order["lines"][0]["claimed_quantity"] == 2


def test_ineligible_items_and_bad_bodies_are_refused_in_emporix_shape(
    client: TestClient, tenant: TenantFixture
) -> None:
    customer, first, second = two_orders(client, tenant)
    too_many = request_body(customer, first, second)
    too_many["orders"][1]["items"][0]["quantity"] = 3
    response = create(client, tenant, too_many)
    assert response.status_code == 422
    body = response.json()
    assert set(body) == {"code", "status", "message"}
    assert body["code"] == 422
    assert "orders[1].items[0]" in body["message"]  # Emporix's path, not the flat list's
    assert "quantity_exceeds_returnable" in body["message"]
    for bad, field in (
        ({"orders": []}, "orders"),
        (
            {"orders": [{"id": first, "items": [{"id": "1", "quantity": 0}]}]},
            "orders[0].items[0].quantity",
        ),
        ({"orders": [{"id": first, "items": [{"id": "1", "quantity": 1}]}], "color": 1}, "color"),
    ):
        response = create(client, tenant, bad)
        assert response.status_code == 400, response.text
        assert response.json()["message"].startswith(field)
    assert client.get(base(tenant), headers=tenant.headers).json() == []


def test_list_pages_sorts_filters_and_counts(client: TestClient, tenant: TenantFixture) -> None:
    ids = []
    customers = []
    for _ in range(3):
        customer, first, second = two_orders(client, tenant)
        customers.append(customer)
        ids.append(create(client, tenant, request_body(customer, first, second)).json()["id"])
    # Approve the first one.
    patch = [{"op": "replace", "path": "/approvalStatus", "value": "APPROVED"}]
    assert (
        client.patch(f"{base(tenant)}/{ids[0]}", json=patch, headers=tenant.headers).status_code
        == 204
    )

    page = client.get(
        base(tenant), params={"pageSize": 2}, headers=tenant.headers | {"X-Total-Count": "true"}
    )
    assert page.status_code == 200
    assert page.headers["X-Total-Count"] == "3"
    assert [r["id"] for r in page.json()] == ids[::-1][:2]  # newest first
    second_page = client.get(
        base(tenant), params={"pageSize": 2, "pageNumber": 2}, headers=tenant.headers
    )
    assert [r["id"] for r in second_page.json()] == [ids[0]]
    assert "X-Total-Count" not in second_page.headers
    ascending = client.get(
        base(tenant), params={"sort": "metadata.createdAt:asc"}, headers=tenant.headers
    )
    assert [r["id"] for r in ascending.json()] == ids

    def query(q: str) -> list[str]:
        response = client.get(base(tenant), params={"q": q}, headers=tenant.headers)
        assert response.status_code == 200, response.text
        return [r["id"] for r in response.json()]

    assert query("approvalStatus:APPROVED") == [ids[0]]
    assert query("approvalStatus:PENDING") == ids[:0:-1]
    assert query(f"requestor.customerId:{customers[1]['id']}") == [ids[1]]
    assert sorted(
        query(f"requestor.customerId:({customers[1]['id']},{customers[2]['id']})")
    ) == sorted(ids[1:])
    assert query(f"approvalStatus:PENDING requestor.customerId:{customers[0]['id']}") == []
    assert len(query("metadata.createdAt:>=2020-01-01")) == 3
    assert query("metadata.createdAt:<2020-01-01") == []
    assert query("received:false") == ids[::-1]

    for params, field in (
        ({"pageSize": 61}, "pageSize"),
        ({"pageSize": 0}, "pageSize"),
        ({"pageNumber": 0}, "pageNumber"),
        ({"sort": "colour:desc"}, "sort"),
        ({"q": "colour:red"}, "q"),
        ({"q": "approvalStatus:MAYBE"}, "q"),
        ({"q": "metadata.createdAt:>=yesterday"}, "q"),
    ):
        response = client.get(base(tenant), params=params, headers=tenant.headers)
        assert response.status_code == 400, (params, response.text)
        assert response.json()["message"].startswith(field), response.json()


def test_json_patch_with_the_version_moves_the_lifecycle(
    client: TestClient, tenant: TenantFixture
) -> None:
    customer, first, second = two_orders(client, tenant)
    return_id = create(client, tenant, request_body(customer, first, second)).json()["id"]
    url = f"{base(tenant)}/{return_id}"

    def version() -> int:
        return int(client.get(url, headers=tenant.headers).json()["metadata"]["version"])

    edit = [
        {"op": "replace", "path": "/metadata/version", "value": 1},
        {"op": "add", "path": "/mixins/note", "value": "fragile"},
        {"op": "replace", "path": "/reason", "value": {"details": "customer called"}},
    ]
    assert client.patch(url, json=edit, headers=tenant.headers).status_code == 204
    view = client.get(url, headers=tenant.headers).json()
    assert view["mixins"] == {"returnLabel": {"carrier": "DHL"}, "note": "fragile"}
    assert view["reason"] == {"details": "customer called"}

    stale = [
        {"op": "replace", "path": "/metadata/version", "value": 1},
        {"op": "replace", "path": "/approvalStatus", "value": "APPROVED"},
    ]
    response = client.patch(url, json=stale, headers=tenant.headers)
    assert response.status_code == 409
    assert response.json()["message"].startswith("metadata.version")
    assert client.get(url, headers=tenant.headers).json()["approvalStatus"] == "PENDING"

    current = version()
    approve_and_receive = [
        {"op": "replace", "path": "/metadata/version", "value": current},
        {"op": "replace", "path": "/approvalStatus", "value": "APPROVED"},
        {"op": "replace", "path": "/received", "value": True},
    ]
    assert client.patch(url, json=approve_and_receive, headers=tenant.headers).status_code == 204
    view = client.get(url, headers=tenant.headers).json()
    assert (view["approvalStatus"], view["received"]) == ("APPROVED", True)
    native = client.get(f"/v1/returns/{return_id}", headers=tenant.headers).json()
    assert native["status"] == "received"
    assert [i["received_quantity"] for i in native["items"]] == [1, 2]

    # If-Match carries the version too; a received return can be neither cancelled nor un-received.
    response = client.patch(
        url,
        json=[{"op": "replace", "path": "/approvalStatus", "value": "CLOSED"}],
        headers=tenant.headers | {"If-Match": f'"{version() - 1}"'},
    )
    assert response.status_code == 409
    response = client.patch(
        url, json=[{"op": "replace", "path": "/received", "value": False}], headers=tenant.headers
    )
    assert response.status_code == 409
    assert (
        client.patch(
            url, json=[{"op": "move", "path": "/x", "from": "/y"}], headers=tenant.headers
        ).status_code
        == 400
    )
    assert (
        client.patch(
            url, json=[{"op": "replace", "path": "/colour", "value": 1}], headers=tenant.headers
        ).status_code
        == 400
    )


def test_reject_and_delete(client: TestClient, tenant: TenantFixture) -> None:
    customer, first, second = two_orders(client, tenant)
    rejected = create(client, tenant, request_body(customer, first, second)).json()["id"]
    patch = [{"op": "replace", "path": "/approvalStatus", "value": "REJECTED"}]
    assert (
        client.patch(f"{base(tenant)}/{rejected}", json=patch, headers=tenant.headers).status_code
        == 204
    )
    assert (
        client.get(f"/v1/returns/{rejected}", headers=tenant.headers).json()["status"] == "declined"
    )
    # A rejected return claims nothing: the same items can be returned again.
    again = create(client, tenant, request_body(customer, first, second))
    assert again.status_code == 201, again.text
    response = client.delete(f"{base(tenant)}/{again.json()['id']}", headers=tenant.headers)
    assert response.status_code == 204
    view = client.get(f"{base(tenant)}/{again.json()['id']}", headers=tenant.headers).json()
    assert view["approvalStatus"] == "CLOSED"
    assert (
        client.get(f"/v1/returns/{again.json()['id']}", headers=tenant.headers).json()["status"]
        == "cancelled"
    )
    missing = client.get(f"{base(tenant)}/ret_nothing", headers=tenant.headers)
    assert missing.status_code == 404
    assert missing.json()["code"] == 404


def test_keys_and_tenants(
    client: TestClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    customer, first, second = two_orders(client, tenant)
    body = request_body(customer, first, second)
    assert client.post(base(tenant), json=body).status_code == 401
    assert (
        client.post(base(tenant), json=body, headers={"Authorization": "Bearer sk_x"}).status_code
        == 401
    )
    assert (
        client.post(base(tenant), json=body, headers=tenant.publishable_headers).status_code == 403
    )
    # Another tenant's key on this tenant's path, and this tenant's key on another's path.
    assert client.post(base(tenant), json=body, headers=other_tenant.headers).status_code == 403
    assert client.get(base(other_tenant), headers=tenant.headers).status_code == 403
    return_id = create(client, tenant, body).json()["id"]
    assert (
        client.get(f"{base(other_tenant)}/{return_id}", headers=other_tenant.headers).status_code
        == 404
    )
    assert client.get(base(other_tenant), headers=other_tenant.headers).json() == []
    # Another tenant's orders are not found from here.
    response = client.post(base(other_tenant), json=body, headers=other_tenant.headers)
    assert response.status_code == 422
    assert "order_not_found" in response.json()["message"]


def test_odd_values_never_break_the_view(client: TestClient, tenant: TenantFixture) -> None:
    customer, first, second = two_orders(client, tenant)
    return_id = create(client, tenant, request_body(customer, first, second)).json()["id"]
    # The same return edited through /v1/returns: its metadata is anyone's text.
    response = client.patch(
        f"/v1/returns/{return_id}",
        json={"metadata": {"emporix_mixins": "not json"}},
        headers=tenant.headers,
    )
    assert response.status_code == 200, response.text
    view = client.get(f"{base(tenant)}/{return_id}", headers=tenant.headers)
    assert view.status_code == 200
    assert view.json()["mixins"] == {}
    for q in ("metadata.createdAt:<9999-12-31T23:59:59-14:00", "metadata.modifiedAt:>0001-01-01"):
        response = client.get(base(tenant), params={"q": q}, headers=tenant.headers)
        assert response.status_code in (200, 400), response.text


def test_a_patch_refused_at_a_later_step_changes_nothing(
    client: TestClient, tenant: TenantFixture
) -> None:
    """A JSON Patch is all or nothing: a refused later operation leaves the earlier ones
    unwritten (no approval, no webhook message), as the 4xx says."""
    customer, first, second = two_orders(client, tenant)
    return_id = create(client, tenant, request_body(customer, first, second)).json()["id"]
    url = f"{base(tenant)}/{return_id}"
    patch = [
        {"op": "replace", "path": "/approvalStatus", "value": "APPROVED"},
        {"op": "replace", "path": "/received", "value": "not a boolean"},
    ]

    response = client.patch(url, json=patch, headers=tenant.headers)

    assert response.status_code == 400, response.text
    native = client.get(f"/v1/returns/{return_id}", headers=tenant.headers).json()
    assert native["status"] == "requested"
    assert [entry["action"] for entry in native["history"]] == ["request"]


def test_a_page_reads_its_line_names_in_one_query(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    """No query per return (N+1): a page of returns loads the names of its lines at once."""
    for _ in range(4):
        customer, first, second = two_orders(client, tenant)
        assert create(client, tenant, request_body(customer, first, second)).status_code == 201
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(database.db.engine, "before_cursor_execute", seen)
    try:
        page = client.get(base(tenant), params={"pageSize": 60}, headers=tenant.headers)
    finally:
        event.remove(database.db.engine, "before_cursor_execute", seen)
    assert page.status_code == 200
    assert len(page.json()) == 4
    assert {item["name"] for r in page.json() for o in r["orders"] for item in o["items"]} == {
        "Mug",
        "Tee",
    }
    assert len([sql for sql in statements if "FROM order_lines" in sql]) == 1


def test_errors_before_the_route_are_in_emporix_shape_too(
    client: TestClient, tenant: TenantFixture
) -> None:
    for response in (
        client.put(base(tenant), headers=tenant.headers),
        client.post(
            base(tenant),
            content=b"{" + b" " * (6 * 1024 * 1024) + b"}",
            headers=tenant.headers | {"Content-Type": "application/json"},
        ),
    ):
        assert response.status_code in (405, 413)
        body = response.json()
        assert set(body) == {"code", "status", "message"}
        assert body["code"] == response.status_code


def test_mixins_with_a_number_json_cannot_keep_are_400_in_emporix_shape(
    client: TestClient, tenant: TenantFixture
) -> None:
    customer, first, second = two_orders(client, tenant)
    body = request_body(customer, first, second) | {"mixins": {"label": {"weight": 2**70}}}
    response = create(client, tenant, body)
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith("mixins")
    return_id = create(client, tenant, request_body(customer, first, second)).json()["id"]
    response = client.patch(
        f"{base(tenant)}/{return_id}",
        json=[{"op": "add", "path": "/mixins/weight", "value": -(2**70)}],
        headers=tenant.headers,
    )
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"code", "status", "message"}


def test_a_value_the_database_refuses_is_answered_in_emporix_shape(
    client: TestClient, tenant: TenantFixture
) -> None:
    # PostgreSQL refuses a NUL character in text (SQLite simply finds nothing).
    response = client.get(base(tenant), params={"q": "orders.id:a\x00b"}, headers=tenant.headers)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert set(response.json()) == {"code", "status", "message"}


def test_removing_the_status_or_the_receipt_names_the_operation(
    client: TestClient, tenant: TenantFixture
) -> None:
    customer, first, second = two_orders(client, tenant)
    return_id = create(client, tenant, request_body(customer, first, second)).json()["id"]
    for path in ("/approvalStatus", "/received"):
        response = client.patch(
            f"{base(tenant)}/{return_id}",
            json=[{"op": "remove", "path": path}],
            headers=tenant.headers,
        )
        assert response.status_code == 400, response.text
        assert response.json()["message"].startswith("[0].op:"), response.text
