"""`returnstack import FILE`: JSONL and CSV, streamed in batches, bad lines reported with their
numbers, re-runs idempotent. Runs the installed console script on SQLite and PostgreSQL;
the imported data is checked through the in-process app, which shares the database."""

import csv
import json
import tracemalloc
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from returnstack.config import Settings
from returnstack.events.importer import CSV_COLUMNS, import_events, open_counted
from returnstack.kit import migrate
from returnstack.kit.db import Database
from returnstack.tenants.service import create_tenant
from tests.conftest import DatabaseFixture, TenantFixture
from tests.e2e import CliResult, run_cli
from tests.factories import item, purchase, return_event, unique


def import_file(database: DatabaseFixture, path: Path, tenant: str, *options: str) -> CliResult:
    return run_cli(
        "import",
        str(path),
        "--tenant",
        tenant,
        *options,
        database_url=database.url,
        cwd=path.parent,
    )


def import_json(database: DatabaseFixture, path: Path, tenant: str) -> dict[str, Any]:
    result = import_file(database, path, tenant, "--json")
    assert result.returncode == 0, str(result)
    report: dict[str, Any] = result.json()
    return report


def write_jsonl(path: Path, lines: Iterable[dict[str, Any] | str]) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for line in lines:
            out.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    return path


def write_csv(path: Path, columns: list[str], rows: Iterable[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def order(client: TestClient, tenant: TenantFixture, order_id: str) -> dict[str, Any] | None:
    response = client.get(f"/v1/orders/{order_id}", headers=tenant.headers)
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def lines_by_id(body: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    assert body is not None
    return {line["line_id"]: line for line in body["lines"]}


# --- JSONL --------------------------------------------------------------------------------


def test_import_jsonl_records_purchases_and_returns(
    database: DatabaseFixture,
    tmp_path: Path,
    tenant: TenantFixture,
    other_tenant: TenantFixture,
    client: TestClient,
) -> None:
    email = f"{unique('ann')}@example.com"
    bought = purchase(
        customer={"id": unique("cust"), "email": email},
        items=[
            item(line_id="1", product_id="SKU-A", quantity=2, unit_price=1799),
            item(line_id="2", product_id="SKU-B", quantity=1, unit_price=500),
        ],
    )
    other = purchase(currency=None)  # the tenant's default currency applies
    returned = return_event(
        order_id=bought["order_id"],
        customer={"email": email},
        items=[{"product_id": "SKU-A", "quantity": 1, "reason": "size_too_small"}],
    )
    path = write_jsonl(tmp_path / "events.jsonl", [bought, other, returned])

    report = import_json(database, path, tenant.name)
    assert report["tenant_id"] == tenant.id
    assert (report["events"], report["accepted"], report["duplicates"]) == (3, 3, 0)
    assert report["rejected"] == 0
    assert report["errors"] == []

    lines = lines_by_id(order(client, tenant, bought["order_id"]))
    assert (lines["1"]["quantity"], lines["1"]["unit_price"]) == (2, 1799)
    assert lines["1"]["returned_quantity"] == 1
    assert lines["2"]["returned_quantity"] == 0
    other_order = order(client, tenant, other["order_id"])
    assert other_order is not None
    assert other_order["currency"] == tenant.default_currency
    assert order(client, other_tenant, bought["order_id"]) is None  # only the named tenant

    # A re-run imports nothing twice.
    again = import_json(database, path, tenant.id)
    assert (again["events"], again["accepted"], again["duplicates"]) == (3, 0, 3)
    lines = lines_by_id(order(client, tenant, bought["order_id"]))
    assert (lines["1"]["quantity"], lines["1"]["returned_quantity"]) == (2, 1)


def test_a_bad_jsonl_line_is_reported_by_number_and_the_rest_imported(
    database: DatabaseFixture, tmp_path: Path, tenant: TenantFixture, client: TestClient
) -> None:
    good = [purchase() for _ in range(4)]
    invalid = purchase(items=[item(quantity=0)])
    lines: list[dict[str, Any] | str] = [
        good[0],  # line 1
        good[1],  # line 2
        "",  # line 3: blank lines are skipped but still counted
        '{"type": "purchase", "id": ',  # line 4: not JSON
        good[2],  # line 5
        invalid,  # line 6: JSON, but not a valid event
        good[3],  # line 7
    ]
    path = write_jsonl(tmp_path / "mixed.jsonl", lines)

    human = import_file(database, path, tenant.id)
    assert human.returncode == 0, str(human)  # some lines were imported
    assert "line 4" in human.stderr, str(human)
    assert "line 6" in human.stderr, str(human)
    assert "quantity" in human.stderr, str(human)
    for number in (1, 2, 3, 5, 7):
        assert f"line {number}:" not in human.stderr, str(human)
    for event in good:
        assert order(client, tenant, event["order_id"]) is not None
    assert order(client, tenant, invalid["order_id"]) is None

    # Re-running the same file: the good lines are all duplicates, the bad ones again errors.
    report = import_json(database, path, tenant.id)
    assert (report["accepted"], report["duplicates"], report["rejected"]) == (0, 4, 2)
    assert [error["line"] for error in report["errors"]] == [4, 6]
    paths = [detail["path"] for detail in report["errors"][1]["errors"]]
    assert any("quantity" in path for path in paths), report


def test_invalid_utf8_is_a_bad_line_not_a_crash(
    database: DatabaseFixture, tmp_path: Path, tenant: TenantFixture, client: TestClient
) -> None:
    before, after = purchase(), purchase()
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(
        (json.dumps(before) + "\n").encode()
        + json.dumps(purchase(items=[item(name="Caf\u00e9")]), ensure_ascii=False).encode("latin-1")
        + b"\n"
        + (json.dumps(after) + "\n").encode()
    )
    result = import_file(database, path, tenant.id, "--json")
    assert "Traceback" not in result.stderr, str(result)
    assert result.returncode == 0, str(result)
    report = result.json()
    assert (report["accepted"], report["rejected"]) == (2, 1)
    assert [error["line"] for error in report["errors"]] == [2]
    assert order(client, tenant, before["order_id"]) is not None
    assert order(client, tenant, after["order_id"]) is not None


# --- CSV ----------------------------------------------------------------------------------

CSV_HEADER = [
    "type", "id", "timestamp", "channel", "order_id", "currency",
    "customer_id", "customer_email", "store_id", "store_name", "store_city", "store_country",
    "line_id", "product_id", "variant_id", "quantity", "unit_price", "name", "category",
    "reason", "note", "refund_amount", "refund_method",
]  # fmt: skip


def csv_purchase_rows(event: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per item, the event's fields repeated on each."""
    head = {
        "type": event["type"],
        "id": event["id"],
        "timestamp": event["timestamp"],
        "channel": event["channel"],
        "order_id": event["order_id"],
        "currency": event.get("currency") or "",
        "customer_id": (event.get("customer") or {}).get("id", ""),
        "customer_email": (event.get("customer") or {}).get("email", ""),
    }
    if event.get("store"):
        head |= {f"store_{key}": value for key, value in event["store"].items()}
    return [head | {key: value for key, value in line.items()} for line in event["items"]]


def test_csv_header_used_here_is_the_documented_one() -> None:
    assert set(CSV_HEADER) <= set(CSV_COLUMNS)


def test_import_csv_groups_consecutive_rows_into_events(
    database: DatabaseFixture, tmp_path: Path, tenant: TenantFixture, client: TestClient
) -> None:
    email = f"{unique('bo')}@example.com"
    online = purchase(
        customer={"id": unique("cust"), "email": email},
        items=[
            item(line_id="1", product_id="SKU-A", variant_id="SKU-A-M", quantity=2,
                 unit_price=1799),
            item(line_id="2", product_id="SKU-B", quantity=1, unit_price=500),
            item(line_id="3", product_id="SKU-C", quantity=3, unit_price=250),
        ],
    )  # fmt: skip
    in_store = purchase(
        channel="offline",
        store={"id": "berlin-01", "name": "Berlin Mitte", "city": "Berlin", "country": "DE"},
        items=[item(line_id="1", product_id="SKU-D", quantity=1, unit_price=9900)],
    )
    del in_store["customer"]  # an anonymous in-store sale
    returned = return_event(order_id=online["order_id"], customer={"email": email})
    return_row = {  # a free-text reason, a refund
        "type": "return", "id": returned["id"], "timestamp": returned["timestamp"],
        "channel": "online", "order_id": online["order_id"], "currency": "EUR",
        "customer_email": email, "product_id": "SKU-B", "quantity": 1,
        "reason": "arrived too late", "refund_amount": 500, "refund_method": "original_payment",
    }  # fmt: skip
    rows = [*csv_purchase_rows(online), *csv_purchase_rows(in_store), return_row]
    path = write_csv(tmp_path / "events.csv", CSV_HEADER, rows)

    report = import_json(database, path, tenant.name)  # the format follows the extension
    assert (report["events"], report["accepted"], report["duplicates"]) == (3, 3, 0), report
    assert report["rejected"] == 0

    body = order(client, tenant, online["order_id"])
    lines = lines_by_id(body)
    assert set(lines) == {"1", "2", "3"}
    assert (lines["1"]["quantity"], lines["1"]["unit_price"]) == (2, 1799)
    assert lines["1"]["variant_id"] == "SKU-A-M"
    assert (lines["3"]["quantity"], lines["3"]["unit_price"]) == (3, 250)
    assert lines["2"]["returned_quantity"] == 1
    assert body is not None
    assert body["customer"]["email"] == email
    store_order = order(client, tenant, in_store["order_id"])
    assert store_order is not None
    assert store_order["channel"] == "offline"
    assert store_order["store"]["id"] == "berlin-01"
    assert store_order["store"]["city"] == "Berlin"

    again = import_json(database, path, tenant.id)
    assert (again["events"], again["accepted"], again["duplicates"]) == (3, 0, 3)
    assert len(lines_by_id(order(client, tenant, online["order_id"]))) == 3


def test_a_bad_csv_row_is_reported_by_line_and_the_rest_imported(
    database: DatabaseFixture, tmp_path: Path, tenant: TenantFixture, client: TestClient
) -> None:
    first = purchase(items=[item(line_id="1"), item(line_id="2")])  # lines 2-3
    bad = purchase(items=[item(line_id="1", quantity="two")])  # line 4
    last = purchase(items=[item(line_id="1")])  # line 5
    rows = [*csv_purchase_rows(first), *csv_purchase_rows(bad), *csv_purchase_rows(last)]
    # Not named .csv: --format says what it is.
    path = write_csv(tmp_path / "rows.txt", CSV_HEADER, rows)

    human = import_file(database, path, tenant.id, "--format", "csv")
    assert human.returncode == 0, str(human)
    assert "line 4" in human.stderr, str(human)
    assert len(lines_by_id(order(client, tenant, first["order_id"]))) == 2
    assert order(client, tenant, last["order_id"]) is not None
    assert order(client, tenant, bad["order_id"]) is None

    result = import_file(database, path, tenant.id, "--format", "csv", "--json")
    assert result.returncode == 0, str(result)
    report = result.json()
    assert (report["accepted"], report["duplicates"], report["rejected"]) == (0, 2, 1)
    assert [error["line"] for error in report["errors"]] == [4]


def test_an_unknown_csv_column_is_reported(
    database: DatabaseFixture, tmp_path: Path, tenant: TenantFixture, client: TestClient
) -> None:
    event = purchase()
    rows = [row | {"colour": "red"} for row in csv_purchase_rows(event)]
    path = write_csv(tmp_path / "extra.csv", [*CSV_HEADER, "colour"], rows)

    human = import_file(database, path, tenant.id)
    assert "colour" in human.stderr, str(human)
    assert "line 1" in human.stderr, str(human)
    assert "unknown" in human.stderr.lower(), str(human)
    assert "Traceback" not in human.stderr, str(human)
    assert human.returncode != 0, str(human)  # nothing could be imported

    assert order(client, tenant, event["order_id"]) is None


# --- large files --------------------------------------------------------------------------

LARGE = 10_000  # 20 batches of the importer


def minimal_purchases(count: int, tag: str) -> Iterable[dict[str, Any]]:
    for number in range(count):
        yield {
            "type": "purchase",
            "id": f"{tag}-{number}",
            "timestamp": "2026-01-15T10:00:00Z",
            "channel": "online",
            "order_id": f"{tag}-o{number}",
            "items": [{"product_id": f"SKU-{number % 997}", "quantity": 1, "unit_price": 1000}],
        }


def test_a_large_file_imports_completely(
    database: DatabaseFixture, tmp_path: Path, tenant: TenantFixture, client: TestClient
) -> None:
    tag = unique("big")
    path = write_jsonl(tmp_path / "large.jsonl", minimal_purchases(LARGE, tag))
    report = import_json(database, path, tenant.id)
    assert (report["events"], report["accepted"], report["duplicates"]) == (LARGE, LARGE, 0)
    assert report["rejected"] == 0
    for number in (0, LARGE // 2, LARGE - 1):
        assert order(client, tenant, f"{tag}-o{number}") is not None


def test_import_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    """The importer streams: its peak allocation for a file 4x as long stays about the same.

    (A reader that kept the file, its lines or its events in memory peaks ~4x higher.)
    Runs on its own SQLite file: the property is the importer's, not the backend's.
    """
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'memory.db'}", auto_migrate=False)
    db = Database(settings)
    try:
        migrate.upgrade(db.engine)
        with db.transaction() as session:
            tenant_id = create_tenant(session, name="memory", default_currency="EUR").id

        def peak_bytes(count: int, tag: str) -> int:
            path = write_jsonl(tmp_path / f"{tag}.jsonl", minimal_purchases(count, tag))
            stream, _ = open_counted(str(path))
            tracemalloc.start()
            try:
                with stream:
                    report = import_events(
                        db, stream, tenant_id=tenant_id, default_currency="EUR", fmt="jsonl"
                    )
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert report.accepted == count
            return peak

        peak_bytes(500, "warm-up")  # first-use caches (compiled statements, ...)
        small = peak_bytes(2_000, "small")
        large = peak_bytes(8_000, "large")
    finally:
        db.dispose()
    assert large < small * 1.5, f"peak {small} bytes for 2,000 lines, {large} for 8,000"
