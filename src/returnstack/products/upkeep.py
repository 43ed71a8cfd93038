"""Keeping product signals up to date in the transaction of the facts that change them.

The services that record facts (purchases, recorded returns, receipts, refunds, reported
events) tell this module what they counted, in one line each. The figures are collected on
the session and written once, just before the transaction commits (a `before_commit`
listener): every transaction then locks signal rows last, each table in key order, for the
shortest time, and cannot deadlock with another one doing the same.

Rules (the rebuild in `rebuild.py` applies the same ones to the facts):
- a unit is sold when its order line is recorded (or a reported purchase item);
- a unit is returned when it is back: a recorded return's items at once, a lifecycle
  return's items as they are received (or a reported return item);
- a return's refund is spread over its items by `allocate_refund`;
- a product's category is that of its latest verified line naming one (see ProductSignal).
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from returnstack.kit.bulk import insert_rows, upsert_rows_returning
from returnstack.models import (
    CategorySignal,
    Order,
    ProductBreakdown,
    ProductReason,
    ProductSignal,
    Return,
    ReturnItem,
)

NO_VARIANT = ""  # key columns cannot be null; a client id is never empty
NO_STORE = ""
UNSPECIFIED_REASON = "other"  # a reported return item without a reason

# Breakdown counters, in this order in the collected lists.
BREAKDOWN_COUNTERS = (
    "units_sold",
    "units_returned",
    "refunded",
    "reported_units_sold",
    "reported_units_returned",
    "reported_refunded",
)
_SOLD, _RETURNED, _REFUNDED = 0, 1, 2
_REPORTED = 3  # offset of the reported counterpart


@lru_cache(maxsize=65536)
def normalize_category(category: str | None) -> str | None:
    """`' Apparel / Tops/'` -> `'Apparel/Tops'`; None for no category (or only slashes)."""
    segments = [part.strip() for part in (category or "").split("/") if part.strip()]
    return "/".join(segments) or None


@lru_cache(maxsize=65536)  # a ranking asks for the paths of up to 1,000 products
def category_paths(category: str | None) -> tuple[str, ...]:
    """The paths a category rolls up to, nearest first, ending with the tenant's root '':
    `Apparel/Tops` -> ('Apparel/Tops', 'Apparel', ''). Empty segments are ignored."""
    segments = [part.strip() for part in (category or "").split("/") if part.strip()]
    return (*("/".join(segments[:depth]) for depth in range(len(segments), 0, -1)), "")


def allocate_refund(amount: int, items: Sequence[tuple[int, int | None]]) -> list[int]:
    """Spread a return's refund over its items, given as (quantity, unit_price) in position
    order: in proportion to their value (quantity x unit price) when every item has a
    price, else to their quantities; largest remainders first, ties to the earlier item.
    Exact integers; the shares add up to `amount`."""
    if not items:
        return []
    priced = all(price is not None for _, price in items)
    weights = [quantity * (price or 0) if priced else quantity for quantity, price in items]
    total = sum(weights)
    if total <= 0:
        weights, total = [1] * len(items), len(items)
    shares = [amount * weight // total for weight in weights]
    left = amount - sum(shares)
    by_remainder = sorted(
        range(len(items)), key=lambda index: (-(amount * weights[index] % total), index)
    )
    for index in by_remainder[:left]:
        shares[index] += 1
    return shares


@dataclass
class _Pending:
    """What one transaction's facts add, per tenant."""

    breakdowns: dict[tuple[str, str, str, str, str, str], list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0] * len(BREAKDOWN_COUNTERS))
    )
    reasons: dict[tuple[str, str, str], list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0])
    )
    # The latest (time, normalised category) seen per product in this transaction.
    categories: dict[tuple[str, str], tuple[datetime, str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.breakdowns or self.reasons or self.categories)


_KEY = "returnstack.product_signals"


def _pending(session: Session) -> _Pending:
    pending = session.info.get(_KEY)
    if pending is None:
        pending = session.info[_KEY] = _Pending()
    assert isinstance(pending, _Pending)
    return pending


def _add(
    pending: _Pending,
    tenant_id: str,
    *,
    product_id: str,
    variant_id: str | None,
    channel: str,
    store_id: str | None,
    currency: str,
    counter: int,
    value: int,
    reported: bool,
) -> None:
    if not value:
        return
    key = (
        tenant_id,
        product_id,
        variant_id or NO_VARIANT,
        channel,
        store_id or NO_STORE,
        currency,
    )
    pending.breakdowns[key][counter + (_REPORTED if reported else 0)] += value


def _add_reason(
    pending: _Pending, tenant_id: str, product_id: str, reason: str, units: int, reported: bool
) -> None:
    if units:
        pending.reasons[(tenant_id, product_id, reason)][int(reported)] += units


def _see_category(
    pending: _Pending, tenant_id: str, product_id: str, category: str | None, at: datetime
) -> None:
    category = normalize_category(category)
    if category is None:
        return
    key = (tenant_id, product_id)
    known = pending.categories.get(key)
    if known is None or (at, category) > known:
        pending.categories[key] = (at, category)


# --- what the services call --------------------------------------------------------------


def count_new_order_lines(
    session: Session,
    *,
    tenant_id: str,
    orders: Sequence[Mapping[str, Any]],
    new_orders: set[str],
    lines: Sequence[Mapping[str, Any]],
    new_lines: set[tuple[str, str]],
) -> None:
    """Units sold by the order lines just inserted (`orders.service.record_purchases`): a
    line added to a known order counts with that order's channel, store and currency."""
    order_of: dict[str, Mapping[str, Any]] = {}
    for order in orders:
        if order["id"] in new_orders:
            order_of.setdefault(order["id"], order)  # the first event's, as inserted
    known = sorted({line["order_id"] for line in lines} - set(order_of))
    if known:
        rows = session.execute(
            select(Order.id, Order.channel, Order.store_id, Order.currency, Order.placed_at).where(
                Order.tenant_id == tenant_id, Order.id.in_(known)
            )
        )
        for order_id, channel, store_id, currency, placed_at in rows:
            order_of[order_id] = {
                "channel": channel,
                "store_id": store_id,
                "currency": currency,
                "placed_at": placed_at,
            }
    pending = _pending(session)
    breakdowns = pending.breakdowns  # (the per-line path of ingestion: kept lean)
    counted: set[tuple[str, str]] = set()
    for line in lines:
        key = (line["order_id"], line["line_id"])
        if key not in new_lines or key in counted:
            continue
        counted.add(key)
        order = order_of[line["order_id"]]
        product_id = line["product_id"]
        breakdowns[
            (
                tenant_id,
                product_id,
                line["variant_id"] or NO_VARIANT,
                order["channel"],
                order["store_id"] or NO_STORE,
                order["currency"],
            )
        ][_SOLD] += line["quantity"]
        if line["category"] is not None:
            _see_category(pending, tenant_id, product_id, line["category"], order["placed_at"])


def count_recorded_returns(
    session: Session,
    *,
    tenant_id: str,
    returns: Sequence[Mapping[str, Any]],
    items: Sequence[Mapping[str, Any]],
) -> None:
    """Recorded returns (`returns.service.record_returns`): every unit is back, and the
    refund, if any, is spread over the items."""
    items_of: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for item in items:
        items_of[item["return_id"]].append(item)
    pending = _pending(session)
    for ret in returns:
        ret_items = sorted(items_of[ret["id"]], key=lambda item: item["position"])
        for item in ret_items:
            _count_returned(pending, tenant_id, ret, item, item["received_quantity"], False)
        _count_refund(pending, tenant_id, ret, ret_items, ret["refund_amount"] or 0, False)


def count_recorded_addition(
    session: Session,
    ret: Return,
    old_items: Sequence[ReturnItem],
    new_items: Sequence[Mapping[str, Any]],
    *,
    before: int,
    after: int,
) -> None:
    """Items added to a recorded return (`returns.service`): their units are back, and the
    refund is spread again over all its items (the old spread taken back, the new one
    added), so the figures are those of a return recorded whole."""
    pending = _pending(session)
    row = _columns(ret)
    old_rows = [_columns(item) for item in old_items]
    for item in new_items:
        _count_returned(pending, ret.tenant_id, row, item, item["received_quantity"], False)
    weights = [(item["quantity"], item["unit_price"]) for item in old_rows]
    for item, share in zip(old_rows, allocate_refund(before, weights), strict=True):
        _add_refund(pending, ret.tenant_id, row, item, -share, False)
    _count_refund(pending, ret.tenant_id, row, [*old_rows, *new_items], after, False)


def count_receipt(session: Session, ret: Return, item: ReturnItem, units: int) -> None:
    """Units of a lifecycle return received (`returns.service`)."""
    _count_returned(_pending(session), ret.tenant_id, _columns(ret), _columns(item), units, False)


def count_refund(session: Session, ret: Return, *, before: int, after: int) -> None:
    """A lifecycle return's refund going from `before` to `after` (`returns.service`): each
    item gets the difference of its shares, so the total is spread as a whole would be."""
    items = session.scalars(
        select(ReturnItem)
        .where(ReturnItem.tenant_id == ret.tenant_id, ReturnItem.return_id == ret.id)
        .order_by(ReturnItem.position)
    ).all()
    rows = [_columns(item) for item in items]
    pending = _pending(session)
    weights = [(row["quantity"], row["unit_price"]) for row in rows]
    old, new = allocate_refund(before, weights), allocate_refund(after, weights)
    for row, was, now in zip(rows, old, new, strict=True):
        _add_refund(pending, ret.tenant_id, _columns(ret), row, now - was, False)


def count_reported(
    session: Session,
    *,
    tenant_id: str,
    events: Sequence[Mapping[str, Any]],
    items: Sequence[Mapping[str, Any]],
) -> None:
    """Reported (publishable-key) events just stored, as rows of `reported_events` and
    `reported_items`: they count in the signals, in the `reported` part. Their categories
    are ignored: a public key must not move a product between categories."""
    items_of: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for item in items:
        items_of[item["event_client_id"]].append(item)
    pending = _pending(session)
    for reported in events:
        event_items = sorted(items_of[reported["client_id"]], key=lambda item: item["position"])
        for item in event_items:
            if reported["type"] == "purchase":
                _add(
                    pending,
                    tenant_id,
                    product_id=item["product_id"],
                    variant_id=item["variant_id"],
                    channel=reported["channel"],
                    store_id=reported["store_id"],
                    currency=reported["currency"],
                    counter=_SOLD,
                    value=item["quantity"],
                    reported=True,
                )
            else:
                reason = item["reason"] or UNSPECIFIED_REASON
                _count_returned(
                    pending, tenant_id, reported, {**item, "reason": reason}, item["quantity"], True
                )
        if reported["type"] == "return":
            amount = reported["refund_amount"] or 0
            _count_refund(pending, tenant_id, reported, event_items, amount, True)


def _columns(row: Any) -> dict[str, Any]:
    return {column.key: getattr(row, column.key) for column in row.__mapper__.column_attrs}


def _count_returned(
    pending: _Pending,
    tenant_id: str,
    ret: Mapping[str, Any],
    item: Mapping[str, Any],
    units: int,
    reported: bool,
) -> None:
    _add(
        pending,
        tenant_id,
        product_id=item["product_id"],
        variant_id=item["variant_id"],
        channel=ret["channel"],
        store_id=ret["store_id"],
        currency=ret["currency"],
        counter=_RETURNED,
        value=units,
        reported=reported,
    )
    _add_reason(pending, tenant_id, item["product_id"], item["reason"], units, reported)


def _count_refund(
    pending: _Pending,
    tenant_id: str,
    ret: Mapping[str, Any],
    items: Sequence[Mapping[str, Any]],
    amount: int,
    reported: bool,
) -> None:
    if not amount:
        return
    shares = allocate_refund(amount, [(item["quantity"], item["unit_price"]) for item in items])
    for item, share in zip(items, shares, strict=True):
        _add_refund(pending, tenant_id, ret, item, share, reported)


def _add_refund(
    pending: _Pending,
    tenant_id: str,
    ret: Mapping[str, Any],
    item: Mapping[str, Any],
    amount: int,
    reported: bool,
) -> None:
    _add(
        pending,
        tenant_id,
        product_id=item["product_id"],
        variant_id=item["variant_id"],
        channel=ret["channel"],
        store_id=ret["store_id"],
        currency=ret["currency"],
        counter=_REFUNDED,
        value=amount,
        reported=reported,
    )


# --- writing, once per transaction ---------------------------------------------------------


def rate(returned: int, sold: int) -> float:
    """Units returned per unit sold; 0 when nothing was sold (as customer profiles)."""
    return returned / sold if sold > 0 else 0.0


def _sum_columns(table: str, columns: Iterable[str]) -> str:
    return ", ".join(f"{name} = {table}.{name} + excluded.{name}" for name in columns)


_BREAKDOWN_UPSERT = (
    "ON CONFLICT (tenant_id, product_id, variant_id, channel, store_id, currency) DO UPDATE SET "
    + _sum_columns("product_breakdowns", BREAKDOWN_COUNTERS)
)
_REASON_UPSERT = "ON CONFLICT (tenant_id, product_id, reason) DO UPDATE SET " + _sum_columns(
    "product_reasons", ("units", "reported_units")
)
_CATEGORY_UPSERT = "ON CONFLICT (tenant_id, path) DO UPDATE SET " + _sum_columns(
    "category_signals", ("units_sold", "units_returned")
)
_PRODUCT_COLUMNS = (
    "category",
    "category_at",
    "units_sold",
    "units_returned",
    "reported_units_sold",
    "reported_units_returned",
    "return_rate",
)
# Creates a missing row, or locks an existing one (a no-op update), and reads it.
_PRODUCT_LOCK = "ON CONFLICT (tenant_id, product_id) DO UPDATE SET product_id = excluded.product_id"
_PRODUCT_WRITE = "ON CONFLICT (tenant_id, product_id) DO UPDATE SET " + ", ".join(
    f"{name} = excluded.{name}" for name in _PRODUCT_COLUMNS
)


def apply_pending(session: Session) -> None:
    """Write what the transaction's facts added (called before it commits)."""
    pending = session.info.pop(_KEY, None)
    if not pending:
        return
    tenants = sorted(
        {key[0] for key in pending.breakdowns}
        | {key[0] for key in pending.reasons}
        | {key[0] for key in pending.categories}
    )
    for tenant_id in tenants:
        _apply_tenant(session, tenant_id, pending)


def _apply_tenant(session: Session, tenant_id: str, pending: _Pending) -> None:
    # Per product: units (sold, returned, reported sold, reported returned) added.
    added: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    breakdowns = []
    for key, values in sorted(pending.breakdowns.items()):
        if key[0] != tenant_id:
            continue
        totals = added[key[1]]
        totals[0] += values[_SOLD] + values[_SOLD + _REPORTED]
        totals[1] += values[_RETURNED] + values[_RETURNED + _REPORTED]
        totals[2] += values[_SOLD + _REPORTED]
        totals[3] += values[_RETURNED + _REPORTED]
        breakdowns.append(
            {
                "tenant_id": tenant_id,
                "product_id": key[1],
                "variant_id": key[2],
                "channel": key[3],
                "store_id": key[4],
                "currency": key[5],
                **dict(zip(BREAKDOWN_COUNTERS, values, strict=True)),
            }
        )
    seen = {key[1]: value for key, value in pending.categories.items() if key[0] == tenant_id}
    products = sorted(set(added) | set(seen))
    if not products:
        return
    # 1. Products, locked in key order (the first table every writer locks), and read.
    current = _lock_products(session, tenant_id, products)
    rollup: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    rows = []
    for product_id in products:
        category, category_at, sold, returned, reported_sold, reported_returned, _ = current.get(
            product_id, _NO_PRODUCT
        )
        category_at = _aware(category_at)
        delta = added.get(product_id, [0, 0, 0, 0])
        new_category, new_at = category, category_at
        candidate = seen.get(product_id)
        if candidate is not None and (
            category_at is None or (candidate[0], candidate[1]) > (category_at, category or "")
        ):
            new_at, new_category = candidate
        new_sold, new_returned = sold + delta[0], returned + delta[1]
        for path in category_paths(category):
            rollup[path][0] -= sold
            rollup[path][1] -= returned
        for path in category_paths(new_category):
            rollup[path][0] += new_sold
            rollup[path][1] += new_returned
        rows.append(
            {
                "tenant_id": tenant_id,
                "product_id": product_id,
                "category": new_category,
                "category_at": new_at,
                "units_sold": new_sold,
                "units_returned": new_returned,
                "reported_units_sold": reported_sold + delta[2],
                "reported_units_returned": reported_returned + delta[3],
                "return_rate": rate(new_returned, new_sold),
            }
        )
    insert_rows(session, ProductSignal, rows, on_conflict=_PRODUCT_WRITE)
    # 2. Breakdowns, 3. reasons, 4. category rollups: each added to, in key order.
    insert_rows(session, ProductBreakdown, breakdowns, on_conflict=_BREAKDOWN_UPSERT)
    insert_rows(
        session,
        ProductReason,
        [
            {
                "tenant_id": tenant_id,
                "product_id": key[1],
                "reason": key[2],
                "units": values[0],
                "reported_units": values[1],
            }
            for key, values in sorted(pending.reasons.items())
            if key[0] == tenant_id
        ],
        on_conflict=_REASON_UPSERT,
    )
    insert_rows(
        session,
        CategorySignal,
        [
            {"tenant_id": tenant_id, "path": path, "units_sold": sold, "units_returned": returned}
            for path, (sold, returned) in sorted(rollup.items())
            if sold or returned
        ],
        on_conflict=_CATEGORY_UPSERT,
    )


_NO_PRODUCT = (None, None, 0, 0, 0, 0, 0.0)


def _lock_products(
    session: Session, tenant_id: str, products: list[str]
) -> dict[str, tuple[Any, ...]]:
    """The products' rows as they are, locked until the transaction ends.

    PostgreSQL: a no-op upsert creates the missing rows and locks all of them, so two
    transactions adding to a new product one after the other each read the other's
    committed figures. SQLite: the writer holds the database's write lock already (BEGIN
    IMMEDIATE), so a plain read is enough (and writes no rows twice)."""
    if session.connection().dialect.name == "sqlite":
        table = ProductSignal.__table__
        found: dict[str, tuple[Any, ...]] = {}
        for start in range(0, len(products), 500):
            rows = session.execute(
                select(table.c.product_id, *(table.c[name] for name in _PRODUCT_COLUMNS)).where(
                    table.c.tenant_id == tenant_id,
                    table.c.product_id.in_(products[start : start + 500]),
                )
            )
            found.update({row[0]: tuple(row[1:]) for row in rows})
        return found
    return {
        row[0]: row[1:]
        for row in upsert_rows_returning(
            session,
            ProductSignal,
            [_empty_product(tenant_id, product_id) for product_id in products],
            on_conflict=_PRODUCT_LOCK,
            returning=("product_id", *_PRODUCT_COLUMNS),
        )
    }


def _empty_product(tenant_id: str, product_id: str) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "product_id": product_id,
        "category": None,
        "category_at": None,
        "units_sold": 0,
        "units_returned": 0,
        "reported_units_sold": 0,
        "reported_units_returned": 0,
        "return_rate": 0.0,
    }


def _aware(value: Any) -> datetime | None:
    """A timestamp read through the driver's cursor (SQLite gives text, naive UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    if session.info.get(_KEY):
        apply_pending(session)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_KEY, None)  # the facts were not recorded: neither are their figures
