"""A plain-Python reference for customer profiles (notes/PROFILES.md, API.md 3-5).

It keeps the facts the API was given (orders and their lines, recorded returns, returns
through the lifecycle, identities) and computes the profiles from them at the end, from
scratch: it knows nothing about how the service keeps them incrementally. Who a fact belongs
to is resolved with the final identity links (first link wins, an email never moves), which
is what "guest rows merge into the customer when linked" amounts to.

It also predicts what the returns API accepts (eligibility and the state machine), so a test
can send only what it expects to succeed, check the API agrees, and mirror exactly what was
accepted. Where a prediction cannot be exact (units of recorded returns that name only a
product are spread over an order's lines in an order the reference does not fix), it gives
bounds and the test follows the API within them.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
    """The units of one order line in a lifecycle return (items naming one line, summed)."""

    order_id: str
    line_id: str
    quantity: int
    unit_price: int
    received: int = 0
    good: int = 0  # received with outcome "received": what a refund pays for


@dataclass
class LifecycleReturn:
    id: str
    customer_id: str | None
    email: str | None
    channel: str
    currency: str
    created_at: datetime
    items: list[LifecycleItem]
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

    @property
    def refund_limit(self) -> int:
        value = sum(item.good * item.unit_price for item in self.items)
        return max(0, value - (self.refunded or 0))


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


@dataclass(frozen=True)
class Requester:
    customer_id: str | None
    email: str | None

    def owns(self, customer_id: str | None, email: str | None) -> bool:
        """API.md 4: a customer owns their orders and guest orders of their email; someone
        known by email alone owns the orders with that email."""
        if self.customer_id is not None:
            if customer_id == self.customer_id:
                return True
            return customer_id is None and self.email is not None and email == self.email
        return self.email is not None and email == self.email


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

    def owner(self, customer_id: str | None, email: str | None) -> str | None:
        if customer_id is not None:
            return f"c:{customer_id}"
        email = normalize_email(email)
        if email is not None:
            linked = self.emails.get(email)
            return f"c:{linked}" if linked is not None else f"g:{email}"
        return None

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

    def _recorded_return(self, event: Mapping[str, Any]) -> None:
        customer = event["customer"]
        refund = event.get("refund")
        self.recorded.append(
            RecordedReturn(
                order_id=event["order_id"],
                customer_id=customer.get("id"),
                email=normalize_email(customer.get("email")),
                channel=event.get("channel", "online"),
                currency=event.get("currency") or self.default_currency,
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
        if customer:
            requester = Requester(customer.get("id"), normalize_email(customer.get("email")))
        else:  # staff acting for the first known order's customer
            first = next(
                (self.orders[i["order_id"]] for i in items if i["order_id"] in self.orders), None
            )
            requester = Requester(
                first.customer_id if first else None, first.email if first else None
            )
        errors: set[str] = set()
        wanted: dict[tuple[str, str], int] = {}
        currency: str | None = None
        first_owned: Order | None = None
        for item in items:
            order = self.orders.get(item["order_id"])
            if order is None:
                errors.add("order_not_found")
                continue
            anonymous = order.customer_id is None and order.email is None
            if not (requester.owns(order.customer_id, order.email) or anonymous):
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
            customer_id=requester.customer_id or (first_owned.customer_id if first_owned else None),
            email=requester.email or (first_owned.email if first_owned else None),
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
        merged: dict[tuple[str, str], LifecycleItem] = {}
        for item in items:
            key = (item["order_id"], item["line_id"])
            if key not in merged:
                price = self.orders[key[0]].lines[key[1]].unit_price
                merged[key] = LifecycleItem(key[0], key[1], 0, price)
            merged[key].quantity += item["quantity"]
        ret = LifecycleReturn(
            id=return_id,
            customer_id=prediction.customer_id,
            email=prediction.email,
            channel=channel,
            currency=prediction.currency,
            created_at=created_at,
            items=list(merged.values()),
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
        """A declined or cancelled return claims its units again on reopening, if free."""
        if ret.claiming:
            return "ok"
        requester = Requester(ret.customer_id, ret.email)
        wanted = {}
        for item in ret.items:
            order = self.orders[item.order_id]
            anonymous = order.customer_id is None and order.email is None
            if requester.owns(order.customer_id, order.email) or anonymous:
                wanted[(item.order_id, item.line_id)] = item.quantity
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
                    if receipt.get("outcome", "received") == "received":
                        item.good += take
                    left -= take
                assert left == 0, "the receipt was more than the return has room for"
        elif action == "refund":
            amount = body.get("amount")
            limit = ret.refund_limit
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
            assert owner is not None  # a recorded return names a customer or an email
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
