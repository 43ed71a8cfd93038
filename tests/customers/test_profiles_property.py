"""Customer profiles against a reference model, on random streams of operations (both backends).

Hypothesis generates streams over a small universe (2-4 customer ids, 2-4 emails in any
case, 2 currencies, 3 products, 3-8 orders): purchases (customer id only, email only, both,
or anonymous; online, or offline with a store; sometimes re-sent for a known order with
extra lines, or in the tenant's default currency), returns recorded from events (customer id
and/or email, with or without a refund, for orders known or not yet seen), duplicates of
earlier events (verbatim or with a changed body: the id decides), several events in one
request, identity links (any event, or a return, naming both an id and an email), returns
through the lifecycle (opened for the order's customer by id, email or both, by another
customer id claiming a guest's email, or refused for someone else's order; approve, decline,
partial receipts with any outcome, refunds of the default, a part or too much, close,
cancel, reopen and refund again, items with or without merchant-fault reasons), changes of
the policy (serial returner thresholds, restocking and return shipping fees, whether damaged
items are refunded) and erasures (DELETE /v1/customers/{id}, and of whoever an email belongs
to). Timestamps are random within the last week, so facts arrive out of order.

Every request is also fed to the plain-Python reference (tests/customers/profiles_reference.py),
which predicts what the API accepts; the test checks the API agrees and mirrors exactly what was
accepted. At the end, for every customer id and email of the universe, GET /v1/customers/{id}
and GET /v1/customers/lookup?email= must equal the reference; customers flagged as serial
returners must have had a `customer.flagged` outbox event; then
`returnstack.customers.profiles.rebuild` must report no differences and the profiles read
again must be unchanged. One stream written by hand also runs `returnstack profiles rebuild
--check --json`. The reference itself is checked by hand at the end of this file.

The reference's rules are written from the contract, not from the service (ownership of
orders, refund money, erasure); streams that showed the service disagreeing run first as
explicit examples.

PROFILES_EXAMPLES sets the examples per backend (default EXAMPLES below); PROFILES_DRIVE_ONLY=1
runs the streams without the profile checks (to check the generated requests alone). With CI
set the run is derandomised (the "ci" profile of conftest.py) and prints the failing blob.
"""

import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import event as tally
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from returnstack.customers.endpoints import router as customer_routes
from tests.conftest import DatabaseFixture, TenantFixture, make_tenant
from tests.customers.profiles_reference import (
    ACTIONS,
    Expected,
    LifecycleItem,
    LifecycleReturn,
    Reference,
    normalize_email,
    parse_time,
)
from tests.e2e import run_cli
from tests.returns.helpers import Api, all_outbox

EXAMPLES = int(os.environ.get("PROFILES_EXAMPLES", "25"))
DRIVE_ONLY = os.environ.get("PROFILES_DRIVE_ONLY") == "1"
MAX_OPS = 40
# DELETE /v1/customers/lookup?email= (erasure of a guest, or of whoever an email belongs to)
# is generated once the service has the route.
GUEST_ERASURE = any(
    isinstance(route, APIRoute)
    and route.path.endswith("/lookup")
    and "DELETE" in (route.methods or set())
    for route in customer_routes.routes
)

CUSTOMERS = ["c1", "c2", "c3", "c4"]
EMAILS = ["ann@example.com", "bob@example.com", "cy@example.com", "di@example.com"]
ORDERS = ["o1", "o2", "o3", "o4", "o5", "o6", "o7", "o8"]
PRODUCTS = ["SKU-A", "SKU-B", "SKU-C"]
LINE_IDS = ["1", "2", "3"]
CURRENCIES = ["EUR", "USD"]  # the tenant's default is EUR
STORES = ["berlin-01", "paris-02"]
# Two reasons without fees, three with (API.md 11: the merchant-fault defaults).
REASONS = ["unwanted", "unwanted", "color", "defective", "wrong_item"]
PRICES = [500, 1000, 1999, 4999]
WEEK = 7 * 24 * 3600


# --- operations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Who:
    """A customer reference of an event; `email` as sent (maybe in capitals)."""

    id: str | None
    email: str | None

    def body(self) -> dict[str, str]:
        return {k: v for k, v in (("id", self.id), ("email", self.email)) if v is not None}


@dataclass(frozen=True)
class PLine:
    line_id: str
    product_id: str
    quantity: int
    unit_price: int


@dataclass(frozen=True)
class Purchase:
    order_id: str
    who: Who | None
    store: str | None  # offline when set
    currency: str | None  # None: the tenant's default
    lines: tuple[PLine, ...]
    age: int  # seconds before the start of the example
    joins_previous: bool  # sent in the same request as the event before it


@dataclass(frozen=True)
class RItem:
    line_id: str | None
    product_id: str
    quantity: int


@dataclass(frozen=True)
class ReturnEvent:
    order_id: str
    who: Who
    store: str | None
    currency: str | None
    items: tuple[RItem, ...]
    refund: int | None
    age: int
    joins_previous: bool


@dataclass(frozen=True)
class Duplicate:
    """Resend the `pick`-th event sent so far; `mutate` changes its body (not its id)."""

    pick: int
    mutate: bool
    joins_previous: bool


OpenWho = Literal[
    "none", "order_id", "order_email", "order_both", "claim", "other_id", "other_email"
]


@dataclass(frozen=True)
class OpenItem:
    """A line to return: the `order`-th known order and its `line`-th line, or (`known`
    False) ORDERS[order] and LINE_IDS[line], which may not exist; `reason` decides its fees
    (none for a merchant fault)."""

    order: int
    line: int
    quantity: int
    known: bool
    reason: str = "unwanted"


@dataclass(frozen=True)
class Open:
    """POST /v1/returns. `who`: no customer (the first order's), the order's id, email or
    both, `claim` (another customer id with the order's email: links a guest), or another
    customer's id or email (refused: order_not_owned, unless the order is anonymous)."""

    items: tuple[OpenItem, ...]
    who: OpenWho
    other_id: str
    other_email: str
    store: str | None


@dataclass(frozen=True)
class Act:
    """Actions on the `pick`-th latest return, one per choice: the choice-th of the actions
    that can succeed (the first of all seven with `force`, expecting the API's refusal when
    it is invalid)."""

    pick: int
    choices: tuple[int, ...]
    percent: int  # how much of what is left to receive; how much of the refundable
    outcome: str
    refund: Literal["default", "part", "too_much"]
    force: bool


@dataclass(frozen=True)
class Policy:
    """PUT /v1/policy: serial returner thresholds (every flag is re-evaluated), fees (fixed
    on the items requested from then on) and whether damaged items are refunded (read when a
    refund is made)."""

    min_orders: int = 3
    return_rate_value: float = 0.5
    restocking_fee_percent: str = "0"  # as written in the JSON: at most 2 decimals
    return_shipping_fee: int = 0
    refund_damaged_items: bool = False


@dataclass(frozen=True)
class Erase:
    """Erase a customer (DELETE /v1/customers/{id}) or whoever an email belongs to
    (DELETE /v1/customers/lookup?email=): CUSTOMERS[pick] or EMAILS[pick], maybe never seen."""

    by_email: bool
    pick: int
    capitals: bool


Op = Purchase | ReturnEvent | Duplicate | Open | Act | Policy | Erase


# --- strategies -----------------------------------------------------------------------------


def spelled(email: str, capitals: bool) -> str:
    return email.capitalize() if capitals else email


@st.composite
def streams(draw: st.DrawFn) -> list[Op]:
    customers = CUSTOMERS[: draw(st.integers(2, 4))]
    emails = EMAILS[: draw(st.integers(2, 4))]
    orders = ORDERS[: draw(st.integers(3, 8))]
    customer_id = st.sampled_from(customers)
    email = st.builds(spelled, st.sampled_from(emails), st.booleans())
    identified = st.one_of(
        st.builds(Who, customer_id, st.none()),
        st.builds(Who, st.none(), email),
        st.builds(Who, customer_id, email),
    )
    # One identity buys and returns more than the others, so that some profiles reach 3
    # orders in a currency and may become serial returners.
    favourite = draw(identified)
    buyer = st.sampled_from(["favourite", "favourite", "anyone", "anyone", "nobody"]).flatmap(
        {"favourite": st.just(favourite), "anyone": identified, "nobody": st.none()}.__getitem__
    )
    returner = st.sampled_from(["favourite", "anyone"]).flatmap(
        {"favourite": st.just(favourite), "anyone": identified}.__getitem__
    )
    store = st.one_of(st.none(), st.sampled_from(STORES))
    currency = st.sampled_from([None, None, *CURRENCIES])  # mostly EUR, the default
    age = st.integers(60, WEEK)
    joins = st.integers(0, 3).map(lambda n: n == 0)  # a quarter share the request before
    purchase = st.builds(
        Purchase,
        order_id=st.sampled_from(orders),
        who=buyer,
        store=store,
        currency=currency,
        lines=st.lists(
            st.builds(
                PLine,
                st.sampled_from(LINE_IDS),
                st.sampled_from(PRODUCTS),
                st.integers(1, 3),
                st.sampled_from(PRICES),
            ),
            min_size=1,
            max_size=3,
        ).map(tuple),  # a line id given twice: the first counts (the driver drops the rest)
        age=age,
        joins_previous=joins,
    )
    recorded = st.builds(
        ReturnEvent,
        order_id=st.sampled_from(orders),
        who=returner,
        store=store,
        currency=currency,
        items=st.lists(
            st.builds(
                RItem,
                st.one_of(st.none(), st.sampled_from(LINE_IDS)),
                st.sampled_from(PRODUCTS),
                st.integers(1, 2),
            ),
            min_size=1,
            max_size=2,
        ).map(tuple),
        refund=st.one_of(st.none(), st.integers(0, 12_000)),
        age=age,
        joins_previous=joins,
    )
    duplicate = st.builds(Duplicate, st.integers(0, 50), st.booleans(), joins)
    open_return = st.builds(
        Open,
        items=st.lists(
            st.builds(
                OpenItem,
                st.integers(0, 4),
                st.integers(0, 2),
                st.sampled_from([1, 1, 1, 2]),
                st.integers(0, 9).map(lambda n: n > 0),
                st.sampled_from(REASONS),
            ),
            min_size=1,
            max_size=2,
        ).map(tuple),
        who=st.sampled_from(
            [
                *["order_id", "order_email", "order_both", "claim", "none"] * 2,
                *["other_id", "other_email"],
            ]
        ),
        other_id=customer_id,
        other_email=email,
        store=store,
    )
    act = st.builds(
        Act,
        pick=st.integers(0, 20),
        # Mostly 0, the action that takes a return furthest (approve, receive, refund...).
        choices=st.lists(st.sampled_from([0, 0, 0, 0, 1, 2, 3]), min_size=1, max_size=4).map(tuple),
        percent=st.integers(1, 100),
        outcome=st.sampled_from(
            ["received", "received", "damaged", "damaged", "wrong_item", "lost_in_transit"]
        ),
        refund=st.sampled_from(["default", "default", "part", "too_much"]),
        force=st.integers(0, 9).map(lambda n: n == 0),
    )
    policy = st.builds(
        Policy,
        st.integers(1, 4),
        st.sampled_from([0.0, 0.2, 0.5, 0.8, 1.0]),
        st.sampled_from(["0", "0", "10", "15", "12.5", "33.33"]),
        st.sampled_from([0, 0, 295, 499]),
        st.booleans(),
    )
    erase = st.builds(
        Erase,
        st.booleans() if GUEST_ERASURE else st.just(False),
        st.integers(0, 3),
        st.booleans(),
    )
    kinds: dict[str, st.SearchStrategy[Op]] = {
        "policy": policy,
        "erase": erase,
        "purchase": purchase,
        "recorded return": recorded,
        "duplicate": duplicate,
        "open": open_return,
        "act": act,
    }
    weights = ["purchase"] * 8 + ["recorded return"] * 3 + ["duplicate"] * 2 + ["open"] * 3
    weights += ["act"] * 7 + ["policy", "erase"]
    op = st.sampled_from(weights).flatmap(kinds.__getitem__)
    # Mostly a policy with fees first, so that most refunds have some; long streams (lists'
    # own sizes average a handful), half of them at least MAX_OPS / 2; shrinking shortens them.
    first = draw(st.one_of(st.none(), policy))
    size = draw(st.one_of(st.integers(1, MAX_OPS), st.integers(MAX_OPS // 2, MAX_OPS)))
    ops = draw(st.lists(op, min_size=size, max_size=size))
    return ops if first is None else [first, *ops]


# --- running a stream against the API and the reference -------------------------------------


def first_of_each_line(lines: tuple[PLine, ...]) -> list[PLine]:
    first: dict[str, PLine] = {}
    for line in lines:
        first.setdefault(line.line_id, line)
    return list(first.values())


def stamp(start: datetime, age: int) -> str:
    return (start - timedelta(seconds=age)).isoformat().replace("+00:00", "Z")


class Driver:
    """Sends a stream's operations to the API, one request per operation (consecutive events
    marked `joins_previous` share one), checking each answer against the reference and
    mirroring what the API accepted into it."""

    def __init__(self, api: Api, reference: Reference, start: datetime) -> None:
        self.api = api
        self.ref = reference
        self.start = start
        self.sent: list[dict[str, Any]] = []  # every event sent, for duplicates
        self.pending: list[dict[str, Any]] = []
        self.returns: list[LifecycleReturn] = []  # lifecycle returns, in opening order
        self.counter = 0
        self.requests = 0
        self.trace: list[str] = []  # every request and answer, for failure messages

    def log(self, line: str) -> None:
        self.trace.append(line)
        if currently_in_test_context():
            note(line)

    def count(self, what: str) -> None:
        if currently_in_test_context():
            tally(what)

    # events ------------------------------------------------------------------------------

    def new_event_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter}"

    def queue(self, event: dict[str, Any], joins_previous: bool) -> None:
        if not joins_previous:
            self.flush()
        self.pending.append(event)
        self.sent.append(event)

    def flush(self) -> None:
        if not self.pending:
            return
        events, self.pending = self.pending, []
        response = self.api.post("/v1/events", {"events": events})
        self.requests += 1
        self.log(f"POST /v1/events {events} -> {response.status_code} {response.text}")
        assert response.status_code == 200, response.text
        accepted, duplicates = self.ref.record_events(events)
        body = response.json()
        assert (body["accepted"], body["duplicates"]) == (accepted, duplicates), body
        assert body["rejected"] == [], body

    def purchase(self, op: Purchase) -> None:
        event: dict[str, Any] = {
            "type": "purchase",
            "id": self.new_event_id("p"),
            "timestamp": stamp(self.start, op.age),
            "channel": "offline" if op.store else "online",
            "order_id": op.order_id,
            "items": [
                {
                    "line_id": line.line_id,
                    "product_id": line.product_id,
                    "quantity": line.quantity,
                    "unit_price": line.unit_price,
                }
                for line in first_of_each_line(op.lines)
            ],
        }
        if op.who is not None:
            event["customer"] = op.who.body()
        if op.store is not None:
            event["store"] = {"id": op.store, "name": op.store.title()}
        if op.currency is not None:
            event["currency"] = op.currency
        self.queue(event, op.joins_previous)

    def recorded_return(self, op: ReturnEvent) -> None:
        event: dict[str, Any] = {
            "type": "return",
            "id": self.new_event_id("r"),
            "timestamp": stamp(self.start, op.age),
            "channel": "offline" if op.store else "online",
            "customer": op.who.body(),
            "order_id": op.order_id,
            "items": [
                {"product_id": item.product_id, "quantity": item.quantity, "reason": "color"}
                | ({"line_id": item.line_id} if item.line_id else {})
                for item in op.items
            ],
        }
        if op.refund is not None:
            event["refund"] = {"amount": op.refund, "method": "original_payment"}
        if op.store is not None:
            event["store"] = {"id": op.store}
        if op.currency is not None:
            event["currency"] = op.currency
        self.queue(event, op.joins_previous)

    def duplicate(self, op: Duplicate) -> None:
        if not self.sent:
            return
        event = dict(self.sent[op.pick % len(self.sent)])
        if op.mutate:  # the id is the idempotency key: a changed body is still a duplicate
            event["items"] = [item | {"quantity": item["quantity"] + 1} for item in event["items"]]
            event["customer"] = {"id": "c4", "email": "di@example.com"}
        self.queue(event, op.joins_previous)

    # the lifecycle -----------------------------------------------------------------------

    def open(self, op: Open) -> None:
        self.flush()
        if not self.ref.orders and any(item.known for item in op.items):
            return  # nothing to return yet
        items = [self.wanted(item) for item in op.items]
        order = self.ref.orders.get(items[0]["order_id"])
        order_customer = order.customer_id if order else None
        order_email = order.email if order else None
        chosen: dict[str, tuple[str | None, str | None]] = {
            "none": (None, None),
            "order_id": (order_customer, None),
            "order_email": (None, order_email),
            "order_both": (order_customer, order_email),
            "claim": (op.other_id, order_email),
            "other_id": (op.other_id, None),
            "other_email": (None, op.other_email),
        }
        customer = Who(*chosen[op.who]).body() or None
        body: dict[str, Any] = {"items": items, "channel": "offline" if op.store else "online"}
        if op.store is not None:
            body["store"] = {"id": op.store}
        if customer is not None:
            body["customer"] = customer
        prediction = self.ref.predict_open(customer, items)
        response = self.api.post("/v1/returns", body)
        self.requests += 1
        self.log(f"POST /v1/returns {body} -> {response.status_code} {response.text[:300]}")
        self.log(f"  predicted {prediction}")
        self.count(
            f"open -> {response.status_code} "
            + " ".join(sorted({d.get("code", "") for d in response.json()["error"]["details"]}))
            if response.status_code == 422
            else f"open -> {response.status_code}"
        )
        expected = prediction.accepted
        if expected is None:  # recorded units may or may not sit on these lines
            assert response.status_code in (201, 422), response.text
        else:
            assert response.status_code == (201 if expected else 422), response.text
        if response.status_code == 422:
            codes = {d.get("code") for d in response.json()["error"]["details"]}
            assert codes - {"quantity_exceeds_returnable"} == prediction.errors, response.text
            if prediction.quantity != "maybe":
                exceeds = "quantity_exceeds_returnable" in codes
                assert exceeds == (prediction.quantity == "exceeds"), response.text
            return
        created = response.json()
        assert created["status"] == "requested", created
        assert created["currency"] == prediction.currency, created
        assert (created["customer"] or {}).get("id") == prediction.customer_id, created
        assert (created["customer"] or {}).get("email") == prediction.email, created
        ret = self.ref.open(
            return_id=created["id"],
            created_at=parse_time(created["created_at"]),
            channel=body["channel"],
            items=items,
            prediction=prediction,
            customer=customer,
        )
        self.returns.append(ret)

    def policy(self, op: Policy) -> None:
        self.flush()
        document = {
            "serial_returner": {
                "min_orders": op.min_orders,
                "return_rate_value": op.return_rate_value,
            },
            "restocking_fee_percent": float(op.restocking_fee_percent),
            "return_shipping_fee": op.return_shipping_fee,
            "refund_damaged_items": op.refund_damaged_items,
        }
        response = self.api.put("/v1/policy", document)  # a PUT: the rest takes its defaults
        self.requests += 1
        self.log(f"PUT /v1/policy {document} -> {response.status_code}")
        assert response.status_code == 200, response.text
        self.ref.min_orders = op.min_orders
        self.ref.min_return_rate_value = op.return_rate_value
        self.ref.restocking_fee_percent = Fraction(op.restocking_fee_percent)
        self.ref.return_shipping_fee = op.return_shipping_fee
        self.ref.refund_damaged_items = op.refund_damaged_items

    def erase(self, op: Erase) -> None:
        self.flush()
        if op.by_email:
            email = spelled(EMAILS[op.pick], op.capitals)
            expected = self.ref.erase_email(email)
            response = self.api.http.delete(
                "/v1/customers/lookup", params={"email": email}, headers=self.api.tenant.headers
            )
            label = f"DELETE /v1/customers/lookup?email={email}"
        else:
            customer_id = CUSTOMERS[op.pick]
            expected = self.ref.erase_customer(customer_id)
            response = self.api.delete(f"/v1/customers/{customer_id}")
            label = f"DELETE /v1/customers/{customer_id}"
        self.requests += 1
        self.log(f"{label} -> {response.status_code} {response.text[:200]}")
        self.count(f"erase {'email' if op.by_email else 'customer'} -> {response.status_code}")
        assert response.status_code == (204 if expected else 404), response.text

    def wanted(self, item: OpenItem) -> dict[str, Any]:
        lines = [
            (order.id, line_id) for order in self.ref.orders.values() for line_id in order.lines
        ]
        # Mostly lines with units left to return (by the reference's count), so that
        # returns open and go on through the lifecycle; else any line (mostly refused).
        free = [
            (order_id, line_id)
            for order_id, line_id in lines
            if self.ref.orders[order_id].lines[line_id].quantity
            - self.ref.claim_bounds(order_id, line_id)[1]
            >= item.quantity
        ]
        if item.known and lines:
            pool = free or lines
            order_id, line_id = pool[(item.order * 3 + item.line) % len(pool)]
        else:
            order_id, line_id = ORDERS[item.order], LINE_IDS[item.line]
        return {
            "order_id": order_id,
            "line_id": line_id,
            "quantity": item.quantity,
            "reason": item.reason,
        }

    def act(self, op: Act) -> None:
        self.flush()
        if not self.returns:
            return
        ret = self.returns[-1 - op.pick % len(self.returns)]
        for step, choice in enumerate(op.choices):
            if op.force and step == 0:
                action = ACTIONS[choice % len(ACTIONS)]
            else:
                useful = self.ref.useful(ret)
                if not useful:
                    return
                action = useful[choice % len(useful)]
            self.act_once(ret, action, choice, op)

    def act_once(self, ret: LifecycleReturn, action: str, choice: int, op: Act) -> None:
        body, expect = self.action_body(ret, action, choice, op)
        response = self.api.post(f"/v1/returns/{ret.id}/{action}", body)
        self.requests += 1
        self.log(
            f"POST /v1/returns/{ret.id}/{action} {body} (status {ret.status}) -> "
            f"{response.status_code} {response.text[:300]}"
        )
        self.count(f"{action} -> {response.status_code}")
        if expect is None:
            assert response.status_code in (200, 422), response.text
        else:
            assert response.status_code == expect, response.text
        if response.status_code != 200:
            return
        if action == "refund":
            if ret.shipping_fee or any(i.fee_percent and i.good for i in ret.items):
                self.count("refund less fees")
            if self.ref.refund_damaged_items and any(i.damaged for i in ret.items):
                self.count("refund of damaged units")
        self.ref.apply(ret, action, body)
        result = response.json()
        assert result["status"] == ret.status, result
        assert (result["refund"] or {}).get("amount") == ret.refunded, result
        received = [(i["order_id"], i["line_id"], i["received_quantity"]) for i in result["items"]]
        assert received == [(i.order_id, i.line_id, i.received) for i in ret.items], result

    def action_body(
        self, ret: LifecycleReturn, action: str, choice: int, op: Act
    ) -> tuple[dict[str, Any], int | None]:
        """The body of an action and the status the reference expects (None: 200 or 422)."""
        if action not in self.ref.api_allowed(ret):
            bodies: dict[str, dict[str, Any]] = {
                "decline": {"reason": "other"},
                "receive": {"items": [self.receipt(ret, choice, op, 1)]},
                "refund": {"method": "original_payment"},
            }
            return bodies.get(action, {}), 409
        if action == "decline":
            return {"reason": "final_sale" if op.percent % 2 else "other", "note": "n"}, 200
        if action == "cancel":
            return {"reason": "changed mind"}, 200
        if action == "reopen":
            verdict = self.ref.reopen_verdict(ret)
            return {"note": "again"}, {"ok": 200, "exceeds": 422, "maybe": None}[verdict]
        if action == "receive":
            item = self.pick_item(ret, choice)
            room = ret.room(item.order_id, item.line_id)
            if room == 0:  # forced: nothing left to receive
                return {"items": [self.receipt(ret, choice, op, 1)]}, 422
            quantity = 1 + (room - 1) * op.percent // 100
            return {"items": [self.receipt(ret, choice, op, quantity)]}, 200
        if action == "refund":
            limit = ret.refund_limit(self.ref.refund_damaged_items)
            body: dict[str, Any] = {"method": "original_payment"}
            if op.refund == "part":
                body["amount"] = limit * op.percent // 100
            elif op.refund == "too_much":
                body["amount"] = limit + op.percent
                return body, 422
            return body, 200
        return {}, 200  # approve, close

    def pick_item(self, ret: LifecycleReturn, choice: int) -> LifecycleItem:
        with_room = [i for i in ret.items if i.quantity > i.received] or ret.items
        return with_room[choice % len(with_room)]

    def receipt(self, ret: LifecycleReturn, choice: int, op: Act, quantity: int) -> dict[str, Any]:
        item = self.pick_item(ret, choice)
        return {
            "order_id": item.order_id,
            "line_id": item.line_id,
            "quantity": quantity,
            "outcome": op.outcome,
        }

    # --------------------------------------------------------------------------------------

    def run(self, ops: list[Op]) -> None:
        for op in ops:
            if isinstance(op, Purchase):
                self.purchase(op)
            elif isinstance(op, ReturnEvent):
                self.recorded_return(op)
            elif isinstance(op, Duplicate):
                self.duplicate(op)
            elif isinstance(op, Open):
                self.open(op)
            elif isinstance(op, Policy):
                self.policy(op)
            elif isinstance(op, Erase):
                self.erase(op)
            else:
                self.act(op)
        self.flush()


# --- comparing profiles ---------------------------------------------------------------------


def differences(expected: Any, got: Any, path: str = "") -> Iterator[str]:
    """Where two JSON values differ: floats by relative tolerance, timestamps as instants."""
    if isinstance(expected, datetime):
        if not isinstance(got, str) or not got.endswith("Z"):
            yield f"{path}: expected {expected.isoformat()}, got {got!r} (want RFC 3339 ...Z)"
        elif parse_time(got) != expected:
            yield f"{path}: expected {expected.isoformat()}, got {got}"
    elif isinstance(expected, float):
        if not isinstance(got, int | float) or not math.isclose(expected, got, rel_tol=1e-9):
            yield f"{path}: expected {expected!r}, got {got!r}"
    elif isinstance(expected, Mapping):
        if not isinstance(got, Mapping):
            yield f"{path}: expected an object, got {got!r}"
            return
        for key in sorted(set(expected) | set(got)):
            if key not in got:
                yield f"{path}.{key}: missing (expected {expected[key]!r})"
            elif key not in expected:
                yield f"{path}.{key}: unexpected {got[key]!r}"
            else:
                yield from differences(expected[key], got[key], f"{path}.{key}")
    elif isinstance(expected, list):
        if not isinstance(got, list) or len(got) != len(expected):
            yield f"{path}: expected {expected!r}, got {got!r}"
            return
        for index, (a, b) in enumerate(zip(expected, got, strict=True)):
            yield from differences(a, b, f"{path}[{index}]")
    elif expected != got or type(expected) is not type(got):
        yield f"{path}: expected {expected!r}, got {got!r}"


def compare(label: str, expected: Expected, status: int, body: Any) -> list[str]:
    if expected.status == "absent":
        return [] if status == 404 else [f"{label}: expected 404, got {status} {body}"]
    if expected.status == "either" and status == 404:
        return []
    if status != 200:
        return [f"{label}: expected 200 {expected.profile}, got {status} {body}"]
    # The server's id of the profile is made by the server: only its form is predictable
    # (its stability is checked by comparing the bodies before and after the rebuild).
    server_id = body.get("id")
    if not isinstance(server_id, str) or not server_id.startswith("cus_"):
        return [f"{label}: expected a server id cus_..., got {server_id!r}"]
    found = list(differences(expected.profile, {k: v for k, v in body.items() if k != "id"}))
    return [f"{label}: {line}" for line in found]


def read_profiles(api: Api) -> dict[str, tuple[int, Any]]:
    """Every customer's and every email's profile: label -> (status, body)."""
    read: dict[str, tuple[int, Any]] = {}
    for customer_id in CUSTOMERS:
        response = api.get(f"/v1/customers/{customer_id}")
        read[f"GET /v1/customers/{customer_id}"] = (response.status_code, response.json())
    for index, email in enumerate(EMAILS):
        asked = spelled(email, capitals=index % 2 == 1)  # lookups normalise too
        response = api.get("/v1/customers/lookup", params={"email": asked})
        read[f"GET /v1/customers/lookup?email={asked}"] = (response.status_code, response.json())
    return read


def check_profiles(reference: Reference, read: Mapping[str, tuple[int, Any]]) -> list[str]:
    problems = []
    for label, (status, body) in read.items():
        if label.startswith("GET /v1/customers/lookup"):
            expected = reference.expect_lookup(normalize_email(label.partition("=")[2]) or "")
        else:
            expected = reference.expect_customer(label.rpartition("/")[2])
        problems += compare(label, expected, status, body)
    return problems


def explain(reference: Reference, problems: list[str]) -> str:
    rows = "\n".join(
        f"  {owner} {currency}: {row}"
        for (owner, currency), row in sorted(reference.rows().items())
    )
    links = ", ".join(
        f"{email}->{customer}" for email, customer in sorted(reference.emails.items())
    )
    return "\n".join([*problems, "reference rows:", rows, f"email links: {links}"])


def rebuild(database: DatabaseFixture, tenant: TenantFixture) -> Any:
    from returnstack.customers import profiles  # imported here: it lands with the feature

    with database.db.transaction() as session:
        return profiles.rebuild(session, tenant_id=tenant.id)


# --- the property -----------------------------------------------------------------------------

# Ann's email is c1's; c2 gives it later (the link stays c1's, but it is c2's latest email).
# Erasing c1 erases the email: c2's facts lose it, and so must c2's profile (API.md 5:
# "Afterwards nothing the service stores or sends names them"); on 83e2eba c2 still showed it.
ERASING_C1_FORGETS_THE_EMAIL_C2_GAVE = [
    Purchase(
        "o1", Who("c1", "ann@example.com"), None, None, (PLine("1", "SKU-A", 1, 500),), 90, False
    ),
    Purchase(
        "o2", Who("c2", "ann@example.com"), None, None, (PLine("1", "SKU-B", 1, 900),), 60, False
    ),
    Erase(False, 0, False),
]


MINIMAL_RETURN_OF_AN_ANONYMOUS_SALE = [
    Purchase("o1", None, None, None, (PLine("1", "SKU-A", 1, 500),), 60, False),
    Open((OpenItem(0, 0, 1, True),), "other_id", "c1", "ann@example.com", None),
]

# Ownership follows the identity links (API.md 4 and 5). Ann buys o1 as a guest, then as c1
# (o2): her email is linked to c1, and o1 is c1's. Each was refused or accepted wrongly by
# the service on a48f4ae, which compared the order's id and email with the request's.
ANN_AS_GUEST_THEN_C1 = [
    Purchase(
        "o1", Who(None, "ann@example.com"), None, None, (PLine("1", "SKU-A", 1, 500),), 90, False
    ),
    Purchase(
        "o2", Who("c1", "ann@example.com"), None, None, (PLine("1", "SKU-B", 1, 900),), 60, False
    ),
]
# Staff naming c1 return o1, her guest order (was 422 order_not_owned).
C1_RETURNS_HER_GUEST_ORDER = [
    *ANN_AS_GUEST_THEN_C1,
    Open((OpenItem(0, 0, 1, True),), "other_id", "c1", "ann@example.com", None),
]
# Staff naming her email alone return o2, bought under c1's id only (was 422).
ANN_RETURNS_AN_ORDER_OF_C1 = [
    Purchase("o1", Who("c1", None), None, None, (PLine("1", "SKU-A", 1, 500),), 90, False),
    Purchase(
        "o2", Who("c1", "ann@example.com"), None, None, (PLine("1", "SKU-B", 1, 900),), 60, False
    ),
    Open((OpenItem(0, 0, 1, True),), "other_email", "c2", "ann@example.com", None),
]
# Staff naming c2 with Ann's email (already c1's) return o1, c1's (was 201, counted for c2).
C2_CLAIMS_AN_EMAIL_OF_C1 = [
    *ANN_AS_GUEST_THEN_C1,
    Open((OpenItem(0, 0, 1, True),), "claim", "c2", "bob@example.com", None),
]


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # a fresh tenant per example instead
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@example(ops=MINIMAL_RETURN_OF_AN_ANONYMOUS_SALE)
@example(ops=ERASING_C1_FORGETS_THE_EMAIL_C2_GAVE)
@example(ops=C1_RETURNS_HER_GUEST_ORDER)
@example(ops=ANN_RETURNS_AN_ORDER_OF_C1)
@example(ops=C2_CLAIMS_AN_EMAIL_OF_C1)
@given(ops=streams())
def test_profiles_equal_the_reference_and_survive_a_rebuild(
    database: DatabaseFixture, client: TestClient, ops: list[Op]
) -> None:
    tenant = make_tenant(database.db, currency="EUR")
    api = Api(client, tenant)
    reference = Reference(default_currency="EUR")
    driver = Driver(api, reference, start=datetime.now(UTC).replace(microsecond=0))
    driver.run(ops)
    tally_stream(reference, driver)
    if DRIVE_ONLY:
        return

    before = read_profiles(api)
    problems = check_profiles(reference, before)

    flagged_events = {
        (row.data or {}).get("customer", {}).get("id")
        for row in all_outbox(database, tenant.id)
        if row.type == "customer.flagged"
    }
    problems += [
        f"{customer_id} is a serial returner, but no customer.flagged event was recorded"
        for customer_id in CUSTOMERS
        if reference.flagged(f"c:{customer_id}") and customer_id not in flagged_events
    ]

    report = rebuild(database, tenant)
    note(f"rebuild: {report}")
    if report.differences:
        problems.append(f"rebuild found {report.differences} differences: {report.examples}")

    after = read_profiles(api)
    problems += [
        f"{label}: after the rebuild {line}"
        for label, (status, body) in before.items()
        for line in (
            [f"status {status} -> {after[label][0]}"]
            if after[label][0] != status
            else list(differences(body, after[label][1]))
        )
    ]
    assert not problems, explain(reference, problems)


def tally_stream(reference: Reference, driver: Driver) -> None:
    """What the stream covered (pytest --hypothesis-show-statistics)."""
    rows = reference.rows()
    tally(f"profile rows: {min(len(rows), 6)}")
    tally(f"requests: {min(driver.requests // 10 * 10, 40)}+")
    if any(owner.startswith("g:") for owner, _ in rows):
        tally("guest rows at the end")
    if any(row.orders >= 3 for row in rows.values()):
        tally("a profile with 3 orders or more")
    if any(reference.flagged(owner) for owner, _ in rows):
        tally("a serial returner")
    if any(r.received for r in reference.returns.values()):
        tally("a lifecycle return received")
    if any(r.refunded for r in reference.returns.values()):
        tally("a lifecycle return refunded")


# --- one stream by hand, with the CLI's rebuild ---------------------------------------------

# Ann buys twice as a guest (once in store) and returns from the first order, then links her
# email to c1 by buying as c1; a return she opens by email for the store order is received
# and refunded in full; c1 also buys in USD. c1 has 3 EUR orders and refunds of 64 % of
# their value: a serial returner.
SERIAL_RETURNER_STREAM: list[Op] = [
    Purchase(
        "o1", Who(None, "Ann@Example.com"), None, None, (PLine("1", "SKU-A", 2, 1000),), 9000, False
    ),
    Purchase(
        "o2",
        Who(None, "ann@example.com"),
        "berlin-01",
        "EUR",
        (PLine("1", "SKU-B", 1, 4999),),
        8000,
        False,
    ),
    ReturnEvent(
        "o1",
        Who(None, "ann@example.com"),
        None,
        None,
        (RItem(None, "SKU-A", 1),),
        1500,
        7000,
        False,
    ),
    Purchase(
        "o3",
        Who("c1", "ann@example.com"),
        None,
        None,
        (PLine("1", "SKU-A", 1, 1999), PLine("2", "SKU-C", 2, 500)),
        6000,
        False,
    ),
    Open((OpenItem(1, 0, 1, False),), "order_email", "c2", "bob@example.com", None),
    Act(0, (0, 0, 0), 100, "received", "default", False),
    Purchase("o4", Who("c1", None), None, "USD", (PLine("1", "SKU-A", 1, 700),), 5000, True),
    Duplicate(0, True, False),
    Purchase(
        "o1",
        Who("c2", "bob@example.com"),
        None,
        None,
        (PLine("1", "SKU-A", 9, 9), PLine("2", "SKU-B", 1, 100)),
        4000,
        False,
    ),
]


def test_a_serial_returner_by_hand_and_the_cli_rebuild(
    database: DatabaseFixture, client: TestClient, tmp_path: Path
) -> None:
    tenant = make_tenant(database.db, currency="EUR")
    api = Api(client, tenant)
    reference = Reference(default_currency="EUR")
    driver = Driver(api, reference, start=datetime.now(UTC).replace(microsecond=0))
    driver.run(SERIAL_RETURNER_STREAM)
    assert reference.flagged("c:c1")
    c1 = reference.expect_customer("c1").profile
    assert c1 is not None
    assert c1["totals"]["EUR"]["refunded"] == 1500 + 4999
    assert c1["totals"]["EUR"]["gross_revenue"] == 2000 + 4999 + 2999 + 100
    assert c1["customer"]["emails"] == ["ann@example.com"]

    problems = check_profiles(reference, read_profiles(api))
    flagged = [
        row.data
        for row in all_outbox(database, tenant.id)
        if row.type == "customer.flagged" and row.data["customer"]["id"] == "c1"
    ]
    if not flagged:
        problems.append("c1 is a serial returner, but no customer.flagged event was recorded")
    assert not problems, "\n".join([explain(reference, problems), *driver.trace])
    assert flagged[-1]["flags"] == ["serial_returner"]

    result = run_cli(
        "profiles",
        "rebuild",
        "--tenant",
        tenant.id,
        "--check",
        "--json",
        database_url=database.url,
        cwd=tmp_path,
    )
    assert result.returncode == 0, str(result)
    assert result.json()["differences"] == 0, result.stdout


# --- the reference itself, by hand ----------------------------------------------------------

T0 = "2026-01-10T10:00:00Z"
T1 = "2026-01-11T10:00:00Z"
T2 = "2026-01-12T10:00:00Z"


def buy(
    event_id: str,
    order_id: str,
    customer: dict[str, str] | None,
    *lines: tuple[str, int, int],
    at: str = T0,
    currency: str | None = None,
    channel: str = "online",
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "purchase",
        "id": event_id,
        "timestamp": at,
        "channel": channel,
        "order_id": order_id,
        "items": [
            {"line_id": line_id, "product_id": "SKU-A", "quantity": q, "unit_price": p}
            for line_id, q, p in lines
        ],
    }
    if customer is not None:
        event["customer"] = customer
    if currency is not None:
        event["currency"] = currency
    return event


def give_back(
    event_id: str,
    order_id: str,
    customer: dict[str, str],
    quantity: int,
    refund: int | None,
    at: str = T1,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "return",
        "id": event_id,
        "timestamp": at,
        "order_id": order_id,
        "customer": customer,
        "items": [{"product_id": "SKU-A", "quantity": quantity}],
    }
    if refund is not None:
        event["refund"] = {"amount": refund}
    return event


def totals(expected: Expected, currency: str = "EUR") -> dict[str, Any]:
    assert expected.status == "found", expected
    assert expected.profile is not None
    result: dict[str, Any] = expected.profile["totals"][currency]
    return result


def test_reference_guest_history_joins_the_customer_once_linked() -> None:
    ref = Reference()
    ref.record_events([buy("e1", "o1", {"email": "Ann@Example.com"}, ("1", 2, 1000))])
    ref.record_events([give_back("e2", "o1", {"email": "ann@example.com"}, 1, 1000)])
    guest = ref.expect_lookup("ann@example.com")
    assert guest.profile is not None
    assert guest.profile["customer"] == {
        "id": None,
        "email": "ann@example.com",
        "emails": ["ann@example.com"],
    }
    assert totals(guest)["orders"] == 1
    assert ref.expect_customer("c1").status == "absent"

    ref.record_events([buy("e3", "o2", {"id": "c1", "email": "ann@example.com"}, ("1", 1, 500))])
    merged = ref.expect_customer("c1")
    assert ref.expect_lookup("ANN@example.com") == merged
    assert merged.profile is not None
    assert merged.profile["customer"] == {
        "id": "c1",
        "email": "ann@example.com",
        "emails": ["ann@example.com"],
    }
    assert totals(merged) == {
        "orders": 2,
        "items_purchased": 3,
        "gross_revenue": 2500,
        "returns": 1,
        "items_returned": 1,
        "refunded": 1000,
        "net_revenue": 1500,
        "return_rate_items": 1 / 3,
        "return_rate_value": 0.4,
    }
    assert merged.profile["first_order_at"] == parse_time(T0)
    assert merged.profile["last_return_at"] == parse_time(T1)
    assert set(ref.rows()) == {("c:c1", "EUR")}  # no guest row left


def test_reference_first_link_wins() -> None:
    ref = Reference()
    ref.record_events([buy("e1", "o1", {"id": "c1", "email": "ann@example.com"}, ("1", 1, 100))])
    ref.record_events([buy("e2", "o2", {"id": "c2", "email": "ann@example.com"}, ("1", 1, 100))])
    ref.record_events([buy("e3", "o3", {"email": "ann@example.com"}, ("1", 1, 100))])
    assert totals(ref.expect_customer("c1"))["orders"] == 2
    assert totals(ref.expect_customer("c2"))["orders"] == 1
    c2 = ref.expect_customer("c2").profile
    assert c2 is not None
    assert c2["customer"] == {"id": "c2", "email": "ann@example.com", "emails": []}


def test_reference_duplicate_events_change_nothing() -> None:
    ref = Reference()
    first = buy("e1", "o1", {"id": "c1"}, ("1", 1, 100))
    assert ref.record_events([first]) == (1, 0)
    before = ref.rows()
    changed = buy("e1", "o1", {"id": "c2"}, ("1", 5, 100), ("2", 1, 100))
    assert ref.record_events([first, changed]) == (0, 2)
    assert ref.rows() == before
    assert ref.expect_customer("c2").status == "absent"
    # Within one request, the first of two events with one id counts.
    assert ref.record_events([give_back("e9", "o1", {"id": "c1"}, 1, 50)] * 2) == (1, 1)
    assert totals(ref.expect_customer("c1"))["returns"] == 1


def test_reference_lines_added_later_belong_to_the_order() -> None:
    ref = Reference()
    ref.record_events([buy("e1", "o1", {"id": "c1"}, ("1", 1, 100), currency="USD")])
    ref.record_events(
        [buy("e2", "o1", {"id": "c2"}, ("1", 9, 9), ("2", 2, 300), at=T2, channel="offline")]
    )
    usd = totals(ref.expect_customer("c1"), "USD")
    assert (usd["orders"], usd["items_purchased"], usd["gross_revenue"]) == (1, 3, 700)
    c1 = ref.expect_customer("c1").profile
    assert c1 is not None
    assert c1["last_order_at"] == parse_time(T0)
    assert c1["channels"]["online"]["orders"] == 1
    assert ref.expect_customer("c2") == Expected("either", ref.render("c:c2", {}))


def test_reference_pending_returns_do_not_count_until_received() -> None:
    ref = Reference()
    ref.record_events([buy("e1", "o1", {"id": "c1"}, ("1", 3, 1000), at=T0)])
    items = [{"order_id": "o1", "line_id": "1", "quantity": 2}]
    prediction = ref.predict_open({"id": "c1"}, items)
    assert prediction.accepted
    ret = ref.open(
        return_id="ret_1",
        created_at=parse_time(T1),
        channel="offline",
        items=items,
        prediction=prediction,
    )
    ref.apply(ret, "approve", {})
    assert totals(ref.expect_customer("c1"))["returns"] == 0
    ref.apply(ret, "receive", {"items": [{"order_id": "o1", "line_id": "1", "quantity": 1}]})
    received = totals(ref.expect_customer("c1"))
    assert (received["returns"], received["items_returned"], received["refunded"]) == (1, 1, 0)
    assert ref.useful(ret) == ["receive", "refund"]
    ref.apply(ret, "refund", {"amount": 400})
    ref.apply(ret, "close", {})
    ref.apply(ret, "reopen", {})
    ref.apply(ret, "approve", {})
    receipt = {"order_id": "o1", "line_id": "1", "quantity": 1, "outcome": "damaged"}
    ref.apply(ret, "receive", {"items": [receipt]})
    assert ret.refund_limit(refund_damaged_items=False) == 600  # one good unit, 400 paid before
    ref.apply(ret, "refund", {})
    profile = ref.expect_customer("c1").profile
    assert profile is not None
    assert totals(ref.expect_customer("c1")) | {"return_rate_items": 0} == {
        "orders": 1,
        "items_purchased": 3,
        "gross_revenue": 3000,
        "returns": 1,
        "items_returned": 2,
        "refunded": 1000,
        "net_revenue": 2000,
        "return_rate_items": 0,
        "return_rate_value": 1000 / 3000,
    }
    assert profile["channels"]["offline"] == {"orders": 0, "returns": 1}
    assert profile["last_return_at"] == parse_time(T1)


def test_reference_predicts_eligibility() -> None:
    ref = Reference()
    ref.record_events([buy("e1", "o1", {"email": "ann@example.com"}, ("1", 2, 1000))])
    ref.record_events([buy("e2", "o2", None, ("1", 1, 1000), currency="USD")])
    ref.record_events([give_back("e3", "o1", {"email": "ann@example.com"}, 1, None)])
    one = [{"order_id": "o1", "line_id": "1", "quantity": 1}]
    assert ref.predict_open({"id": "c1"}, one).errors == {"order_not_owned"}
    claim = ref.predict_open({"id": "c1", "email": "ann@example.com"}, one)
    assert (claim.accepted, claim.customer_id, claim.email) == (True, "c1", "ann@example.com")
    two = [{"order_id": "o1", "line_id": "1", "quantity": 2}]
    assert ref.predict_open(None, two).quantity == "exceeds"
    mixed = [*one, {"order_id": "o2", "line_id": "1", "quantity": 1}]
    assert ref.predict_open(None, mixed).errors == {"currency_mismatch"}
    anonymous = ref.predict_open({"id": "c2"}, [{"order_id": "o2", "line_id": "1", "quantity": 1}])
    assert (anonymous.accepted, anonymous.customer_id, anonymous.currency) == (True, "c2", "USD")
    assert ref.predict_open(None, [{"order_id": "o9", "line_id": "1", "quantity": 1}]).errors == {
        "order_not_found"
    }


def test_reference_serial_returner_policy() -> None:
    ref = Reference()
    for n in range(3):
        ref.record_events([buy(f"p{n}", f"o{n}", {"id": "c1"}, ("1", 1, 1000))])
    ref.record_events([give_back("r1", "o0", {"id": "c1"}, 1, 1499)])
    assert not ref.flagged("c:c1")
    ref.record_events([give_back("r2", "o1", {"id": "c1"}, 1, 1)])
    assert ref.flagged("c:c1")
    profile = ref.expect_customer("c1").profile
    assert profile is not None
    assert profile["flags"] == ["serial_returner"]
    # A refund in another currency makes its own row; rates are not capped.
    ref.record_events([give_back("r3", "o9", {"id": "c1"}, 1, 50) | {"currency": "USD"}])
    usd = totals(ref.expect_customer("c1"), "USD")
    assert (usd["orders"], usd["return_rate_value"], usd["net_revenue"]) == (0, 0.0, -50)


def test_reference_a_return_naming_both_links_a_guest() -> None:
    ref = Reference()
    ref.record_events([buy("e1", "o1", {"email": "bob@example.com"}, ("1", 2, 1000))])
    items = [{"order_id": "o1", "line_id": "1", "quantity": 1}]
    by_email = ref.predict_open({"email": "bob@example.com"}, items)
    ref.open(
        return_id="ret_1",
        created_at=parse_time(T1),
        channel="online",
        items=items,
        prediction=by_email,
        customer={"email": "bob@example.com"},
    )
    assert ref.emails == {"bob@example.com": None}
    claim = {"id": "c2", "email": "bob@example.com"}
    ref.open(
        return_id="ret_2",
        created_at=parse_time(T2),
        channel="online",
        items=items,
        prediction=ref.predict_open(claim, items),
        customer=claim,
    )
    ref.apply(ref.returns["ret_1"], "approve", {})
    receipt = {"order_id": "o1", "line_id": "1", "quantity": 1, "outcome": "lost_in_transit"}
    ref.apply(ref.returns["ret_1"], "receive", {"items": [receipt]})
    assert ref.expect_lookup("bob@example.com") == ref.expect_customer("c2")
    c2 = totals(ref.expect_customer("c2"))
    assert (c2["orders"], c2["returns"], c2["items_returned"], c2["refunded"]) == (1, 1, 1, 0)
    assert set(ref.rows()) == {("c:c2", "EUR")}


def test_reference_an_email_seen_only_in_a_return_is_a_guest_once_received() -> None:
    ref = Reference()
    ref.record_events([buy("e1", "o1", None, ("1", 2, 1000))])  # an anonymous sale
    items = [{"order_id": "o1", "line_id": "1", "quantity": 1}]
    ret = ref.open(
        return_id="ret_1",
        created_at=parse_time(T1),
        channel="online",
        items=items,
        prediction=ref.predict_open({"email": "cy@example.com"}, items),
        customer={"email": "cy@example.com"},
    )
    assert ref.expect_lookup("cy@example.com").status == "absent"
    ref.apply(ret, "approve", {})
    ref.apply(ret, "receive", {"items": [{"order_id": "o1", "line_id": "1", "quantity": 1}]})
    guest = totals(ref.expect_lookup("cy@example.com"))
    assert (guest["orders"], guest["returns"], guest["items_returned"]) == (0, 1, 1)


def test_reference_ownership_follows_the_identity_links() -> None:
    ref = Reference()
    ref.record_events([buy("e1", "o1", {"email": "ann@example.com"}, ("1", 1, 1000))])
    ref.record_events([buy("e2", "o2", {"id": "c1"}, ("1", 1, 1000))])
    one = [{"order_id": "o1", "line_id": "1", "quantity": 1}]
    by_id = [{"order_id": "o2", "line_id": "1", "quantity": 1}]
    assert ref.predict_open({"id": "c1"}, one).errors == {"order_not_owned"}  # a guest's
    assert ref.predict_open({"email": "ann@example.com"}, by_id).errors == {"order_not_owned"}
    ref.record_events([buy("e3", "o3", {"id": "c1", "email": "ann@example.com"}, ("1", 1, 10))])
    # Her guest order is c1's now, and c1's orders are hers whichever way she is named.
    assert ref.predict_open({"id": "c1"}, one).accepted
    assert ref.predict_open({"email": "ANN@example.com"}, by_id).accepted
    assert ref.predict_open(None, [*one, *by_id]).accepted
    # The email is c1's: naming it with another id claims nothing.
    claim = ref.predict_open({"id": "c2", "email": "ann@example.com"}, one)
    assert claim.errors == {"order_not_owned"}


def test_reference_refunds_take_fees_and_follow_the_damaged_items_policy() -> None:
    ref = Reference()
    ref.record_events([buy("e1", "o1", {"id": "c1"}, ("1", 2, 1999), ("2", 1, 1000))])
    ref.restocking_fee_percent = Fraction(15)
    ref.return_shipping_fee = 295
    items = [
        {"order_id": "o1", "line_id": "1", "quantity": 2, "reason": "unwanted"},
        {"order_id": "o1", "line_id": "2", "quantity": 1, "reason": "defective"},
    ]
    ret = ref.open(
        return_id="ret_1",
        created_at=parse_time(T1),
        channel="online",
        items=items,
        prediction=ref.predict_open({"id": "c1"}, items),
    )
    ref.restocking_fee_percent = Fraction(0)  # fees were fixed when it was requested
    ref.apply(ret, "approve", {})
    receipts = [
        {"order_id": "o1", "line_id": "1", "quantity": 1},
        {"order_id": "o1", "line_id": "1", "quantity": 1, "outcome": "damaged"},
        {"order_id": "o1", "line_id": "2", "quantity": 1, "outcome": "damaged"},
    ]
    ref.apply(ret, "receive", {"items": receipts})
    # 1999 at 15 % refunds floor(1699.15) = 1699, less the shipping fee.
    assert ret.refund_limit(refund_damaged_items=False) == 1699 - 295
    # Damaged units too: 2 x 1999 at 15 % (3398.3) and the defective 1000 with no fee.
    assert ret.refund_limit(refund_damaged_items=True) == 3398 + 1000 - 295
    ref.refund_damaged_items = True
    ref.apply(ret, "refund", {"amount": 100})
    ref.apply(ret, "refund", {})
    assert ret.refunded == 3398 + 1000 - 295
    only_merchant_fault = [
        {"order_id": "o1", "line_id": "2", "quantity": 1, "reason": "wrong_item"}
    ]
    assert (
        ref.open(
            return_id="ret_2",
            created_at=parse_time(T2),
            channel="online",
            items=only_merchant_fault,
            prediction=ref.predict_open({"id": "c1"}, only_merchant_fault),
        ).shipping_fee
        == 0
    )


def test_reference_erasure_keeps_anonymous_facts_and_forgets_the_person() -> None:
    ref = Reference()
    ref.record_events([buy("e1", "o1", {"email": "ann@example.com"}, ("1", 2, 1000))])
    ref.record_events([buy("e2", "o2", {"id": "c1", "email": "ann@example.com"}, ("1", 1, 500))])
    ref.record_events([buy("e3", "o3", {"id": "c2", "email": "ann@example.com"}, ("1", 1, 700))])
    ref.record_events([give_back("e4", "o3", {"id": "c2"}, 1, 700)])
    assert not ref.erase_customer("c9")
    assert ref.erase_customer("c1")
    assert not ref.erase_customer("c1")  # erased
    assert ref.expect_customer("c1").status == "absent"
    assert ref.expect_lookup("ann@example.com").status == "absent"
    assert ref.orders["o1"].email is None
    assert ref.orders["o2"].customer_id is None
    # c2 keeps its facts (without Ann's email, which no longer shows as c2's either).
    c2 = ref.expect_customer("c2").profile
    assert c2 is not None
    assert c2["customer"] == {"id": "c2", "email": None, "emails": []}
    assert (c2["totals"]["EUR"]["orders"], c2["totals"]["EUR"]["refunded"]) == (1, 700)
    # Ann can be recorded again, as someone new.
    ref.record_events([buy("e5", "o4", {"email": "ann@example.com"}, ("1", 1, 100))])
    assert totals(ref.expect_lookup("ann@example.com"))["orders"] == 1
    assert ref.erase_email("Ann@example.com")
    assert not ref.erase_email("ann@example.com")
    assert ref.orders["o4"].email is None
    assert set(ref.rows()) == {("c:c2", "EUR")}
