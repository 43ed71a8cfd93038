"""Product signals: stats with an explainable smoothed return rate, lists, return-aware
rankings and return reports (API.md 6).

Smoothing (empirical Bayes, beta-binomial): a product's return rate is shrunk toward a
prior rate p, the return rate of the nearest category on its path with at least
`min_units` units sold (its own category first, then each parent), else the tenant's:

    smoothed = (min(returned, sold) + k * p) / (sold + k)

the mean of the Beta(k*p + returned, k*(1-p) + sold - returned) posterior, k the prior
strength (in units). A product with few sales sits near p; with many, near its own rate.
"""

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from returnstack.config import Settings
from returnstack.kit.errors import NotFound, ValidationFailed
from returnstack.products import repository
from returnstack.products.upkeep import (
    NO_STORE,
    NO_VARIANT,
    allocate_refund,
    category_paths,
    normalize_category,
    rate,
)

TENANT = "tenant"
CATEGORY = "category"


@dataclass(frozen=True, slots=True)
class Smoothing:
    strength: float  # k: how many units sold the prior weighs
    min_units: int  # units sold a category needs to be a prior

    @classmethod
    def configured(cls, settings: Settings) -> "Smoothing":
        strength, min_units = settings.products_prior_strength, settings.products_prior_min_units
        return cls(strength=strength, min_units=min_units)


@dataclass(frozen=True, slots=True)
class Prior:
    rate: float
    source: str  # "category" | "tenant"
    category: str | None  # the category path, when the source is a category


def choose_prior(
    category: str | None, rollups: dict[str, tuple[int, int]], smoothing: Smoothing
) -> Prior:
    """The nearest category on the path with enough units sold, else the tenant's rate
    (the root '' holds the tenant's totals). Rates above 1 (more units back than sold,
    e.g. returns of sales made before the service) count as 1."""
    for path in category_paths(category)[:-1]:
        sold, returned = rollups.get(path, (0, 0))
        if sold >= smoothing.min_units:
            return Prior(min(1.0, rate(returned, sold)), CATEGORY, path)
    sold, returned = rollups.get("", (0, 0))
    return Prior(min(1.0, rate(returned, sold)), TENANT, None)


def smoothed_rate(returned: int, sold: int, prior: Prior, strength: float) -> float:
    denominator = sold + strength
    if denominator <= 0:  # nothing sold and no prior weight: the prior itself
        return prior.rate
    return (min(returned, sold) + strength * prior.rate) / denominator


def _rollups_for(
    session: repository.Reader, tenant_id: str, categories: Iterable[str | None]
) -> dict[str, tuple[int, int]]:
    paths = {path for category in categories for path in category_paths(category)}
    return repository.categories(session, tenant_id, paths)


def _figures(sold: int, returned: int) -> dict[str, Any]:
    return {"units_sold": sold, "units_returned": returned, "return_rate": rate(returned, sold)}


def _render(
    signal: Any,
    breakdowns: Sequence[Any],
    reasons: Sequence[Any],
    rollups: dict[str, tuple[int, int]],
    smoothing: Smoothing,
) -> dict[str, Any]:
    prior = choose_prior(signal.category, rollups, smoothing)
    refunded: dict[str, int] = defaultdict(int)
    reported_refunded: dict[str, int] = defaultdict(int)
    by: dict[str, dict[str, list[int]]] = {
        "variant": defaultdict(lambda: [0, 0]),
        "channel": defaultdict(lambda: [0, 0]),
        "store": defaultdict(lambda: [0, 0]),
    }
    for row in breakdowns:
        refunded[row.currency] += row.refunded + row.reported_refunded
        reported_refunded[row.currency] += row.reported_refunded
        sold = row.units_sold + row.reported_units_sold
        returned = row.units_returned + row.reported_units_returned
        for name, key in (
            ("variant", row.variant_id if row.variant_id != NO_VARIANT else None),
            ("channel", row.channel),
            ("store", row.store_id if row.store_id != NO_STORE else None),
        ):
            if key is not None:
                by[name][key][0] += sold
                by[name][key][1] += returned
    paths = category_paths(signal.category)
    return {
        "product_id": signal.product_id,
        "category": signal.category,
        "units_sold": signal.units_sold,
        "units_returned": signal.units_returned,
        "return_rate": signal.return_rate,
        "smoothed_return_rate": smoothed_rate(
            signal.units_returned, signal.units_sold, prior, smoothing.strength
        ),
        "prior_rate": prior.rate,
        "prior_strength": smoothing.strength,
        "prior_source": prior.source,
        "prior_category": prior.category,
        "refunded": {c: refunded[c] for c in sorted(refunded) if refunded[c]},
        "reasons": {
            row.reason: row.units + row.reported_units
            for row in sorted(reasons, key=lambda row: row.reason)
            if row.units + row.reported_units
        },
        "by_variant": {key: _figures(*by["variant"][key]) for key in sorted(by["variant"])},
        "by_channel": {key: _figures(*by["channel"][key]) for key in sorted(by["channel"])},
        "by_store": {key: _figures(*by["store"][key]) for key in sorted(by["store"])},
        "categories": [
            {"path": path, **_figures(*rollups.get(path, (0, 0)))} for path in paths[:-1]
        ],
        "reported": {
            "units_sold": signal.reported_units_sold,
            "units_returned": signal.reported_units_returned,
            "refunded": {
                c: reported_refunded[c] for c in sorted(reported_refunded) if reported_refunded[c]
            },
        },
    }


def _render_many(
    session: Session, tenant_id: str, rows: Sequence[Any], smoothing: Smoothing
) -> list[dict[str, Any]]:
    ids = [row.product_id for row in rows]
    derived = [row.product_id for row in rows if not row.sales_kept]
    breakdowns = repository.breakdowns(session, tenant_id, ids, derived) if ids else {}
    reasons: dict[str, list[Any]] = defaultdict(list)
    for row in repository.reasons(session, tenant_id, ids) if ids else []:
        reasons[row.product_id].append(row)
    rollups = _rollups_for(session, tenant_id, (row.category for row in rows))
    return [
        _render(
            row, breakdowns.get(row.product_id, []), reasons[row.product_id], rollups, smoothing
        )
        for row in rows
    ]


def product_stats(
    session: repository.Reader, *, tenant_id: str, product_id: str, smoothing: Smoothing
) -> dict[str, Any]:
    """Two statements: the product with its breakdowns, then its reasons, the rollups of
    its category path (known once the product is read) and, unless its sales are kept,
    the units its lines sold per variant, channel and store."""
    signal, breakdowns = repository.product_with_breakdowns(session, tenant_id, product_id)
    if signal is None:
        raise NotFound(f"No product {product_id!r} was sold or returned.")
    reasons, rollups, sold = repository.reasons_categories_and_sales(
        session,
        tenant_id,
        product_id,
        category_paths(signal.category),
        sales=not signal.sales_kept,
    )
    return _render(signal, [*breakdowns, *sold], reasons, rollups, smoothing)


def stats_of_products(
    session: Session, *, tenant_id: str, product_ids: Sequence[str], smoothing: Smoothing
) -> dict[str, dict[str, Any]]:
    """The stats of several products at once (the queries of one, not one per product);
    products never sold or returned are left out."""
    found = repository.signals(session, tenant_id, list(product_ids))
    rows = [found[product_id] for product_id in sorted(found)]
    return {
        stats["product_id"]: stats for stats in _render_many(session, tenant_id, rows, smoothing)
    }


def list_products(
    session: Session,
    *,
    tenant_id: str,
    sort: str,
    category: str | None,
    min_units_sold: int | None,
    after: tuple[Any, str] | None,
    limit: int,
    smoothing: Smoothing,
) -> tuple[list[dict[str, Any]], tuple[Any, str] | None]:
    """A page of products and the (sort value, product id) of its last row if more follow."""
    descending = sort.startswith("-")
    field = sort.removeprefix("-")
    prefix = normalize_category(category)
    rows = repository.page_of_products(
        session,
        tenant_id,
        sort=field,
        descending=descending,
        category=prefix,
        min_units_sold=min_units_sold,
        after=after,
        limit=limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    last = (getattr(rows[-1], field), rows[-1].product_id) if more else None
    return _render_many(session, tenant_id, rows, smoothing), last


def check_ranking(product_ids: Sequence[str], scores: dict[str, float] | None) -> None:
    """Every id once; scores only for listed ids, finite and not negative (422 naming each)."""
    details = []
    seen: set[str] = set()
    for index, product_id in enumerate(product_ids):
        if product_id in seen:
            details.append(
                {
                    "path": f"product_ids[{index}]",
                    "message": "is listed twice",
                    "code": "duplicate_product_id",
                }
            )
        seen.add(product_id)
    for product_id, score in (scores or {}).items():
        path = f"scores.{product_id}"
        if product_id not in seen:
            details.append(
                {"path": path, "message": "is not in product_ids", "code": "unknown_product_id"}
            )
        elif not math.isfinite(score) or score < 0:
            details.append(
                {"path": path, "message": "must be a finite number >= 0", "code": "invalid_score"}
            )
    if details:
        raise ValidationFailed("The ranking request is invalid.", details=details)


def rank(
    session: repository.Reader,
    *,
    tenant_id: str,
    product_ids: Sequence[str],
    scores: dict[str, float] | None,
    return_weight: float,
    smoothing: Smoothing,
) -> list[dict[str, Any]]:
    """score = base_score x (1 - smoothed_return_rate) ^ return_weight, highest first; ties
    keep the input order. A product never seen has no sales: its smoothed rate is the
    prior (the tenant's rate)."""
    check_ranking(product_ids, scores)
    known = repository.units(session, tenant_id, product_ids)
    rollups = _rollups_for(session, tenant_id, [row[0] for row in known.values()] + [None])
    priors: dict[str | None, Prior] = {}
    strength = smoothing.strength
    unknown = (None, 0, 0)
    rows = []
    for position, product_id in enumerate(product_ids):
        found = known.get(product_id)
        category, sold, returned = found or unknown
        prior = priors.get(category)
        if prior is None:
            prior = priors[category] = choose_prior(category, rollups, smoothing)
        smoothed = smoothed_rate(returned, sold, prior, strength)
        adjustment = (1.0 - smoothed) ** return_weight
        base = 1.0 if scores is None else scores.get(product_id, 1.0)
        score = base * adjustment
        rows.append(
            (
                -score,
                position,
                {
                    "product_id": product_id,
                    "score": score,
                    "base_score": base,
                    "adjustment": adjustment,
                    "smoothed_return_rate": smoothed,
                    "return_rate": rate(returned, sold),
                    "units_sold": sold,
                    "units_returned": returned,
                    "prior_rate": prior.rate,
                    "prior_strength": strength,
                    "prior_source": prior.source,
                    "prior_category": prior.category,
                    "known": found is not None,
                },
            )
        )
    rows.sort(key=lambda row: (row[0], row[1]))
    return [row[2] for row in rows]


# --- reports -------------------------------------------------------------------------------


def default_range(now: datetime) -> tuple[datetime, datetime]:
    return now - timedelta(days=90), now


def _fold(group_by: str, group: Any) -> Any:
    """Days fold into ISO weeks (YYYY-Www) or months (YYYY-MM)."""
    if group is None or group_by not in ("week", "month"):
        return group
    day = date.fromisoformat(str(group)[:10])
    if group_by == "month":
        return f"{day.year:04d}-{day.month:02d}"
    year, week, _ = day.isocalendar()
    return f"{year:04d}-W{week:02d}"


def returns_report(
    session: Session,
    *,
    tenant_id: str,
    group_by: str,
    start: datetime,
    end: datetime,
    currency: str,
) -> list[dict[str, Any]]:
    """Per group: returns, units returned, refunded value, units sold and return rate.

    Units sold are dated by their order, returns by their creation (a lifecycle return's
    units count once received, on the day the return was opened). Grouped by reason, units
    sold and the rate are null (a sale has no reason)."""
    return returns_reports(
        session,
        tenant_id=tenant_id,
        group_bys=[group_by],
        start=start,
        end=end,
        currency=currency,
    )[group_by]


def _report_rows(group_by: str, rows: dict[Any, list[int]]) -> list[dict[str, Any]]:
    by_reason = group_by == "reason"
    return [
        {
            "group": group,
            "returns": returns,
            "units_returned": returned,
            "refunded": refunded,
            "units_sold": None if by_reason else sold,
            "return_rate": None if by_reason else rate(returned, sold),
        }
        for group, (returns, returned, refunded, sold) in sorted(
            rows.items(), key=lambda pair: (pair[0] is None, str(pair[0] or ""))
        )
    ]


def returns_reports(
    session: Session,
    *,
    tenant_id: str,
    group_bys: Sequence[str],
    start: datetime,
    end: datetime,
    currency: str,
) -> dict[str, list[dict[str, Any]]]:
    """returns_report for several groupings at once, equal to one call per grouping but
    reading the range once for units sold (from the order lines) and once for returned
    items (units back and refunds together), not per grouping: sums are kept per
    combination of groups and folded per grouping here; each refund is spread once. A
    product's category is looked up once per product (not joined to every row)."""
    common: dict[str, Any] = {"start": start, "end": end, "currency": currency}
    read = [group_by for group_by in group_bys if group_by != "category"]
    if "category" in group_bys and "product" not in read:
        read.append("product")
    sold_read = [group_by for group_by in read if group_by != "reason"]
    sold = (  # a sale has no reason: grouped by reason alone, nothing sold is read
        repository.units_sold_by(session, tenant_id, group_bys=sold_read, **common)
        if sold_read
        else []
    )
    items = repository.returned_items_by(session, tenant_id, group_bys=read, **common)
    categories: dict[str, Any] = {}
    if "category" in group_bys:
        at, sold_at = read.index("product"), sold_read.index("product")
        products = {row[sold_at] for row in sold} | {row[5 + at] for row in items}
        categories = repository.categories_of(session, tenant_id, products)

    folds: dict[tuple[str, Any], Any] = {}  # thousands of rows share a few hundred days
    # Tens of thousands of items share a few thousand combinations of groups: each is
    # worked out once (the pairs are only read).
    known: dict[tuple[int, tuple[Any, ...]], list[tuple[str, Any]]] = {}

    def groups_of(names: Sequence[str], values: tuple[Any, ...]) -> list[tuple[str, Any]]:
        """(grouping, folded group) of one row, for each grouping asked for."""
        key = (id(names), values)
        pairs = known.get(key)
        if pairs is None:
            pairs = known[key] = work_out(names, values)
        return pairs

    def work_out(names: Sequence[str], values: tuple[Any, ...]) -> list[tuple[str, Any]]:
        by_name = dict(zip(names, values, strict=True))
        if "category" in group_bys:
            by_name["category"] = categories.get(by_name["product"])
        pairs = []
        for group_by in group_bys:
            if group_by not in by_name:
                continue  # reason, for a sale
            key = (group_by, by_name[group_by])
            if key not in folds:
                folds[key] = _fold(group_by, by_name[group_by])
            pairs.append((group_by, folds[key]))
        return pairs

    tallies: dict[str, dict[Any, list[int]]] = {
        group_by: defaultdict(lambda: [0, 0, 0, 0]) for group_by in group_bys
    }
    for sale in sold:
        for group_by, group in groups_of(sold_read, sale[:-1]):
            tallies[group_by][group][3] += sale[-1]
    counted: set[tuple[str, Any, str]] = set()  # (grouping, group, return): counted once
    refunded: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for item in items:
        ret, amount, _, _, units = item[:5]
        if amount > 0:
            refunded[ret].append(item)
        if units <= 0 and not ret.startswith("r:"):  # a verified item only refunded
            continue
        for group_by, group in groups_of(read, item[5:]):
            row = tallies[group_by][group]
            row[1] += units
            if (group_by, group, ret) not in counted:
                counted.add((group_by, group, ret))
                row[0] += 1
    for ret_items in refunded.values():
        shares = allocate_refund(ret_items[0][1], [(item[2], item[3]) for item in ret_items])
        for item, share in zip(ret_items, shares, strict=True):
            if share:
                for group_by, group in groups_of(read, item[5:]):
                    tallies[group_by][group][2] += share
    return {group_by: _report_rows(group_by, tallies[group_by]) for group_by in group_bys}


def now() -> datetime:
    return datetime.now(UTC)
