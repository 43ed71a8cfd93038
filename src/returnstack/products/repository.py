"""The SQL of product signals and reports; every query is scoped by tenant."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.orm import Session

from returnstack.kit.bulk import insert_rows, insert_rows_returning
from returnstack.models import (
    CategorySignal,
    Order,
    OrderLine,
    ProductBreakdown,
    ProductReason,
    ProductSignal,
    ReportedEvent,
    ReportedItem,
    Return,
    ReturnItem,
)

SORTABLE = {
    "units_sold": ProductSignal.units_sold,
    "units_returned": ProductSignal.units_returned,
    "return_rate": ProductSignal.return_rate,
    "product_id": ProductSignal.product_id,
}


# Rows, not ORM objects: a ranking reads up to 1,000 of them per request, and building
# entities would cost more than the query.


def signals(session: Session, tenant_id: str, product_ids: Sequence[str]) -> dict[str, Any]:
    if not product_ids:
        return {}
    table = ProductSignal.__table__
    rows = session.execute(
        select(table).where(
            table.c.tenant_id == tenant_id, table.c.product_id.in_(set(product_ids))
        )
    )
    return {row.product_id: row for row in rows}


def units(
    session: Session, tenant_id: str, product_ids: Sequence[str]
) -> dict[str, tuple[str | None, int, int]]:
    """(category, units sold, units returned) of the products that have signals: what a
    ranking reads (no more: every column read costs a conversion per row). An IN list, not
    `= ANY(array parameter)`: PostgreSQL may plan the parameter as an unknown array and test
    every row of the tenant against it (seen: 460 ms against 2 ms on 10 k products)."""
    if not product_ids:
        return {}
    table = ProductSignal.__table__
    query = select(
        table.c.product_id, table.c.category, table.c.units_sold, table.c.units_returned
    ).where(table.c.tenant_id == tenant_id, table.c.product_id.in_(set(product_ids)))
    rows = session.execute(query)
    return {product_id: (category, sold, returned) for product_id, category, sold, returned in rows}


def breakdowns(session: Session, tenant_id: str, product_ids: Sequence[str]) -> list[Any]:
    table = ProductBreakdown.__table__
    return list(
        session.execute(
            select(table).where(
                table.c.tenant_id == tenant_id, table.c.product_id.in_(set(product_ids))
            )
        )
    )


def reasons(session: Session, tenant_id: str, product_ids: Sequence[str]) -> list[Any]:
    table = ProductReason.__table__
    return list(
        session.execute(
            select(table).where(
                table.c.tenant_id == tenant_id, table.c.product_id.in_(set(product_ids))
            )
        )
    )


def categories(
    session: Session, tenant_id: str, paths: Iterable[str]
) -> dict[str, tuple[int, int]]:
    """(units sold, units returned) of the category paths asked for that have any."""
    wanted = set(paths)
    if not wanted:
        return {}
    rows = session.execute(
        select(CategorySignal.path, CategorySignal.units_sold, CategorySignal.units_returned).where(
            CategorySignal.tenant_id == tenant_id, CategorySignal.path.in_(wanted)
        )
    )
    return {path: (sold, returned) for path, sold, returned in rows}


def page_of_products(
    session: Session,
    tenant_id: str,
    *,
    sort: str,
    descending: bool,
    category: str | None,
    min_units_sold: int | None,
    after: tuple[Any, str] | None,
    limit: int,
) -> list[Any]:
    """One page of products in (sort value, product id) order, after a cursor's row."""
    column = SORTABLE[sort]
    query = select(ProductSignal.__table__).where(ProductSignal.tenant_id == tenant_id)
    if category is not None:
        query = query.where(
            or_(
                ProductSignal.category == category,
                ProductSignal.category.startswith(category + "/", autoescape=True),
            )
        )
    if min_units_sold is not None:
        query = query.where(ProductSignal.units_sold >= min_units_sold)
    if after is not None:
        value, product_id = after
        if sort == "product_id":
            query = query.where(column < product_id if descending else column > product_id)
        elif descending:
            query = query.where(
                or_(column < value, and_(column == value, ProductSignal.product_id < product_id))
            )
        else:
            query = query.where(
                or_(column > value, and_(column == value, ProductSignal.product_id > product_id))
            )
    order: list[Any] = [column.desc() if descending else column.asc()]
    if sort != "product_id":
        order.append(ProductSignal.product_id.desc() if descending else ProductSignal.product_id)
    return list(session.execute(query.order_by(*order).limit(limit)))


# --- the upkeep: adding a transaction's figures ---------------------------------------------


@dataclass(frozen=True)
class Counted:
    """A table the upkeep adds to: its key columns, then its counters (the rows' order)."""

    model: Any
    key: tuple[str, ...]
    counters: tuple[str, ...]


BREAKDOWNS = Counted(
    ProductBreakdown,
    ("tenant_id", "product_id", "variant_id", "channel", "store_id", "currency"),
    (
        "units_sold",
        "units_returned",
        "refunded",
        "reported_units_sold",
        "reported_units_returned",
        "reported_refunded",
    ),
)
REASONS = Counted(ProductReason, ("tenant_id", "product_id", "reason"), ("units", "reported_units"))
CATEGORIES = Counted(CategorySignal, ("tenant_id", "path"), ("units_sold", "units_returned"))
PRODUCTS = Counted(
    ProductSignal,
    ("tenant_id", "product_id", "category", "category_at"),
    ("units_sold", "units_returned", "reported_units_sold", "reported_units_returned"),
)


@lru_cache(maxsize=16)
def _adding(table: str, key: tuple[str, ...], counters: tuple[str, ...]) -> str:
    added = ", ".join(f"{name} = {table}.{name} + excluded.{name}" for name in counters)
    return f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {added}"


def add_counts(session: Session, table: Counted, rows: Sequence[tuple[Any, ...]]) -> None:
    """One statement: insert each row (key values, then counters), or add its counters to
    those of the row with its key. Rows in key order, each key once."""
    names = (*table.key, *table.counters)
    insert_rows(
        session,
        table.model,
        [dict(zip(names, row, strict=True)) for row in rows],
        on_conflict=_adding(table.model.__tablename__, table.key, table.counters),
    )


@lru_cache(maxsize=2)
def _product_upsert(dialect: str) -> str:
    """Counters added; the category replaced by a newer one (a later time, or at the same
    time a greater path, compared by code point as Python does); the rate recomputed (the
    division of doubles Python's `returned / sold` does); the old category kept aside."""
    old = "product_signals"
    text = ' COLLATE "C"' if dialect == "postgresql" else ""  # SQLite compares bytes
    double = "DOUBLE PRECISION" if dialect == "postgresql" else "REAL"
    newer = (
        f"excluded.category IS NOT NULL AND ({old}.category_at IS NULL"
        f" OR excluded.category_at > {old}.category_at"
        f" OR (excluded.category_at = {old}.category_at"
        f" AND excluded.category{text} > COALESCE({old}.category, ''){text}))"
    )
    sold = f"({old}.units_sold + excluded.units_sold)"
    returned = f"({old}.units_returned + excluded.units_returned)"
    return (
        "ON CONFLICT (tenant_id, product_id) DO UPDATE SET "
        f"previous_category = {old}.category, "
        f"category = CASE WHEN {newer} THEN excluded.category ELSE {old}.category END, "
        f"category_at = CASE WHEN {newer} THEN excluded.category_at ELSE {old}.category_at END, "
        + "".join(f"{name} = {old}.{name} + excluded.{name}, " for name in PRODUCTS.counters)
        + f"return_rate = CASE WHEN {sold} > 0 THEN CAST({returned} AS {double}) / {sold}"
        " ELSE 0.0 END"
    )


def add_to_products(
    session: Session, rows: Sequence[tuple[Any, ...]]
) -> list[tuple[str, str | None, str | None, int, int]]:
    """One statement: each row (tenant, product, candidate category and its time or None,
    the four counters to add, the rate of a new row) creates its product or adds to it.
    Rows in key order. Answers (product id, category before, category, units sold, units
    returned) as written: the products stay locked until the transaction ends, so these
    are the figures the category rollups must move."""
    if not rows:
        return []
    names = (*PRODUCTS.key, *PRODUCTS.counters, "return_rate")
    dialect = session.connection().dialect.name
    written = insert_rows_returning(
        session,
        ProductSignal,
        [dict(zip(names, row, strict=True)) for row in rows],
        on_conflict=_product_upsert(dialect),
        returning=("product_id", "previous_category", "category", "units_sold", "units_returned"),
    )
    return [(row[0], row[1], row[2], row[3], row[4]) for row in written]


# --- reports -------------------------------------------------------------------------------

GROUPS = ("reason", "category", "product", "store", "channel", "day", "week", "month")


def _day(session: Session, column: Any) -> ColumnElement[Any]:
    """The UTC calendar day of a timestamp, as YYYY-MM-DD text."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.date(column)  # SQLite stores UTC text


def _group_column(
    session: Session, group_by: str, *, product: Any, store: Any, channel: Any, at: Any
) -> Any:
    if group_by == "category":
        return ProductSignal.category
    if group_by == "product":
        return product
    if group_by == "store":
        return store
    if group_by == "channel":
        return channel
    return _day(session, at)  # day, week and month are folded from days


def _return_group(session: Session, group_by: str) -> Any:
    """The group of a verified return's item."""
    if group_by == "reason":
        return ReturnItem.reason
    return _group_column(
        session,
        group_by,
        product=ReturnItem.product_id,
        store=Return.store_id,
        channel=Return.channel,
        at=Return.created_at,
    )


def _reported_group(session: Session, group_by: str) -> Any:
    """The group of a reported event's item (a reported purchase has no reason)."""
    if group_by == "reason":
        return func.coalesce(ReportedItem.reason, "other")
    return _group_column(
        session,
        group_by,
        product=ReportedItem.product_id,
        store=ReportedEvent.store_id,
        channel=ReportedEvent.channel,
        at=ReportedEvent.occurred_at,
    )


def _with_category(query: Select[Any], group_by: str, tenant_id: str, product: Any) -> Any:
    if group_by != "category":
        return query
    return query.outerjoin(
        ProductSignal,
        and_(ProductSignal.tenant_id == tenant_id, ProductSignal.product_id == product),
    )


def _sale_groups(session: Session, group_bys: Sequence[str], *, reported: bool) -> list[Any]:
    """One labelled column per grouping (g0, g1, ...) of a sold unit."""
    if reported:
        return [
            _reported_group(session, group_by).label(f"g{index}")
            for index, group_by in enumerate(group_bys)
        ]
    return [
        _group_column(
            session,
            group_by,
            product=OrderLine.product_id,
            store=Order.store_id,
            channel=Order.channel,
            at=Order.placed_at,
        ).label(f"g{index}")
        for index, group_by in enumerate(group_bys)
    ]


def _return_groups(session: Session, group_bys: Sequence[str], *, reported: bool) -> list[Any]:
    """One labelled column per grouping of a returned item (verified, or reported)."""
    group = _reported_group if reported else _return_group
    return [group(session, by).label(f"g{index}") for index, by in enumerate(group_bys)]


def _categorised(query: Select[Any], group_bys: Sequence[str], tenant_id: str, product: Any) -> Any:
    return _with_category(query, "category" if "category" in group_bys else "", tenant_id, product)


def units_sold_by(
    session: Session,
    tenant_id: str,
    *,
    group_bys: Sequence[str],
    start: datetime,
    end: datetime,
    currency: str,
) -> list[tuple[Any, ...]]:
    """(group of each grouping..., units sold) in [start, end): units_sold for several
    groupings (not reason) in one query, summed per combination of their groups."""
    verified = select(
        *_sale_groups(session, group_bys, reported=False), OrderLine.quantity.label("units")
    ).join(Order, and_(Order.tenant_id == OrderLine.tenant_id, Order.id == OrderLine.order_id))
    verified = _categorised(verified, group_bys, tenant_id, OrderLine.product_id).where(
        OrderLine.tenant_id == tenant_id,
        Order.placed_at >= start,
        Order.placed_at < end,
        Order.currency == currency,
    )
    reported = select(
        *_sale_groups(session, group_bys, reported=True), ReportedItem.quantity.label("units")
    ).join(
        ReportedEvent,
        and_(
            ReportedEvent.tenant_id == ReportedItem.tenant_id,
            ReportedEvent.client_id == ReportedItem.event_client_id,
        ),
    )
    reported = _categorised(reported, group_bys, tenant_id, ReportedItem.product_id).where(
        ReportedItem.tenant_id == tenant_id,
        ReportedEvent.type == "purchase",
        ReportedEvent.occurred_at >= start,
        ReportedEvent.occurred_at < end,
        ReportedEvent.currency == currency,
    )
    both = verified.union_all(reported).subquery()
    groups = [both.c[f"g{index}"] for index in range(len(group_bys))]
    query = select(*groups, func.sum(both.c.units)).group_by(*groups)
    return [(*row[:-1], int(row[-1])) for row in session.execute(query)]


def units_returned_by(
    session: Session,
    tenant_id: str,
    *,
    group_bys: Sequence[str],
    start: datetime,
    end: datetime,
    currency: str,
) -> list[tuple[Any, ...]]:
    """(group of each grouping..., return key, units back): units_returned's rows for
    several groupings at once, per return (so returns can be counted once per group)."""
    verified = select(
        *_return_groups(session, group_bys, reported=False),
        (literal("v:") + Return.id).label("ret"),
        ReturnItem.received_quantity.label("units"),
    ).join(
        Return, and_(Return.tenant_id == ReturnItem.tenant_id, Return.id == ReturnItem.return_id)
    )
    verified = _categorised(verified, group_bys, tenant_id, ReturnItem.product_id).where(
        ReturnItem.tenant_id == tenant_id,
        ReturnItem.received_quantity > 0,
        Return.created_at >= start,
        Return.created_at < end,
        Return.currency == currency,
    )
    reported = select(
        *_return_groups(session, group_bys, reported=True),
        (literal("r:") + ReportedEvent.client_id).label("ret"),
        ReportedItem.quantity.label("units"),
    ).join(
        ReportedEvent,
        and_(
            ReportedEvent.tenant_id == ReportedItem.tenant_id,
            ReportedEvent.client_id == ReportedItem.event_client_id,
        ),
    )
    reported = _categorised(reported, group_bys, tenant_id, ReportedItem.product_id).where(
        ReportedItem.tenant_id == tenant_id,
        ReportedEvent.type == "return",
        ReportedEvent.occurred_at >= start,
        ReportedEvent.occurred_at < end,
        ReportedEvent.currency == currency,
    )
    both = verified.union_all(reported).subquery()
    groups = [both.c[f"g{index}"] for index in range(len(group_bys))]
    query = select(*groups, both.c.ret, func.sum(both.c.units)).group_by(*groups, both.c.ret)
    return [(*row[:-1], int(row[-1])) for row in session.execute(query)]


def refunded_items_by(
    session: Session,
    tenant_id: str,
    *,
    group_bys: Sequence[str],
    start: datetime,
    end: datetime,
    currency: str,
) -> list[tuple[Any, ...]]:
    """(return key, refund amount, quantity, unit price, group of each grouping...) of
    refunded returns' items in position order: refunded_items for several groupings."""
    verified = select(
        (literal("v:") + Return.id).label("ret"),
        Return.refund_amount.label("amount"),
        ReturnItem.position.label("position"),
        ReturnItem.quantity.label("quantity"),
        ReturnItem.unit_price.label("unit_price"),
        *_return_groups(session, group_bys, reported=False),
    ).join(
        Return, and_(Return.tenant_id == ReturnItem.tenant_id, Return.id == ReturnItem.return_id)
    )
    verified = _categorised(verified, group_bys, tenant_id, ReturnItem.product_id).where(
        ReturnItem.tenant_id == tenant_id,
        Return.refund_amount > 0,
        Return.created_at >= start,
        Return.created_at < end,
        Return.currency == currency,
    )
    reported = select(
        (literal("r:") + ReportedEvent.client_id).label("ret"),
        ReportedEvent.refund_amount.label("amount"),
        ReportedItem.position.label("position"),
        ReportedItem.quantity.label("quantity"),
        ReportedItem.unit_price.label("unit_price"),
        *_return_groups(session, group_bys, reported=True),
    ).join(
        ReportedEvent,
        and_(
            ReportedEvent.tenant_id == ReportedItem.tenant_id,
            ReportedEvent.client_id == ReportedItem.event_client_id,
        ),
    )
    reported = _categorised(reported, group_bys, tenant_id, ReportedItem.product_id).where(
        ReportedItem.tenant_id == tenant_id,
        ReportedEvent.type == "return",
        ReportedEvent.refund_amount > 0,
        ReportedEvent.occurred_at >= start,
        ReportedEvent.occurred_at < end,
        ReportedEvent.currency == currency,
    )
    both = verified.union_all(reported).subquery()
    groups = [both.c[f"g{index}"] for index in range(len(group_bys))]
    query = select(both.c.ret, both.c.amount, both.c.quantity, both.c.unit_price, *groups).order_by(
        both.c.ret, both.c.position
    )
    return [tuple(row) for row in session.execute(query)]
