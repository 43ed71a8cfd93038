"""Erasing a customer's personal data (the right to be forgotten).

The facts stay, anonymous: order lines and return items still count for products and
reports, but nothing links them to the person any more. Their profile goes, and their id
and emails can no longer be looked up.
"""

import logging
from typing import Any

import orjson
from sqlalchemy import ColumnElement, and_, delete, event, func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql import sqltypes

from returnstack.customers.profiles import customer_owner
from returnstack.customers.render import customer_exists, linked_emails
from returnstack.kit.errors import NotFound
from returnstack.models import (
    Attachment,
    Customer,
    CustomerEmail,
    CustomerProfile,
    IdempotencyKey,
    Order,
    OutboxEvent,
    Return,
    ReturnHistory,
    ReturnItem,
    StorefrontSession,
)
from returnstack.returns.attachments import AttachmentStorage

log = logging.getLogger(__name__)


def erase_customer(
    session: Session, *, tenant_id: str, customer_id: str, storage: AttachmentStorage
) -> None:
    """Erase everything that identifies the customer; 404 for an unknown (or erased) id.

    Attachment files are deleted after the transaction commits (a rollback keeps them).
    """
    if not customer_exists(session, tenant_id=tenant_id, customer_id=customer_id):
        raise NotFound(f"No customer {customer_id!r}.")
    owner = customer_owner(customer_id)
    emails = linked_emails(session, tenant_id=tenant_id, customer_id=customer_id)
    identifiers = [customer_id, *emails]

    def theirs(model: type[Order] | type[Return]) -> ColumnElement[bool]:
        return and_(
            model.tenant_id == tenant_id,
            or_(model.customer_id == customer_id, model.email.in_(emails)),
        )

    return_ids = list(session.scalars(select(Return.id).where(theirs(Return))))
    _erase_returns(session, tenant_id, return_ids, storage)
    # A fact of another customer that used one of these emails keeps that customer's id.
    for model in (Order, Return):
        session.execute(
            update(model)
            .where(theirs(model))
            .values(
                customer_id=func.nullif(model.customer_id, customer_id),
                email=None,
            )
            .execution_options(synchronize_session=False)
        )
    session.execute(
        delete(StorefrontSession).where(
            StorefrontSession.tenant_id == tenant_id,
            or_(
                StorefrontSession.customer_id == customer_id,
                StorefrontSession.email.in_(emails),
            ),
        )
    )
    session.execute(
        delete(CustomerProfile).where(
            CustomerProfile.tenant_id == tenant_id, CustomerProfile.owner == owner
        )
    )
    session.execute(
        delete(CustomerEmail).where(
            CustomerEmail.tenant_id == tenant_id, CustomerEmail.customer_id == customer_id
        )
    )
    session.execute(
        delete(Customer).where(Customer.tenant_id == tenant_id, Customer.id == customer_id)
    )
    _scrub_stored_payloads(session, tenant_id, identifiers)


def _erase_returns(
    session: Session, tenant_id: str, return_ids: list[str], storage: AttachmentStorage
) -> None:
    """Notes, metadata and attachments of the customer's returns; items and history stay."""
    if not return_ids:
        return
    session.execute(
        update(Return)
        .where(Return.tenant_id == tenant_id, Return.id.in_(return_ids))
        .values(note=None, metadata_={})
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(ReturnItem)
        .where(ReturnItem.tenant_id == tenant_id, ReturnItem.return_id.in_(return_ids))
        .values(note=None)
    )
    session.execute(
        update(ReturnHistory)
        .where(ReturnHistory.tenant_id == tenant_id, ReturnHistory.return_id.in_(return_ids))
        .values(note=None)
    )
    keys = list(
        session.scalars(
            delete(Attachment)
            .where(Attachment.tenant_id == tenant_id, Attachment.return_id.in_(return_ids))
            .returning(Attachment.storage_key)
        )
    )
    if keys:
        _delete_files_after_commit(session, storage, keys)


def _delete_files_after_commit(
    session: Session, storage: AttachmentStorage, keys: list[str]
) -> None:
    def remove(_session: Session) -> None:
        for key in keys:
            try:
                storage.delete(key)
            except Exception:  # the rows are gone; a file left over is logged, not fatal
                log.exception("attachment.erase_failed", extra={"storage_key": key})

    event.listen(session, "after_commit", remove, once=True)


def _scrub_stored_payloads(session: Session, tenant_id: str, identifiers: list[str]) -> None:
    """Copies of the person's data in stored responses (idempotency replays) and in the
    outbox (webhook events): replays are dropped, events keep their shape without it."""
    needles = [orjson.dumps(identifier) for identifier in identifiers]
    replays = select(IdempotencyKey.key, IdempotencyKey.response_body).where(
        IdempotencyKey.tenant_id == tenant_id
    )
    stale = [
        key
        for key, body in session.execute(replays.execution_options(yield_per=1000))
        if any(needle in body for needle in needles)
    ]
    for start in range(0, len(stale), 500):
        session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.tenant_id == tenant_id,
                IdempotencyKey.key.in_(stale[start : start + 500]),
            )
        )
    text = func.cast(OutboxEvent.data, sqltypes.Text)
    mentions = or_(*(text.contains(orjson.dumps(i).decode(), autoescape=True) for i in identifiers))
    secret = set(identifiers)
    for row in session.scalars(
        select(OutboxEvent).where(OutboxEvent.tenant_id == tenant_id, mentions)
    ):
        row.data = _scrub(row.data, secret)
        if row.changes is not None:
            row.changes = _scrub(row.changes, secret)


def _scrub(value: Any, secret: set[str]) -> Any:
    """The same JSON with the person's identifiers, notes and metadata removed."""
    if isinstance(value, dict):
        scrubbed: dict[str, Any] = {}
        for key, item in value.items():
            if key == "note" and isinstance(item, str):
                scrubbed[key] = None
            elif key == "metadata" and isinstance(item, dict):
                scrubbed[key] = {}
            else:
                scrubbed[key] = _scrub(item, secret)
        return scrubbed
    if isinstance(value, list):
        return [_scrub(item, secret) for item in value]
    if isinstance(value, str) and value in secret:
        return None
    return value
