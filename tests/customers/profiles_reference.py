"""A plain-Python reference for customer profiles (API.md 3-5, docs/api.md).

It keeps the facts the API was given (orders and their lines, recorded returns, returns
through the lifecycle, identities) and computes the profiles from them at the end, from
scratch: it knows nothing about how the service keeps them incrementally. Who a fact belongs
to is resolved with the final identity links (first link wins, an email never moves), which
is what "guest rows merge into the customer when linked" amounts to.

It also predicts what the returns API accepts (eligibility and the state machine), so a test
can send only what it expects to succeed, check the API agrees, and mirror exactly what was
accepted. Its rules are written from the contract (API.md 4, 5 and 11, docs/api.md "Returns"
and "Customer profiles"), each citing the sentence it follows, never from the service's code:
who owns an order, what a refund may pay (fees and damaged items), what erasure leaves.
Where a prediction cannot be exact (units of recorded returns that name only a product are
spread over an order's lines in an order the reference does not fix), it gives bounds and
the test follows the API within them.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from math import floor
from typing import Any, Literal

TOTAL_KEYS = (
    "orders",
    "items_purchased",
    "gross_revenue",
    "returns",
    "items_returned",
    "refunded",
    "net_revenue",
    "return_rate_items",
    "return_rate_value",
)
CHANNELS = ("online", "offline")
# API.md 11: "default reasons with `merchant_fault: true` are `defective`, `damaged_in_transit`,
# `not_as_described`, `wrong_item`".
MERCHANT_FAULT = frozenset({"defective", "damaged_in_transit", "not_as_described", "wrong_item"})
ACTIONS = ("approve", "decline", "receive", "refund", "close", "cancel", "reopen")
PROGRESS = ("approve", "receive", "refund", "close", "reopen", "decline", "cancel")

# The state machine of API.md 4: action -> (from states, to state).
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "approve": (frozenset({"requested"}), "approved"),
    "decline": (frozenset({"requested"}), "declined"),
    "receive": (frozenset({"approved", "received"}), "received"),
    "refund": (frozenset({"received"}), "refunded"),
    "close": (frozenset({"refunded", "declined"}), "closed"),
    "cancel": (frozenset({"requested", "approved"}), "cancelled"),
    "reopen": (frozenset({"closed", "cancelled"}), "requested"),
}


def normalize_email(email: str | None) -> str | None:
    return None if email is None else email.strip().lower()


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def rate(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


# --- facts ----------------------------------------------------------------------------------


@dataclass
class Line:
    product_id: str
    quantity: int
    unit_price: int


@dataclass
class Order:
    id: str
    customer_id: str | None
    email: str | None
    channel: str
    currency: str
    placed_at: datetime
    lines: dict[str, Line] = field(default_factory=dict)


@dataclass
class RecordedReturn:
    """A return recorded from an event (source "event")."""

    order_id: str
    customer_id: str | None
    email: str | None
    channel: str
    currency: str
    at: datetime
    items: list[tuple[str | None, str, int]]  # (line_id, product_id, quantity)
    refund: int | None


@dataclass
class LifecycleItem:
    """One requested item of a lifecycle return (docs/api.md: "A return naming one line in
    two items is received into them in order")."""

    order_id: str
    line_id: str
    quantity: int
    unit_price: int
    # docs/api.md: "Fees are fixed per item when it is requested (the policy may change
    # later): the restocking percentage ..., none for reasons with `merchant_fault`."
    fee_percent: Fraction = Fraction(0)
    received: int = 0
    good: int = 0  # received with outcome "received"
    damaged: int = 0  # received with outcome "damaged"


@dataclass
class LifecycleReturn:
    id: str
    customer_id: str | None
    email: str | None
    channel: str
    currency: str
    created_at: datetime
    items: list[LifecycleItem]
    # docs/api.md: "The return shipping fee is charged once per return unless every item has
    # a merchant-fault reason" (fixed when requested, as the restocking fees are).
    shipping_fee: int = 0
    status: str = "requested"
    refunded: int | None = None
    claiming: bool = True  # declined and cancelled returns claim nothing

    @property
    def received(self) -> int:
        return sum(item.received for item in self.items)

    def room(self, order_id: str, line_id: str) -> int:
        return sum(
            item.quantity - item.received
            for item in self.items
            if (item.order_id, item.line_id) == (order_id, line_id)
        )

    def refund_limit(self, refund_damaged_items: bool) -> int:
        """What a refund may pay now. API.md 4: "the value of what was received with outcome
        `received` (and `damaged` if the policy refunds damaged items) minus fees, rounded
        down to the minor unit"; API.md 11: "fees are computed exactly (`value x percent /
        100`), the refund is `floor(value - fees)`"; docs/api.md: "minus their fees and the
        shipping fee, rounded down, never below 0", and a reopened return is refunded again
        "only for what was received and not yet refunded"."""
        value = Fraction(0)
        for item in self.items:
            units = item.good + (item.damaged if refund_damaged_items else 0)
            value += units * item.unit_price * (1 - item.fee_percent / 100)
        total = max(0, floor(value) - self.shipping_fee)
        return max(0, total - (self.refunded or 0))


# --- profile rows ---------------------------------------------------------------------------


@dataclass
class Row:
    """One (owner, currency) profile row."""

    orders: int = 0
    items_purchased: int = 0
    gross_revenue: int = 0
    returns: int = 0
    items_returned: int = 0
    refunded: int = 0
    online_orders: int = 0
    offline_orders: int = 0
    online_returns: int = 0
    offline_returns: int = 0
    first_order_at: datetime | None = None
    last_order_at: datetime | None = None
    last_return_at: datetime | None = None

    @property
    def net_revenue(self) -> int:
        return self.gross_revenue - self.refunded

    @property
    def return_rate_items(self) -> float:
        return rate(self.items_returned, self.items_purchased)

    @property
    def return_rate_value(self) -> float:
        return rate(self.refunded, self.gross_revenue)

    def serial_returner(self, min_orders: int, min_rate: float) -> bool:
        return self.orders >= min_orders and self.return_rate_value >= min_rate

    def totals(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in TOTAL_KEYS}

    def add_order(self, channel: str, placed_at: datetime) -> None:
        self.orders += 1
        setattr(self, f"{channel}_orders", getattr(self, f"{channel}_orders") + 1)
        self.first_order_at = _earliest(self.first_order_at, placed_at)
        self.last_order_at = _latest(self.last_order_at, placed_at)

    def add_return(self, channel: str, at: datetime, units: int, refunded: int) -> None:
        self.returns += 1
        setattr(self, f"{channel}_returns", getattr(self, f"{channel}_returns") + 1)
        self.items_returned += units
        self.refunded += refunded
        self.last_return_at = _latest(self.last_return_at, at)


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


# --- what the API is expected to answer -----------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """What GET /v1/customers/{id} or /lookup should answer.

    `found`: exactly `profile`; `absent`: 404; `either`: an identity that is known but has no
    fact yet (PROFILES.md does not say whether that is a 404 or an empty profile), so 404 or
    exactly `profile` (the empty one).
    """

    status: Literal["found", "absent", "either"]
    profile: dict[str, Any] | None = None


@dataclass(frozen=True)
class OpenPrediction:
    """What POST /v1/returns will answer for a body."""

    errors: frozenset[str]  # codes that are certain, other than quantity_exceeds_returnable
    quantity: Literal["ok", "exceeds", "maybe"]
    customer_id: str | None
    email: str | None
    currency: str | None

    @property
    def accepted(self) -> bool | None:
        """True or False when certain; None when it depends on how recorded units spread."""
        if self.errors or self.quantity == "exceeds":
            return False
        return True if self.quantity == "ok" else None


class Reference:
    def __init__(
        self,
        *,
        default_currency: str = "EUR",
        min_orders: int = 3,
        min_return_rate_value: float = 0.5,
        window_days: int = 30,
    ) -> None:
        self.default_currency = default_currency
        self.min_orders = min_orders
        self.min_return_rate_value = min_return_rate_value
        self.window_days = window_days
        # The return policy's money settings (API.md 4.2, defaults of API.md 11).
        self.restocking_fee_percent = Fraction(0)
        self.return_shipping_fee = 0
        self.refund_damaged_items = False
        self.event_ids: set[str] = set()
        self.orders: dict[str, Order] = {}
        self.recorded: list[RecordedReturn] = []
        self.returns: dict[str, LifecycleReturn] = {}
        self.emails: dict[str, str | None] = {}  # every email seen -> linked customer or None
        self.customers: dict[str, str | None] = {}  # every customer id seen -> customers.email

    # --- identities -----------------------------------------------------------------------

    def remember(self, customer_id: str | None, email: str | None) -> None:
        """An identity named by an event (or a return): the customer's email is the latest
        one given with its id; an email given with an id links to it unless linked before."""
        email = normalize_email(email)
        if customer_id is not None:
            known = self.customers.get(customer_id)
            self.customers[customer_id] = email if email is not None else known
        if email is not None and self.emails.get(email) is None:
            self.emails[email] = customer_id

    def owner(
        self,
        customer_id: str | None,
        email: str | None,
        links: Mapping[str, str | None] | None = None,
    ) -> str | None:
        """Who a fact belongs to. docs/api.md "Customer profiles": "A fact belongs to its
        `customer.id`; without one, to the customer its email is linked to; else to the email
        as a guest." `c:<id>` is a customer, `g:<email>` a guest, None nobody (an anonymous
        sale)."""
        links = self.emails if links is None else links
        if customer_id is not None:
            return f"c:{customer_id}"
        email = normalize_email(email)
        if email is not None:
            linked = links.get(email)
            return f"c:{linked}" if linked is not None else f"g:{email}"
        return None

    # --- ownership of orders (eligibility, API.md 4) ----------------------------------------

    def owns(self, person: str | None, order: Order, links: Mapping[str, str | None]) -> bool:
        """API.md 4: "the order is known and belongs to the customer (or guest email)"; whose
        an order is follows the identity rule above (API.md 5: what was recorded "under that
        email alone (a guest) is merged into the customer"), so a customer's orders are those
        with their id and those under an email linked to them, and a guest's those under their
        email and no id. docs/api.md "Returns": "Staff may open a return for an order with no
        customer (an in-store sale without a customer record)"."""
        owner = self.owner(order.customer_id, order.email, links)
        return owner is None or owner == person

    def requester(
        self, customer: Mapping[str, Any] | None, items: Sequence[Mapping[str, Any]]
    ) -> tuple[str | None, dict[str, str | None]]:
        """(the person a staff request is for, the identity links it is judged with).

        A request naming an id is for that customer; naming an email alone, for whoever the
        email belongs to (its customer, else the guest). docs/api.md "Returns": "`customer`
        may be left out on staff requests: the return belongs to the customer (id and email)
        of its first order". API.md 5: "an event or return carrying both `customer.id` and
        `customer.email` links them" (docs/api.md: "if the email is not linked yet"), and the
        guest's history joins the customer in that request, so it is judged with that link.
        """
        links = dict(self.emails)
        customer_id = (customer or {}).get("id")
        email = normalize_email((customer or {}).get("email"))
        if customer_id is not None and email is not None and links.get(email) is None:
            links[email] = customer_id
        if customer_id is not None or email is not None:
            return self.owner(customer_id, email, links), links
        first = next(
            (self.orders[i["order_id"]] for i in items if i["order_id"] in self.orders), None
        )
        return (self.owner(first.customer_id, first.email, links) if first else None), links

    # --- erasure --------------------------------------------------------------------------

    def erase_customer(self, customer_id: str) -> bool:
        """DELETE /v1/customers/{id}; False when the API answers 404 (docs/api.md: "404 for an
        unknown or erased id"). Their emails are those linked to them (docs/api.md: "orders
        and returns of the customer (by id or a linked email) lose the id and email")."""
        known = customer_id in self.customers or any(
            owner == f"c:{customer_id}" for owner, _ in self.rows()
        )  # named by an event, or someone with a profile
        if not known:
            return False
        emails = {email for email, linked in self.emails.items() if linked == customer_id}
        self._erase(customer_id, emails)
        return True

    def erase_email(self, email: str) -> bool:
        """DELETE /v1/customers/lookup?email=; False when the API answers 404. API.md 5: "A
        person known only by email (a guest) is erased with `DELETE
        /v1/customers/lookup?email=`"; an email linked to a customer names that customer."""
        email = normalize_email(email) or ""
        linked = self.emails.get(email)
        if linked is not None:
            return self.erase_customer(linked)
        if email not in self.emails and not any(fact.email == email for fact in self._facts()):
            return False  # never seen (or erased)
        self._erase(None, {email})
        return True

    def _facts(self) -> list[Order | RecordedReturn | LifecycleReturn]:
        return [*self.orders.values(), *self.recorded, *self.returns.values()]

    def _erase(self, customer_id: str | None, emails: set[str]) -> None:
        """API.md 5: erasure "erases the person's personal data (ids, emails ...) and keeps
        anonymous aggregates"; "Afterwards nothing the service stores or sends names them".
        docs/api.md: "A fact of another customer that used one of these emails keeps that
        customer's id" and loses the email; "the customer, its email links, profile rows ...
        are deleted"; "The person can be recorded again by later events, as a new customer".
        Event ids stay: a repeated id still changes nothing (API.md 3)."""
        for fact in self._facts():
            if (customer_id is not None and fact.customer_id == customer_id) or (
                fact.email in emails
            ):
                if fact.customer_id == customer_id:
                    fact.customer_id = None
                fact.email = None
        for erased in emails:
            self.emails.pop(erased, None)
        if customer_id is not None:
            self.customers.pop(customer_id, None)
        # Another customer whose latest email was one of these no longer shows it.
        for other, latest in list(self.customers.items()):
            if latest in emails:
                self.customers[other] = None

    # --- events ---------------------------------------------------------------------------

    def record_events(self, events: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
        """One POST /v1/events; returns (accepted, duplicates)."""
        events = list(events)
        new: list[Mapping[str, Any]] = []
        for event in events:
            if event["id"] not in self.event_ids:
                self.event_ids.add(event["id"])
                new.append(event)
        for event in new:
            customer = event.get("customer") or {}
            self.remember(customer.get("id"), customer.get("email"))
        for event in new:
            if event["type"] == "purchase":
                self._purchase(event)
            else:
                self._recorded_return(event)
        return len(new), len(events) - len(new)

    def _purchase(self, event: Mapping[str, Any]) -> None:
        order = self.orders.get(event["order_id"])
        if order is None:
            customer = event.get("customer") or {}
            order = Order(
                id=event["order_id"],
                customer_id=customer.get("id"),
                email=normalize_email(customer.get("email")),
                channel=event.get("channel", "online"),
                currency=event.get("currency") or self.default_currency,
                placed_at=parse_time(event["timestamp"]),
            )
            self.orders[order.id] = order
        for position, item in enumerate(event["items"], start=1):
            line_id = item.get("line_id") or str(position)
            if line_id not in order.lines:  # lines recorded before are kept as they are
                order.lines[line_id] = Line(
                    item["product_id"], item["quantity"], item["unit_price"]
                )

    def _order_currency(self, order_id: str) -> str:
        """A return naming no currency is in its order's (the default for an unknown one)."""
        order = self.orders.get(order_id)
        return order.currency if order is not None else self.default_currency

    def _recorded_return(self, event: Mapping[str, Any]) -> None:
        customer = event["customer"]
        refund = event.get("refund")
        self.recorded.append(
            RecordedReturn(
                order_id=event["order_id"],
                customer_id=customer.get("id"),
                email=normalize_email(customer.get("email")),
                channel=event.get("channel", "online"),
                currency=event.get("currency") or self._order_currency(event["order_id"]),
                at=parse_time(event["timestamp"]),
                items=[
                    (item.get("line_id"), item["product_id"], item["quantity"])
                    for item in event["items"]
                ],
                refund=refund["amount"] if refund else None,
            )
        )

    # --- claims on order lines --------------------------------------------------------------

    def claim_bounds(
        self, order_id: str, line_id: str, exclude: str | None = None
    ) -> tuple[int, int]:
        """(fewest, most) units of a line claimed by returns other than `exclude`.

        Lifecycle returns name their line. Recorded returns may name only a product (or a
        line the order does not have); their units go to the order's lines of that product
        in an order not fixed here, so they count fully only when one line has the product.
        """
        order = self.orders[order_id]
        line = order.lines[line_id]
        low = sum(
            item.quantity
            for ret in self.returns.values()
            if ret.claiming and ret.id != exclude
            for item in ret.items
            if (item.order_id, item.line_id) == (order_id, line_id)
        )
        high = low
        for recorded in self.recorded:
            if recorded.order_id != order_id:
                continue
            for named, product_id, quantity in recorded.items:
                if named is not None and named in order.lines:
                    if named == line_id:
                        low += quantity
                        high += quantity
                    continue
                if product_id != line.product_id:
                    continue
                candidates = [lid for lid, ln in order.lines.items() if ln.product_id == product_id]
                high += quantity
                if candidates == [line_id]:
                    low += quantity
        return low, high

    def _quantity_verdict(
        self, wanted: Mapping[tuple[str, str], int], exclude: str | None
    ) -> Literal["ok", "exceeds", "maybe"]:
        verdict: Literal["ok", "exceeds", "maybe"] = "ok"
        for (order_id, line_id), quantity in wanted.items():
            low, high = self.claim_bounds(order_id, line_id, exclude)
            line_quantity = self.orders[order_id].lines[line_id].quantity
            if quantity > max(0, line_quantity - low):
                return "exceeds"
            if quantity > max(0, line_quantity - high):
                verdict = "maybe"
        return verdict

    # --- the lifecycle ----------------------------------------------------------------------

    def predict_open(
        self, customer: Mapping[str, Any] | None, items: Sequence[Mapping[str, Any]]
    ) -> OpenPrediction:
        """POST /v1/returns by staff (API.md 4): items name order_id + line_id."""
        person, links = self.requester(customer, items)
        errors: set[str] = set()
        wanted: dict[tuple[str, str], int] = {}
        currency: str | None = None
        first_owned: Order | None = None
        for item in items:
            order = self.orders.get(item["order_id"])
            if order is None:
                errors.add("order_not_found")
                continue
            if not self.owns(person, order, links):
                errors.add("order_not_owned")
                continue
            first_owned = first_owned or order
            if item["line_id"] not in order.lines:
                errors.add("line_not_found")
                continue
            if currency is None:
                currency = order.currency
            elif order.currency != currency:
                errors.add("currency_mismatch")
            key = (order.id, item["line_id"])
            wanted[key] = wanted.get(key, 0) + item["quantity"]
        return OpenPrediction(
            errors=frozenset(errors),
            quantity=self._quantity_verdict(wanted, exclude=None),
            # The return shows the customer named, completed from its first order.
            customer_id=(customer or {}).get("id")
            or (first_owned.customer_id if first_owned else None),
            email=normalize_email((customer or {}).get("email"))
            or (first_owned.email if first_owned else None),
            currency=currency,
        )

    def open(
        self,
        *,
        return_id: str,
        created_at: datetime,
        channel: str,
        items: Sequence[Mapping[str, Any]],
        prediction: OpenPrediction,
        customer: Mapping[str, Any] | None = None,
    ) -> LifecycleReturn:
        """Mirror a return the API opened for the request's `customer`."""
        assert prediction.currency is not None
        lifecycle_items = []
        for item in items:
            merchant_fault = item.get("reason") in MERCHANT_FAULT
            lifecycle_items.append(
                LifecycleItem(
                    item["order_id"],
                    item["line_id"],
                    item["quantity"],
                    self.orders[item["order_id"]].lines[item["line_id"]].unit_price,
                    fee_percent=Fraction(0) if merchant_fault else self.restocking_fee_percent,
                )
            )
        fee_bearing = any(item.get("reason") not in MERCHANT_FAULT for item in items)
        ret = LifecycleReturn(
            id=return_id,
            customer_id=prediction.customer_id,
            email=prediction.email,
            channel=channel,
            currency=prediction.currency,
            created_at=created_at,
            items=lifecycle_items,
            shipping_fee=self.return_shipping_fee if fee_bearing else 0,
        )
        self.returns[return_id] = ret
        # A request naming both a customer id and an email links them, as an event does.
        if customer and customer.get("id") and customer.get("email"):
            self.remember(customer["id"], customer["email"])
        return ret

    def api_allowed(self, ret: LifecycleReturn) -> list[str]:
        """The actions the state machine accepts now (guards included)."""
        allowed = []
        for action in ACTIONS:
            sources, _ = TRANSITIONS[action]
            if ret.status not in sources:
                continue
            if action == "cancel" and ret.received:
                continue
            allowed.append(action)
        return allowed

    def useful(self, ret: LifecycleReturn) -> list[str]:
        """Allowed actions that can succeed (a receipt needs units still to come), those that
        take a return furthest first."""
        allowed = self.api_allowed(ret)
        return [
            action
            for action in PROGRESS
            if action in allowed
            and (action != "receive" or any(i.quantity > i.received for i in ret.items))
        ]

    def reopen_verdict(self, ret: LifecycleReturn) -> Literal["ok", "exceeds", "maybe"]:
        """docs/api.md "Returns": "Reopening a declined or cancelled return claims its units
        again, and is refused (422 `quantity_exceeds_returnable`) when another return took
        them in the meantime"."""
        if ret.claiming:
            return "ok"
        wanted: dict[tuple[str, str], int] = {}
        for item in ret.items:
            key = (item.order_id, item.line_id)
            wanted[key] = wanted.get(key, 0) + item.quantity
        return self._quantity_verdict(wanted, exclude=ret.id)

    def apply(self, ret: LifecycleReturn, action: str, body: Mapping[str, Any]) -> None:
        """Mirror an action the API accepted."""
        _, target = TRANSITIONS[action]
        if action in ("decline", "cancel"):
            ret.claiming = False
        elif action == "reopen":
            ret.claiming = True
        elif action == "receive":
            for receipt in body["items"]:
                left = receipt["quantity"]
                for item in ret.items:
                    if (item.order_id, item.line_id) != (receipt["order_id"], receipt["line_id"]):
                        continue
                    take = min(left, item.quantity - item.received)
                    item.received += take
                    outcome = receipt.get("outcome", "received")
                    if outcome == "received":
                        item.good += take
                    elif outcome == "damaged":
                        item.damaged += take
                    left -= take
                assert left == 0, "the receipt was more than the return has room for"
        elif action == "refund":
            amount = body.get("amount")
            limit = ret.refund_limit(self.refund_damaged_items)
            ret.refunded = (ret.refunded or 0) + (limit if amount is None else amount)
        ret.status = target

    # --- profiles -------------------------------------------------------------------------

    def rows(self) -> dict[tuple[str, str], Row]:
        """Every profile row, (owner, currency) -> Row, computed from the facts."""
        rows: dict[tuple[str, str], Row] = {}

        def row(owner: str, currency: str) -> Row:
            return rows.setdefault((owner, currency), Row())

        for order in self.orders.values():
            owner = self.owner(order.customer_id, order.email)
            if owner is None:
                continue  # an anonymous sale
            target = row(owner, order.currency)
            target.add_order(order.channel, order.placed_at)
            for line in order.lines.values():  # also lines added by later events
                target.items_purchased += line.quantity
                target.gross_revenue += line.quantity * line.unit_price
        for recorded in self.recorded:
            owner = self.owner(recorded.customer_id, recorded.email)
            if owner is None:
                continue  # its customer was erased
            row(owner, recorded.currency).add_return(
                recorded.channel,
                recorded.at,
                sum(quantity for _, _, quantity in recorded.items),
                recorded.refund or 0,
            )
        for ret in self.returns.values():
            owner = self.owner(ret.customer_id, ret.email)
            if owner is None or not ret.received:
                continue  # nothing received yet (or ever): nothing counts
            row(owner, ret.currency).add_return(
                ret.channel, ret.created_at, ret.received, ret.refunded or 0
            )
        return rows

    def flagged(self, owner: str) -> bool:
        return any(
            row.serial_returner(self.min_orders, self.min_return_rate_value)
            for (who, _), row in self.rows().items()
            if who == owner
        )

    def render(self, owner: str, rows: Mapping[tuple[str, str], Row]) -> dict[str, Any]:
        """The profile of one owner as GET /v1/customers/{id} shows it (empty if no rows)."""
        mine = {currency: row for (who, currency), row in rows.items() if who == owner}
        kind, _, name = owner.partition(":")
        if kind == "c":
            customer = {
                "id": name,
                "email": self.customers.get(name),
                "emails": sorted(e for e, c in self.emails.items() if c == name),
            }
        else:
            customer = {"id": None, "email": name, "emails": [name]}
        firsts = [row.first_order_at for row in mine.values() if row.first_order_at]
        lasts = [row.last_order_at for row in mine.values() if row.last_order_at]
        returns = [row.last_return_at for row in mine.values() if row.last_return_at]
        flagged = any(
            row.serial_returner(self.min_orders, self.min_return_rate_value)
            for row in mine.values()
        )
        return {
            "customer": customer,
            "first_order_at": min(firsts) if firsts else None,
            "last_order_at": max(lasts) if lasts else None,
            "last_return_at": max(returns) if returns else None,
            "totals": {currency: row.totals() for currency, row in sorted(mine.items())},
            "channels": {
                channel: {
                    "orders": sum(getattr(row, f"{channel}_orders") for row in mine.values()),
                    "returns": sum(getattr(row, f"{channel}_returns") for row in mine.values()),
                }
                for channel in CHANNELS
            },
            "flags": ["serial_returner"] if flagged else [],
        }

    def _expect(self, owner: str, known: bool) -> Expected:
        rows = self.rows()
        profile = self.render(owner, rows)
        if any(who == owner for who, _ in rows):
            return Expected("found", profile)
        return Expected("either", profile) if known else Expected("absent")

    def expect_customer(self, customer_id: str) -> Expected:
        """GET /v1/customers/{customer_id}."""
        return self._expect(f"c:{customer_id}", known=customer_id in self.customers)

    def expect_lookup(self, email: str) -> Expected:
        """GET /v1/customers/lookup?email=: the linked customer's profile, else the guest's."""
        email = normalize_email(email) or ""
        linked = self.emails.get(email)
        if linked is not None:
            return self.expect_customer(linked)
        # A guest: an email seen in events, or only in returns opened for anonymous sales.
        return self._expect(f"g:{email}", known=email in self.emails)
