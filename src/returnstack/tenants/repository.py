"""The tenants' SQL: tenants, their signing secrets, API keys and number sequences."""

from datetime import datetime, timedelta

from sqlalchemy import Row, or_, select, update
from sqlalchemy.exc import NoResultFound
from sqlalchemy.orm import Session

from returnstack.kit.bulk import select_rows
from returnstack.kit.db import run_committed
from returnstack.models import ApiKey, Tenant, TenantCounter


def tenant_named(session: Session, name: str) -> Tenant | None:
    return session.scalar(select(Tenant).where(Tenant.name == name))


def find_tenant(session: Session, id_or_name: str) -> Tenant | None:
    return session.scalar(
        select(Tenant).where(or_(Tenant.id == id_or_name, Tenant.name == id_or_name))
    )


def list_tenants(session: Session, *, limit: int | None = None) -> list[Tenant]:
    """Oldest first."""
    query = select(Tenant).order_by(Tenant.created_at, Tenant.id).limit(limit)
    return list(session.scalars(query))


def rotate_signing_secret(
    session: Session, *, tenant_id: str, secret: str, now: datetime, grace: timedelta
) -> None:
    """`secret` becomes current; the one it replaces is kept until `now + grace`."""
    session.execute(
        update(Tenant)
        .where(Tenant.id == tenant_id)
        .values(
            signing_secret=secret,
            # The value before this UPDATE (so concurrent rotations chain, none is lost).
            previous_signing_secret=Tenant.signing_secret,
            previous_secret_expires_at=now + grace,
        )
    )


def signing_secrets(
    session: Session, *, tenant_id: str
) -> Row[str, str | None, datetime | None] | None:
    """(current, previous, when the previous expires)."""
    return session.execute(
        select(
            Tenant.signing_secret,
            Tenant.previous_signing_secret,
            Tenant.previous_secret_expires_at,
        ).where(Tenant.id == tenant_id)
    ).one_or_none()


def keys_of(session: Session, *, tenant_id: str) -> list[ApiKey]:
    query = select(ApiKey).where(ApiKey.tenant_id == tenant_id)
    return list(session.scalars(query.order_by(ApiKey.created_at, ApiKey.id)))


def find_key(session: Session, key_id: str) -> ApiKey | None:
    return session.scalar(select(ApiKey).where(ApiKey.id == key_id))


def revoke_key(session: Session, key: ApiKey, *, now: datetime) -> None:
    session.execute(update(ApiKey).where(ApiKey.id == key.id).values(revoked_at=now))
    session.refresh(key)


_RESERVE_SQL = (
    f"UPDATE {TenantCounter.__tablename__} SET value = value + ? "
    "WHERE tenant_id = ? AND name = ? RETURNING value"
)


def reserve_numbers(session: Session, *, tenant_id: str, name: str, count: int) -> int:
    """Add `count` to the tenant's sequence (one UPDATE ... RETURNING); its new last value.

    On PostgreSQL in a transaction of its own, committed at once (kit.db.run_committed): the
    counter's row is locked for that statement only, not until the caller commits. In the
    caller's transaction, every return opened at the same time queued on that row until the
    one before it committed, and under load that wait was most of a create's time
    (bench/README.md, Returns lifecycle). The price: a caller that fails after this leaves a
    gap in the numbers. The counter of a tenant made in the caller's transaction, not
    committed yet, is found there instead. SQLite, whose writers take turns anyway: in the
    caller's transaction.

    On the driver's cursor: the ORM's UPDATE cost a fifth of opening a return's CPU."""
    row = run_committed(session, _RESERVE_SQL, (count, tenant_id, name))
    if row is not None:
        return int(row[0])
    session.flush()  # a counter added in this transaction is written first (no-op if clean)
    rows = select_rows(session, _RESERVE_SQL, (count, tenant_id, name))
    if len(rows) != 1:
        raise NoResultFound(f"No counter {name!r} for tenant {tenant_id!r}.")
    return int(rows[0][0])
