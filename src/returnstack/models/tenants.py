from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from returnstack.models.base import Base, Currency, Json, UTCDateTime


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    default_currency: Mapped[str] = mapped_column(Currency)
    # Kept retrievable (unlike API keys): it verifies storefront tokens and vendor signatures.
    signing_secret: Mapped[str] = mapped_column(String(200))
    # After `tenants rotate-secret`: the secret it replaced, still accepted until it expires.
    previous_signing_secret: Mapped[str | None] = mapped_column(String(200))
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TenantCounter(Base):
    """Per-tenant sequences (return numbers), bumped with one UPDATE ... RETURNING."""

    __tablename__ = "tenant_counters"
    __table_args__ = {"sqlite_with_rowid": False}

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_tenant_id_created_at", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    kind: Mapped[str] = mapped_column(String(20))  # secret | publishable
    prefix: Mapped[str] = mapped_column(String(20))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class IdempotencyKey(Base):
    """A POST's first response, replayed for 24 h to a retry with the same key and body."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    # Whose key it is: "secret", "publishable", or a storefront caller. A key of one scope
    # never replays or blocks a request of another (API.md section 2).
    scope: Mapped[str] = mapped_column(String(200), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int]
    response_body: Mapped[bytes]
    response_headers: Mapped[dict[str, str] | None] = mapped_column(Json)  # e.g. the ETag
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
