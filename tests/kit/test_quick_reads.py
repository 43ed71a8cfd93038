"""The quick read that authenticates every request (`Database.fetch_one`) runs outside any
transaction (on PostgreSQL, in autocommit), and leaves its pooled connection as it found it:
the request transactions that get the connection next are still all-or-nothing."""

import pytest
from sqlalchemy import text

from returnstack.kit.db import Database
from tests.conftest import DatabaseFixture, TenantFixture

COUNTER = "quick-read-test"


def _counter(db: Database, tenant_id: str) -> int | None:
    with db.transaction(write=False) as session:
        return session.execute(
            text("SELECT value FROM tenant_counters WHERE tenant_id = :t AND name = :n"),
            {"t": tenant_id, "n": COUNTER},
        ).scalar_one_or_none()


def _write_then_fail(db: Database, tenant_id: str) -> None:
    def request() -> None:
        with db.transaction() as session:
            session.execute(
                text("INSERT INTO tenant_counters (tenant_id, name, value) VALUES (:t, :n, 1)"),
                {"t": tenant_id, "n": COUNTER},
            )
            raise RuntimeError("the request failed after its first write")

    with pytest.raises(RuntimeError):
        request()


def test_transactions_after_quick_reads_still_roll_back_whole(
    database: DatabaseFixture, tenant: TenantFixture
) -> None:
    db = database.db
    found = db.fetch_one("SELECT id FROM tenants WHERE id = ?", (tenant.id,))
    missing = db.fetch_one("SELECT id FROM tenants WHERE id = ?", ("ten_none",))
    assert (found, missing) == ((tenant.id,), None)
    # Every pooled connection has served a quick read: each transaction below gets one.
    for _ in range(database.settings.db_pool_size + 1):
        db.fetch_one("SELECT 1", ())
        _write_then_fail(db, tenant.id)
    assert _counter(db, tenant.id) is None


def test_a_failed_quick_read_leaves_no_connection_outside_transactions(
    database: DatabaseFixture, tenant: TenantFixture
) -> None:
    db = database.db
    for _ in range(database.settings.db_pool_size + 1):
        with pytest.raises(Exception, match="no_such_table"):
            db.fetch_one("SELECT * FROM no_such_table WHERE id = ?", (1,))
        _write_then_fail(db, tenant.id)
    assert _counter(db, tenant.id) is None
    assert db.fetch_one("SELECT id FROM tenants WHERE id = ?", (tenant.id,)) == (tenant.id,)
