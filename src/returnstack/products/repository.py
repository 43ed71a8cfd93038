"""The SQL of product signals and reports; every query is scoped by tenant."""

from collections import defaultdict, namedtuple
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    and_,
    any_,
    bindparam,
    func,
    literal,
    literal_column,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from returnstack.kit.bulk import execute_many, insert_tuples, select_rows, sqlite_datetime
from returnstack.models import (
    CategorySignal,
    OrderLine,
    ProductBreakdown,
    ProductReason,
    ProductSignal,
    ReportedEvent,
    ReportedItem,
    Return,
    ReturnItem,
)

NO_VARIANT = ""  # key columns cannot be null; a client id is never empty
NO_STORE = ""

SORTABLE = {
    "units_sold": ProductSignal.units_sold,
    "units_returned": ProductSignal.units_returned,
    "return_rate": ProductSignal.return_rate,
    "product_id": ProductSignal.product_id,
}


# Rows, not ORM objects: a ranking reads up to 1,000 of them per request, and building
# entities would cost more than the query.

# The reads of stats and rankings run on a session (lists, rebuilds, tests) or on a lean
# read's own connection (kit.deps.read_json).
Reader = Session | Connection


def _is_postgresql(reader: Reader) -> bool:
    bind = reader if isinstance(reader, Connection) else reader.get_bind()
    return bind.dialect.name == "postgresql"


def signals(session: Session, tenant_id: str, product_ids: Sequence[str]) -> dict[str, Any]:
    if not product_ids:
        return {}
    table = ProductSignal.__table__
    rows = session.execute(
        select(table).where(
            table.c.tenant_id == tenant_id, _one_of(session, table.c.product_id, product_ids)
        )
    )
    return {row.product_id: row for row in rows}


def _one_of(session: Reader, column: Any, values: Iterable[str]) -> ColumnElement[bool]:
    """`column` equals one of `values`, in a statement whose text does not depend on how
    many there are (an IN list of 1,000 parameters costs more to render, send and plan than
    the rows cost to read): one typed array on PostgreSQL (`= ANY($1::VARCHAR[])`, which the
    primary key's index serves), one JSON text on SQLite (`IN (SELECT value FROM
    json_each(?))`)."""
    unique = sorted(set(values))
    if _is_postgresql(session):
        return column == any_(bindparam("one_of", unique, type_=ARRAY(String), unique=True))
    listed: Select[Any] = select(literal_column("value")).select_from(
        func.json_each(bindparam("one_of", orjson.dumps(unique).decode(), unique=True))
    )
    return column.in_(listed.scalar_subquery())


def units(
    session: Reader, tenant_id: str, product_ids: Sequence[str]
) -> dict[str, tuple[str | None, int, int]]:
    """(category, units sold, units returned) of the products that have signals: what a
    ranking reads (no more: every column read costs a conversion per row)."""
    if not product_ids:
        return {}
    table = ProductSignal.__table__
    query = select(
        table.c.product_id, table.c.category, table.c.units_sold, table.c.units_returned
    ).where(table.c.tenant_id == tenant_id, _one_of(session, table.c.product_id, product_ids))
    rows = session.execute(query).all()  # fetchall: one call, not one per row
    return {product_id: (category, sold, returned) for product_id, category, sold, returned in rows}


# The columns of a breakdown, and of a reason, as the stats read them (a group of lines of
# a product whose sales are not kept is read as a breakdown of its units sold only).
BreakdownRow = namedtuple(
    "BreakdownRow",
    "variant_id channel store_id currency units_sold units_returned refunded "
    "reported_units_sold reported_units_returned reported_refunded",
)
ReasonRow = namedtuple("ReasonRow", "reason units reported_units")


# What a product's stats read of its signal row (not its timestamps: a conversion per row,
# repeated on each breakdown row of the join).
_STATS_COLUMNS = (
    "product_id",
    "category",
    "units_sold",
    "units_returned",
    "return_rate",
    "reported_units_sold",
    "reported_units_returned",
    "sales_kept",
)


def _sold_row(variant_id: str | None, channel: str, store_id: str | None, units: int) -> Any:
    """A group of a product's lines as a breakdown row: units sold only."""
    return BreakdownRow(
        variant_id or NO_VARIANT, channel, store_id or NO_STORE, "", int(units), 0, 0, 0, 0, 0
    )


def _product_with_breakdowns_statement() -> Select[Any]:
    signal, breakdown = ProductSignal.__table__, ProductBreakdown.__table__
    return (
        select(
            *[signal.c[name] for name in _STATS_COLUMNS],
            *[breakdown.c[name].label(f"b_{name}") for name in BreakdownRow._fields],
        )
        .outerjoin(
            breakdown,
            and_(
                breakdown.c.tenant_id == signal.c.tenant_id,
                breakdown.c.product_id == signal.c.product_id,
            ),
        )
        .where(
            signal.c.tenant_id == bindparam("tenant_id"),
            signal.c.product_id == bindparam("product_id"),
        )
    )


_REASON, _CATEGORY, _SOLD = 0, 1, 2  # the kinds of row of the statement below


def _reasons_categories_and_sales_statement(*, sales: bool) -> Any:
    """A product's reasons, the rollups of its category paths, and (with `sales`) the units
    its lines sold per variant, channel and store (one index-only range of the lines,
    grouped in index order): rows of (kind, key, channel, store, first, second figure)."""
    reason, category, line = ProductReason.__table__, CategorySignal.__table__, OrderLine.__table__
    nothing = literal(None, String)
    parts = [
        select(
            literal(_REASON).label("kind"),
            reason.c.reason.label("key"),
            nothing.label("channel"),
            nothing.label("store_id"),
            reason.c.units.label("first"),
            reason.c.reported_units.label("second"),
        ).where(
            reason.c.tenant_id == bindparam("tenant_id"),
            reason.c.product_id == bindparam("product_id"),
        ),
        select(
            literal(_CATEGORY),
            category.c.path,
            nothing,
            nothing,
            category.c.units_sold,
            category.c.units_returned,
        ).where(
            category.c.tenant_id == bindparam("tenant_id"),
            category.c.path.in_(bindparam("paths", expanding=True)),
        ),
    ]
    if sales:
        parts.append(
            _lines_sold(line)
            .add_columns(literal(0))
            .where(line.c.product_id == bindparam("product_id"))
        )
    return union_all(*parts)


def _lines_sold(line: Any, *leading: Any, then: tuple[Any, ...] = ()) -> Select[Any]:
    """Units sold by a tenant's lines per (`leading`,) variant, channel and store (and
    `then`). Grouped in the order of `ix_order_lines_sales_by_product`: SQLite picks that
    index even without statistics (grouped otherwise, it scanned the tenant's lines)."""
    keys = (*leading, line.c.variant_id, line.c.channel, line.c.store_id, *then)
    columns: list[Any] = [*([] if leading else [literal(_SOLD)]), *keys, func.sum(line.c.quantity)]
    return (
        select(*columns)
        .where(line.c.tenant_id == bindparam("tenant_id"), line.c.channel.is_not(None))
        .group_by(*keys)
    )


# Built once, their values bound per call: building a statement (and its cache key) per
# request cost about as much as running it.
_PRODUCT_WITH_BREAKDOWNS = _product_with_breakdowns_statement()
_REASONS_AND_CATEGORIES = _reasons_categories_and_sales_statement(sales=False)
_REASONS_CATEGORIES_AND_SALES = _reasons_categories_and_sales_statement(sales=True)


def product_with_breakdowns(
    session: Reader, tenant_id: str, product_id: str
) -> tuple[Any, list[BreakdownRow]]:
    """One product's signal row (None if it has none; the columns of _STATS_COLUMNS) and
    its breakdowns: one statement."""
    rows = session.execute(
        _PRODUCT_WITH_BREAKDOWNS, {"tenant_id": tenant_id, "product_id": product_id}
    ).all()
    if not rows:
        return None, []
    width = len(_STATS_COLUMNS)
    found = [BreakdownRow(*row[width:]) for row in rows if row[width] is not None]
    return rows[0], found


def reasons_categories_and_sales(
    session: Reader, tenant_id: str, product_id: str, paths: Iterable[str], *, sales: bool
) -> tuple[list[ReasonRow], dict[str, tuple[int, int]], list[BreakdownRow]]:
    """A product's reasons, the rollups of the category paths asked for (a path is at most
    a few segments: an expanding IN list) and, with `sales`, its lines' units sold: one
    statement."""
    params = {"tenant_id": tenant_id, "product_id": product_id, "paths": list(paths)}
    statement = _REASONS_CATEGORIES_AND_SALES if sales else _REASONS_AND_CATEGORIES
    reasons, rollups, sold = [], {}, []
    for kind, key, channel, store_id, first, second in session.execute(statement, params):
        if kind == _REASON:
            reasons.append(ReasonRow(key, first, second))
        elif kind == _CATEGORY:
            rollups[key] = (first, second)
        else:
            sold.append(_sold_row(key, channel, store_id, first))
    return reasons, rollups, sold


def breakdowns(
    session: Session, tenant_id: str, product_ids: Sequence[str], sales_of: Sequence[str]
) -> dict[str, list[BreakdownRow]]:
    """The products' breakdowns, and the units sold by the lines of those in `sales_of`
    (the products whose sales are not kept), per product."""
    found: dict[str, list[BreakdownRow]] = defaultdict(list)
    table, line = ProductBreakdown.__table__, OrderLine.__table__
    kept = select(table.c.product_id, *[table.c[name] for name in BreakdownRow._fields]).where(
        table.c.tenant_id == tenant_id, _one_of(session, table.c.product_id, product_ids)
    )
    for product_id, *figures in session.execute(kept):
        found[product_id].append(BreakdownRow(*figures))
    if not sales_of:
        return found
    sold = _lines_sold(line, line.c.product_id).where(_one_of(session, line.c.product_id, sales_of))
    for product_id, variant_id, channel, store_id, units in session.execute(
        sold, {"tenant_id": tenant_id}
    ):
        found[product_id].append(_sold_row(variant_id, channel, store_id, units))
    return found


def reasons(session: Session, tenant_id: str, product_ids: Sequence[str]) -> list[Any]:
    table = ProductReason.__table__
    return list(
        session.execute(
            select(table).where(
                table.c.tenant_id == tenant_id, _one_of(session, table.c.product_id, product_ids)
            )
        )
    )


def categories(session: Reader, tenant_id: str, paths: Iterable[str]) -> dict[str, tuple[int, int]]:
    """(units sold, units returned) of the category paths asked for that have any."""
    wanted = set(paths)
    if not wanted:
        return {}
    rows = session.execute(
        select(CategorySignal.path, CategorySignal.units_sold, CategorySignal.units_returned).where(
            CategorySignal.tenant_id == tenant_id, _one_of(session, CategorySignal.path, wanted)
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
    insert_tuples(
        session,
        table.model,
        (*table.key, *table.counters),
        rows,
        suffix=_adding(table.model.__tablename__, table.key, table.counters),
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


Written = tuple[str, str | None, str | None, int, int, bool]


def add_to_products(session: Session, rows: Sequence[tuple[Any, ...]]) -> list[Written]:
    """One statement: each row (tenant, product, candidate category and its time or None,
    the four counters to add, the rate of a new row) creates its product or adds to it.
    Rows in key order. Answers (product id, category before, category, units sold, units
    returned, sales kept) as written: the products stay locked until the transaction ends,
    so these are the figures the category rollups must move."""
    if not rows:
        return []
    dialect = session.connection().dialect.name
    if dialect == "sqlite":
        return _add_to_products_sqlite(session, rows)
    written = insert_tuples(
        session,
        ProductSignal,
        (*PRODUCTS.key, *PRODUCTS.counters, "return_rate"),
        rows,
        suffix=f"{_product_upsert(dialect)} RETURNING product_id, previous_category, category,"
        " units_sold, units_returned, sales_kept",
        returning=True,
    )
    return [(row[0], row[1], row[2], row[3], row[4], row[5]) for row in written]


_SQLITE_READ = (
    "SELECT product_id, sales_kept, category, category_at, units_sold, units_returned,"
    " reported_units_sold, reported_units_returned FROM product_signals"
    " WHERE tenant_id = ? AND product_id IN (SELECT value FROM json_each(?))"
)
_SQLITE_INSERT = (
    "INSERT INTO product_signals (category, category_at, units_sold, units_returned,"
    " reported_units_sold, reported_units_returned, return_rate, tenant_id, product_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQLITE_MOVE = (
    "UPDATE product_signals SET category = ?, category_at = ?, units_sold = ?,"
    " units_returned = ?, reported_units_sold = ?, reported_units_returned = ?,"
    " return_rate = ? WHERE tenant_id = ? AND product_id = ?"
)
_SQLITE_ADD = (  # the category untouched: its index is not rewritten
    "UPDATE product_signals SET units_sold = ?, units_returned = ?, reported_units_sold = ?,"
    " reported_units_returned = ?, return_rate = ? WHERE tenant_id = ? AND product_id = ?"
)


def _add_to_products_sqlite(session: Session, rows: Sequence[tuple[Any, ...]]) -> list[Written]:
    """`add_to_products` on SQLite: the rows are read, the figures worked out here (the
    same rules as the PostgreSQL statement), and written by three prepared statements (new
    rows; rows whose category changes; the others, whose category index is not touched).
    A read before the write is exact on SQLite: a writer holds the database's write lock
    from its BEGIN IMMEDIATE to its end (and a deferred one whose snapshot is stale cannot
    write at all)."""
    tenant_id = rows[0][0]
    found = {
        row[0]: row[1:]
        for row in select_rows(
            session, _SQLITE_READ, (tenant_id, orjson.dumps([row[1] for row in rows]).decode())
        )
    }
    inserts: list[tuple[Any, ...]] = []
    moves: list[tuple[Any, ...]] = []
    adds: list[tuple[Any, ...]] = []
    written: list[Written] = []
    for _, product_id, candidate, at, sold, returned, reported_sold, reported_returned, _ in rows:
        # (the time as stored: its text orders as the times do)
        at_text = sqlite_datetime(at)
        old = found.get(product_id)
        if old is None:
            figures = (sold, returned, reported_sold, reported_returned)
            rate = returned / sold if sold > 0 else 0.0
            inserts.append((candidate, at_text, *figures, rate, tenant_id, product_id))
            written.append((product_id, None, candidate, sold, returned, False))
            continue
        kept, category, category_at, *counters = old
        figures = (
            counters[0] + sold,
            counters[1] + returned,
            counters[2] + reported_sold,
            counters[3] + reported_returned,
        )
        rate = figures[1] / figures[0] if figures[0] > 0 else 0.0
        newer = candidate is not None and (
            category_at is None
            or at_text > category_at
            or (at_text == category_at and candidate > (category or ""))
        )
        if newer:
            moves.append((candidate, at_text, *figures, rate, tenant_id, product_id))
            written.append((product_id, category, candidate, figures[0], figures[1], bool(kept)))
        else:
            adds.append((*figures, rate, tenant_id, product_id))
            written.append((product_id, category, category, figures[0], figures[1], bool(kept)))
    execute_many(session, _SQLITE_INSERT, inserts)
    execute_many(session, _SQLITE_MOVE, moves)
    execute_many(session, _SQLITE_ADD, adds)
    return written


def sales_per_breakdown(
    session: Session, tenant_id: str, product_ids: Sequence[str]
) -> list[tuple[tuple[str, str, str, str, str, str], int]]:
    """The units sold by these products' lines (this transaction's included), per breakdown
    key (tenant, product, variant, channel, store, currency): what a product whose sales
    start being kept copies into its breakdowns."""
    line = OrderLine.__table__
    query = _lines_sold(line, line.c.product_id, then=(line.c.currency,)).where(
        _one_of(session, line.c.product_id, product_ids)
    )
    return [
        (
            (tenant_id, product, variant or NO_VARIANT, channel, store or NO_STORE, currency),
            int(units),
        )
        for product, variant, channel, store, currency, units in session.execute(
            query, {"tenant_id": tenant_id}
        )
    ]


def mark_sales_kept(session: Session, tenant_id: str, product_ids: Sequence[str]) -> None:
    session.execute(
        update(ProductSignal)
        .where(
            ProductSignal.tenant_id == tenant_id,
            _one_of(session, ProductSignal.product_id, product_ids),
        )
        .values(sales_kept=True)
    )


# --- reports -------------------------------------------------------------------------------

GROUPS = ("reason", "category", "product", "store", "channel", "day", "week", "month")


def utc_day(session: Session, column: Any) -> ColumnElement[Any]:
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
    return utc_day(session, at)  # day, week and month are folded from days


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
            store=OrderLine.store_id,
            channel=OrderLine.channel,
            at=OrderLine.placed_at,
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
    """(group of each grouping..., units sold) in [start, end) read from the facts (the
    order lines and reported purchases), summed per combination of their groups (not
    reason; a combination may come twice: the caller adds)."""
    return _units_sold_from_facts(
        session, tenant_id, group_bys=group_bys, start=start, end=end, currency=currency
    )


def categories_of(session: Session, tenant_id: str, product_ids: Iterable[str]) -> dict[str, Any]:
    """The category of each product asked for that has signals."""
    table = ProductSignal.__table__
    query = select(table.c.product_id, table.c.category).where(
        table.c.tenant_id == tenant_id, _one_of(session, table.c.product_id, product_ids)
    )
    return dict(session.execute(query).all())


def _units_sold_from_facts(
    session: Session,
    tenant_id: str,
    *,
    group_bys: Sequence[str],
    start: datetime,
    end: datetime,
    currency: str,
) -> list[tuple[Any, ...]]:
    """(group of each grouping..., units sold) in [start, end) read from the facts (the
    order lines, which carry their order's time, currency, channel and store: one range of
    their index, no join; and reported purchases), summed per combination of groups."""
    verified = select(
        *_sale_groups(session, group_bys, reported=False), OrderLine.quantity.label("units")
    )
    verified = _categorised(verified, group_bys, tenant_id, OrderLine.product_id).where(
        OrderLine.tenant_id == tenant_id,
        OrderLine.currency == currency,
        OrderLine.placed_at >= start,
        OrderLine.placed_at < end,
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


def returned_items_by(
    session: Session,
    tenant_id: str,
    *,
    group_bys: Sequence[str],
    start: datetime,
    end: datetime,
    currency: str,
) -> list[tuple[Any, ...]]:
    """(return key, refund amount or 0, quantity, unit price, units back, group of each
    grouping...) of the items of the returns in range that count in a report: verified
    items with units back and every item of a refunded return; every item of a reported
    return (all its units are back). In return and position order (refunds are spread over
    a return's items in that order). One read of the range for units and refunds."""
    verified = select(
        (literal("v:") + Return.id).label("ret"),
        func.coalesce(Return.refund_amount, 0).label("amount"),
        ReturnItem.position.label("position"),
        ReturnItem.quantity.label("quantity"),
        ReturnItem.unit_price.label("unit_price"),
        ReturnItem.received_quantity.label("units"),
        *_return_groups(session, group_bys, reported=False),
    ).join(
        Return, and_(Return.tenant_id == ReturnItem.tenant_id, Return.id == ReturnItem.return_id)
    )
    verified = _categorised(verified, group_bys, tenant_id, ReturnItem.product_id).where(
        ReturnItem.tenant_id == tenant_id,
        or_(ReturnItem.received_quantity > 0, Return.refund_amount > 0),
        Return.created_at >= start,
        Return.created_at < end,
        Return.currency == currency,
    )
    reported = select(
        (literal("r:") + ReportedEvent.client_id).label("ret"),
        func.coalesce(ReportedEvent.refund_amount, 0).label("amount"),
        ReportedItem.position.label("position"),
        ReportedItem.quantity.label("quantity"),
        ReportedItem.unit_price.label("unit_price"),
        ReportedItem.quantity.label("units"),
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
        ReportedEvent.occurred_at >= start,
        ReportedEvent.occurred_at < end,
        ReportedEvent.currency == currency,
    )
    both = verified.union_all(reported).subquery()
    groups = [both.c[f"g{index}"] for index in range(len(group_bys))]
    query = select(
        both.c.ret, both.c.amount, both.c.quantity, both.c.unit_price, both.c.units, *groups
    ).order_by(both.c.ret, both.c.position)
    # On the connection (Core rows: the ORM's loading of tens of thousands of plain rows
    # cost a tenth of a 90-day report), as plain tuples.
    return [tuple(row) for row in session.connection().execute(query).all()]
