"""Figures of the Insights page, read straight from the facts (returns, their items, orders
and lines): return rate and refunded value over time, by reason, category, store and
channel, and the most-returned products. Declined and cancelled returns do not count."""

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session, aliased

from returnstack.models import Order, OrderLine, Return, ReturnItem, Store

COUNTED = ("requested", "approved", "received", "refunded", "closed")
PERIODS = ("day", "week", "month")
NO_STORE = "(no store)"


@dataclass
class Row:
    group: str
    label: str
    returns: int = 0
    units_returned: int = 0
    refunded: int = 0
    units_sold: int | None = 0

    @property
    def return_rate(self) -> float | None:
        if not self.units_sold:
            return None
        return self.units_returned / self.units_sold


@dataclass
class Insights:
    currency: str
    start: date
    end: date  # exclusive
    period: str
    over_time: list[Row] = field(default_factory=list)
    by_reason: list[Row] = field(default_factory=list)
    by_category: list[Row] = field(default_factory=list)
    by_store: list[Row] = field(default_factory=list)
    by_channel: list[Row] = field(default_factory=list)
    top_products: list[Row] = field(default_factory=list)
    currencies: list[str] = field(default_factory=list)


def _day(session: Session, column: Any) -> ColumnElement[str]:
    """The UTC calendar day of a timestamp column, as YYYY-MM-DD, on either backend."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", column)


def bucket(day: str, period: str) -> str:
    value = date.fromisoformat(day)
    if period == "week":
        year, week, _ = value.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return day[:7]
    return day


def _buckets(start: date, end: date, period: str) -> list[str]:
    seen: list[str] = []
    day = start
    while day < end:
        key = bucket(day.isoformat(), period)
        if not seen or seen[-1] != key:
            seen.append(key)
        day += timedelta(days=1)
    return seen


def compute(
    session: Session,
    *,
    tenant_id: str,
    currency: str,
    start: date,
    end: date,
    period: str = "week",
    top: int = 10,
) -> Insights:
    start_at = datetime(start.year, start.month, start.day, tzinfo=UTC)
    end_at = datetime(end.year, end.month, end.day, tzinfo=UTC)
    result = Insights(currency=currency, start=start, end=end, period=period)
    result.currencies = sorted(
        session.scalars(select(Order.currency).where(Order.tenant_id == tenant_id).distinct()).all()
    )
    returns_in_range = and_(
        Return.tenant_id == tenant_id,
        Return.currency == currency,
        Return.status.in_(COUNTED),
        Return.created_at >= start_at,
        Return.created_at < end_at,
    )
    orders_in_range = and_(
        Order.tenant_id == tenant_id,
        Order.currency == currency,
        Order.placed_at >= start_at,
        Order.placed_at < end_at,
    )
    item_join = and_(ReturnItem.tenant_id == Return.tenant_id, ReturnItem.return_id == Return.id)
    line_join = and_(OrderLine.tenant_id == Order.tenant_id, OrderLine.order_id == Order.id)

    # Over time: returns and refunds by the day the return was opened; units sold by the
    # day the order was placed.
    timeline = {key: Row(group=key, label=key) for key in _buckets(start, end, period)}
    day = _day(session, Return.created_at)
    for day_key, count, refunded in session.execute(
        select(day, func.count(), func.coalesce(func.sum(Return.refund_amount), 0))
        .where(returns_in_range)
        .group_by(day)
    ):
        row = timeline.setdefault(bucket(day_key, period), Row(group=day_key, label=day_key))
        row.returns += count
        row.refunded += int(refunded or 0)
    for day_key, units in session.execute(
        select(day, func.sum(ReturnItem.quantity))
        .join(ReturnItem, item_join)
        .where(returns_in_range)
        .group_by(day)
    ):
        timeline[bucket(day_key, period)].units_returned += int(units or 0)
    # Units sold, in one pass over the period's order lines: by day, category, store and
    # channel at once (a few thousand groups at most), summed up per dimension below.
    order_day = _day(session, Order.placed_at)
    sold_by: dict[str, dict[str, int]] = {"category": {}, "store": {}, "channel": {}}
    for day_key, category, store_id, channel, units in session.execute(
        select(
            order_day,
            OrderLine.category,
            Order.store_id,
            Order.channel,
            func.sum(OrderLine.quantity),
        )
        .select_from(Order)
        .join(OrderLine, line_join)
        .where(orders_in_range)
        .group_by(order_day, OrderLine.category, Order.store_id, Order.channel)
    ):
        count = int(units or 0)
        slot = timeline.get(bucket(day_key, period))
        if slot is not None and slot.units_sold is not None:
            slot.units_sold += count
        for dimension, key in (
            ("category", category or "(none)"),
            ("store", store_id or NO_STORE),
            ("channel", channel),
        ):
            sold_by[dimension][key] = sold_by[dimension].get(key, 0) + count
    result.over_time = list(timeline.values())

    # By reason (an item's reason; refunds belong to returns, not reasons).
    result.by_reason = [
        Row(
            group=reason,
            label=reason,
            returns=count,
            units_returned=int(units or 0),
            units_sold=None,
        )
        for reason, count, units in session.execute(
            select(
                ReturnItem.reason,
                func.count(func.distinct(Return.id)),
                func.sum(ReturnItem.quantity),
            )
            .join(ReturnItem, item_join)
            .where(returns_in_range)
            .group_by(ReturnItem.reason)
        )
    ]
    result.by_reason.sort(key=lambda row: (-row.units_returned, row.group))

    # By category and by product. An item's category is its order line's; a recorded
    # return may name only the product, then the category of that product in the order.
    line = aliased(OrderLine)
    by_product = (
        select(func.max(OrderLine.category))
        .where(
            OrderLine.tenant_id == ReturnItem.tenant_id,
            OrderLine.order_id == ReturnItem.order_id,
            OrderLine.product_id == ReturnItem.product_id,
        )
        .scalar_subquery()
    )
    line_category = func.coalesce(line.category, by_product).label("category")
    returned_lines = (
        select(
            line_category,
            ReturnItem.product_id,
            func.sum(ReturnItem.quantity).label("units"),
            func.sum(ReturnItem.quantity * func.coalesce(ReturnItem.unit_price, 0)).label("value"),
        )
        .select_from(Return)
        .join(ReturnItem, item_join)
        .outerjoin(
            line,
            and_(
                line.tenant_id == ReturnItem.tenant_id,
                line.order_id == ReturnItem.order_id,
                line.line_id == ReturnItem.line_id,
            ),
        )
        .where(returns_in_range)
        .group_by(line_category, ReturnItem.product_id)
    )
    categories: dict[str, Row] = {}
    products: dict[str, Row] = {}
    for category, product_id, units, value in session.execute(returned_lines):
        name = category or "(none)"
        row = categories.setdefault(name, Row(group=name, label=name))
        row.units_returned += int(units or 0)
        row.refunded += int(value or 0)
        product = products.setdefault(product_id, Row(group=product_id, label=product_id))
        product.units_returned += int(units or 0)
        product.refunded += int(value or 0)
    for name, row in categories.items():
        row.units_sold = sold_by["category"].get(name, 0)
    top_ids = sorted(products, key=lambda pid: (-products[pid].units_returned, pid))[:top]
    if top_ids:
        for product_id, units, product_name in session.execute(
            select(OrderLine.product_id, func.sum(OrderLine.quantity), func.max(OrderLine.name))
            .select_from(Order)
            .join(OrderLine, line_join)
            .where(orders_in_range, OrderLine.product_id.in_(top_ids))
            .group_by(OrderLine.product_id)
        ):
            products[product_id].units_sold = int(units or 0)
            if product_name:
                products[product_id].label = f"{product_id} · {product_name}"
    result.by_category = sorted(
        categories.values(), key=lambda row: (-row.units_returned, row.group)
    )
    result.top_products = [products[pid] for pid in top_ids]
    # "refunded" of categories and products is the returned value (refunds are per return).

    # By store and by channel: returns, refunds and units in two passes.
    by_store: dict[str, Row] = {}
    by_channel: dict[str, Row] = {}

    def rows_for(store_id: str | None, channel: str) -> tuple[Row, Row]:
        store_key = store_id or NO_STORE
        store = by_store.setdefault(store_key, Row(group=store_key, label=store_key))
        via = by_channel.setdefault(channel, Row(group=channel, label=channel))
        return store, via

    for store_id, channel, count, refunded in session.execute(
        select(
            Return.store_id,
            Return.channel,
            func.count(),
            func.coalesce(func.sum(Return.refund_amount), 0),
        )
        .where(returns_in_range)
        .group_by(Return.store_id, Return.channel)
    ):
        for row in rows_for(store_id, channel):
            row.returns += count
            row.refunded += int(refunded or 0)
    for store_id, channel, units in session.execute(
        select(Return.store_id, Return.channel, func.sum(ReturnItem.quantity))
        .join(ReturnItem, item_join)
        .where(returns_in_range)
        .group_by(Return.store_id, Return.channel)
    ):
        for row in rows_for(store_id, channel):
            row.units_returned += int(units or 0)
    for dimension, rows in (("store", by_store), ("channel", by_channel)):
        for key, row in rows.items():
            row.units_sold = sold_by[dimension].get(key, 0)
    result.by_store = sorted(by_store.values(), key=lambda row: (-row.units_returned, row.group))
    result.by_channel = sorted(
        by_channel.values(), key=lambda row: (-row.units_returned, row.group)
    )
    if result.by_store:
        names = dict(
            session.execute(
                select(Store.id, Store.name).where(
                    Store.tenant_id == tenant_id,
                    Store.id.in_([row.group for row in result.by_store if row.group != NO_STORE]),
                )
            ).all()
        )
        for row in result.by_store:
            if names.get(row.group):
                row.label = f"{names[row.group]} ({row.group})"
    return result


def product_rates(
    session: Session, *, tenant_id: str, products: list[str]
) -> dict[str, dict[str, Any]]:
    """Each product's units sold and units that came back (received, or recorded as
    returned; every time, every currency) and their ratio, for the return page's items."""
    if not products:
        return {}
    rates: dict[str, dict[str, Any]] = {
        product: {"units_sold": 0, "units_returned": 0, "return_rate": None} for product in products
    }
    for product_id, units in session.execute(
        select(OrderLine.product_id, func.sum(OrderLine.quantity))
        .where(OrderLine.tenant_id == tenant_id, OrderLine.product_id.in_(products))
        .group_by(OrderLine.product_id)
    ):
        rates[product_id]["units_sold"] = int(units or 0)
    for product_id, units in session.execute(
        select(ReturnItem.product_id, func.sum(ReturnItem.received_quantity))
        .join(
            Return,
            and_(Return.tenant_id == ReturnItem.tenant_id, Return.id == ReturnItem.return_id),
        )
        .where(
            ReturnItem.tenant_id == tenant_id,
            ReturnItem.product_id.in_(products),
            Return.status.in_(COUNTED),
        )
        .group_by(ReturnItem.product_id)
    ):
        rates[product_id]["units_returned"] = int(units or 0)
    for rate in rates.values():
        if rate["units_sold"]:
            rate["return_rate"] = rate["units_returned"] / rate["units_sold"]
    return rates
