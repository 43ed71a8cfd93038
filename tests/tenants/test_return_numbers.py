"""Return numbers (R-000123) are unique and increasing per tenant. On PostgreSQL each
reservation commits at once, so returns opened at the same time do not queue on the tenant's
counter until the one before commits; a transaction that fails after reserving leaves a gap.
On SQLite, whose writers take turns, a reservation is part of its transaction."""

import uuid
from concurrent.futures import ThreadPoolExecutor

from returnstack.tenants.service import create_tenant, next_numbers
from tests.conftest import DatabaseFixture, TenantFixture

NAME = "return_number"


def _reserve(database: DatabaseFixture, tenant_id: str, count: int = 1) -> range:
    with database.db.transaction() as session:
        return next_numbers(session, tenant_id=tenant_id, name=NAME, count=count)


def test_numbers_are_consecutive_across_transactions(
    database: DatabaseFixture, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    first = _reserve(database, tenant.id)
    batch = _reserve(database, tenant.id, count=3)
    other = _reserve(database, other_tenant.id)
    assert list(first) == [1]
    assert list(batch) == [2, 3, 4]
    assert list(other) == [1]  # each tenant counts on its own


def test_a_reservation_does_not_wait_for_the_one_before_to_commit(
    database: DatabaseFixture, tenant: TenantFixture
) -> None:
    with ThreadPoolExecutor(1) as pool:
        with database.db.transaction() as session:
            (held,) = next_numbers(session, tenant_id=tenant.id, name=NAME, count=1)
            # Another request, while this transaction is still open.
            later = pool.submit(_reserve, database, tenant.id)
            if database.backend == "postgresql":
                # Before: it waited on the counter's row lock until this transaction ended.
                assert list(later.result(timeout=10)) == [held + 1]
        if database.backend == "sqlite":
            assert list(later.result(timeout=30)) == [held + 1]  # once this one committed


def test_a_failed_transaction_leaves_a_gap_on_postgresql_only(
    database: DatabaseFixture, tenant: TenantFixture
) -> None:
    try:
        with database.db.transaction() as session:
            (lost,) = next_numbers(session, tenant_id=tenant.id, name=NAME, count=1)
            raise RuntimeError("the request failed after reserving")
    except RuntimeError:
        pass
    (following,) = _reserve(database, tenant.id)
    if database.backend == "postgresql":
        assert following == lost + 1
    else:
        assert following == lost


def test_a_tenant_made_in_the_same_transaction_gets_its_numbers(
    database: DatabaseFixture,
) -> None:
    with database.db.transaction() as session:
        made = create_tenant(session, name=f"t-{uuid.uuid4().hex[:12]}")
        numbers = next_numbers(session, tenant_id=made.id, name=NAME, count=2)
    assert list(numbers) == [1, 2]
    assert list(_reserve(database, made.id)) == [3]
