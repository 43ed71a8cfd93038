"""Figures of the Insights page: return rate and refunded value over time, by reason,
category, store and channel, and the most-returned products, from the product signals'
report (the same service as GET /v1/reports/returns); and each product's return rate for a
return's page."""

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from returnstack.models import Order, OrderLine, Store
from returnstack.products import service as products

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
    """Every figure comes from the product signals' report (`products/service.py`, the
    same as GET /v1/reports/returns), one grouping at a time."""
    start_at = datetime(start.year, start.month, start.day, tzinfo=UTC)
    end_at = datetime(end.year, end.month, end.day, tzinfo=UTC)
    result = Insights(currency=currency, start=start, end=end, period=period)
    result.currencies = sorted(
        session.scalars(select(Order.currency).where(Order.tenant_id == tenant_id).distinct()).all()
    )

    def report(group_by: str) -> list[Row]:
        rows = products.returns_report(
            session,
            tenant_id=tenant_id,
            group_by=group_by,
            start=start_at,
            end=end_at,
            currency=currency,
        )
        return [
            Row(
                group=str(row["group"]) if row["group"] is not None else NO_STORE,
                label=str(row["group"]) if row["group"] is not None else NO_STORE,
                returns=row["returns"],
                units_returned=row["units_returned"],
                refunded=row["refunded"],
                units_sold=row["units_sold"],
            )
            for row in rows
        ]

    def by_units(rows: list[Row]) -> list[Row]:
        return sorted(rows, key=lambda row: (-row.units_returned, row.group))

    timeline = {key: Row(group=key, label=key) for key in _buckets(start, end, period)}
    for row in report(period):
        timeline[row.group] = row
    result.over_time = [timeline[key] for key in sorted(timeline)]
    result.by_reason = by_units(report("reason"))
    result.by_category = by_units(report("category"))
    result.by_store = by_units(report("store"))
    result.by_channel = by_units(report("channel"))
    result.top_products = [row for row in by_units(report("product")) if row.units_returned][:top]
    for row in result.by_category:
        if row.group == NO_STORE:
            row.group = row.label = "(none)"
    if result.top_products:
        names = dict(
            session.execute(
                select(OrderLine.product_id, func.max(OrderLine.name))
                .where(
                    OrderLine.tenant_id == tenant_id,
                    OrderLine.product_id.in_([row.group for row in result.top_products]),
                )
                .group_by(OrderLine.product_id)
            ).all()
        )
        for row in result.top_products:
            if names.get(row.group):
                row.label = f"{row.group} · {names[row.group]}"
    if result.by_store:
        stores = dict(
            session.execute(
                select(Store.id, Store.name).where(
                    Store.tenant_id == tenant_id,
                    Store.id.in_([row.group for row in result.by_store if row.group != NO_STORE]),
                )
            ).all()
        )
        for row in result.by_store:
            if stores.get(row.group):
                row.label = f"{stores[row.group]} ({row.group})"
    return result
