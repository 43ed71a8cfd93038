"""Recompute product signals from the facts (order lines, returns, refunds, reported events)
with the rules of `upkeep`, report where the kept rows differ, and replace them."""

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, literal, select
from sqlalchemy.orm import Session

from returnstack.kit.bulk import insert_rows
from returnstack.kit.locks import lock_tables
from returnstack.kit.timefmt import plain
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
from returnstack.products.upkeep import (
    BREAKDOWN_COUNTERS,
    NO_STORE,
    NO_VARIANT,
    UNSPECIFIED_REASON,
    allocate_refund,
    category_paths,
    keeps_sales,
    normalize_category,
    rate,
)


@dataclass
class ProductRebuildReport:
    products: int  # products after the rebuild
    differences: int  # rows (of the four tables) missing, extra or different
    examples: list[dict[str, Any]]  # a few: table, key, kept, rebuilt
    written: bool


Tables = dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]
_KEY_NAMES = ("product_id", "variant_id", "channel", "store_id", "currency")


def _key(item: Any, fact: Any) -> tuple[Any, ...]:
    """A breakdown's key (product, variant, channel, store, currency) of an item and its fact."""
    return (
        item.product_id,
        func.coalesce(item.variant_id, NO_VARIANT),
        fact.channel,
        func.coalesce(fact.store_id, NO_STORE),
        fact.currency,
    )


# The slots of a breakdown's figures (BREAKDOWN_COUNTERS).
_VERIFIED_SOLD, _RETURNED, _REFUNDED, _REPORTED_SOLD, _REPORTED_RETURNED, _REPORTED_REFUNDED = (
    range(6)
)


def _sold(session: Session, tenant_id: str, into: dict[tuple[Any, ...], list[int]]) -> None:
    key = _key(OrderLine, Order)
    query = (
        select(*key, func.sum(OrderLine.quantity))
        .join(Order, and_(Order.tenant_id == OrderLine.tenant_id, Order.id == OrderLine.order_id))
        .where(OrderLine.tenant_id == tenant_id)
        .group_by(*key)
    )
    for *row, units in session.execute(query):
        into[tuple(row)][_VERIFIED_SOLD] += int(units)
    reported_key = _key(ReportedItem, ReportedEvent)
    query = (
        select(*reported_key, func.sum(ReportedItem.quantity))
        .join(ReportedEvent, _reported_join())
        .where(ReportedItem.tenant_id == tenant_id, ReportedEvent.type == "purchase")
        .group_by(*reported_key)
    )
    for *row, units in session.execute(query):
        into[tuple(row)][_REPORTED_SOLD] += int(units)


def _reported_join() -> Any:
    return and_(
        ReportedEvent.tenant_id == ReportedItem.tenant_id,
        ReportedEvent.client_id == ReportedItem.event_client_id,
    )


def _return_join() -> Any:
    return and_(Return.tenant_id == ReturnItem.tenant_id, Return.id == ReturnItem.return_id)


def _returned(
    session: Session,
    tenant_id: str,
    into: dict[tuple[Any, ...], list[int]],
    reasons: dict[tuple[str, str], list[int]],
) -> None:
    key = _key(ReturnItem, Return)
    query = (
        select(*key, ReturnItem.reason, func.sum(ReturnItem.received_quantity))
        .join(Return, _return_join())
        .where(ReturnItem.tenant_id == tenant_id, ReturnItem.received_quantity > 0)
        .group_by(*key, ReturnItem.reason)
    )
    for *row, reason, units in session.execute(query):
        into[tuple(row)][_RETURNED] += int(units)
        reasons[(row[0], reason)][0] += int(units)
    reported_key = _key(ReportedItem, ReportedEvent)
    reported_reason = func.coalesce(ReportedItem.reason, UNSPECIFIED_REASON)
    query = (
        select(*reported_key, reported_reason, func.sum(ReportedItem.quantity))
        .join(ReportedEvent, _reported_join())
        .where(ReportedItem.tenant_id == tenant_id, ReportedEvent.type == "return")
        .group_by(*reported_key, reported_reason)
    )
    for *row, code, units in session.execute(query):
        into[tuple(row)][_REPORTED_RETURNED] += int(units)
        reasons[(row[0], code)][1] += int(units)


def _refunded(session: Session, tenant_id: str, into: dict[tuple[Any, ...], list[int]]) -> None:
    """Refunds spread over their returns' items (in Python: exact integer shares)."""
    verified = (
        select(
            (literal("v:") + Return.id).label("ret"),
            Return.refund_amount.label("amount"),
            ReturnItem.position.label("position"),
            ReturnItem.quantity.label("quantity"),
            ReturnItem.unit_price.label("unit_price"),
            *(
                part.label(name)
                for part, name in zip(_key(ReturnItem, Return), _KEY_NAMES, strict=True)
            ),
            literal(0).label("reported"),
        )
        .join(Return, _return_join())
        .where(ReturnItem.tenant_id == tenant_id, Return.refund_amount > 0)
    )
    reported = (
        select(
            (literal("r:") + ReportedEvent.client_id),
            ReportedEvent.refund_amount,
            ReportedItem.position,
            ReportedItem.quantity,
            ReportedItem.unit_price,
            *_key(ReportedItem, ReportedEvent),
            literal(1),
        )
        .join(ReportedEvent, _reported_join())
        .where(
            ReportedItem.tenant_id == tenant_id,
            ReportedEvent.type == "return",
            ReportedEvent.refund_amount > 0,
        )
    )
    both = verified.union_all(reported).subquery()
    query = select(both).order_by(both.c.ret, both.c.position)
    current: str | None = None
    items: list[Any] = []

    def spread() -> None:
        shares = allocate_refund(items[0].amount, [(i.quantity, i.unit_price) for i in items])
        for item, share in zip(items, shares, strict=True):
            key = tuple(getattr(item, name) for name in _KEY_NAMES)
            into[key][_REPORTED_REFUNDED if item.reported else _REFUNDED] += share

    for row in session.execute(query.execution_options(yield_per=10_000)):
        if row.ret != current and items:
            spread()
            items = []
        current = row.ret
        items.append(row)
    if items:
        spread()


def _categories(session: Session, tenant_id: str) -> dict[str, tuple[datetime, str]]:
    """Each product's (time, category) by the rule of `upkeep`: of its verified lines naming
    a category, those of the latest order time; of these, the greatest normalised path."""
    named = and_(
        OrderLine.tenant_id == tenant_id,
        OrderLine.category.is_not(None),
        func.replace(func.replace(OrderLine.category, "/", ""), " ", "") != "",
    )
    joined = and_(Order.tenant_id == OrderLine.tenant_id, Order.id == OrderLine.order_id)
    latest = (
        select(OrderLine.product_id, func.max(Order.placed_at).label("at"))
        .join(Order, joined)
        .where(named)
        .group_by(OrderLine.product_id)
        .subquery()
    )
    query = (
        select(OrderLine.product_id, latest.c.at, OrderLine.category)
        .join(Order, joined)
        .join(
            latest,
            and_(latest.c.product_id == OrderLine.product_id, latest.c.at == Order.placed_at),
        )
        .where(named)
        .distinct()
    )
    chosen: dict[str, tuple[datetime, str]] = {}
    for product_id, at, category in session.execute(query):
        normalized = normalize_category(category)
        if normalized is None:
            continue
        candidate = (at, normalized)
        if product_id not in chosen or candidate > chosen[product_id]:
            chosen[product_id] = candidate
    return chosen


def compute(session: Session, tenant_id: str) -> Tables:
    """The four tables' rows, keyed by their primary key (without the tenant)."""
    breakdowns: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * 6)
    reasons: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    _sold(session, tenant_id, breakdowns)
    _returned(session, tenant_id, breakdowns, reasons)
    _refunded(session, tenant_id, breakdowns)
    categories = _categories(session, tenant_id)

    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for key, values in breakdowns.items():
        product = totals[key[0]]
        product[0] += values[_VERIFIED_SOLD] + values[_REPORTED_SOLD]
        product[1] += values[_RETURNED] + values[_REPORTED_RETURNED]
        product[2] += values[_REPORTED_SOLD]
        product[3] += values[_REPORTED_RETURNED]
    for product_id in categories:
        totals[product_id]  # a product seen only in lines of 0 units still has a row
    products: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    rollups: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for product_id, (sold, returned, reported_sold, reported_returned) in totals.items():
        at, category = categories.get(product_id, (None, None))
        products[(product_id,)] = (
            category,
            at,
            sold,
            returned,
            reported_sold,
            reported_returned,
            rate(returned, sold),
            keeps_sales(sold),
        )
        for path in category_paths(category):
            rollups[path][0] += sold
            rollups[path][1] += returned
    return {
        "product_signals": products,
        "product_breakdowns": {
            key: tuple(values) for key, values in _kept_breakdowns(breakdowns, totals)
        },
        "product_reasons": {key: tuple(values) for key, values in reasons.items() if any(values)},
        "category_signals": {
            (path,): tuple(values) for path, values in rollups.items() if any(values)
        },
    }


def _kept_breakdowns(
    breakdowns: dict[tuple[Any, ...], list[int]], totals: dict[str, list[int]]
) -> Iterator[tuple[tuple[Any, ...], list[int]]]:
    """The breakdowns as kept: units sold by verified lines only for the products whose
    sales are kept (by their units sold); rows of zeros left out."""
    for key, values in breakdowns.items():
        if not keeps_sales(totals[key[0]][0]):
            values = [0, *values[1:]]
        if any(values):
            yield key, values


_MODELS: dict[str, Any] = {
    "product_signals": (
        ProductSignal,
        ("product_id",),
        (
            "category",
            "category_at",
            "units_sold",
            "units_returned",
            "reported_units_sold",
            "reported_units_returned",
            "return_rate",
            "sales_kept",
        ),
    ),
    "product_breakdowns": (
        ProductBreakdown,
        _KEY_NAMES,
        BREAKDOWN_COUNTERS,
    ),
    "product_reasons": (ProductReason, ("product_id", "reason"), ("units", "reported_units")),
    "category_signals": (CategorySignal, ("path",), ("units_sold", "units_returned")),
}


def kept(session: Session, tenant_id: str) -> Tables:
    """The four tables' rows as kept, in the shape of `compute` (rows of zeros left out)."""
    tables: Tables = {}
    for name, (model, key, values) in _MODELS.items():
        rows = session.execute(
            select(*(getattr(model, c) for c in (*key, *values))).where(
                model.tenant_id == tenant_id
            )
        )
        table = {}
        for row in rows:
            figures = tuple(row[len(key) :])
            if name != "product_signals" and not any(figures):
                continue
            table[tuple(row[: len(key)])] = figures
        tables[name] = table
    return tables


def rebuild(
    session: Session, *, tenant_id: str, write: bool = True, examples: int = 10
) -> ProductRebuildReport:
    """Recompute the tenant's product signals, report differences, and (with `write`)
    replace the kept rows. Runs in the caller's transaction, which it must commit."""
    # Writers add to these rows just before they commit; they wait until this ends, and
    # their facts are then either read below or added onto the rebuilt rows.
    lock_tables(session, *_MODELS)
    new = compute(session, tenant_id)
    old = kept(session, tenant_id)
    differences = 0
    samples: list[dict[str, Any]] = []
    for name in _MODELS:
        for key in sorted(set(new[name]) | set(old[name]), key=repr):
            if new[name].get(key) == old[name].get(key):
                continue
            differences += 1
            if len(samples) < examples:
                samples.append(
                    {
                        "table": name,
                        "key": [plain(part) for part in key],
                        "kept": _plain_row(old[name].get(key)),
                        "rebuilt": _plain_row(new[name].get(key)),
                    }
                )
    if write and differences:
        for name, (model, key, values) in _MODELS.items():
            session.execute(delete(model).where(model.tenant_id == tenant_id))
            insert_rows(
                session,
                model,
                [
                    {"tenant_id": tenant_id, **dict(zip((*key, *values), (*k, *v), strict=True))}
                    for k, v in sorted(new[name].items(), key=lambda pair: repr(pair[0]))
                ],
            )
    return ProductRebuildReport(
        products=len(new["product_signals"]),
        differences=differences,
        examples=samples,
        written=bool(write and differences),
    )


def _plain_row(row: tuple[Any, ...] | None) -> list[Any] | None:
    return None if row is None else [plain(value) for value in row]
