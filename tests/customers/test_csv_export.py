"""The CSV export (GET /v1/customers with Accept: text/csv) byte for byte: awkward cells
(commas, quotes, line breaks, unicode, formulas, nulls, negative and zero money, rates of
every form Python writes) come out exactly as `csv.writer` writes the rows, on both
databases, however the database streams them."""

import csv
import io
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from returnstack.customers import segments
from tests.conftest import DatabaseFixture, TenantFixture
from tests.customers.test_segments import COLUMNS, seed


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


MOST = 2**53 - 1  # the largest stored sum

# Customer ids start with distinct letters: their order is the same in any collation.
AWKWARD: list[dict[str, Any]] = [
    {
        "customer_id": "a,1",
        "email": 'first "q" @example.com',
        "orders": 3,
        "items_purchased": 4,
        "first_order_at": at("2026-01-10T00:00:00"),
        "last_order_at": at("2026-01-10T00:00:00.000001"),
    },
    {
        "customer_id": 'b"2',
        "email": "two\r\nlines\n@example.com",
        "orders": 1,
        "items_purchased": 3,
        "gross_revenue": 1000,
        "returns": 2,
        "items_returned": 1,
        "refunded": 2500,
        "net_revenue": -1500,
        "return_rate_items": 1 / 3,
        "return_rate_value": 2.5,
        "first_order_at": at("2026-02-01T08:00:00.5"),
        "last_order_at": at("2026-02-01T08:00:00.5"),
        "last_return_at": at("2026-02-03T00:00:00"),
        "serial_returner": True,
    },
    {
        "customer_id": "c=cmd",  # not a formula: only the first character counts
        "currency": "USD",
        "gross_revenue": 0,
        "refunded": MOST,
        "net_revenue": -MOST,
        "return_rate_items": 1.0,
        "return_rate_value": 1e-05,
    },
    {
        "customer_id": "dÜñî✓ 東京",
        "email": "-x@example.com",
        "return_rate_items": 1e16,
        "return_rate_value": 0.0001,
    },
    {
        "customer_id": "dÜñî✓ 東京",
        "currency": "USD",
        "gross_revenue": MOST,
        "net_revenue": MOST,
        "return_rate_items": 1e15,
        "return_rate_value": 1234567890123456.8,
    },
    {"guest": '+g,"h"@example.com', "orders": 1, "return_rate_value": 0.75},
]

EXPECTED = (
    "customer_id,email,currency,orders,items_purchased,gross_revenue,returns,items_returned,"
    "refunded,net_revenue,return_rate_items,return_rate_value,first_order_at,last_order_at,"
    "last_return_at,flags\r\n"
    '"a,1","first ""q"" @example.com",EUR,3,4,0,0,0,0,0,0.0,0.0,2026-01-10T00:00:00Z,'
    "2026-01-10T00:00:00.000001Z,,\r\n"
    '"b""2","two\r\nlines\n@example.com",EUR,1,3,1000,2,1,2500,-1500,0.3333333333333333,2.5,'
    "2026-02-01T08:00:00.500000Z,2026-02-01T08:00:00.500000Z,2026-02-03T00:00:00Z,"
    "serial_returner\r\n"
    "c=cmd,,USD,0,0,0,0,0,9007199254740991,-9007199254740991,1.0,1e-05,,,,\r\n"
    "dÜñî✓ 東京,'-x@example.com,EUR,0,0,0,0,0,0,0,1e+16,0.0001,,,,\r\n"
    "dÜñî✓ 東京,'-x@example.com,USD,0,0,9007199254740991,0,0,0,9007199254740991,"
    "1000000000000000.0,1234567890123456.8,,,,\r\n"
    ',"\'+g,""h""@example.com",EUR,1,0,0,0,0,0,0,0.0,0.75,,,,\r\n'
)


def export(client: TestClient, tenant: TenantFixture, **params: str) -> bytes:
    response = client.get(
        "/v1/customers", params=params, headers=tenant.headers | {"Accept": "text/csv"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    return response.content


def written(rows: list[list[Any]]) -> bytes:
    """What `csv.writer` writes for these rows (with the header)."""
    buffer = io.StringIO()
    csv.writer(buffer).writerows([COLUMNS, *rows])
    return buffer.getvalue().encode()


@pytest.fixture
def awkward(database: DatabaseFixture, tenant: TenantFixture, other_tenant: TenantFixture) -> None:
    seed(database, tenant.id, AWKWARD)
    seed(database, other_tenant.id, [{"customer_id": "a,1", "email": "other@example.com"}])


@pytest.mark.usefixtures("awkward")
@pytest.mark.parametrize("chunk", [segments.CSV_CHUNK, 1])
def test_the_export_is_exactly_what_csv_writer_writes(
    client: TestClient, tenant: TenantFixture, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(segments, "CSV_CHUNK", chunk)  # one chunk, or one a row
    monkeypatch.setattr(segments, "CSV_BATCH", 2)  # SQLite: several fetches
    body = export(client, tenant)
    assert body == EXPECTED.encode()
    # The same, as the csv module reads it back and writes it again.
    cells = list(csv.reader(io.StringIO(body.decode(), newline="")))
    assert written(cells[1:]) == body
    assert cells[1][:2] == ["a,1", 'first "q" @example.com']
    assert cells[2][:2] == ['b"2', "two\r\nlines\n@example.com"]
    assert cells[6][:2] == ["", '\'+g,"h"@example.com']


LINES = EXPECTED.encode().split(b"\r\n")
HEADER, A = LINES[:2]
B = LINES[2] + b"\r\n" + LINES[3]  # a line break inside a cell
C, D_EUR, D_USD, G = LINES[4:8]


@pytest.mark.usefixtures("awkward")
def test_a_sorted_and_filtered_export_keeps_the_format(
    client: TestClient, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    body = export(client, tenant, where="net_revenue < 0 or orders > 0", sort="-net_revenue")
    # Net revenue descending, ties by owner: a and g (0), b (-1500), c (-MOST).
    assert body == b"\r\n".join([HEADER, A, G, B, C, b""])
    seed(database, tenant.id, [{"customer_id": "=e", "email": "@e@x", "return_rate_items": 0.1}])
    body = export(client, tenant, where='customer_id = "=e"')
    assert body == HEADER + b"\r\n'=e,'@e@x,EUR,0,0,0,0,0,0,0,0.1,0.0,,,,\r\n"
    assert export(client, tenant, where="orders > 100") == HEADER + b"\r\n"
