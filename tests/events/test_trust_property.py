"""Reported events change no fact (API.md 2), on random streams (both backends).

Hypothesis draws streams of purchase and return events over a small universe (2 customer
ids, 3 emails, 5 orders, 2 products, 6 event ids shared by everyone), each sent either with
the secret key (verified) or with the publishable key (reported), in any order, several to a
request, with `Idempotency-Key`s from a pool of two shared by both keys. Tenant A receives
the whole stream; tenant B, in the same order, only its verified requests. Afterwards every
view of A must equal B's: every order (GET /v1/orders/{id}), every return (GET /v1/returns),
every profile (GET /v1/customers/{id}, GET /v1/customers/lookup?email=), the storefront
(a guest session for every (order, email) pair the stream named, a customer session for
every customer id: their orders and returns), and the outbox apart from `*.reported`. The
verified requests must answer alike in A and B; the reported ones count their own
duplicates, and their messages name nobody.

TRUST_EXAMPLES sets the examples per backend (default 20); with CI set the run is
derandomised (the same examples every run: the "ci" profile of conftest.py).
"""

import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import jwt
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st

from returnstack.outbox.service import EVENT_TYPES
from tests.conftest import DatabaseFixture, TenantFixture, make_tenant
from tests.returns.helpers import Api, all_outbox

EXAMPLES = int(os.environ.get("TRUST_EXAMPLES", "20"))
MAX_OPS = 16

CUSTOMERS = ["c1", "c2"]
EMAILS = ["ann@example.com", "bob@example.com", "cy@example.com"]
ORDERS = ["o1", "o2", "o3", "o4", "o5"]
PRODUCTS = ["SKU-A", "SKU-B"]
LINE_IDS = ["1", "2"]
EVENT_IDS = ["e1", "e2", "e3", "e4", "e5", "e6"]
KEYS = ["k1", "k2"]
STORES = ["berlin-01", "paris-02"]
WEEK = 7 * 24 * 3600

Trust = Literal["verified", "reported"]


@dataclass(frozen=True)
class Who:
    id: str | None
    email: str | None

    def body(self) -> dict[str, str]:
        return {k: v for k, v in (("id", self.id), ("email", self.email)) if v is not None}


@dataclass(frozen=True)
class Item:
    line_id: str | None  # always set for purchases
    product_id: str
    quantity: int
    unit_price: int


@dataclass(frozen=True)
class Sent:
    """One event, sent with the secret key (verified) or the publishable key (reported)."""

    trust: Trust
    kind: Literal["purchase", "return"]
    event_id: str
    order_id: str
    who: Who | None  # a return always names someone
    store: str | None  # offline when set
    currency: str | None
    items: tuple[Item, ...]
    refund: int | None
    age: int
    joins_previous: bool  # same request as the event before (when of the same trust)
    idempotency_key: str | None  # used when the event starts a request


@st.composite
def streams(draw: st.DrawFn) -> list[Sent]:
    who = st.one_of(
        st.builds(Who, st.sampled_from(CUSTOMERS), st.none()),
        st.builds(Who, st.none(), st.sampled_from(EMAILS)),
        st.builds(Who, st.sampled_from(CUSTOMERS), st.sampled_from(EMAILS)),
    )

    def event(kind: Literal["purchase", "return"]) -> st.SearchStrategy[Sent]:
        item = st.builds(
            Item,
            st.sampled_from(LINE_IDS)
            if kind == "purchase"
            else st.one_of(st.none(), st.sampled_from(LINE_IDS)),
            st.sampled_from(PRODUCTS),
            st.integers(1, 3),
            st.sampled_from([500, 1999]),
        )
        return st.builds(
            Sent,
            trust=st.sampled_from(["verified", "reported"]),
            kind=st.just(kind),
            event_id=st.sampled_from(EVENT_IDS),
            order_id=st.sampled_from(ORDERS),
            who=who if kind == "return" else st.one_of(st.none(), who),
            store=st.one_of(st.none(), st.sampled_from(STORES)),
            currency=st.sampled_from([None, "EUR", "USD"]),
            items=st.lists(item, min_size=1, max_size=2).map(tuple),
            refund=st.none() if kind == "purchase" else st.one_of(st.none(), st.integers(0, 10**6)),
            age=st.integers(60, WEEK),
            joins_previous=st.integers(0, 2).map(lambda n: n == 0),
            idempotency_key=st.one_of(st.none(), st.sampled_from(KEYS)),
        )

    kinds: list[Literal["purchase", "return"]] = ["purchase", "purchase", "return"]
    op = st.sampled_from(kinds).flatmap(event)
    return draw(st.lists(op, min_size=1, max_size=MAX_OPS))


def body_of(op: Sent, start: datetime) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    seen: set[str | None] = set()
    for item in op.items:
        if op.kind == "purchase":
            if item.line_id in seen:
                continue  # a line id appears once in a purchase
            seen.add(item.line_id)
            items.append(
                {
                    "line_id": item.line_id,
                    "product_id": item.product_id,
                    "quantity": item.quantity,
                    "unit_price": item.unit_price,
                }
            )
        else:
            entry: dict[str, Any] = {
                "product_id": item.product_id,
                "quantity": item.quantity,
                "reason": "color",
            }
            if item.line_id is not None:
                entry["line_id"] = item.line_id
            items.append(entry)
    event: dict[str, Any] = {
        "type": op.kind,
        "id": op.event_id,
        "timestamp": (start - timedelta(seconds=op.age)).isoformat().replace("+00:00", "Z"),
        "channel": "offline" if op.store else "online",
        "order_id": op.order_id,
        "items": items,
    }
    if op.who is not None:
        event["customer"] = op.who.body()
    if op.store is not None:
        event["store"] = {"id": op.store, "name": op.store.title()}
    if op.currency is not None:
        event["currency"] = op.currency
    if op.refund is not None:
        event["refund"] = {"amount": op.refund}
    return event


@dataclass
class Request:
    trust: Trust
    key: str | None
    events: list[dict[str, Any]]


def requests_of(ops: list[Sent], start: datetime) -> list[Request]:
    requests: list[Request] = []
    for op in ops:
        last = requests[-1] if requests else None
        if last is not None and op.joins_previous and last.trust == op.trust:
            last.events.append(body_of(op, start))
        else:
            requests.append(Request(op.trust, op.idempotency_key, [body_of(op, start)]))
    return requests


# --- reading every view ---------------------------------------------------------------------

SERVER_ID = re.compile(r"\b(ret|evt|key|att|msg|cus)_[0-9A-Z]{26}\b")


def normal(value: Any) -> Any:
    """A view with what differs between two tenants by construction taken out: server ids
    (made fresh per tenant) and `updated_at` (the time of the write)."""
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items() if k != "updated_at"}
    if isinstance(value, list):
        return [normal(v) for v in value]
    if isinstance(value, str):
        return SERVER_ID.sub(r"\1_*", value)
    return value


def read(response: Any) -> tuple[int, Any]:
    return response.status_code, normal(response.json())


def storefront_token(tenant: TenantFixture, customer_id: str) -> str:
    claims = {"sub": customer_id, "exp": int(time.time()) + 3600}
    return jwt.encode(claims, tenant.signing_secret, algorithm="HS256")


def views(api: Api, pairs: set[tuple[str, str]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for order_id in ORDERS:
        seen[f"GET /v1/orders/{order_id}"] = read(api.get(f"/v1/orders/{order_id}"))
    seen["GET /v1/returns"] = sorted(
        (normal(ret) for ret in api.list()), key=lambda ret: ret["number"]
    )
    for customer_id in CUSTOMERS:
        seen[f"GET /v1/customers/{customer_id}"] = read(api.get(f"/v1/customers/{customer_id}"))
    for email in EMAILS:
        lookup = api.get("/v1/customers/lookup", params={"email": email})
        seen[f"GET /v1/customers/lookup?email={email}"] = read(lookup)
    sessions = [
        (f"guest {order_id} {email}", {"order_id": order_id, "email": email})
        for order_id, email in sorted(pairs)
    ] + [
        (f"customer {customer_id}", {"customer_token": storefront_token(api.tenant, customer_id)})
        for customer_id in CUSTOMERS
    ]
    for label, body in sessions:
        opened = api.http.post(
            "/v1/storefront/sessions", json=body, headers=api.tenant.publishable_headers
        )
        seen[f"{label}: session"] = opened.status_code
        if opened.status_code != 201:
            continue
        headers = {"X-Storefront-Session": opened.json()["session"]}
        for path in ("/v1/storefront/orders", "/v1/storefront/returns"):
            seen[f"{label}: GET {path}"] = read(api.http.get(path, headers=headers))
    return seen


# --- the property ---------------------------------------------------------------------------


def send(api: Api, request: Request, *, trust: Trust) -> Any:
    headers = dict(api.tenant.headers if trust == "verified" else api.tenant.publishable_headers)
    if request.key is not None:
        headers["Idempotency-Key"] = request.key
    return api.http.post("/v1/events", json={"events": request.events}, headers=headers)


# A reported purchase naming a victim's email and then their order, a reported return
# against it, and the merchant's events reusing the reported ids and idempotency key.
ATTACK = [
    Sent("reported", "purchase", "e1", "o2", Who(None, "ann@example.com"), None, None,
         (Item("1", "SKU-A", 1, 500),), None, 900, False, "k1"),
    Sent("verified", "purchase", "e1", "o1", Who(None, "ann@example.com"), None, None,
         (Item("1", "SKU-A", 2, 1999),), None, 800, False, "k1"),
    Sent("reported", "return", "e2", "o1", Who("c1", "ann@example.com"), None, None,
         (Item("1", "SKU-A", 2, 0),), 10**6, 700, False, None),
    Sent("reported", "purchase", "e3", "o1", Who("c1", "ann@example.com"), "berlin-01", None,
         (Item("2", "SKU-B", 3, 500),), None, 600, True, None),
    Sent("verified", "return", "e2", "o1", Who(None, "ann@example.com"), None, None,
         (Item("1", "SKU-A", 1, 0),), 1999, 500, False, "k1"),
]  # fmt: skip


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example(ops=ATTACK)
@given(ops=streams())
def test_reported_events_leave_every_view_as_the_verified_events_alone(
    database: DatabaseFixture, client: TestClient, ops: list[Sent]
) -> None:
    mixed = Api(client, make_tenant(database.db, currency="EUR"))
    verified_only = Api(client, make_tenant(database.db, currency="EUR"))
    start = datetime.now(UTC).replace(microsecond=0)
    requests = requests_of(ops, start)
    reported_seen: set[str] = set()  # the reported scope's event ids
    reported_keys: dict[str, tuple[list[dict[str, Any]], Any]] = {}  # its Idempotency-Keys
    reported_accepted = 0
    for request in requests:
        got = send(mixed, request, trust=request.trust)
        note(f"{request.trust} {request.key} {request.events} -> {got.status_code} {got.text}")
        if request.trust == "verified":
            expected = send(verified_only, request, trust="verified")
            assert got.status_code == expected.status_code, (got.text, expected.text)
            if got.status_code == 200:
                mine, theirs = got.json(), expected.json()
                assert (mine["accepted"], mine["duplicates"], mine["rejected"]) == (
                    theirs["accepted"],
                    theirs["duplicates"],
                    theirs["rejected"],
                )
            continue
        # Reported requests: ids and keys are scoped to the publishable key's own.
        if request.key in reported_keys:
            first_events, first_answer = reported_keys[request.key]
            if request.events == first_events:
                assert (got.status_code, got.json()) == (200, first_answer)  # a replay
            else:
                assert got.status_code == 409, got.text
            continue
        assert got.status_code == 200, got.text
        answer = got.json()
        new = {event["id"] for event in request.events} - reported_seen
        assert answer["accepted"] == len(new), (answer, new)
        assert answer["duplicates"] == len(request.events) - len(new), answer
        reported_seen |= new
        reported_accepted += len(new)
        if request.key is not None:
            reported_keys[request.key] = (request.events, answer)

    pairs = {
        (event["order_id"], event["customer"]["email"])
        for request in requests
        for event in request.events
        if event.get("customer", {}).get("email")
    }
    mine, theirs = views(mixed, pairs), views(verified_only, pairs)
    problems = [
        f"{label}:\n  with reported events: {mine[label]}\n  verified alone:       {value}"
        for label, value in theirs.items()
        if mine.get(label) != value
    ]
    assert not problems, "\n".join(problems)

    messages = all_outbox(database, mixed.tenant.id)
    reported = [m for m in messages if m.type in {"purchase.reported", "return.reported"}]
    facts = [m.type for m in messages if m not in reported]
    assert facts == [m.type for m in all_outbox(database, verified_only.tenant.id)]
    assert len(reported) == reported_accepted
    assert {"purchase.reported", "return.reported"} <= EVENT_TYPES
    for message in reported:
        assert message.data["trust"] == "reported"
        text = str(message.data)
        assert not [word for word in (*CUSTOMERS, *EMAILS) if f"'{word}'" in text], text
