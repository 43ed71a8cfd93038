"""The storefront's SQL: sessions, and which orders and returns a caller owns."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from returnstack.kit.pagination import keyset_page
from returnstack.models import Customer, CustomerEmail, Order, Return, StorefrontSession


def owned(
    *,
    kind: str,
    customer_id: str | None,
    email: str | None,
    customer_column: InstrumentedAttribute[str | None],
    email_column: InstrumentedAttribute[str | None],
) -> ColumnElement[bool]:
    """What a caller owns, as SQL. A customer: rows with their id, or with their email and
    no customer id (what they bought as a guest). A guest: rows with their email and no
    customer id (a registered customer signs in with a customer token)."""
    if kind == "guest":
        return and_(customer_column.is_(None), email_column == email)
    condition: ColumnElement[bool] = customer_column == customer_id
    if email is not None:
        condition = or_(condition, and_(customer_column.is_(None), email_column == email))
    return condition


def insert_session(
    session: Session,
    *,
    tenant_id: str,
    token_hash: str,
    kind: str,
    customer_id: str | None,
    email: str | None,
    created_at: datetime,
    expires_at: datetime,
) -> None:
    session.add(
        StorefrontSession(
            tenant_id=tenant_id,
            token_hash=token_hash,
            kind=kind,
            customer_id=customer_id,
            email=email,
            created_at=created_at,
            expires_at=expires_at,
        )
    )
    session.flush()


def delete_expired_sessions(session: Session, *, tenant_id: str, now: datetime) -> None:
    session.execute(
        delete(StorefrontSession).where(
            StorefrontSession.tenant_id == tenant_id, StorefrontSession.expires_at <= now
        )
    )


def find_session(session: Session, *, tenant_id: str, token_hash: str) -> StorefrontSession | None:
    return session.scalar(
        select(StorefrontSession).where(
            StorefrontSession.tenant_id == tenant_id,
            StorefrontSession.token_hash == token_hash,
            StorefrontSession.expires_at > datetime.now(UTC),
        )
    )


def customer_email(session: Session, *, tenant_id: str, customer_id: str) -> str | None:
    """The customer's latest email when it is linked to them: an email's guest history
    belongs to the customer it is linked to (the first link wins, API.md 5), not to another
    customer who later gave the same email."""
    return session.scalar(
        select(Customer.email)
        .join(
            CustomerEmail,
            and_(
                CustomerEmail.tenant_id == Customer.tenant_id,
                CustomerEmail.email == Customer.email,
                CustomerEmail.customer_id == Customer.id,
            ),
        )
        .where(Customer.tenant_id == tenant_id, Customer.id == customer_id)
    )


def guest_order_email(session: Session, *, tenant_id: str, order_id: str) -> str | None:
    """The email of an order without a customer account (a guest order), else None."""
    if "\x00" in order_id:
        return None
    return session.scalar(
        select(Order.email).where(
            Order.tenant_id == tenant_id, Order.id == order_id, Order.customer_id.is_(None)
        )
    )


def email_has_guest_orders(session: Session, *, tenant_id: str, email: str) -> bool:
    return bool(
        session.scalar(
            select(
                exists().where(
                    Order.tenant_id == tenant_id,
                    Order.email == email,
                    Order.customer_id.is_(None),
                )
            )
        )
    )


def list_owned(
    session: Session,
    model: type[Order] | type[Return],
    *,
    tenant_id: str,
    ownership: ColumnElement[bool],
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    """A page of the caller's orders (newest placed first) or returns (newest opened first)."""
    return keyset_page(
        session,
        select(model).where(model.tenant_id == tenant_id, ownership),
        at=Order.placed_at if model is Order else Return.created_at,
        row_id=model.id,
        limit=limit,
        cursor=cursor,
    )
