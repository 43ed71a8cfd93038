"""SQLite gathers no planner statistics by itself, and without them it takes `tenant_id = ?`
for about ten rows: a customer's orders page then walked all of a large tenant's orders by
date (ix_orders_tenant_id_placed_at) instead of reading the customer's. The service gathers
them: after `returnstack import` and `profiles rebuild`, soon after the server starts, and
when a table has grown tenfold. Each test has a SQLite file of its own (statistics are the
whole database's), with one large tenant and one small one."""

import contextlib
import json
import random
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from returnstack.app import create_app
from returnstack.config import Settings
from returnstack.kit import migrate
from returnstack.kit.bulk import insert_rows
from returnstack.kit.db import Database
from returnstack.models import Customer, Order, OutboxEvent, Return
from returnstack.webhooks.repository import has_unpublished
from tests.conftest import TenantFixture, _settings, make_tenant
from tests.e2e import run_cli

START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    return _settings(f"sqlite:///{tmp_path / 'returnstack.db'}", tmp_path)


@pytest.fixture
def db(sqlite_settings: Settings) -> Iterator[Database]:
    database = Database(sqlite_settings)
    migrate.upgrade(database.engine)
    yield database
    database.dispose()


def order_rows(tenant_id: str, customers: range, per_customer: int) -> list[dict[str, Any]]:
    draw = random.Random(7)
    return [
        {
            "tenant_id": tenant_id,
            "id": f"o-{person}-{k}",
            "customer_id": f"c-{person}",
            "email": f"c{person}@example.com",
            "channel": "online",
            "store_id": None,
            "currency": "EUR",
            "placed_at": START + timedelta(minutes=draw.randrange(500_000)),
            "event_id": f"e-{person}-{k}",
            "created_at": START,
        }
        for person in customers
        for k in range(per_customer)
    ]


def load_orders(
    db: Database, tenant_id: str, customers: int, first: int = 0, guest_orders: int = 0
) -> None:
    """Three orders each, and orders of guests (no customer id), written with the bulk path
    (as the benchmarks load them)."""
    people = range(first, first + customers)
    rows = order_rows(tenant_id, people, 3) + [
        row | {"id": f"g-{row['id']}", "customer_id": None, "email": f"g{n}@example.com"}
        for n, row in enumerate(order_rows(tenant_id, range(guest_orders), 1))
    ]
    with db.transaction() as session:
        insert_rows(
            session,
            Customer,
            [
                {
                    "tenant_id": tenant_id,
                    "id": f"c-{person}",
                    "server_id": f"cus_{tenant_id}_{person}",
                    "email": None,
                    "name": None,
                    "created_at": START,
                    "updated_at": START,
                }
                for person in people
            ],
        )
        for start in range(0, len(rows), 5000):
            insert_rows(session, Order, rows[start : start + 5000])


def orders_page_plan(db: Database, client: TestClient, tenant: TenantFixture, customer: str) -> str:
    """GET /v1/customers/{id}/orders; the plan SQLite chose for the orders query it ran."""
    statements: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "FROM orders" in statement and "ORDER BY orders.placed_at DESC" in statement:
            statements.append((statement, params))

    event.listen(Engine, "before_cursor_execute", seen)  # the server's engine too
    try:
        response = client.get(f"/v1/customers/{customer}/orders", headers=tenant.headers)
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    assert response.status_code == 200, response.text
    assert response.json()["data"], "the customer has orders"
    assert len(statements) == 1
    return plan_of(db, *statements[0])


def plan_of(db: Database, statement: str, params: Any) -> str:
    """EXPLAIN QUERY PLAN on a new connection: one of the pool's that has not read since
    another connection's ANALYZE would explain with the statistics it loaded before (a
    connection reloads them when it next reads, EXPLAIN does not read)."""
    assert db.engine.url.database
    with contextlib.closing(sqlite3.connect(db.engine.url.database)) as connection:
        rows = connection.execute("EXPLAIN QUERY PLAN " + statement, params)
        return "\n".join(str(row[-1]) for row in rows)


def assert_reads_the_customers_orders(plan: str) -> None:
    assert "ix_orders_tenant_id_customer_id" in plan, plan
    assert "ix_orders_tenant_id_placed_at" not in plan, plan


def stat_rows(db: Database, table: str) -> int:
    with db.engine.connect() as connection:
        if not connection.exec_driver_sql(
            "SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_stat1'"
        ).first():
            return 0
        stats = connection.exec_driver_sql(
            "SELECT stat FROM sqlite_stat1 WHERE tbl = ?", (table,)
        ).all()
    return max((int(stat.split()[0]) for (stat,) in stats), default=0)


def test_import_gathers_the_statistics_a_customers_orders_page_needs(
    db: Database, sqlite_settings: Settings, tmp_path: Path
) -> None:
    big, small = make_tenant(db), make_tenant(db)
    load_orders(db, small.id, customers=5)
    events = [
        {
            "type": "purchase",
            "id": f"p-{person}-{k}",
            "timestamp": (START + timedelta(days=person % 300, hours=k)).isoformat(),
            "channel": "online",
            "customer": {"id": f"c-{person}", "email": f"c{person}@example.com"},
            "order_id": f"o-{person}-{k}",
            "currency": "EUR",
            "items": [{"line_id": "1", "product_id": "SKU-1", "quantity": 1, "unit_price": 990}],
        }
        for person in range(150)
        for k in range(2)
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))

    result = run_cli(
        "import", str(path), "--tenant", big.id, "--json", database_url=db.url, cwd=tmp_path
    )

    assert result.returncode == 0, str(result)
    assert result.json()["accepted"] == len(events)
    with TestClient(create_app(sqlite_settings, database=db)) as client:
        assert_reads_the_customers_orders(orders_page_plan(db, client, big, "c-42"))
    assert stat_rows(db, "orders") == 300 + 15


def test_the_server_analyzes_tables_never_analyzed_soon_after_it_starts(
    db: Database, sqlite_settings: Settings
) -> None:
    big, small = make_tenant(db), make_tenant(db)
    # The guests' orders (customer_id NULL) come first in ix_orders_tenant_id_customer_id:
    # statistics from its first 1,000 entries alone (PRAGMA analysis_limit) would take
    # customer_id for unselective, and plan the page by date again.
    load_orders(db, big.id, customers=2000, guest_orders=1500)
    load_orders(db, small.id, customers=5)
    assert stat_rows(db, "orders") == 0

    with TestClient(create_app(sqlite_settings)) as client:  # the server's own Database
        deadline = time.monotonic() + 30
        while stat_rows(db, "orders") == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert stat_rows(db, "orders") > 0, "no statistics 30 s after the server started"
        assert_reads_the_customers_orders(orders_page_plan(db, client, big, "c-1234"))
        assert_reads_the_customers_orders(orders_page_plan(db, client, small, "c-3"))


def test_optimize_analyzes_a_table_again_when_it_has_grown_tenfold(db: Database) -> None:
    tenant = make_tenant(db)
    load_orders(db, tenant.id, customers=10)  # 30 orders

    assert "orders" in db.optimize()
    assert stat_rows(db, "orders") == 30
    assert db.optimize() == []  # nothing changed: nothing analyzed

    load_orders(db, tenant.id, customers=100, first=10)  # 330 orders: more than tenfold
    assert "orders" not in db.optimize(missing_only=True)
    assert "orders" in db.optimize()
    assert stat_rows(db, "orders") == 330


def load_returns(db: Database, tenant_id: str, count: int) -> None:
    draw = random.Random(11)
    rows = [
        {
            "tenant_id": tenant_id,
            "id": f"ret-{n:06d}",
            "number": n + 1,
            "external_id": None,
            "status": "requested" if n % 10 == 0 else "closed",
            "source": "api",
            "channel": "online",
            "store_id": None,
            "customer_id": f"c-{n % 700}",
            "email": None,
            "currency": "EUR",
            "refund_amount": None,
            "refund_method": None,
            "refunded_at": None,
            "fee_restocking": 0,
            "fee_shipping": 0,
            "note": None,
            "metadata": "{}",
            "event_id": None,
            "created_at": START + timedelta(minutes=draw.randrange(500_000)),
            "updated_at": START,
            "closed_at": None,
            "version": 1,
            "claiming": True,
        }
        for n in range(count)
    ]
    with db.transaction() as session:
        for start in range(0, len(rows), 2000):
            insert_rows(session, Return, rows[start : start + 2000])


def test_a_page_of_returns_is_read_in_index_order_with_statistics(
    db: Database, sqlite_settings: Settings
) -> None:
    """With statistics of one large tenant (`tenant_id = ?` selects every row), SQLite
    scanned and sorted all the tenant's returns for a page when its index left the id to a
    sort; the index holds the page's whole order (created_at, id)."""
    tenant = make_tenant(db)
    load_returns(db, tenant.id, 3000)
    db.analyze()
    statements: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "FROM returns" in statement and "ORDER BY returns.created_at DESC" in statement:
            statements.append((statement, params))

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        with TestClient(create_app(sqlite_settings, database=db)) as client:
            first = client.get("/v1/returns?limit=20", headers=tenant.headers)
            after = client.get(
                f"/v1/returns?limit=20&cursor={first.json()['next_cursor']}",
                headers=tenant.headers,
            )
    finally:
        event.remove(Engine, "before_cursor_execute", seen)

    assert first.status_code == after.status_code == 200
    assert len(first.json()["data"]) == len(after.json()["data"]) == 20
    assert len(statements) == 2
    for statement, params in statements:
        plan = plan_of(db, statement, params)
        assert "ix_returns_tenant_id_created_at_id" in plan, plan
        assert "TEMP B-TREE" not in plan, plan


def test_the_dispatchers_poll_reads_the_pending_index_after_a_backlog_drained(
    db: Database,
) -> None:
    """Statistics taken during a large backlog (every row pending, as after an import or the
    demo's load) and the backlog since dispatched: `has_unpublished` (every poll of the
    dispatcher) read the whole outbox with EXISTS; it reads the pending index."""
    tenant = make_tenant(db)
    rows = [
        {
            "tenant_id": tenant.id,
            "id": f"msg-{n:06d}",
            "type": "order.created",
            "data": "{}",
            "changes": None,
            "created_at": START + timedelta(seconds=n),
            "dispatched_at": None,
            "seq": None,
            "resource_key": None,
        }
        for n in range(3000)
    ]
    with db.transaction() as session:
        for start in range(0, len(rows), 2000):
            insert_rows(session, OutboxEvent, rows[start : start + 2000])
    db.analyze()
    with db.transaction() as session:
        session.connection().exec_driver_sql(
            "UPDATE outbox SET dispatched_at = created_at, seq = rowid"
        )
    statements: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "FROM outbox" in statement:
            statements.append((statement, params))

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        with db.transaction(write=False) as session:
            assert has_unpublished(session) is False
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)

    assert len(statements) == 1
    plan = plan_of(db, *statements[0])
    assert "ix_outbox_pending" in plan, plan
