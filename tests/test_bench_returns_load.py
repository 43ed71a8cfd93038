"""The returns benchmark's bulk load (bench/returns.py, `load_orders_bulk`) writes what the
service writes: the same orders through `record_events` and through the bulk path leave the
same rows in every table the service writes (ids and write times aside), so a benchmark on
the bulk-loaded dataset measures the service on its own data."""

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bench import returns
from bench.server import Target, fresh_database
from returnstack.config import Settings
from returnstack.kit import migrate
from returnstack.kit.db import Database
from tests.conftest import BACKENDS, POSTGRES_URL, _postgres_reachable, make_tenant

ORDERS = 50

# Columns that differ by nature between two loads: server-made ids and write times.
MADE_HERE = {"tenant_id", "id", "server_id", "event_id", "created_at", "updated_at",
             "received_at", "dispatched_at", "seq"}  # fmt: skip
KEYS = {
    "orders": "id",
    "order_lines": "order_id, line_id",
    "customers": "id",
    "customer_emails": "email",
    "events": "client_id",
    "outbox": "resource_key",
    "stores": "id",
    "customer_profiles": "owner, currency",
    "product_signals": "product_id",
    "product_breakdowns": "product_id, variant_id, channel, store_id, currency",
    "category_signals": "path",
}


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    if request.param == "postgresql" and _postgres_reachable() is not None:
        pytest.skip("PostgreSQL unreachable")
    with fresh_database(request.param, POSTGRES_URL) as made:
        db = Database(Settings(database_url=made.url, _env_file=None))
        migrate.upgrade(db.engine)
        db.dispose()
        yield made


def _rows(db: Database, tenant_id: str, table: str) -> list[dict[str, Any]]:
    with db.engine.connect() as conn:
        result = conn.execute(
            text(f"SELECT * FROM {table} WHERE tenant_id = :t ORDER BY {KEYS[table]}"),
            {"t": tenant_id},
        )
        rows = [dict(row._mapping) for row in result]
    for row in rows:
        for column in MADE_HERE & row.keys():
            if table != "stores" or column != "id":
                row.pop(column)
        if table == "outbox":  # the message names the event by its server id
            data = row["data"] if isinstance(row["data"], dict) else json.loads(row["data"])
            data.pop("event_id")
            row["data"] = data
    return rows


def test_bulk_load_writes_the_rows_record_events_writes(
    target: Target, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    db = Database(Settings(database_url=target.url, _env_file=None))
    try:
        serviced = make_tenant(db).id
        bulk = make_tenant(db).id
        now = datetime.now(UTC)
        returns.load_orders(target, serviced, ORDERS, now=now)
        monkeypatch.setattr(returns, "BULK_BATCH", 15)  # several bulk transactions
        load = returns.load_orders_bulk(target, bulk, ORDERS, service_orders=10, now=now)
        assert load["bulk_orders"] == ORDERS - 10

        for table in KEYS:
            assert _rows(db, bulk, table) == _rows(db, serviced, table), table
        assert len(_rows(db, bulk, "orders")) == ORDERS
        with db.engine.connect() as conn:
            unpublished = conn.execute(
                text("SELECT count(*) FROM outbox WHERE tenant_id = :t AND seq IS NULL"),
                {"t": bulk},
            ).scalar()
            numbers = conn.execute(
                text("SELECT count(DISTINCT seq), max(seq) FROM outbox WHERE seq IS NOT NULL")
            ).one()
            feed = conn.execute(
                text("SELECT value FROM webhook_state WHERE name = 'feed_seq'")
            ).scalar()
        assert unpublished == 0  # published, as the dispatcher leaves them
        assert tuple(numbers) == (feed, feed)  # numbered 1..n without a gap, the feed at n
    finally:
        db.dispose()
