"""Keeping product signals up to date in the transaction of the facts that change them.

The services that record facts (purchases, recorded returns, receipts, refunds, reported
events) tell this module what they counted, in one line each. The figures are collected on
the session and written once, just before the transaction commits (a `before_commit`
listener): every transaction then locks signal rows last, each table in key order, for the
shortest time, and cannot deadlock with another one doing the same.

Rules (the rebuild in `rebuild.py` applies the same ones to the facts):
- a unit is sold when its order line is recorded (or a reported purchase item); per
  variant, channel and store only once its product has sold KEEP_SALES_FROM units (before,
  the stats read them from its lines: `ProductBreakdown`);
- a unit is returned when it is back: a recorded return's items at once, a lifecycle
  return's items as they are received (or a reported return item);
- a return's refund is spread over its items by `allocate_refund`;
- a product's category is that of its latest verified line naming one (see ProductSignal).
"""

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from operator import itemgetter
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from returnstack.models import Return, ReturnItem
from returnstack.products import repository

NO_VARIANT, NO_STORE = repository.NO_VARIANT, repository.NO_STORE
UNSPECIFIED_REASON = "other"  # a reported return item without a reason

# A product's units sold are kept per variant, channel and store from the transaction
# that takes its units sold (verified and reported) to this many on; before, its stats group
# its lines, at most about this many (a few hundred rows of an index range: well under a
# millisecond). Most products of a catalogue stay below it, and for them the upkeep writes
# one row per product, not one per line sold (bench/README.md, "Product signals").
KEEP_SALES_FROM = 500

# Breakdown counters, in this order in the collected lists.
BREAKDOWN_COUNTERS = repository.BREAKDOWNS.counters
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
    if len(items) <= 1:
        return [amount] if items else []  # (most returns have one item)
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

    # Units sold by verified order lines, per (tenant, product), and the lines (with their
    # tenant): their breakdowns are added only for products whose sales are kept.
    sold: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    lines: list[tuple[str, Mapping[str, Any]]] = field(default_factory=list)
    breakdowns: dict[tuple[str, str, str, str, str, str], list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0] * len(BREAKDOWN_COUNTERS))
    )
    reasons: dict[tuple[str, str, str], list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0])
    )
    # The latest (time, normalised category) seen per product in this transaction.
    categories: dict[tuple[str, str], tuple[datetime, str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.sold or self.breakdowns or self.reasons or self.categories)


_KEY = "returnstack.product_signals"


def _pending(session: Session) -> _Pending:
    pending = session.info.get(_KEY)
    if pending is None:
        pending = session.info[_KEY] = _Pending()
    assert isinstance(pending, _Pending)
    return pending


def _add_items(
    pending: _Pending,
    tenant_id: str,
    header: Mapping[str, Any],
    items: Sequence[Mapping[str, Any]],
    values: Sequence[int],
    *,
    counter: int,
    reported: bool,
) -> None:
    """Add each item's value to its product's counter (units returned also to the item's
    reason); `header` is the order, return or reported event: channel, store, currency."""
    column = counter + (_REPORTED if reported else 0)
    channel, store, currency = header["channel"], header["store_id"] or NO_STORE, header["currency"]
    for item, value in zip(items, values, strict=True):
        if not value:
            continue
        product_id = item["product_id"]
        key = (tenant_id, product_id, item["variant_id"] or NO_VARIANT, channel, store, currency)
        pending.breakdowns[key][column] += value
        if counter == _RETURNED:
            pending.reasons[(tenant_id, product_id, item["reason"])][int(reported)] += value


def _add_return(
    pending: _Pending,
    tenant_id: str,
    header: Mapping[str, Any],
    items: Sequence[Mapping[str, Any]],
    units: Sequence[int],
    refund: int,
    *,
    reported: bool,
) -> None:
    """Units back of a return's items (in position order), and its refund spread over them."""
    _add_items(pending, tenant_id, header, items, units, counter=_RETURNED, reported=reported)
    if refund:
        shares = allocate_refund(refund, [(item["quantity"], item["unit_price"]) for item in items])
        _add_items(pending, tenant_id, header, items, shares, counter=_REFUNDED, reported=reported)


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
    lines: Sequence[Mapping[str, Any]],
    new_lines: set[tuple[str, str]],
) -> None:
    """Units sold by the order lines just inserted (`orders.service.record_purchases`); each
    line carries its order's channel, store, currency and time (a line added to a known
    order, that order's)."""
    pending = _pending(session)
    # (the per-line path: kept lean; a product's category is looked at once per raw text)
    sold, counted_lines, categories = pending.sold, pending.lines, pending.categories
    counted: set[tuple[str, str]] = set()
    for line in lines:
        key = (line["order_id"], line["line_id"])
        if key not in new_lines or key in counted:
            continue
        counted.add(key)
        product_id = line["product_id"]
        sold[(tenant_id, product_id)] += line["quantity"]
        counted_lines.append((tenant_id, line))
        raw = line["category"]
        if raw is None:
            continue
        category = normalize_category(raw)
        if category is None:
            continue
        at = line["placed_at"]
        known = categories.get((tenant_id, product_id))
        if known is None or (at, category) > known:
            categories[(tenant_id, product_id)] = (at, category)


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
        ret_items = sorted(items_of[ret["id"]], key=itemgetter("position"))
        units = [item["received_quantity"] for item in ret_items]
        refund = ret["refund_amount"] or 0
        _add_return(pending, tenant_id, ret, ret_items, units, refund, reported=False)


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
    header = _columns(ret)
    old_rows = [_columns(item) for item in old_items]
    units = [item["received_quantity"] for item in new_items]
    _add_items(pending, ret.tenant_id, header, new_items, units, counter=_RETURNED, reported=False)
    rows = [*old_rows, *new_items]
    old_shares = allocate_refund(before, [(row["quantity"], row["unit_price"]) for row in old_rows])
    new_shares = allocate_refund(after, [(row["quantity"], row["unit_price"]) for row in rows])
    differences = [
        now - was for was, now in zip([*old_shares, *[0] * len(new_items)], new_shares, strict=True)
    ]
    _add_items(pending, ret.tenant_id, header, rows, differences, counter=_REFUNDED, reported=False)


def count_receipt(
    session: Session, ret: Mapping[str, Any], item: Mapping[str, Any], units: int
) -> None:
    """Units of a lifecycle return received (`returns.service`): the return's and the item's
    columns, as the service loaded them."""
    _add_return(_pending(session), ret["tenant_id"], ret, [item], [units], 0, reported=False)


def count_refund(
    session: Session,
    ret: Mapping[str, Any],
    items: Sequence[Mapping[str, Any]],
    *,
    before: int,
    after: int,
) -> None:
    """A lifecycle return's refund going from `before` to `after` (`returns.service`; its
    columns and its items', in position order, as the service loaded them): each item gets
    the difference of its shares, so the total is spread as a whole would be."""
    weights = [(item["quantity"], item["unit_price"]) for item in items]
    old, new = allocate_refund(before, weights), allocate_refund(after, weights)
    differences = [now - was for was, now in zip(old, new, strict=True)]
    _add_items(
        _pending(session),
        ret["tenant_id"],
        ret,
        items,
        differences,
        counter=_REFUNDED,
        reported=False,
    )


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
        event_items = sorted(items_of[reported["client_id"]], key=itemgetter("position"))
        units = [item["quantity"] for item in event_items]
        if reported["type"] == "purchase":
            _add_items(
                pending, tenant_id, reported, event_items, units, counter=_SOLD, reported=True
            )
            continue
        with_reasons = [
            {**item, "reason": item["reason"] or UNSPECIFIED_REASON} for item in event_items
        ]
        refund = reported["refund_amount"] or 0
        _add_return(pending, tenant_id, reported, with_reasons, units, refund, reported=True)


def _columns(row: Any) -> dict[str, Any]:
    return {column.key: getattr(row, column.key) for column in row.__mapper__.column_attrs}


# --- writing, once per transaction ---------------------------------------------------------


def keeps_sales(units_sold: int) -> bool:
    """Whether a product with these units sold (verified and reported) has its units sold
    kept per variant, channel and store (its units only grow, so it starts once)."""
    return units_sold >= max(KEEP_SALES_FROM, 1)


def rate(returned: int, sold: int) -> float:
    """Units returned per unit sold; 0 when nothing was sold (as customer profiles)."""
    return returned / sold if sold > 0 else 0.0


def apply_pending(session: Session) -> None:
    """Write what the transaction's facts added (called before it commits)."""
    pending = session.info.pop(_KEY, None)
    if not pending:
        return
    tenants = sorted(
        {key[0] for key in pending.sold}
        | {key[0] for key in pending.breakdowns}
        | {key[0] for key in pending.reasons}
        | {key[0] for key in pending.categories}
    )
    # Rows in key order on PostgreSQL, where two writers must lock them in one order;
    # SQLite has one writer at a time (and sorting thousands of keys costs a few ms).
    ordered = session.get_bind().dialect.name != "sqlite"
    for tenant_id in tenants:
        _apply_tenant(session, tenant_id, pending, ordered=ordered)


def _apply_tenant(session: Session, tenant_id: str, pending: _Pending, *, ordered: bool) -> None:
    """One statement per table, each adding to its rows in key order, products first (every
    writer locks the tables in this order, so two cannot deadlock)."""
    # Per product: units sold, returned, reported sold, reported returned added.
    added: dict[str, list[int]] = {
        key[1]: [units, 0, 0, 0] for key, units in pending.sold.items() if key[0] == tenant_id
    }
    for key, values in pending.breakdowns.items():
        if key[0] != tenant_id:
            continue
        _, returned, _, reported_sold, reported_returned, _ = values
        totals = added.get(key[1])
        if totals is None:
            added[key[1]] = [
                reported_sold,
                returned + reported_returned,
                reported_sold,
                reported_returned,
            ]
        else:
            totals[0] += reported_sold
            totals[1] += returned + reported_returned
            totals[2] += reported_sold
            totals[3] += reported_returned
    seen = {key[1]: value for key, value in pending.categories.items() if key[0] == tenant_id}
    products = list(added.keys() | seen.keys())
    if not products:
        return
    if ordered:
        products.sort()
    no_delta = (0, 0, 0, 0)
    no_category: tuple[datetime | None, str | None] = (None, None)
    rows = []
    for product_id in products:
        sold, returned, reported_sold, reported_returned = added.get(product_id, no_delta)
        at, category = seen.get(product_id, no_category)
        rows.append(
            (
                tenant_id,
                product_id,
                category,
                at,
                sold,
                returned,
                reported_sold,
                reported_returned,
                returned / sold if sold > 0 else 0.0,  # the row's rate if it is new
            )
        )
    # 1. Products: each row created or added to, its category replaced by a newer one.
    # Units are summed per category first, then spread over its paths (thousands of
    # products share a few categories).
    moved: dict[str | None, list[int]] = defaultdict(lambda: [0, 0])
    kept: set[str] = set()  # products whose sales were kept before this transaction
    start_keeping: list[str] = []
    for product_id, previous, category, sold, returned, sales_kept in repository.add_to_products(
        session, rows
    ):
        if sales_kept:
            kept.add(product_id)
        elif keeps_sales(sold):
            start_keeping.append(product_id)
        delta = added.get(product_id, no_delta)
        if previous == category:
            totals = moved[category]
            totals[0] += delta[0]
            totals[1] += delta[1]
            continue
        # The product moves: all its units leave the old paths and join the new ones.
        totals = moved[previous]
        totals[0] -= sold - delta[0]
        totals[1] -= returned - delta[1]
        totals = moved[category]
        totals[0] += sold
        totals[1] += returned
    rollup: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for category, (sold, returned) in moved.items():
        if not (sold or returned):
            continue  # (a product moved with no units: no path changes)
        for path in category_paths(category):
            rollup[path][0] += sold
            rollup[path][1] += returned
    reasons = [
        key + tuple(values) for key, values in pending.reasons.items() if key[0] == tenant_id
    ]
    categories = [
        (tenant_id, path, sold, returned)
        for path, (sold, returned) in rollup.items()
        if sold or returned  # ancestors whose moves cancel out are not written
    ]
    if ordered:
        reasons.sort()
        categories.sort()
    # 2. Breakdowns: returns, reported events, the lines of products whose sales were kept
    # and (read back, this transaction's lines included) all the lines of those whose sales
    # start being kept; 3. reasons, 4. category rollups: counters added to.
    if kept:
        for line_tenant, line in pending.lines:
            if line_tenant == tenant_id and line["product_id"] in kept:
                pending.breakdowns[
                    (
                        tenant_id,
                        line["product_id"],
                        line["variant_id"] or NO_VARIANT,
                        line["channel"],
                        line["store_id"] or NO_STORE,
                        line["currency"],
                    )
                ][_SOLD] += line["quantity"]
    if start_keeping:
        for key, units in repository.sales_per_breakdown(session, tenant_id, start_keeping):
            pending.breakdowns[key][_SOLD] += units
        repository.mark_sales_kept(session, tenant_id, start_keeping)
    breakdowns = [
        key + tuple(values) for key, values in pending.breakdowns.items() if key[0] == tenant_id
    ]
    if ordered:
        breakdowns.sort()
    repository.add_counts(session, repository.BREAKDOWNS, breakdowns)
    repository.add_counts(session, repository.REASONS, reasons)
    repository.add_counts(session, repository.CATEGORIES, categories)


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    if session.info.get(_KEY):
        apply_pending(session)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_KEY, None)  # the facts were not recorded: neither are their figures
