"""Figures of the Insights page: return rate and refunded value over time, by reason,
category, store and channel, and the most-returned products, from the product signals'
report (the same service as GET /v1/reports/returns).

The six reports read every order and return of the range; the figures are kept per process
until the tenant's data changes (its newest outbox message, written with every change), so
looking again, or another user looking, costs one indexed lookup."""

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from returnstack.models import Order, OrderLine, Store
from returnstack.outbox.service import latest_message
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
    same figures as GET /v1/reports/returns), every grouping in one reading."""
    start_at = datetime(start.year, start.month, start.day, tzinfo=UTC)
    end_at = datetime(end.year, end.month, end.day, tzinfo=UTC)
    result = Insights(currency=currency, start=start, end=end, period=period)
    result.currencies = sorted(
        session.scalars(select(Order.currency).where(Order.tenant_id == tenant_id).distinct()).all()
    )

    reports = products.returns_reports(
        session,
        tenant_id=tenant_id,
        group_bys=[period, "reason", "category", "store", "channel", "product"],
        start=start_at,
        end=end_at,
        currency=currency,
    )

    def report(group_by: str) -> list[Row]:
        return [
            Row(
                group=str(row["group"]) if row["group"] is not None else NO_STORE,
                label=str(row["group"]) if row["group"] is not None else NO_STORE,
                returns=row["returns"],
                units_returned=row["units_returned"],
                refunded=row["refunded"],
                units_sold=row["units_sold"],
            )
            for row in reports[group_by]
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


class FigureCache:
    """The latest figures per (tenant, currency, range, period), valid while the tenant's
    newest message is the one they were computed after; the least recently used go first."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self.entries: OrderedDict[tuple[str, ...], tuple[str | None, Insights]] = OrderedDict()
        self.lock = threading.Lock()

    def figures(
        self,
        session: Session,
        *,
        tenant_id: str,
        currency: str,
        start: date,
        end: date,
        period: str,
    ) -> Insights:
        key = (tenant_id, currency, start.isoformat(), end.isoformat(), period)
        # Read before computing: a change committed meanwhile makes the next look recompute.
        version = latest_message(session, tenant_id=tenant_id)
        with self.lock:
            kept = self.entries.get(key)
            if kept is not None and kept[0] == version:
                self.entries.move_to_end(key)
                return kept[1]
        computed = compute(
            session, tenant_id=tenant_id, currency=currency, start=start, end=end, period=period
        )
        with self.lock:
            self.entries[key] = (version, computed)
            self.entries.move_to_end(key)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        return computed
