"""The returns' SQL: reading returns by id or number, for update, and as filtered,
paginated lists; the tenant's policy document."""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, and_, delete, exists, func, or_, select
from sqlalchemy.orm import Session

from returnstack.kit.bulk import insert_rows, select_rows
from returnstack.kit.errors import NotFound
from returnstack.kit.pagination import keyset_page
from returnstack.models import (
    Attachment,
    Event,
    Policy,
    Return,
    ReturnHistory,
    ReturnItem,
    Store,
)
from returnstack.orders.repository import load_stores, store_resource
from returnstack.returns.render import render_return

_ITEM_COLUMNS = [c.key for c in ReturnItem.__table__.columns]
_RETURN_COLUMNS = [c.key for c in Return.__table__.columns]


def _row(obj: Any, columns: list[str]) -> dict[str, Any]:
    data = {column: getattr(obj, column) for column in columns if column != "metadata"}
    if "metadata" in columns:
        data["metadata"] = obj.metadata_
    return data


_NUMBER = re.compile(r"[Rr]-([0-9]+)")
_LARGEST_NUMBER = 2**63 - 1  # the column is a BIGINT


def parse_number(reference: str) -> int | None:
    """'R-000123' (any case, any zero padding) -> 123; None for anything else, including
    digits that are not ASCII ('R-²') and numbers no return can have."""
    match = _NUMBER.fullmatch(reference)
    if match is None:
        return None
    digits = match.group(1).lstrip("0") or "0"
    if len(digits) > 19:  # (and int() refuses strings of over 4,300 digits)
        return None
    number = int(digits)
    return number if number <= _LARGEST_NUMBER else None


def find_return(
    session: Session, *, tenant_id: str, reference: str, for_update: bool = False
) -> Return:
    """A return by id (ret_...) or number (R-000123); 404 when the tenant has none."""
    number = parse_number(reference)
    condition = Return.number == number if number is not None else Return.id == reference
    query = select(Return).where(Return.tenant_id == tenant_id, condition)
    if for_update:
        query = query.with_for_update()
    ret = None if "\x00" in reference else session.scalar(query)
    if ret is None:
        raise NotFound(f"No return {reference!r}.")
    return ret


def items_of(session: Session, ret: Return) -> list[ReturnItem]:
    query = select(ReturnItem).where(
        ReturnItem.tenant_id == ret.tenant_id, ReturnItem.return_id == ret.id
    )
    return list(session.scalars(query.order_by(ReturnItem.position)))


def received_anything(session: Session, ret: Return) -> bool:
    total = session.scalar(
        select(func.coalesce(func.sum(ReturnItem.received_quantity), 0)).where(
            ReturnItem.tenant_id == ret.tenant_id, ReturnItem.return_id == ret.id
        )
    )
    return bool(total)


def replace_items(session: Session, ret: Return, rows: Sequence[dict[str, Any]]) -> None:
    session.execute(
        delete(ReturnItem).where(
            ReturnItem.tenant_id == ret.tenant_id, ReturnItem.return_id == ret.id
        )
    )
    insert_rows(session, ReturnItem, rows)


def last_history_seq(session: Session, ret: Return) -> int:
    """The number of the return's latest history entry (0 before the first)."""
    seq = session.scalar(
        select(func.max(ReturnHistory.seq)).where(
            ReturnHistory.tenant_id == ret.tenant_id, ReturnHistory.return_id == ret.id
        )
    )
    return seq or 0


def render_returns(
    session: Session, *, tenant_id: str, returns: Sequence[Return]
) -> list[dict[str, Any]]:
    """Returns as the API shows them: items, history, attachments and store, in 4 queries."""
    if not returns:
        return []
    ids = [ret.id for ret in returns]
    items: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    for item in session.scalars(
        select(ReturnItem)
        .where(ReturnItem.tenant_id == tenant_id, ReturnItem.return_id.in_(ids))
        .order_by(ReturnItem.return_id, ReturnItem.position)
    ):
        items[item.return_id].append(_row(item, _ITEM_COLUMNS))
    history: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    for entry in session.scalars(
        select(ReturnHistory)
        .where(ReturnHistory.tenant_id == tenant_id, ReturnHistory.return_id.in_(ids))
        .order_by(ReturnHistory.return_id, ReturnHistory.seq)
    ):
        history[entry.return_id].append(
            {c.key: getattr(entry, c.key) for c in ReturnHistory.__table__.columns}
        )
    attachments: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    for attachment in session.scalars(
        select(Attachment)
        .where(Attachment.tenant_id == tenant_id, Attachment.return_id.in_(ids))
        .order_by(Attachment.return_id, Attachment.created_at, Attachment.id)
    ):
        attachments[attachment.return_id].append(
            {
                "id": attachment.id,
                "filename": attachment.filename,
                "content_type": attachment.content_type,
                "size": attachment.size,
                "url": f"/v1/returns/{attachment.return_id}/attachments/{attachment.id}",
            }
        )
    stores = load_stores(session, tenant_id=tenant_id, ids={ret.store_id for ret in returns})
    return [
        render_return(
            _row(ret, _RETURN_COLUMNS),
            items[ret.id],
            history[ret.id],
            store=_store(ret.store_id, stores),
            attachments=attachments[ret.id],
        )
        for ret in returns
    ]


def _store(store_id: str | None, stores: dict[str, Store]) -> dict[str, Any] | None:
    if store_id is None:
        return None
    known = stores.get(store_id)
    if known is None:  # named by a return before any event described it
        return {"id": store_id, "name": None, "city": None, "country": None}
    return store_resource(known)


@dataclass(frozen=True)
class ReturnFilters:
    customer_id: str | None = None
    # With customer_id: also the returns recorded under these emails alone (a guest's,
    # before the email was linked to the customer).
    guest_emails: tuple[str, ...] = ()
    email: str | None = None
    status: Sequence[str] = ()
    order_id: str | None = None
    product_id: str | None = None
    channel: str | None = None
    store_id: str | None = None
    source: str | None = None
    reason: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    q: str | None = None

    @property
    def matches_nothing(self) -> bool:
        """A NUL character in a text filter matches nothing: no stored text holds one."""
        texts = (self.customer_id, self.order_id, self.product_id, self.store_id, self.reason)
        return any("\x00" in (value or "") for value in (*texts, self.q))


def _filtered(query: Select[Any], tenant_id: str, filters: ReturnFilters) -> Select[Any]:
    conditions = [Return.tenant_id == tenant_id]
    if filters.customer_id is not None:
        conditions.append(
            or_(
                Return.customer_id == filters.customer_id,
                and_(Return.customer_id.is_(None), Return.email.in_(filters.guest_emails)),
            )
            if filters.guest_emails
            else Return.customer_id == filters.customer_id
        )
    if filters.email is not None:
        conditions.append(Return.email == filters.email)
    if filters.status:
        conditions.append(Return.status.in_(filters.status))
    for column, value in (
        (Return.channel, filters.channel),
        (Return.store_id, filters.store_id),
        (Return.source, filters.source),
    ):
        if value is not None:
            conditions.append(column == value)
    if filters.created_after is not None:
        conditions.append(Return.created_at >= filters.created_after)
    if filters.created_before is not None:
        conditions.append(Return.created_at < filters.created_before)
    item_conditions = []
    if filters.order_id is not None:
        item_conditions.append(ReturnItem.order_id == filters.order_id)
    if filters.product_id is not None:
        item_conditions.append(ReturnItem.product_id == filters.product_id)
    if filters.reason is not None:
        item_conditions.append(ReturnItem.reason == filters.reason)
    if item_conditions:
        conditions.append(
            exists().where(
                ReturnItem.tenant_id == Return.tenant_id,
                ReturnItem.return_id == Return.id,
                *item_conditions,
            )
        )
    if filters.q:
        # The text is matched literally: % and _ are not wildcards here.
        literal = filters.q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{literal}%"
        matches = [
            func.lower(Return.external_id).like(pattern, escape="\\"),
            func.lower(Return.email).like(pattern, escape="\\"),
            func.lower(Return.note).like(pattern, escape="\\"),
            exists().where(
                ReturnItem.tenant_id == Return.tenant_id,
                ReturnItem.return_id == Return.id,
                func.lower(ReturnItem.note).like(pattern, escape="\\"),
            ),
        ]
        number = parse_number(filters.q.strip())
        if number is not None:
            matches.append(Return.number == number)
        conditions.append(or_(*matches))
    return query.where(and_(*conditions))


def list_returns(
    session: Session,
    *,
    tenant_id: str,
    filters: ReturnFilters,
    limit: int,
    cursor: str | None,
    oldest_first: bool = False,
) -> tuple[list[Return], str | None]:
    """Newest first (oldest first for the dashboard's queues of waiting returns); the cursor
    is the (created_at, id) of the last row of the page."""
    return keyset_page(
        session,
        _filtered(select(Return), tenant_id, filters),
        at=Return.created_at,
        row_id=Return.id,
        limit=limit,
        cursor=cursor,
        oldest_first=oldest_first,
    )


def policy_document(session: Session, *, tenant_id: str) -> dict[str, Any] | None:
    return session.scalar(select(Policy.document).where(Policy.tenant_id == tenant_id))


def policy_version(session: Session, *, tenant_id: str) -> Any:
    """What changes whenever the tenant's policy is saved (its time; None: no policy)."""
    rows = select_rows(session, "SELECT updated_at FROM policies WHERE tenant_id = ?", [tenant_id])
    return rows[0][0] if rows else None


def save_policy_document(session: Session, *, tenant_id: str, document: dict[str, Any]) -> None:
    row = {"tenant_id": tenant_id, "document": document, "updated_at": datetime.now(UTC)}
    insert_rows(
        session,
        Policy,
        [row],
        on_conflict="ON CONFLICT (tenant_id) DO UPDATE SET "
        "document = excluded.document, updated_at = excluded.updated_at",
    )


@dataclass(frozen=True)
class RecordedSummary:
    """A return recorded from events, as a vendor adapter needs it to add items to it."""

    id: str
    customer_id: str | None
    email: str | None
    currency: str
    refund_amount: int
    order_ids: frozenset[str]
    product_ids: frozenset[str]


def recorded_returns_by_event(
    session: Session, *, tenant_id: str, client_ids: Sequence[str]
) -> dict[str, RecordedSummary]:
    """The returns recorded from these (verified) events, by the events' client ids."""
    found: dict[str, Return] = {}
    ordered = sorted(set(client_ids))
    for start in range(0, len(ordered), 500):
        query = (
            select(Event.client_id, Return)
            .join(Return, and_(Return.tenant_id == Event.tenant_id, Return.event_id == Event.id))
            .where(Event.tenant_id == tenant_id, Event.client_id.in_(ordered[start : start + 500]))
        )
        found.update({client_id: ret for client_id, ret in session.execute(query)})
    orders: dict[str, set[str]] = {ret.id: set() for ret in found.values()}
    products: dict[str, set[str]] = {ret.id: set() for ret in found.values()}
    ids = sorted(orders)
    for start in range(0, len(ids), 500):
        items = select(ReturnItem.return_id, ReturnItem.order_id, ReturnItem.product_id).where(
            ReturnItem.tenant_id == tenant_id, ReturnItem.return_id.in_(ids[start : start + 500])
        )
        for return_id, order_id, product_id in session.execute(items):
            orders[return_id].add(order_id)
            products[return_id].add(product_id)
    return {
        client_id: RecordedSummary(
            id=ret.id,
            customer_id=ret.customer_id,
            email=ret.email,
            currency=ret.currency,
            refund_amount=ret.refund_amount or 0,
            order_ids=frozenset(orders[ret.id]),
            product_ids=frozenset(products[ret.id]),
        )
        for client_id, ret in found.items()
    }
