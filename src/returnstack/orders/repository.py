"""The orders' SQL: stores, orders and lines as purchases record them, and what returns
claimed of each line."""

from collections.abc import Iterable, Sequence
from typing import Any, cast

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Row,
    Select,
    Table,
    and_,
    bindparam,
    case,
    func,
    literal_column,
    null,
    select,
    true,
    union_all,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from returnstack.events.schemas import StoreRef
from returnstack.kit.bulk import insert_rows, insert_rows_returning, select_rows
from returnstack.models import Order, OrderLine, Return, ReturnItem, Store

STORE_DETAILS = ("name", "city", "region", "country", "postal_code")
ORDERS = cast(Table, Order.__table__)
LINES = cast(Table, OrderLine.__table__)
STORES = cast(Table, Store.__table__)
RETURNS = cast(Table, Return.__table__)
ITEMS = cast(Table, ReturnItem.__table__)


def store_resource(store: StoreRef | Store | None) -> dict[str, Any] | None:
    """A store as orders and returns show it (a stored row or one named by an event)."""
    if store is None:
        return None
    return {"id": store.id, "name": store.name, "city": store.city, "country": store.country}


def load_stores(session: Session, *, tenant_id: str, ids: Iterable[str | None]) -> dict[str, Store]:
    wanted = {store_id for store_id in ids if store_id}
    if not wanted:
        return {}
    query = select(Store).where(Store.tenant_id == tenant_id, Store.id.in_(wanted))
    return {store.id: store for store in session.scalars(query)}


def store_details(
    session: Session, *, tenant_id: str, ids: Sequence[str]
) -> dict[str, tuple[Any, ...]]:
    """The `STORE_DETAILS` of the stores known, by id (a plain read: the ingestion path)."""
    found: dict[str, tuple[Any, ...]] = {}
    columns = ", ".join(STORE_DETAILS)
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        marks = ", ".join("?" * len(chunk))
        sql = f"SELECT id, {columns} FROM stores WHERE tenant_id = ? AND id IN ({marks})"
        rows = select_rows(session, sql, [tenant_id, *chunk])
        found.update((row[0], tuple(row[1:])) for row in rows)
    return found


def upsert_stores(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Details given (not null) replace the stored ones; absent ones keep them."""
    insert_rows(
        session,
        Store,
        rows,
        on_conflict="ON CONFLICT (tenant_id, id) DO UPDATE SET "
        + ", ".join(f"{col} = COALESCE(excluded.{col}, stores.{col})" for col in STORE_DETAILS)
        + ", updated_at = excluded.updated_at",
    )


def insert_new_orders(session: Session, orders: Sequence[dict[str, Any]]) -> set[str]:
    """The ids of the orders inserted (an order already known is left as it is)."""
    inserted = insert_rows_returning(
        session, Order, orders, on_conflict="ON CONFLICT DO NOTHING", returning=("id",)
    )
    return {order_id for (order_id,) in inserted}


# What a line copies from its order (the reports read units sold from the lines alone).
ORDER_COPIED = ("placed_at", "currency", "channel", "store_id")


def order_copied(
    session: Session, *, tenant_id: str, order_ids: Sequence[str]
) -> dict[str, tuple[Any, ...]]:
    """(placed_at, currency, channel, store_id) of each recorded order asked for."""
    query = select(Order.id, Order.placed_at, Order.currency, Order.channel, Order.store_id).where(
        Order.tenant_id == tenant_id, Order.id.in_(order_ids)
    )
    return {row[0]: tuple(row[1:]) for row in session.execute(query)}


def insert_lines(session: Session, lines: Sequence[dict[str, Any]]) -> None:
    """Lines known to be new (those of orders inserted just now)."""
    insert_rows(session, OrderLine, lines)


def insert_new_lines(session: Session, lines: Sequence[dict[str, Any]]) -> set[tuple[str, str]]:
    """The (order id, line id) of the lines inserted; lines already recorded are kept."""
    return set(
        insert_rows_returning(
            session,
            OrderLine,
            lines,
            on_conflict="ON CONFLICT DO NOTHING",
            returning=("order_id", "line_id"),
        )
    )


def order_owners(
    session: Session, *, tenant_id: str, order_ids: Sequence[str]
) -> dict[str, tuple[str | None, str | None, str]]:
    """(customer id, email, currency) of each order."""
    query = select(Order.id, Order.customer_id, Order.email, Order.currency).where(
        Order.tenant_id == tenant_id, Order.id.in_(order_ids)
    )
    return {order_id: (cid, email, cur) for order_id, cid, email, cur in session.execute(query)}


def find_order(session: Session, *, tenant_id: str, order_id: str) -> Order | None:
    if "\x00" in order_id:  # cannot be stored, so cannot exist (and PostgreSQL refuses it)
        return None
    return session.scalar(select(Order).where(Order.tenant_id == tenant_id, Order.id == order_id))


# Built once, with bound parameters: building a statement and its cache key on every call
# cost more than running it (the eligibility check of every new return).
_LOCK_ORDERS = (
    select(Order)
    .where(
        Order.tenant_id == bindparam("tenant_id"), Order.id.in_(bindparam("ids", expanding=True))
    )
    .order_by(Order.id)
    .with_for_update()
)


def lock_orders(session: Session, *, tenant_id: str, order_ids: Sequence[str]) -> list[Order]:
    """The orders, locked for this transaction in id order (so no deadlocks)."""
    return list(session.scalars(_LOCK_ORDERS, {"tenant_id": tenant_id, "ids": list(order_ids)}))


def lines_of(session: Session, *, tenant_id: str, order_ids: Sequence[str]) -> list[OrderLine]:
    return list(
        session.scalars(
            select(OrderLine)
            .where(OrderLine.tenant_id == tenant_id, OrderLine.order_id.in_(order_ids))
            .order_by(OrderLine.order_id, OrderLine.position)
        )
    )


def claims_on(
    session: Session, *, tenant_id: str, order_ids: Sequence[str], exclude_return_id: str | None
) -> list[Row[*tuple[Any, ...]]]:
    """(order id, line id, product id, variant id, units claimed, units back) per line (or
    product) the returns name; only claiming returns claim units."""
    claiming = Return.claiming.is_(True)
    rows = session.execute(
        select(
            ReturnItem.order_id,
            ReturnItem.line_id,
            ReturnItem.product_id,
            ReturnItem.variant_id,
            func.sum(ReturnItem.quantity).filter(claiming),
            func.sum(ReturnItem.received_quantity),
        )
        .join(
            Return, (Return.tenant_id == ReturnItem.tenant_id) & (Return.id == ReturnItem.return_id)
        )
        .where(
            ReturnItem.tenant_id == tenant_id,
            ReturnItem.order_id.in_(order_ids),
            ReturnItem.return_id != exclude_return_id if exclude_return_id else true(),
        )
        .group_by(
            ReturnItem.order_id, ReturnItem.line_id, ReturnItem.product_id, ReturnItem.variant_id
        )
    )
    return list(rows)


# --- lean reads (Core: rows, no ORM objects) --------------------------------------------

# An order as the API shows it, with its store's details (store_key null: no such store).
_ORDER_ROWS = select(
    ORDERS.c.id,
    ORDERS.c.customer_id,
    ORDERS.c.email,
    ORDERS.c.channel,
    ORDERS.c.store_id,
    ORDERS.c.currency,
    ORDERS.c.placed_at,
    STORES.c.id.label("store_key"),
    STORES.c.name.label("store_name"),
    STORES.c.city.label("store_city"),
    STORES.c.country.label("store_country"),
).select_from(
    ORDERS.outerjoin(
        STORES, and_(STORES.c.tenant_id == ORDERS.c.tenant_id, STORES.c.id == ORDERS.c.store_id)
    )
)


def order_rows(tenant_id: str, condition: ColumnElement[bool]) -> Select[Any]:
    """The query of the orders `condition` selects, as `render_orders` takes them."""
    return _ORDER_ROWS.where(ORDERS.c.tenant_id == tenant_id, condition)


def order_row(connection: Connection, *, tenant_id: str, order_id: str) -> Row[Any] | None:
    if "\x00" in order_id:  # cannot be stored, so cannot exist (and PostgreSQL refuses it)
        return None
    return connection.execute(order_rows(tenant_id, ORDERS.c.id == order_id)).first()


def store_rows(
    connection: Connection, *, tenant_id: str, ids: Iterable[str | None]
) -> dict[str, Any]:
    wanted = {store_id for store_id in ids if store_id}
    if not wanted:
        return {}
    params = {"tenant_id": tenant_id, "ids": list(wanted)}
    return {row.id: row for row in connection.execute(_STORE_ROWS, params)}


_STORE_ROWS = select(STORES.c.id, STORES.c.name, STORES.c.city, STORES.c.country).where(
    STORES.c.tenant_id == bindparam("tenant_id"), STORES.c.id.in_(bindparam("ids", expanding=True))
)


LINE, CLAIM = 0, 1


def _line_order(row: Row[Any]) -> tuple[int, str, int]:
    return (row.kind, row.order_id, row.position or 0)


def lines_and_claims(
    connection: Connection,
    *,
    tenant_id: str,
    order_ids: Sequence[str],
    exclude_return_id: str | None,
) -> list[Row[Any]]:
    """One query: the orders' lines in order (kind LINE), then their return items (kind
    CLAIM: `quantity` the units claimed, `unit_price` the units back; only claiming returns
    claim units)."""
    params: dict[str, Any] = {"tenant_id": tenant_id, "ids": list(order_ids)}
    if exclude_return_id:
        params["exclude"] = exclude_return_id
    query = _LINES_AND_CLAIMS[bool(exclude_return_id)]
    return sorted(connection.execute(query, params), key=_line_order)


def _lines_and_claims(exclude: bool) -> Any:
    tenant_id: BindParameter[str] = bindparam("tenant_id")
    order_ids: BindParameter[list[str]] = bindparam("ids", expanding=True)
    lines = select(
        literal_column(str(LINE)).label("kind"),
        LINES.c.order_id,
        LINES.c.line_id,
        LINES.c.product_id,
        LINES.c.variant_id,
        LINES.c.name,
        LINES.c.category,
        LINES.c.quantity,
        LINES.c.unit_price,
        LINES.c.position,
    ).where(LINES.c.tenant_id == tenant_id, LINES.c.order_id.in_(order_ids))
    # One row per return item (the caller adds them up).
    claims = (
        select(
            literal_column(str(CLAIM)),
            ITEMS.c.order_id,
            ITEMS.c.line_id,
            ITEMS.c.product_id,
            ITEMS.c.variant_id,
            null(),
            null(),
            case((RETURNS.c.claiming.is_(True), ITEMS.c.quantity), else_=literal_column("0")),
            ITEMS.c.received_quantity,
            null(),
        )
        .select_from(
            ITEMS.join(
                RETURNS,
                and_(RETURNS.c.tenant_id == ITEMS.c.tenant_id, RETURNS.c.id == ITEMS.c.return_id),
            )
        )
        .where(
            ITEMS.c.tenant_id == tenant_id,
            ITEMS.c.order_id.in_(order_ids),
            ITEMS.c.return_id != bindparam("exclude") if exclude else true(),
        )
    )
    return union_all(lines, claims)


# Without, then with, a return left out (built once: see _LOCK_ORDERS).
_LINES_AND_CLAIMS = (_lines_and_claims(False), _lines_and_claims(True))
