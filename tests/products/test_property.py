"""Product signals against a plain recomputation from the facts, on random streams (both
backends).

Hypothesis generates streams over a small universe (4 products in 3 categories or none,
variants, 2 channels and stores, 2 currencies, 4 orders of one customer): purchases (a
purchase re-sent for a known order adds only its new lines), returns recorded from events
(product-only items, with or without prices, with or without a refund), duplicates of
earlier events, lifecycle returns (opened on an order's lines, approved, partly received,
refunded in parts, closed, reopened), and reported (publishable-key) purchases and
returns. Timestamps are random within the last week, so facts arrive out of order.

The facts the service accepted are mirrored (each lifecycle return is read back after
every action). At the end, GET /v1/products/{id}/stats of every product must equal what
`expected_stats` computes from those facts alone (its own allocation of refunds, category
choice, rollups and smoothing), the rebuild must report no differences, and the stats must
be unchanged after it. Examples per backend: PRODUCTS_EXAMPLES (default 50).
"""

import os
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import event as tally
from hypothesis import strategies as st

from returnstack.products import upkeep
from returnstack.products.rebuild import rebuild
from tests.conftest import DatabaseFixture, TenantFixture, make_tenant
from tests.products.helpers import report_events
from tests.returns.helpers import Api

EXAMPLES = int(os.environ.get("PRODUCTS_EXAMPLES", "50"))
PRODUCTS = ["SKU-A", "SKU-B", "SKU-C", "SKU-D"]
CATEGORIES = ["Apparel/Tops", "Apparel/Shoes", " Apparel / Tops /", "Home", None]
VARIANTS = [None, "V1", "V2"]
ORDERS = ["o1", "o2", "o3", "o4"]
STORES = ["berlin-01", "paris-02"]
REASONS = ["defective", "unwanted", "size_too_small"]
CUSTOMER = {"id": "c1", "email": "c1@example.com"}
STRENGTH, MIN_UNITS = 20.0, 100
WEEK = 7 * 24 * 3600


@dataclass(frozen=True)
class Line:
    line_id: str
    product: str
    variant: str | None
    quantity: int
    price: int
    category: str | None


@dataclass(frozen=True)
class Purchase:
    event_id: str
    order: str
    channel: str
    store: str | None
    currency: str
    lines: tuple[Line, ...]
    seconds_ago: int


@dataclass(frozen=True)
class Item:
    product: str
    variant: str | None
    quantity: int
    price: int | None
    reason: str


@dataclass(frozen=True)
class Recorded:
    event_id: str
    order: str
    channel: str
    store: str | None
    currency: str
    items: tuple[Item, ...]
    refund: int | None
    seconds_ago: int


@dataclass(frozen=True)
class Reported:
    event_id: str
    kind: str  # purchase | return
    channel: str
    store: str | None
    currency: str
    items: tuple[Item, ...]
    refund: int | None
    seconds_ago: int


@dataclass(frozen=True)
class Lifecycle:
    order: str
    lines: tuple[tuple[int, int, str], ...]  # (which of the order's lines, quantity, reason)
    steps: tuple[tuple[str, int | None], ...]  # receive n units, refund n (None: all), ...


Op = Purchase | Recorded | Reported | Lifecycle

event_ids = st.sampled_from([f"e{i}" for i in range(12)])
when = st.integers(0, WEEK)
channel_store = st.sampled_from([("online", None), ("offline", STORES[0]), ("offline", STORES[1])])
currency = st.sampled_from(["EUR", "USD"])


@st.composite
def purchases(draw: st.DrawFn) -> Purchase:
    channel, store = draw(channel_store)
    ids = draw(st.lists(st.sampled_from(["1", "2", "3"]), min_size=1, max_size=3, unique=True))
    lines = tuple(
        Line(
            line_id,
            draw(st.sampled_from(PRODUCTS)),
            draw(st.sampled_from(VARIANTS)),
            draw(st.sampled_from([1, 2, 3, 60])),
            draw(st.sampled_from([0, 500, 1999])),
            draw(st.sampled_from(CATEGORIES)),
        )
        for line_id in ids
    )
    return Purchase(
        draw(event_ids),
        draw(st.sampled_from(ORDERS)),
        channel,
        store,
        draw(currency),
        lines,
        draw(when),
    )


items = st.builds(
    Item,
    st.sampled_from(PRODUCTS),
    st.sampled_from(VARIANTS),
    st.integers(1, 4),
    st.sampled_from([None, 300, 1999]),
    st.sampled_from(REASONS),
)


@st.composite
def recorded(draw: st.DrawFn) -> Recorded:
    channel, store = draw(channel_store)
    return Recorded(
        draw(event_ids),
        draw(st.sampled_from(ORDERS)),
        channel,
        store,
        draw(currency),
        tuple(draw(st.lists(items, min_size=1, max_size=3))),
        draw(st.sampled_from([None, 0, 1, 1001, 2500])),
        draw(when),
    )


@st.composite
def reported(draw: st.DrawFn) -> Reported:
    channel, store = draw(channel_store)
    return Reported(
        draw(st.sampled_from([f"x{i}" for i in range(6)])),
        draw(st.sampled_from(["purchase", "return"])),
        channel,
        store,
        draw(currency),
        tuple(draw(st.lists(items, min_size=1, max_size=3))),
        draw(st.sampled_from([None, 0, 999])),
        draw(when),
    )


@st.composite
def lifecycles(draw: st.DrawFn) -> Lifecycle:
    lines = tuple(
        (index, draw(st.integers(1, 2)), draw(st.sampled_from(REASONS)))
        for index in draw(st.lists(st.integers(0, 2), min_size=1, max_size=2, unique=True))
    )
    step = st.one_of(
        st.tuples(st.just("receive"), st.integers(1, 3)),
        st.tuples(st.just("refund"), st.sampled_from([None, 1, 333])),
        st.tuples(st.just("close_reopen"), st.none()),
    )
    first = st.tuples(st.just("receive"), st.integers(1, 3))
    steps = (draw(first), *draw(st.lists(step, max_size=5)))
    return Lifecycle(draw(st.sampled_from(ORDERS)), lines, steps)


operations = st.one_of(purchases(), recorded(), reported(), lifecycles())


def _at(start: datetime, seconds_ago: int) -> datetime:
    return start - timedelta(seconds=seconds_ago)


def _rfc(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass
class Facts:
    """What the service accepted, as plain records."""

    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    lines: dict[tuple[str, str], Line] = field(default_factory=dict)
    returns: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> return object
    reported: dict[str, Reported] = field(default_factory=dict)
    event_ids: set[str] = field(default_factory=set)


@dataclass
class Driver:
    api: Api
    tenant: TenantFixture
    database: DatabaseFixture
    start: datetime
    facts: Facts = field(default_factory=Facts)

    def run(self, ops: list[Op]) -> None:
        for op in ops:
            if isinstance(op, Purchase):
                self.purchase(op)
            elif isinstance(op, Recorded):
                self.recorded(op)
            elif isinstance(op, Reported):
                self.reported(op)
            else:
                self.lifecycle(op)

    def _send(self, event: dict[str, Any]) -> bool:
        response = self.api.post("/v1/events", {"events": [event]})
        assert response.status_code == 200, response.text
        new = event["id"] not in self.facts.event_ids
        assert response.json()["accepted"] == int(new)
        self.facts.event_ids.add(event["id"])
        return new

    def purchase(self, op: Purchase) -> None:
        at = _at(self.start, op.seconds_ago)
        event = {
            "type": "purchase",
            "id": op.event_id,
            "timestamp": _rfc(at),
            "channel": op.channel,
            "customer": CUSTOMER,
            "order_id": op.order,
            "currency": op.currency,
            "items": [
                {
                    "line_id": line.line_id,
                    "product_id": line.product,
                    "quantity": line.quantity,
                    "unit_price": line.price,
                }
                | ({"variant_id": line.variant} if line.variant else {})
                | ({"category": line.category} if line.category else {})
                for line in op.lines
            ],
        }
        if op.store:
            event["store"] = {"id": op.store}
        if not self._send(event):
            return
        order = self.facts.orders.setdefault(
            op.order,
            {"channel": op.channel, "store": op.store, "currency": op.currency, "at": at},
        )
        assert order is not None
        for line in op.lines:
            self.facts.lines.setdefault((op.order, line.line_id), line)

    def recorded(self, op: Recorded) -> None:
        event: dict[str, Any] = {
            "type": "return",
            "id": op.event_id,
            "timestamp": _rfc(_at(self.start, op.seconds_ago)),
            "channel": op.channel,
            "customer": CUSTOMER,
            "order_id": op.order,
            "currency": op.currency,
            "items": [
                {"product_id": item.product, "quantity": item.quantity, "reason": item.reason}
                | ({"variant_id": item.variant} if item.variant else {})
                | ({"unit_price": item.price} if item.price is not None else {})
                for item in op.items
            ],
        }
        if op.store:
            event["store"] = {"id": op.store}
        if op.refund is not None:
            event["refund"] = {"amount": op.refund, "method": "original_payment"}
        if self._send(event):
            self.facts.returns[op.event_id] = {
                "channel": op.channel,
                "store": op.store,
                "currency": op.currency,
                "refund": op.refund,
                "items": [
                    {
                        "product_id": item.product,
                        "variant_id": item.variant,
                        "quantity": item.quantity,
                        "received_quantity": item.quantity,
                        "unit_price": item.price,
                        "reason": item.reason,
                    }
                    for item in op.items
                ],
            }

    def reported(self, op: Reported) -> None:
        if op.event_id in self.facts.reported:
            return  # a repeated id changes nothing
        self.facts.reported[op.event_id] = op
        report_events(
            self.api.http,
            self.tenant,
            [
                {
                    "type": op.kind,
                    "id": op.event_id,
                    "timestamp": _rfc(_at(self.start, op.seconds_ago)),
                    "channel": op.channel,
                    "store": op.store,
                    "currency": op.currency,
                    "refund": op.refund if op.kind == "return" else None,
                    "items": [
                        {
                            "product_id": item.product,
                            "variant_id": item.variant,
                            "quantity": item.quantity,
                            "unit_price": item.price,
                            "reason": item.reason if op.kind == "return" else None,
                        }
                        for item in op.items
                    ],
                }
            ],
        )

    def lifecycle(self, op: Lifecycle) -> None:
        order_lines = sorted(line_id for order, line_id in self.facts.lines if order == op.order)
        if not order_lines:
            return
        items: list[dict[str, Any]] = []
        for index, quantity, reason in op.lines:
            line_id = order_lines[index % len(order_lines)]
            if any(item["line_id"] == line_id for item in items):
                continue
            line = self.facts.lines[(op.order, line_id)]
            units = min(quantity, line.quantity)
            items.append(
                {"order_id": op.order, "line_id": line_id, "quantity": units, "reason": reason}
            )
        response = self.api.post("/v1/returns", {"items": items, "customer": CUSTOMER})
        if response.status_code != 201:  # units already claimed by other returns
            assert response.status_code == 422, response.text
            return
        ret = response.json()
        self.api.act(ret, "approve")
        for action, amount in op.steps:
            current = self.api.read(ret)
            if action == "receive":
                open_items = [i for i in current["items"] if i["received_quantity"] < i["quantity"]]
                if current["status"] in ("approved", "received") and open_items:
                    first = open_items[0]
                    units = min(amount or 1, first["quantity"] - first["received_quantity"])
                    receipt = {"order_id": op.order, "line_id": first["line_id"], "quantity": units}
                    self.api.act(ret, "receive", {"items": [receipt]})
            elif action == "refund" and current["status"] == "received":
                body: dict[str, Any] = {"method": "original_payment"}
                if amount is not None:
                    body["amount"] = amount
                response = self.api.post(f"/v1/returns/{ret['id']}/refund", body)
                assert response.status_code in (200, 422), response.text
            elif action == "close_reopen" and current["status"] == "refunded":
                self.api.act(ret, "close")
                self.api.act(ret, "reopen")
                self.api.act(ret, "approve")
        final = self.api.read(ret)
        self.facts.returns[final["id"]] = {
            "channel": final["channel"],
            "store": (final["store"] or {}).get("id"),
            "currency": final["currency"],
            "refund": (final["refund"] or {}).get("amount"),
            "items": final["items"],
        }


# --- the plain recomputation ----------------------------------------------------------------


def plain_allocation(amount: int, items: list[tuple[int, int | None]]) -> list[int]:
    """Largest remainder on exact fractions, ties to the earlier item."""
    priced = all(price is not None for _, price in items)
    weights = [q * (p or 0) if priced else q for q, p in items]
    if sum(weights) == 0:
        weights = [1] * len(items)
    exact = [Fraction(amount * w, sum(weights)) for w in weights]
    shares = [int(x) for x in exact]
    order = sorted(range(len(items)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[: amount - sum(shares)]:
        shares[i] += 1
    return shares


def normalized(category: str | None) -> str | None:
    parts = [p.strip() for p in (category or "").split("/") if p.strip()]
    return "/".join(parts) or None


def paths(category: str | None) -> list[str]:
    parts = (category or "").split("/") if category else []
    return ["/".join(parts[:n]) for n in range(len(parts), 0, -1)] + [""]


def expected_stats(facts: Facts) -> dict[str, dict[str, Any]]:
    per: dict[str, dict[str, Any]] = defaultdict(
        lambda: {
            "sold": 0,
            "returned": 0,
            "reported_sold": 0,
            "reported_returned": 0,
            "refunded": defaultdict(int),
            "reported_refunded": defaultdict(int),
            "reasons": defaultdict(int),
            "variant": defaultdict(lambda: [0, 0]),
            "channel": defaultdict(lambda: [0, 0]),
            "store": defaultdict(lambda: [0, 0]),
            "category": None,
        }
    )

    def count(product: str, variant: Any, channel: str, store: Any, sold: int, back: int) -> None:
        """Units per product, and per variant, channel and store (which are listed once
        anything, units or refunded money, was counted there)."""
        row = per[product]
        row["sold"] += sold
        row["returned"] += back
        for name, key in (("variant", variant), ("channel", channel), ("store", store)):
            if key and (sold or back):
                row[name][key][0] += sold
                row[name][key][1] += back

    def touch(product: str, variant: Any, channel: str, store: Any) -> None:
        row = per[product]
        for name, key in (("variant", variant), ("channel", channel), ("store", store)):
            if key:
                row[name][key]

    latest: dict[str, tuple[datetime, str]] = {}
    for (order_id, _), line in facts.lines.items():
        order = facts.orders[order_id]
        count(line.product, line.variant, order["channel"], order["store"], line.quantity, 0)
        per[line.product]
        category = normalized(line.category)
        if category is not None:
            candidate = (order["at"], category)
            if line.product not in latest or candidate > latest[line.product]:
                latest[line.product] = candidate
    for ret in facts.returns.values():
        for item in ret["items"]:
            back = item["received_quantity"]
            count(item["product_id"], item["variant_id"], ret["channel"], ret["store"], 0, back)
            if back:
                per[item["product_id"]]["reasons"][item["reason"]] += back
        if ret["refund"]:
            weights = [(i["quantity"], i["unit_price"]) for i in ret["items"]]
            for item, share in zip(
                ret["items"], plain_allocation(ret["refund"], weights), strict=True
            ):
                per[item["product_id"]]["refunded"][ret["currency"]] += share
                if share:
                    touch(item["product_id"], item["variant_id"], ret["channel"], ret["store"])
    for op in facts.reported.values():
        for item in op.items:
            sold, back = (item.quantity, 0) if op.kind == "purchase" else (0, item.quantity)
            count(item.product, item.variant, op.channel, op.store, sold, back)
            per[item.product]["reported_sold"] += sold
            per[item.product]["reported_returned"] += back
            if back:
                per[item.product]["reasons"][item.reason] += back
        if op.kind == "return" and op.refund:
            weights = [(i.quantity, i.price) for i in op.items]
            for item, share in zip(op.items, plain_allocation(op.refund, weights), strict=True):
                per[item.product]["refunded"][op.currency] += share
                if share:
                    touch(item.product, item.variant, op.channel, op.store)
                per[item.product]["reported_refunded"][op.currency] += share

    rollup: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for product, row in per.items():
        row["category"] = latest[product][1] if product in latest else None
        for path in paths(row["category"]):
            rollup[path][0] += row["sold"]
            rollup[path][1] += row["returned"]

    def ratio(back: int, sold: int) -> float:
        return back / sold if sold else 0.0

    result = {}
    for product, row in per.items():
        prior_rate, source, prior_category = None, "tenant", None
        for path in paths(row["category"])[:-1]:
            if rollup[path][0] >= MIN_UNITS:
                prior_rate = ratio(rollup[path][1], rollup[path][0])
                source, prior_category = "category", path
                break
        if prior_rate is None:
            prior_rate = ratio(rollup[""][1], rollup[""][0])
        prior_rate = min(prior_rate, 1.0)
        sold, back = row["sold"], row["returned"]

        def figures(pair: list[int]) -> dict[str, Any]:
            return {
                "units_sold": pair[0],
                "units_returned": pair[1],
                "return_rate": ratio(pair[1], pair[0]),
            }

        result[product] = {
            "product_id": product,
            "category": row["category"],
            "units_sold": sold,
            "units_returned": back,
            "return_rate": ratio(back, sold),
            "smoothed_return_rate": (min(back, sold) + STRENGTH * prior_rate) / (sold + STRENGTH),
            "prior_rate": prior_rate,
            "prior_strength": STRENGTH,
            "prior_source": source,
            "prior_category": prior_category,
            "refunded": {c: v for c, v in sorted(row["refunded"].items()) if v},
            "reasons": {r: v for r, v in sorted(row["reasons"].items()) if v},
            "by_variant": {k: figures(v) for k, v in sorted(row["variant"].items())},
            "by_channel": {k: figures(v) for k, v in sorted(row["channel"].items())},
            "by_store": {k: figures(v) for k, v in sorted(row["store"].items())},
            "categories": [{"path": p, **figures(rollup[p])} for p in paths(row["category"])[:-1]],
            "reported": {
                "units_sold": row["reported_sold"],
                "units_returned": row["reported_returned"],
                "refunded": {c: v for c, v in sorted(row["reported_refunded"].items()) if v},
            },
        }
    return result


def read_stats(api: Api) -> dict[str, Any]:
    found = {}
    for product in PRODUCTS:
        response = api.get(f"/v1/products/{product}/stats")
        assert response.status_code in (200, 404), response.text
        if response.status_code == 200:
            found[product] = response.json()
    return found


def close_enough(a: Any, b: Any) -> bool:
    """Equal, floats to 1e-12 (the smoothed rate is computed in another order)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and abs(a - b) < 1e-12
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close_enough(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close_enough(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # a fresh tenant per example instead
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(ops=st.lists(operations, max_size=14))
def test_stats_equal_a_recomputation_from_the_facts_and_the_rebuild(
    database: DatabaseFixture, client: TestClient, monkeypatch: pytest.MonkeyPatch, ops: list[Op]
) -> None:
    # Products' sales kept from 6 units on: streams have products below it (read from their
    # lines), above it, and crossing it in a purchase or a reported sale.
    monkeypatch.setattr(upkeep, "KEEP_SALES_FROM", 6)
    tenant = make_tenant(database.db, currency="EUR")
    api = Api(client, tenant)
    driver = Driver(api, tenant, database, start=datetime.now(UTC).replace(microsecond=0))
    driver.run(ops)

    facts = driver.facts
    lifecycle = [r for key, r in facts.returns.items() if key.startswith("ret_")]
    tally(f"lifecycle returns: {min(len(lifecycle), 2)}")
    tally(f"refunded lifecycle: {any(r['refund'] for r in lifecycle)}")
    tally(
        f"received lifecycle: {any(i['received_quantity'] for r in lifecycle for i in r['items'])}"
    )
    tally(f"reported events: {min(len(facts.reported), 2)}")
    tally(f"category prior: {any(line.quantity == 60 for line in facts.lines.values())}")
    stats = read_stats(api)
    tally(f"products with sales kept: {min(sum(b['units_sold'] >= 6 for b in stats.values()), 2)}")
    tally(f"products read from lines: {min(sum(b['units_sold'] < 6 for b in stats.values()), 2)}")
    expected = expected_stats(driver.facts)
    assert stats.keys() == expected.keys()
    for product, body in stats.items():
        differing = {
            key: (body.get(key), expected[product].get(key))
            for key in body.keys() | expected[product].keys()
            if not close_enough(body.get(key), expected[product].get(key))
        }
        assert not differing, (product, differing, ops)

    with database.db.transaction() as session:
        report = rebuild(session, tenant_id=tenant.id, write=True)
    assert report.differences == 0, report.examples
    assert read_stats(api) == stats
