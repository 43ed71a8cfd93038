"""Tenants and API keys. Keys are shown once; only their SHA-256 is stored."""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from returnstack.kit.errors import Conflict, NotFound, ValidationFailed
from returnstack.kit.ids import new_id
from returnstack.kit.money import is_currency
from returnstack.models import ApiKey, Tenant, TenantCounter
from returnstack.tenants import repository

KEY_KINDS = {"secret": "sk", "publishable": "pk"}
# After a rotation, the secret replaced is still accepted this long (API.md 10).
PREVIOUS_SECRET_GRACE = timedelta(hours=24)
PREFIX_LENGTH = 11  # "sk_" + 8 characters: enough to tell keys apart in a list


def hash_key(key: str) -> str:
    # Keys carry 192 random bits, so a fast hash is safe (no brute force to slow down).
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class CreatedKey:
    id: str
    kind: str
    key: str
    prefix: str
    tenant_id: str


def create_tenant(session: Session, *, name: str, default_currency: str = "USD") -> Tenant:
    name = name.strip()
    currency = default_currency.upper()
    if not name or len(name) > 200:
        raise ValidationFailed.at("name", "must be 1-200 characters")
    if not is_currency(currency):
        raise ValidationFailed.at("default_currency", f"unknown ISO 4217 currency {currency!r}")
    if repository.tenant_named(session, name) is not None:
        raise Conflict(f"A tenant named {name!r} already exists.")
    tenant = Tenant(
        id=new_id("ten"),
        name=name,
        default_currency=currency,
        signing_secret=secrets.token_urlsafe(32),
        created_at=datetime.now(UTC),
    )
    session.add(tenant)
    session.add(TenantCounter(tenant_id=tenant.id, name="return_number", value=0))
    session.flush()
    return tenant


def find_tenant(session: Session, id_or_name: str) -> Tenant:
    tenant = repository.find_tenant(session, id_or_name)
    if tenant is None:
        raise NotFound(f"No tenant with id or name {id_or_name!r}.")
    return tenant


def rotate_signing_secret(session: Session, *, tenant: Tenant) -> Tenant:
    """A new signing secret; the one it replaces stays valid for 24 h (tokens and signatures
    made with it keep working while the merchant deploys the new one). A second rotation
    within that time retires the oldest at once: only the secret just replaced is kept."""
    repository.rotate_signing_secret(
        session,
        tenant_id=tenant.id,
        secret=secrets.token_urlsafe(32),
        now=datetime.now(UTC),
        grace=PREVIOUS_SECRET_GRACE,
    )
    session.refresh(tenant)
    return tenant


def valid_signing_secrets(
    session: Session, *, tenant_id: str, now: datetime | None = None
) -> list[str]:
    """The tenant's signing secrets that verify tokens and signatures now: the current one
    first, then the one it replaced while its 24 h last. Try them in this order."""
    row = repository.signing_secrets(session, tenant_id=tenant_id)
    if row is None:
        return []
    current, previous, expires_at = row
    moment = now or datetime.now(UTC)
    if previous is not None and expires_at is not None and moment < expires_at:
        return [current, previous]
    return [current]


def create_key(session: Session, *, tenant: Tenant, kind: str) -> CreatedKey:
    if kind not in KEY_KINDS:
        raise ValidationFailed.at("kind", "must be secret or publishable")
    key = f"{KEY_KINDS[kind]}_{secrets.token_urlsafe(24)}"
    row = ApiKey(
        id=new_id("key"),
        tenant_id=tenant.id,
        kind=kind,
        prefix=key[:PREFIX_LENGTH],
        key_hash=hash_key(key),
        created_at=datetime.now(UTC),
    )
    session.add(row)
    session.flush()
    return CreatedKey(id=row.id, kind=kind, key=key, prefix=row.prefix, tenant_id=tenant.id)


def revoke_key(session: Session, *, key_id: str, tenant_id: str | None = None) -> ApiKey:
    """Revoke a key (of `tenant_id` only, when given: the dashboard's tenant)."""
    key = repository.find_key(session, key_id)
    if key is None or (tenant_id is not None and key.tenant_id != tenant_id):
        raise NotFound(f"No key with id {key_id!r}.")
    if key.revoked_at is None:
        repository.revoke_key(session, key, now=datetime.now(UTC))
    return key


def next_numbers(session: Session, *, tenant_id: str, name: str, count: int) -> range:
    """Reserve `count` consecutive numbers of a per-tenant sequence (one UPDATE ... RETURNING).

    Unique and increasing, not gapless: on PostgreSQL they are committed at once, and a
    caller that fails afterwards leaves them unused (repository.reserve_numbers)."""
    last = repository.reserve_numbers(session, tenant_id=tenant_id, name=name, count=count)
    return range(last - count + 1, last + 1)
