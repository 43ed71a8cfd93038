"""The returns' SQL: reading returns by id or number, for update, and as filtered,
paginated lists; the tenant's policy document."""

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    Select,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    func,
    literal_column,
    null,
    or_,
    select,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.orm import Session

from returnstack.kit.bulk import insert_rows, select_rows
from returnstack.kit.errors import NotFound
from returnstack.kit.pagination import (
    cursor_moment,
    cursor_values,
    encode_cursor,
    invalid_cursor,
    keyset_page,
)
from returnstack.models import (
    Attachment,
    Event,
    Policy,
    Return,
    ReturnHistory,
    ReturnItem,
    Store,
)
from returnstack.models.base import UTCDateTime
from returnstack.orders.repository import load_stores
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


# --- lean reads and writes: Core statements built once, rows as dicts, no ORM objects ----

_returns = cast(Table, Return.__table__)
_items = cast(Table, ReturnItem.__table__)
_history = cast(Table, ReturnHistory.__table__)
_attachments = cast(Table, Attachment.__table__)
_stores = cast(Table, Store.__table__)

# A return with its store's details (a store named before any event described it has none).
_WITH_STORE = select(
    *_returns.c,
    _stores.c.name.label("store_name"),
    _stores.c.city.label("store_city"),
    _stores.c.country.label("store_country"),
).select_from(
    _returns.outerjoin(
        _stores,
        and_(_stores.c.tenant_id == _returns.c.tenant_id, _stores.c.id == _returns.c.store_id),
    )
)
_BY_ID = _WITH_STORE.where(
    _returns.c.tenant_id == bindparam("tenant_id"), _returns.c.id == bindparam("reference")
)
_BY_NUMBER = _WITH_STORE.where(
    _returns.c.tenant_id == bindparam("tenant_id"), _returns.c.number == bindparam("reference")
)
_LOCKED = {False: (_BY_ID, _BY_NUMBER), True: tuple(
    query.with_for_update(of=_returns) for query in (_BY_ID, _BY_NUMBER)
)}  # fmt: skip


def _children_query(several: bool) -> Select[Any]:
    """Items, history and attachments of some returns (or one: a statement whose SQL does
    not depend on the number of ids) in one statement: a UNION ALL whose branches share
    slots (text, integer, time), in the order the API shows them."""

    def branch(kind: int, table: Any, texts: list[Any], ints: list[Any], at: Any) -> Select[Any]:
        ids = (
            table.c.return_id.in_(bindparam("ids", expanding=True))
            if several
            else table.c.return_id == bindparam("id")
        )
        texts = texts + [null()] * (9 - len(texts))
        ints = ints + [null()] * (7 - len(ints))
        return select(
            table.c.return_id,
            literal_column(str(kind)).label("kind"),
            *(column.label(f"t{n}") for n, column in enumerate(texts)),
            *(column.label(f"i{n}") for n, column in enumerate(ints)),
            at.label("at"),
        ).where(table.c.tenant_id == bindparam("tenant_id"), ids)

    i, h, a = _items.c, _history.c, _attachments.c
    items = branch(
        0,
        _items,
        [i.order_id, i.line_id, i.product_id, i.variant_id, i.reason, i.note, i.resolution,
         i.outcome, i.disposition],
        [i.position, i.quantity, i.received_quantity, i.good_quantity, i.damaged_quantity,
         i.unit_price, i.fee_basis_points],
        type_coerce(null(), UTCDateTime()),  # the first branch types the slots
    )  # fmt: skip
    history = branch(
        1, _history, [h.from_status, h.to_status, h.action, h.actor, h.note], [h.seq], h.at
    )
    attachments = branch(
        2, _attachments, [a.id, a.filename, a.content_type], [null(), a.size], a.created_at
    )
    everything = union_all(items, history, attachments).subquery()
    c = everything.c
    return select(everything).order_by(c.return_id, c.kind, c.i0, c.at, c.t0)


_CHILDREN = _children_query(several=True)
_CHILDREN_OF_ONE = _children_query(several=False)
_ITEM_TEXTS = ("order_id", "line_id", "product_id", "variant_id", "reason", "note",
               "resolution", "outcome", "disposition")  # fmt: skip
_ITEM_INTS = ("position", "quantity", "received_quantity", "good_quantity", "damaged_quantity",
              "unit_price", "fee_basis_points")  # fmt: skip


@dataclass
class Loaded:
    """A return as rows: the return (its columns, and its store's details), its items and
    history (dicts of their columns) and attachments (as the API shows them)."""

    ret: dict[str, Any]
    items: list[dict[str, Any]]
    history: list[dict[str, Any]]
    attachments: list[dict[str, Any]]

    def render(self) -> dict[str, Any]:
        return render_return(
            self.ret,
            self.items,
            self.history,
            store=_store_of(self.ret),
            attachments=self.attachments,
        )


def _store_of(ret: RowMapping | dict[str, Any]) -> dict[str, Any] | None:
    if ret["store_id"] is None:
        return None
    return {
        "id": ret["store_id"],
        "name": ret["store_name"],
        "city": ret["store_city"],
        "country": ret["store_country"],
    }


def _load_children(
    session: Session, tenant_id: str, rets: Sequence[dict[str, Any]]
) -> list[Loaded]:
    loaded = {ret["id"]: Loaded(ret, [], [], []) for ret in rets}
    if not loaded:
        return []
    if len(loaded) == 1:
        query, params = _CHILDREN_OF_ONE, {"tenant_id": tenant_id, "id": next(iter(loaded))}
    else:
        query, params = _CHILDREN, {"tenant_id": tenant_id, "ids": list(loaded)}
    for row in session.connection().execute(query, params):
        entry = loaded[row.return_id]
        if row.kind == 0:
            item = {"tenant_id": tenant_id, "return_id": row.return_id}
            item.update(zip(_ITEM_TEXTS, row[2:11], strict=True))
            item.update(zip(_ITEM_INTS, row[11:18], strict=True))
            entry.items.append(item)
        elif row.kind == 1:
            entry.history.append(
                {
                    "seq": row.i0,
                    "at": row.at,
                    "from_status": row.t0,
                    "to_status": row.t1,
                    "action": row.t2,
                    "actor": row.t3,
                    "note": row.t4,
                }
            )
        else:
            entry.attachments.append(
                {
                    "id": row.t0,
                    "filename": row.t1,
                    "content_type": row.t2,
                    "size": row.i1,
                    "url": f"/v1/returns/{row.return_id}/attachments/{row.t0}",
                }
            )
    return list(loaded.values())


def load_return(
    session: Session, *, tenant_id: str, reference: str, for_update: bool = False
) -> Loaded:
    """A return by id or number, with everything the API shows of it, in two statements
    (locked for the transaction with `for_update`); 404 when the tenant has none."""
    number = parse_number(reference)
    by_id, by_number = _LOCKED[for_update]
    row = None
    if "\x00" not in reference:
        row = (
            session.connection()
            .execute(
                by_id if number is None else by_number,
                {"tenant_id": tenant_id, "reference": reference if number is None else number},
            )
            .mappings()
            .first()
        )
    if row is None:
        raise NotFound(f"No return {reference!r}.")
    return _load_children(session, tenant_id, [dict(row)])[0]


def store_details(session: Session, *, tenant_id: str, store_id: str | None) -> dict[str, Any]:
    """The store columns of _WITH_STORE for a return about to be written."""
    details: dict[str, Any] = {"store_name": None, "store_city": None, "store_country": None}
    if store_id is not None:
        query = select(_stores.c.name, _stores.c.city, _stores.c.country).where(
            _stores.c.tenant_id == tenant_id, _stores.c.id == store_id
        )
        row = session.connection().execute(query).first()
        if row is not None:
            details.update(zip(details, row, strict=True))
    return details


def save_action(
    session: Session,
    loaded: Loaded,
    *,
    columns: dict[str, Any],
    items: Sequence[dict[str, Any]],
    history: dict[str, Any],
) -> None:
    """Write a lifecycle step: the return's changed columns, the items' changed receipts
    (one executemany) and its history entry. The return is locked by the caller."""
    ret = loaded.ret
    connection = session.connection()
    keys = ("tenant_id", "id")
    connection.execute(
        _update_return(tuple(columns)),
        {f"v_{key}": value for key, value in columns.items()}
        | {f"k_{key}": ret[key] for key in keys},
    )
    if items:
        connection.execute(
            _UPDATE_RECEIPTS,
            [
                {f"v_{key}": item[key] for key in _RECEIPT_COLUMNS}
                | {
                    "k_tenant_id": ret["tenant_id"],
                    "k_id": ret["id"],
                    "k_position": item["position"],
                }
                for item in items
            ],
        )
    insert_rows(session, ReturnHistory, [history])


@functools.lru_cache(maxsize=64)
def _update_return(columns: tuple[str, ...]) -> Any:
    return (
        update(_returns)
        .where(_returns.c.tenant_id == bindparam("k_tenant_id"), _returns.c.id == bindparam("k_id"))
        .values({column: bindparam(f"v_{column}") for column in columns})
    )


_RECEIPT_COLUMNS = (
    "received_quantity",
    "good_quantity",
    "damaged_quantity",
    "outcome",
    "disposition",
)
_UPDATE_RECEIPTS = (
    update(_items)
    .where(
        _items.c.tenant_id == bindparam("k_tenant_id"),
        _items.c.return_id == bindparam("k_id"),
        _items.c.position == bindparam("k_position"),
    )
    .values({column: bindparam(f"v_{column}") for column in _RECEIPT_COLUMNS})
)


def render_rows(
    session: Session, tenant_id: str, rows: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Returns (rows of _WITH_STORE) as the API shows them, with one more statement."""
    return [loaded.render() for loaded in _load_children(session, tenant_id, rows)]


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
    """Returns (ORM objects) as the API shows them: stores, then the rest in one statement."""
    if not returns:
        return []
    stores = load_stores(session, tenant_id=tenant_id, ids={ret.store_id for ret in returns})
    rows = []
    for ret in returns:
        row = _row(ret, _RETURN_COLUMNS)
        store = stores.get(ret.store_id) if ret.store_id else None
        row["store_name"] = store.name if store else None
        row["store_city"] = store.city if store else None
        row["store_country"] = store.country if store else None
        rows.append(row)
    return render_rows(session, tenant_id, rows)


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


def page_of_returns(
    session: Session, *, tenant_id: str, filters: ReturnFilters, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """list_returns' page (newest first) as rows of _WITH_STORE, with Core."""
    query = _filtered(_WITH_STORE, tenant_id, filters)
    at, row_id = _returns.c.created_at, _returns.c.id
    if cursor is not None:
        moment, after_id = cursor_values(cursor, 2)
        if not isinstance(after_id, str):
            raise invalid_cursor()
        after_at = cursor_moment(moment)
        query = query.where(or_(at < after_at, and_(at == after_at, row_id < after_id)))
    query = query.order_by(at.desc(), row_id.desc()).limit(limit + 1)
    rows = [dict(row) for row in session.connection().execute(query).mappings()]
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(last["created_at"], last["id"])


_POLICY = select(Policy.__table__.c.document).where(
    Policy.__table__.c.tenant_id == bindparam("tenant_id")
)


def policy_document(session: Session, *, tenant_id: str) -> dict[str, Any] | None:
    document = session.connection().execute(_POLICY, {"tenant_id": tenant_id}).scalar()
    return cast(dict[str, Any] | None, document)


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
