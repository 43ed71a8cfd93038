"""Segmentation and saved segments through the API (API.md 5, 11): GET /v1/customers?where=,
sorting, cursors, CSV, /v1/segments. Profile rows are inserted directly, so these tests
depend only on the table, not on the code that fills it."""

import csv
import io
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from returnstack.customers import segments
from returnstack.kit.ids import new_id
from returnstack.models import Customer, CustomerProfile
from tests.conftest import DatabaseFixture, TenantFixture

COLUMNS = [
    "customer_id",
    "email",
    "currency",
    "orders",
    "items_purchased",
    "gross_revenue",
    "returns",
    "items_returned",
    "refunded",
    "net_revenue",
    "return_rate_items",
    "return_rate_value",
    "first_order_at",
    "last_order_at",
    "last_return_at",
    "flags",
]


def at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


def seed(database: DatabaseFixture, tenant_id: str, rows: list[dict[str, Any]]) -> None:
    """Profile rows: `customer_id` (+ `email` on the customer) or `guest` (an email)."""
    now = datetime.now(UTC)
    with database.db.transaction() as session:
        customers: dict[str, str | None] = {}
        for row in rows:
            row = dict(row)
            customer_id = row.pop("customer_id", None)
            guest = row.pop("guest", None)
            email = row.pop("email", None)
            if customer_id is not None:
                customers[customer_id] = email or customers.get(customer_id)
            session.add(
                CustomerProfile(
                    tenant_id=tenant_id,
                    owner=f"c:{customer_id}" if customer_id is not None else f"g:{guest}",
                    customer_id=customer_id,
                    guest_email=guest,
                    **{"currency": "EUR"} | row,
                )
            )
        for customer_id, email in customers.items():
            session.add(
                Customer(
                    tenant_id=tenant_id,
                    id=customer_id,
                    server_id=new_id("cus"),
                    email=email,
                    created_at=now,
                    updated_at=now,
                )
            )


PEOPLE: list[dict[str, Any]] = [
    {
        "customer_id": "alice",
        "email": "alice@example.com",
        "orders": 5,
        "items_purchased": 10,
        "gross_revenue": 50000,
        "returns": 1,
        "items_returned": 1,
        "refunded": 5000,
        "net_revenue": 45000,
        "return_rate_items": 0.1,
        "return_rate_value": 0.1,
        "online_orders": 5,
        "first_order_at": at("2026-01-10"),
        "last_order_at": at("2026-06-01T10:30:00"),
        "last_return_at": at("2026-06-10"),
    },
    {
        "customer_id": "alice",
        "currency": "USD",
        "orders": 1,
        "items_purchased": 1,
        "gross_revenue": 2000,
        "net_revenue": 2000,
        "first_order_at": at("2026-03-01T12:00:00"),
        "last_order_at": at("2026-03-01T12:00:00"),
    },
    {
        "customer_id": "bob",
        "email": "bob@example.com",
        "orders": 4,
        "items_purchased": 4,
        "gross_revenue": 20000,
        "returns": 3,
        "items_returned": 3,
        "refunded": 12000,
        "net_revenue": 8000,
        "return_rate_items": 0.75,
        "return_rate_value": 0.6,
        "first_order_at": at("2026-02-01"),
        "last_order_at": at("2026-04-01"),
        "last_return_at": at("2026-05-01"),
        "serial_returner": True,
    },
    {
        "customer_id": "carol",  # a customer known without an email
        "orders": 1,
        "items_purchased": 1,
        "gross_revenue": 1000,
        "net_revenue": 1000,
        "first_order_at": at("2026-05-05"),
        "last_order_at": at("2026-05-05"),
    },
    {
        "guest": "dave@example.com",
        "orders": 2,
        "items_purchased": 2,
        "gross_revenue": 3000,
        "returns": 1,
        "items_returned": 2,
        "refunded": 3000,
        "return_rate_items": 1.0,
        "return_rate_value": 1.0,
        "first_order_at": at("2026-03-03"),
        "last_order_at": at("2026-03-04"),
        "last_return_at": at("2026-04-01"),
    },
    {
        "customer_id": "erin",  # a refund for an order never seen
        "email": "erin@example.com",
        "currency": "GBP",
        "returns": 1,
        "items_returned": 1,
        "refunded": 500,
        "net_revenue": -500,
        "last_return_at": at("2026-02-02"),
    },
]
ALL = ["alice/EUR", "alice/USD", "bob/EUR", "carol/EUR", "erin/GBP", "dave@example.com/EUR"]


@pytest.fixture
def people(database: DatabaseFixture, tenant: TenantFixture, other_tenant: TenantFixture) -> None:
    seed(database, tenant.id, PEOPLE)
    # Another tenant, with the same ids and emails: never visible.
    seed(
        database,
        other_tenant.id,
        [
            {"customer_id": "alice", "email": "other@example.com", "net_revenue": 99999},
            {"customer_id": "zed", "email": "zed@example.com", "serial_returner": True},
            {"guest": "dave@example.com", "orders": 9},
        ],
    )


def key(row: dict[str, Any]) -> str:
    return f"{row['customer_id'] or row['email']}/{row['currency']}"


def get_rows(client: TestClient, tenant: TenantFixture, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/v1/customers", params=params, headers=tenant.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"data", "next_cursor"}
    data: list[dict[str, Any]] = body["data"]
    return data


def keys(client: TestClient, tenant: TenantFixture, **params: Any) -> list[str]:
    return [key(row) for row in get_rows(client, tenant, **params)]


def walk(client: TestClient, tenant: TenantFixture, path: str, **params: Any) -> list[str]:
    """Every page, following next_cursor."""
    seen: list[str] = []
    cursor = None
    for _ in range(1000):
        page_params = params | ({"cursor": cursor} if cursor else {})
        response = client.get(path, params=page_params, headers=tenant.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["data"]) <= params.get("limit", 50)
        seen += [key(row) for row in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("the cursor never ended")


def bad_request(response: Any, path: str) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    (detail,) = error["details"]
    assert detail["path"] == path
    result: dict[str, Any] = detail
    return result


@pytest.mark.usefixtures("people")
def test_rows_have_the_documented_shape(client: TestClient, tenant: TenantFixture) -> None:
    rows = get_rows(client, tenant)
    assert [key(row) for row in rows] == ALL  # default: customers by id, then guests
    for row in rows:
        assert list(row) == COLUMNS
    by_key = {key(row): row for row in rows}
    assert by_key["alice/EUR"] == {
        "customer_id": "alice",
        "email": "alice@example.com",
        "currency": "EUR",
        "orders": 5,
        "items_purchased": 10,
        "gross_revenue": 50000,
        "returns": 1,
        "items_returned": 1,
        "refunded": 5000,
        "net_revenue": 45000,
        "return_rate_items": 0.1,
        "return_rate_value": 0.1,
        "first_order_at": "2026-01-10T00:00:00Z",
        "last_order_at": "2026-06-01T10:30:00Z",
        "last_return_at": "2026-06-10T00:00:00Z",
        "flags": [],
    }
    assert by_key["bob/EUR"]["flags"] == ["serial_returner"]
    assert by_key["carol/EUR"]["email"] is None
    assert by_key["alice/USD"]["email"] == "alice@example.com"
    guest = by_key["dave@example.com/EUR"]
    assert (guest["customer_id"], guest["email"]) == (None, "dave@example.com")
    assert by_key["erin/GBP"]["first_order_at"] is None


@pytest.mark.usefixtures("people")
@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("", ALL),
        (
            'net_revenue >= 10000 and return_rate_value < 0.25 and currency = "EUR"',
            ["alice/EUR"],
        ),
        ('"serial_returner" in flags', ["bob/EUR"]),
        ('not "serial_returner" in flags', [k for k in ALL if k != "bob/EUR"]),
        ('"serial_returner" not in flags', [k for k in ALL if k != "bob/EUR"]),
        ('currency in ["usd", "GBP"]', ["alice/USD", "erin/GBP"]),
        ('currency not in ["EUR"]', ["alice/USD", "erin/GBP"]),
        ("customer_id = null", ["dave@example.com/EUR"]),
        ("customer_id != null", ALL[:-1]),
        ("email = null", ["carol/EUR"]),
        ('email = "ALICE@example.com"', ["alice/EUR", "alice/USD"]),
        ('email = "dave@example.com"', ["dave@example.com/EUR"]),
        # a missing email is not equal to anything
        ('email != "alice@example.com"', ["bob/EUR", "carol/EUR", "erin/GBP", ALL[-1]]),
        ('email < "c"', ["alice/EUR", "alice/USD", "bob/EUR"]),
        ('customer_id in ["alice", "bob"] and currency = "EUR"', ["alice/EUR", "bob/EUR"]),
        ('customer_id not in ["alice", "bob"]', ["carol/EUR", "erin/GBP", ALL[-1]]),
        ('last_return_at >= "2026-05-01"', ["alice/EUR", "bob/EUR"]),
        ('last_return_at > "2026-05-01"', ["alice/EUR"]),
        ('last_return_at < "2026-05-01T00:00:00+02:00"', ["erin/GBP", ALL[-1]]),
        ('last_return_at <= "2026-05-01T00:00:00Z"', ["bob/EUR", "erin/GBP", ALL[-1]]),
        # not: rows without a value are in (the comparison is false for them)
        (
            'not last_return_at < "2026-05-01"',
            ["alice/EUR", "alice/USD", "bob/EUR", "carol/EUR"],
        ),
        ('last_return_at != "2026-05-01"', [k for k in ALL if k != "bob/EUR"]),
        ("last_return_at = null", ["alice/USD", "carol/EUR"]),
        ('last_order_at = "2026-06-01T12:30:00+02:00"', ["alice/EUR"]),
        (
            'first_order_at >= "2026-03-01" and first_order_at < "2026-03-02"',
            ["alice/USD"],
        ),
        ("net_revenue < 0", ["erin/GBP"]),
        ("net_revenue = 0", [ALL[-1]]),
        ("return_rate_value >= 0.5", ["bob/EUR", ALL[-1]]),
        ("return_rate_items > 0.5 and return_rate_items < 1", ["bob/EUR"]),
        ("orders in [0, 2]", ["erin/GBP", ALL[-1]]),
        ("orders in []", []),
        # precedence: and binds tighter than or
        (
            "orders > 1 or returns = 1 and refunded = 500",
            ["alice/EUR", "bob/EUR", "erin/GBP", ALL[-1]],
        ),
        ("(orders > 1 or returns = 1) and refunded = 500", ["erin/GBP"]),
        ("NOT (orders > 1 OR returns > 0)", ["alice/USD", "carol/EUR"]),
    ],
)
def test_where_selects_exactly_the_expected_rows(
    client: TestClient, tenant: TenantFixture, where: str, expected: list[str]
) -> None:
    assert keys(client, tenant, where=where) == expected


@pytest.mark.usefixtures("people")
@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        (None, ALL),
        ("customer_id", ALL),
        ("-customer_id", ["erin/GBP", "carol/EUR", "bob/EUR", "alice/EUR", "alice/USD", ALL[-1]]),
        ("-net_revenue", ["alice/EUR", "bob/EUR", "alice/USD", "carol/EUR", ALL[-1], "erin/GBP"]),
        ("net_revenue", ["erin/GBP", ALL[-1], "carol/EUR", "alice/USD", "bob/EUR", "alice/EUR"]),
        # nulls last in both directions, ties by customer then currency
        (
            "last_return_at",
            ["erin/GBP", ALL[-1], "bob/EUR", "alice/EUR", "alice/USD", "carol/EUR"],
        ),
        (
            "-last_return_at",
            ["alice/EUR", "bob/EUR", ALL[-1], "erin/GBP", "alice/USD", "carol/EUR"],
        ),
        ("email", ["alice/EUR", "alice/USD", "bob/EUR", ALL[-1], "erin/GBP", "carol/EUR"]),
        ("-email", ["erin/GBP", ALL[-1], "bob/EUR", "alice/EUR", "alice/USD", "carol/EUR"]),
        ("-currency", ["alice/USD", "erin/GBP", "alice/EUR", "bob/EUR", "carol/EUR", ALL[-1]]),
        (
            "-first_order_at",
            ["carol/EUR", ALL[-1], "alice/USD", "bob/EUR", "alice/EUR", "erin/GBP"],
        ),
        (
            "-return_rate_value",
            [ALL[-1], "bob/EUR", "alice/EUR", "alice/USD", "carol/EUR", "erin/GBP"],
        ),
    ],
)
def test_sort(
    client: TestClient, tenant: TenantFixture, sort: str | None, expected: list[str]
) -> None:
    params = {"sort": sort} if sort else {}
    assert keys(client, tenant, **params) == expected
    # Walking pages of 1 or 4 gives the same order.
    assert walk(client, tenant, "/v1/customers", limit=1, **params) == expected
    assert walk(client, tenant, "/v1/customers", limit=4, **params) == expected


def test_pagination_walks_every_row_exactly_once_despite_ties_and_nulls(
    client: TestClient, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    rows = []
    for number in range(30):
        customer = f"c{number:02d}"
        for currency in ("EUR", "USD") if number % 4 == 0 else ("EUR",):
            rows.append(
                {
                    "customer_id": customer,
                    "email": f"{'ab'[number % 2]}@example.com" if number % 3 else None,
                    "currency": currency,
                    "orders": number % 3,  # many ties
                    "return_rate_value": (number % 4) / 4,
                    "last_return_at": at(f"2026-01-0{1 + number % 2}") if number % 5 else None,
                }
            )
    rows += [{"guest": f"g{number}@example.com", "orders": number % 3} for number in range(7)]
    seed(database, tenant.id, rows)
    everything = keys(client, tenant, limit=200)
    assert len(everything) == len(rows) == 45
    assert sorted(everything) == sorted(set(everything))
    for sort in (
        "orders",
        "-orders",
        "last_return_at",
        "-last_return_at",
        "email",
        "-email",
        "return_rate_value",
        "-customer_id",
        "currency",
    ):
        full = keys(client, tenant, limit=200, sort=sort)
        assert sorted(full) == sorted(everything)
        for limit in (1, 2, 7):
            assert walk(client, tenant, "/v1/customers", limit=limit, sort=sort) == full, sort
    # With a filter too.
    where = "orders >= 1 and last_return_at != null"
    full = keys(client, tenant, limit=200, sort="-last_return_at", where=where)
    assert 0 < len(full) < len(everything)
    paged = walk(client, tenant, "/v1/customers", limit=3, sort="-last_return_at", where=where)
    assert paged == full


@pytest.mark.usefixtures("people")
def test_cursor_errors(client: TestClient, tenant: TenantFixture) -> None:
    response = client.get("/v1/customers", params={"limit": 2}, headers=tenant.headers)
    cursor = response.json()["next_cursor"]
    assert cursor
    for bad in ("nope", "e30", cursor[:-3], "WyJ4Il0"):
        response = client.get("/v1/customers", params={"cursor": bad}, headers=tenant.headers)
        bad_request(response, "cursor")
    other_sort = client.get(
        "/v1/customers", params={"cursor": cursor, "sort": "-orders"}, headers=tenant.headers
    )
    assert "sort" in bad_request(other_sort, "cursor")["message"]


@pytest.mark.usefixtures("people")
def test_csv_streams_every_matching_row(
    client: TestClient, tenant: TenantFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segments, "CSV_BATCH", 2)  # several batches
    headers = tenant.headers | {"Accept": "text/csv"}
    response = client.get("/v1/customers", params={"limit": 1}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    lines = response.text.splitlines()
    assert lines[0] == ",".join(COLUMNS)
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert [f"{r['customer_id'] or r['email']}/{r['currency']}" for r in table] == ALL
    assert table[0] == {
        "customer_id": "alice",
        "email": "alice@example.com",
        "currency": "EUR",
        "orders": "5",
        "items_purchased": "10",
        "gross_revenue": "50000",
        "returns": "1",
        "items_returned": "1",
        "refunded": "5000",
        "net_revenue": "45000",
        "return_rate_items": "0.1",
        "return_rate_value": "0.1",
        "first_order_at": "2026-01-10T00:00:00Z",
        "last_order_at": "2026-06-01T10:30:00Z",
        "last_return_at": "2026-06-10T00:00:00Z",
        "flags": "",
    }
    assert table[2]["flags"] == "serial_returner"
    assert table[3]["email"] == ""  # carol: none
    assert table[5]["customer_id"] == ""  # the guest

    filtered = client.get(
        "/v1/customers",
        params={"where": 'currency = "EUR"', "sort": "-net_revenue"},
        headers=headers,
    )
    ids = [row["customer_id"] or row["email"] for row in csv.DictReader(io.StringIO(filtered.text))]
    assert ids == ["alice", "bob", "carol", "dave@example.com"]

    nothing = client.get("/v1/customers", params={"where": "orders > 1000"}, headers=headers)
    assert nothing.text.splitlines() == [",".join(COLUMNS)]

    # JSON unless CSV is asked for (and preferred).
    for accept in ("application/json", "*/*", "application/json, text/csv;q=0.5"):
        response = client.get("/v1/customers", headers=tenant.headers | {"Accept": accept})
        assert response.headers["content-type"] == "application/json", accept


@pytest.mark.usefixtures("people")
def test_csv_errors_come_before_the_stream(client: TestClient, tenant: TenantFixture) -> None:
    headers = tenant.headers | {"Accept": "text/csv"}
    response = client.get("/v1/customers", params={"where": "orders >"}, headers=headers)
    assert bad_request(response, "where")["position"] == 8
    response = client.get("/v1/customers", params={"sort": "flags"}, headers=headers)
    bad_request(response, "sort")


@pytest.mark.usefixtures("people")
@pytest.mark.parametrize(
    ("where", "position", "message"),
    [
        ('colour = "red"', 0, "unknown field 'colour'"),
        ("orders > 1 and", 14, "unexpected end of the expression"),
        ("orders > 1 2", 11, "unexpected '2'"),
        ('orders = "5"', 9, "orders is a number"),
        ('last_return_at > "soon"', 17, "RFC 3339"),
        ('"vip" in flags', 0, "unknown flag"),
        ("orders @ 1", 7, "unexpected character"),
        ("items_returned > returns", 17, "unexpected 'returns'"),  # values only, not fields
        ("orders = 1 " + " " * 4000, 4000, "longer than"),
    ],
)
def test_malformed_where_is_400_with_the_position(
    client: TestClient, tenant: TenantFixture, where: str, position: int, message: str
) -> None:
    response = client.get("/v1/customers", params={"where": where}, headers=tenant.headers)
    detail = bad_request(response, "where")
    assert detail["position"] == position
    assert message in detail["message"]


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"sort": "flags"}, "sort"),
        ({"sort": "owner"}, "sort"),
        ({"sort": "--orders"}, "sort"),
    ],
)
def test_bad_parameters_are_400(
    client: TestClient, tenant: TenantFixture, params: dict[str, Any], path: str
) -> None:
    for url in ("/v1/customers", "/v1/segments"):
        if url == "/v1/segments" and "sort" in params:
            continue
        response = client.get(url, params=params, headers=tenant.headers)
        assert response.status_code == 400, response.text
        assert [d["path"] for d in response.json()["error"]["details"]] == [path]


def test_limits_at_the_edges(
    client: TestClient, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    seed(database, tenant.id, [{"customer_id": f"c{n:03d}"} for n in range(205)])
    assert len(keys(client, tenant)) == 50
    assert len(keys(client, tenant, limit=1)) == 1
    assert len(keys(client, tenant, limit=200)) == 200
    assert len(walk(client, tenant, "/v1/customers", limit=200)) == 205


def create(client: TestClient, tenant: TenantFixture, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/segments", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


@pytest.mark.usefixtures("people")
def test_saved_segments(client: TestClient, tenant: TenantFixture) -> None:
    where = 'currency = "EUR" and net_revenue >= 1000'
    segment = create(client, tenant, name="Good EUR customers", where=where)
    assert set(segment) == {"id", "name", "where", "created_at", "updated_at"}
    assert segment["id"].startswith("seg_")
    assert (segment["name"], segment["where"]) == ("Good EUR customers", where)
    assert segment["created_at"].endswith("Z")
    assert segment["updated_at"] == segment["created_at"]

    response = client.get(f"/v1/segments/{segment['id']}", headers=tenant.headers)
    assert response.status_code == 200, response.text
    assert response.json() == segment | {"customer_count": 3}

    members = client.get(f"/v1/segments/{segment['id']}/customers", headers=tenant.headers)
    assert members.status_code == 200, members.text
    assert [key(row) for row in members.json()["data"]] == ["alice/EUR", "bob/EUR", "carol/EUR"]
    assert members.json()["data"] == get_rows(client, tenant, where=where)
    path = f"/v1/segments/{segment['id']}/customers"
    assert walk(client, tenant, path, limit=1, sort="-net_revenue") == [
        "alice/EUR",
        "bob/EUR",
        "carol/EUR",
    ]
    as_csv = client.get(path, headers=tenant.headers | {"Accept": "text/csv"})
    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert [row["customer_id"] for row in csv.DictReader(io.StringIO(as_csv.text))] == [
        "alice",
        "bob",
        "carol",
    ]

    everyone = create(client, tenant, name="Everyone", where="")
    flagged = create(client, tenant, name="Serial", where='"serial_returner" in flags')
    count = client.get(f"/v1/segments/{everyone['id']}", headers=tenant.headers).json()
    assert count["customer_count"] == len(ALL)
    count = client.get(f"/v1/segments/{flagged['id']}", headers=tenant.headers).json()
    assert count["customer_count"] == 1

    listed = client.get("/v1/segments", headers=tenant.headers).json()
    assert [s["id"] for s in listed["data"]] == [flagged["id"], everyone["id"], segment["id"]]
    assert listed["data"][2] == segment
    assert listed["next_cursor"] is None
    ids = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/segments", params=params, headers=tenant.headers).json()
        ids += [s["id"] for s in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert ids == [s["id"] for s in listed["data"]]

    deleted = client.delete(f"/v1/segments/{everyone['id']}", headers=tenant.headers)
    assert deleted.status_code == 204
    assert deleted.content == b""
    for method, url in (
        ("GET", f"/v1/segments/{everyone['id']}"),
        ("GET", f"/v1/segments/{everyone['id']}/customers"),
        ("DELETE", f"/v1/segments/{everyone['id']}"),
        ("GET", "/v1/segments/seg_nope"),
        ("GET", "/v1/segments/" + "x" * 300),
        ("DELETE", "/v1/segments/seg_%00"),
    ):
        response = client.request(method, url, headers=tenant.headers)
        assert response.status_code == 404, (method, url)
        assert response.json()["error"]["type"] == "not_found"
    listed = client.get("/v1/segments", headers=tenant.headers).json()
    assert [s["id"] for s in listed["data"]] == [flagged["id"], segment["id"]]


def test_a_segment_follows_the_data(
    client: TestClient, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    segment = create(client, tenant, name="Big", where="orders >= 3")
    url = f"/v1/segments/{segment['id']}"
    assert client.get(url, headers=tenant.headers).json()["customer_count"] == 0
    seed(database, tenant.id, [{"customer_id": "x", "orders": 3}, {"customer_id": "y"}])
    assert client.get(url, headers=tenant.headers).json()["customer_count"] == 1
    rows = client.get(f"{url}/customers", headers=tenant.headers).json()["data"]
    assert [row["customer_id"] for row in rows] == ["x"]


@pytest.mark.parametrize(
    ("body", "status", "path"),
    [
        ({"name": "Bad", "where": "orders >"}, 400, "where"),
        ({"name": "Bad", "where": "nope = 1"}, 400, "where"),
        ({"name": "Bad", "where": "orders = 1 " + " " * 4000}, 400, "where"),
        ({"name": "", "where": "orders > 1"}, 422, "name"),
        ({"name": "   ", "where": "orders > 1"}, 422, "name"),
        ({"name": "x" * 201, "where": "orders > 1"}, 422, "name"),
        ({"name": "a\x00b", "where": "orders > 1"}, 422, "name"),
        ({"where": "orders > 1"}, 422, "name"),
        ({"name": "No where"}, 422, "where"),
        ({"name": "Number", "where": 5}, 422, "where"),
        ({"name": "Extra", "where": "", "colour": "red"}, 422, "colour"),
    ],
)
def test_segment_validation(
    client: TestClient, tenant: TenantFixture, body: dict[str, Any], status: int, path: str
) -> None:
    response = client.post("/v1/segments", json=body, headers=tenant.headers)
    assert response.status_code == status, response.text
    details = response.json()["error"]["details"]
    assert [d["path"] for d in details] == [path]
    if body.get("where") == "orders >":
        assert details[0]["position"] == 8
    assert client.get("/v1/segments", headers=tenant.headers).json()["data"] == []


def test_segment_names_at_the_edges(client: TestClient, tenant: TenantFixture) -> None:
    assert create(client, tenant, name="x" * 200, where="")["name"] == "x" * 200
    assert create(client, tenant, name="  Ünïcode ✓ ", where="")["name"] == "Ünïcode ✓"


def test_create_segment_is_idempotent(client: TestClient, tenant: TenantFixture) -> None:
    headers = tenant.headers | {"Idempotency-Key": "seg-1"}
    body = {"name": "Once", "where": "orders > 1"}
    first = client.post("/v1/segments", json=body, headers=headers)
    again = client.post("/v1/segments", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    other = client.post("/v1/segments", json=body | {"name": "Twice"}, headers=headers)
    assert other.status_code == 409
    listed = client.get("/v1/segments", headers=tenant.headers).json()["data"]
    assert [s["id"] for s in listed] == [first.json()["id"]]


def test_secret_key_only(client: TestClient, tenant: TenantFixture) -> None:
    segment = create(client, tenant, name="S", where="")
    calls = [
        ("GET", "/v1/customers", None),
        ("GET", "/v1/customers?where=orders%20%3E%201&limit=500", None),
        ("POST", "/v1/segments", {"name": "P", "where": ""}),
        ("GET", "/v1/segments", None),
        ("GET", f"/v1/segments/{segment['id']}", None),
        ("GET", f"/v1/segments/{segment['id']}/customers", None),
        ("DELETE", f"/v1/segments/{segment['id']}", None),
    ]
    for method, url, body in calls:
        response = client.request(method, url, json=body, headers=tenant.publishable_headers)
        assert response.status_code == 403, (method, url, response.text)
        assert response.json()["error"]["type"] == "forbidden"
        response = client.request(method, url, json=body)
        assert response.status_code == 401, (method, url)
    assert client.get(f"/v1/segments/{segment['id']}", headers=tenant.headers).status_code == 200


@pytest.mark.usefixtures("people")
def test_other_tenants_never_appear(
    client: TestClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    assert keys(client, tenant, limit=200) == ALL
    assert keys(client, tenant, where='customer_id = "zed" or email = "other@example.com"') == []
    assert keys(client, tenant, where='"serial_returner" in flags') == ["bob/EUR"]
    assert keys(client, other_tenant) == ["alice/EUR", "zed/EUR", "dave@example.com/EUR"]
    dave = get_rows(client, tenant, where='email = "dave@example.com"')
    assert [row["orders"] for row in dave] == [2]
    as_csv = client.get("/v1/customers", headers=tenant.headers | {"Accept": "text/csv"})
    assert "zed" not in as_csv.text
    assert "other@example.com" not in as_csv.text
    assert len(as_csv.text.splitlines()) == 1 + len(ALL)

    mine = create(client, tenant, name="Mine", where="")
    theirs = create(client, other_tenant, name="Theirs", where="")
    assert client.get(f"/v1/segments/{mine['id']}", headers=tenant.headers).json()[
        "customer_count"
    ] == len(ALL)
    assert (
        client.get(f"/v1/segments/{theirs['id']}", headers=other_tenant.headers).json()[
            "customer_count"
        ]
        == 3
    )
    for method, url in (
        ("GET", f"/v1/segments/{theirs['id']}"),
        ("GET", f"/v1/segments/{theirs['id']}/customers"),
        ("DELETE", f"/v1/segments/{theirs['id']}"),
    ):
        assert client.request(method, url, headers=tenant.headers).status_code == 404
    assert [s["id"] for s in client.get("/v1/segments", headers=tenant.headers).json()["data"]] == [
        mine["id"]
    ]
    assert (
        client.get(f"/v1/segments/{theirs['id']}", headers=other_tenant.headers).status_code == 200
    )


def test_openapi_documents_the_endpoints(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    listing = paths["/v1/customers"]["get"]
    assert {"where", "sort", "limit", "cursor"} <= {p["name"] for p in listing["parameters"]}
    assert "text/csv" in listing["responses"]["200"]["content"]
    assert "application/json" in listing["responses"]["200"]["content"]
    assert {"400", "401", "403"} <= set(listing["responses"])
    assert "201" in paths["/v1/segments"]["post"]["responses"]
    assert "204" in paths["/v1/segments/{segment_id}"]["delete"]["responses"]
    assert "404" in paths["/v1/segments/{segment_id}/customers"]["get"]["responses"]
