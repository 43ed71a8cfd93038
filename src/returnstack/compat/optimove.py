"""Optimove out-of-the-box events (seed 003; COMPAT.md "Optimove OOTB events").

POST /optimove/events and /optimove/events/batch: one envelope or a JSON array of up to
1,000. Each event is one item: `ootb_product_order_completed` events with the same
`ootb_order_id` make one order, `ootb_product_return` events with the same
`ootb_return_id` make one return, in one request or several; `ootb_product_refund` events
with the same `ootb_refund_id` make one refund without goods (a recorded return whose items
stay with the customer). Valid events are written and invalid ones listed by index. A
secret key records facts; a publishable key reports signals (and sends no refunds).
"""

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import orjson
from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.responses import Response

from returnstack.compat.common import (
    Caller,
    CompatError,
    bad_request,
    event_key,
    find_key,
    load_json,
    minor_units,
    record,
    status_phrase,
    unauthorized,
    vendor_router,
    write,
)
from returnstack.events.schemas import (
    CustomerRef,
    PurchaseEvent,
    Refund,
    ReturnEvent,
    ReturnItem,
    Trust,
)
from returnstack.kit.bulk import select_rows
from returnstack.kit.locks import lock_names
from returnstack.kit.money import is_currency
from returnstack.kit.openapi import json_body, raw_body
from returnstack.kit.responses import JSONResponse
from returnstack.kit.types import FUTURE_TOLERANCE, MAX_AMOUNT, MAX_QUANTITY, normalize_email
from returnstack.models import Event
from returnstack.models.reported import ReportedEvent
from returnstack.returns.repository import RecordedSummary, recorded_returns_by_event
from returnstack.returns.service import ReturnOptions

SOURCE = "optimove"
MAX_EVENTS = 1000
MAX_TEXT = 255  # Optimove's limit for every string
ORDER_COMPLETED = "ootb_product_order_completed"
PRODUCT_RETURN = "ootb_product_return"
PRODUCT_REFUND = "ootb_product_refund"


def render_error(status_code: int, message: str, _code: int | None) -> Response:
    """Optimove's error body: {"status": 429, "error": "Too Many Requests", "message": ...}."""
    body = {"status": status_code, "error": status_phrase(status_code), "message": message}
    return JSONResponse(body, status_code=status_code)


router = vendor_router(
    "optimove", "compat: Optimove", lambda path: path.startswith("/optimove/"), render_error
)


# --- documentation of the request (validated by hand, event by event) -----------------------


class OptimoveEnvelope(BaseModel):
    model_config = ConfigDict(extra="allow")

    tenant: int = Field(description="Optimove's tenant number, kept as a label only.")
    timestamp: str = Field(description="'2024-05-27 10:30:00.000000 UTC' or RFC 3339.")
    event: Literal["ootb_product_order_completed", "ootb_product_return", "ootb_product_refund"]
    customer: str | None = Field(None, max_length=MAX_TEXT)
    visitor: str | None = Field(None, max_length=MAX_TEXT)
    context: dict[str, Any]


class OptimoveEventsResult(BaseModel):
    accepted: int
    duplicates: int
    rejected: list[dict[str, Any]]


BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/OptimoveEnvelope"},
                        {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/OptimoveEnvelope"},
                            "minItems": 1,
                            "maxItems": MAX_EVENTS,
                        },
                    ]
                }
            }
        },
    }
}


json_body(OptimoveEnvelope)  # registers the envelope's schema in the document


# --- who is calling ----------------------------------------------------------------------


def _caller(request: Request) -> Caller:
    token = request.headers.get("x-api-key")
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":  # another scheme (a gateway's Basic) leaves X-API-Key
            token = value.strip()
    principal = find_key(request, token)
    if principal is None:
        raise unauthorized("A valid API key is required: Authorization: Bearer <key> or X-API-Key.")
    trust = Trust.verified if principal.kind == "secret" else Trust.reported
    return Caller(principal, trust)


# --- one event -----------------------------------------------------------------------------


class Rejected(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")


_OPTIMOVE_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?) UTC$")
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)


def _timestamp(value: Any, latest: datetime) -> datetime:
    if not isinstance(value, str):
        raise Rejected("timestamp", "is required: 'YYYY-MM-DD HH:MM:SS.ffffff UTC'")
    match = _OPTIMOVE_TIME.match(value)
    try:
        if match:
            moment = datetime.fromisoformat(f"{match[1]}T{match[2]}+00:00")
        elif _RFC3339.match(value):
            text = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("z", "Z").replace("Z", "+00:00"))
            moment = datetime.fromisoformat(text).astimezone(UTC)
        else:
            raise ValueError
    except (ValueError, OverflowError):
        raise Rejected(
            "timestamp", "must be 'YYYY-MM-DD HH:MM:SS.ffffff UTC' or RFC 3339"
        ) from None
    if moment > latest:
        raise Rejected("timestamp", "is in the future (more than 5 minutes ahead of the server)")
    return moment


def _text(
    context: dict[str, Any], name: str, *, required: bool = False, limit: int = MAX_TEXT
) -> str | None:
    value = context.get(name)
    if value is None or value == "":
        if required:
            raise Rejected(f"context.{name}", "is required")
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise Rejected(f"context.{name}", "must be a string")
    if len(value) > limit or "\x00" in value:
        raise Rejected(f"context.{name}", f"must be at most {limit} characters")
    return value


def _number(context: dict[str, Any], name: str, *, required: bool = False) -> Decimal | int | None:
    value = context.get(name)
    if value is None:
        if required:
            raise Rejected(f"context.{name}", "is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise Rejected(f"context.{name}", "must be a number")
    return value


def _quantity(context: dict[str, Any]) -> int:
    value = _number(context, "ootb_quantity", required=True)
    if value is None or value != int(value) or not 1 <= int(value) <= MAX_QUANTITY:
        raise Rejected("context.ootb_quantity", f"must be a whole number from 1 to {MAX_QUANTITY}")
    return int(value)


def _money(
    context: dict[str, Any], name: str, currency: str, *, required: bool = False
) -> int | None:
    value = _number(context, name, required=required)
    if value is None:
        return None
    try:
        return minor_units(value, currency, f"context.{name}")
    except CompatError as exc:
        raise Rejected(f"context.{name}", exc.message.removeprefix(f"context.{name}: ")) from None


@dataclass(slots=True)  # not frozen: a frozen dataclass costs twice as much to make
class Item:
    """One Optimove event, checked: what it says, in returnstack's terms (never changed)."""

    index: int
    kind: str
    moment: datetime
    customer_id: str | None
    email: str | None
    currency: str | None  # None: a return naming none (record_events takes its order's)
    order_id: str
    product_id: str
    variant_id: str | None
    line_id: str
    quantity: int
    unit_price: int | None  # None only for a refund that names no price
    name: str | None
    category: str | None
    url: str | None
    store: str | None  # None: online
    group_id: str | None = None  # the return's (ootb_return_id) or refund's (ootb_refund_id)
    reason: str | None = None
    refund: int | None = None
    refund_method: str | None = None


def _refund_method(text: str | None) -> str:
    lowered = (text or "").lower()
    for words, method in (
        ("store credit", "store_credit"),
        ("gift", "gift_card"),
        ("cash", "cash"),
        ("exchange", "exchange"),
    ):
        if words in lowered:
            return method
    return "original_payment"


@dataclass
class _Seen:
    """What one request has already checked: the items of an order repeat its time and
    email (not kept beyond the request: an email is personal data)."""

    moments: dict[Any, datetime] = field(default_factory=dict)
    emails: dict[str, str] = field(default_factory=dict)


def _check(index: int, raw: Any, default_currency: str, latest: datetime, seen: _Seen) -> Item:
    if not isinstance(raw, dict):
        raise Rejected("", "an event must be an object")
    for name in ("tenant", "event", "timestamp", "context"):
        if name not in raw:
            raise Rejected(name, "is required")
    if isinstance(raw["tenant"], bool) or not isinstance(raw["tenant"], int | Decimal):
        raise Rejected("tenant", "must be a number")
    kind = raw["event"]
    if kind not in (ORDER_COMPLETED, PRODUCT_RETURN, PRODUCT_REFUND):
        raise Rejected("event", f"must be {ORDER_COMPLETED}, {PRODUCT_RETURN} or {PRODUCT_REFUND}")
    stamp = raw["timestamp"]
    moment = seen.moments.get(stamp) if isinstance(stamp, str) else None
    if moment is None:
        moment = _timestamp(stamp, latest)
        seen.moments[stamp] = moment
    envelope = {"customer": raw.get("customer"), "visitor": raw.get("visitor")}
    customer = _text(envelope, "customer", limit=128)
    visitor = _text(envelope, "visitor")
    if customer is None and visitor is None:
        raise Rejected("customer", "customer or visitor is required")
    context = raw["context"]
    if not isinstance(context, dict):
        raise Rejected("context", "must be an object")
    for name, value in context.items():
        if isinstance(value, str) and len(value) > MAX_TEXT:
            raise Rejected(f"context.{name}", f"must be at most {MAX_TEXT} characters")
    given = _text(context, "ootb_currency")
    # Amounts of a return naming no currency are read in the default's decimals.
    currency = (given or default_currency).upper()
    if not is_currency(currency):
        raise Rejected("context.ootb_currency", "is not an ISO 4217 currency code")
    email = _text(context, "ootb_email")
    if email is not None:
        normalized = seen.emails.get(email)
        if normalized is None:
            try:
                normalized = seen.emails[email] = normalize_email(email)
            except ValueError as exc:
                raise Rejected("context.ootb_email", str(exc)) from None
        email = normalized
    order_id = _text(context, "ootb_order_id", required=True, limit=128)
    product_id = _text(context, "ootb_product_id", required=True, limit=128)
    assert order_id is not None
    assert product_id is not None
    refund_only = kind == PRODUCT_REFUND
    # A refund (money back without goods) names no quantity or price: one unit, unpriced.
    quantity = 1 if refund_only and "ootb_quantity" not in context else _quantity(context)
    unit_price = _money(context, "ootb_item_price", currency, required=not refund_only)
    if unit_price is not None and unit_price * quantity > MAX_AMOUNT:
        raise Rejected("context.ootb_item_price", "price x quantity exceeds the largest amount")
    common: dict[str, Any] = dict(
        index=index,
        kind=kind,
        moment=moment,
        customer_id=customer,
        email=email,
        currency=currency if given or kind == ORDER_COMPLETED else None,
        order_id=order_id,
        product_id=product_id,
        variant_id=_text(context, "ootb_variant_id", limit=128)
        or _text(context, "ootb_sku_id", limit=128),
        quantity=quantity,
        unit_price=unit_price,
        name=_text(context, "ootb_item_name"),
        category=_text(context, "ootb_category"),
        url=_text(context, "ootb_url") or _text(context, "ootb_item_page_link"),
    )
    if kind == ORDER_COMPLETED:
        line_id = _text(context, "ootb_item_order_id", limit=128) or product_id
        store_type = _text(context, "ootb_store_type", limit=128)
        _money(context, "ootb_total_pay", currency)  # checked, not stored
        store = None if store_type is None or store_type.lower() == "online" else store_type
        return Item(line_id=line_id, store=store, **common)
    if customer is None and email is None:
        raise Rejected("customer", f"a {kind} needs the customer (or context.ootb_email)")
    if refund_only:
        return Item(
            line_id=product_id,
            store=None,
            group_id=_text(context, "ootb_refund_id", required=True, limit=128),
            reason=_text(context, "ootb_refund_reason"),
            refund=_money(context, "ootb_refund_amount", currency, required=True),
            refund_method=_refund_method(_text(context, "ootb_refund_method")),
            **common,
        )
    total = _money(context, "ootb_total_return_value", currency)
    return Item(
        line_id=product_id,
        store=None,
        group_id=_text(context, "ootb_return_id", required=True, limit=128),
        reason=_text(context, "ootb_reason", required=True),
        refund=total if total is not None else (unit_price or 0) * quantity,
        refund_method=_refund_method(_text(context, "ootb_refund_method")),
        **common,
    )


# --- events into facts ---------------------------------------------------------------------


def _customer(item: Item) -> CustomerRef | None:
    if item.customer_id is None and item.email is None:
        return None  # a visitor: anonymous purchases count for products
    return CustomerRef(id=item.customer_id, email=item.email)


def _purchase(items: list[Item]) -> PurchaseEvent:
    """Lines of one order as one purchase event; the order's details come from its first.
    Validated as one document (one pass of the model's validator, not one per part)."""
    first = items[0]
    event: dict[str, Any] = {
        "type": "purchase",
        "id": event_key(SOURCE, "purchase", first.order_id, sorted(i.line_id for i in items)),
        "timestamp": first.moment,
        "channel": "online" if first.store is None else "offline",
        "order_id": first.order_id,
        "currency": first.currency,
        "customer": None  # a visitor: anonymous purchases count for products
        if first.customer_id is None and first.email is None
        else {"id": first.customer_id, "email": first.email},
        "items": [
            {
                "line_id": item.line_id,
                "product_id": item.product_id,
                "variant_id": item.variant_id,
                "quantity": item.quantity,
                "unit_price": item.unit_price or 0,  # required of order events
                "name": item.name,
                "category": item.category,
                "url": item.url,
            }
            for item in items
        ],
    }
    if first.store is not None:
        event["store"] = {"id": first.store}
    return PurchaseEvent.model_validate(event)


_EXISTING_LINES = (
    "SELECT order_id, line_id FROM order_lines WHERE tenant_id = ? AND order_id IN ({})"
)


def _existing_lines(session: Session, tenant_id: str, order_ids: set[str]) -> set[tuple[str, str]]:
    ordered = sorted(order_ids)
    found: set[tuple[str, str]] = set()
    for start in range(0, len(ordered), 500):
        chunk = ordered[start : start + 500]
        sql = _EXISTING_LINES.format(", ".join("?" * len(chunk)))
        found.update((row[0], row[1]) for row in select_rows(session, sql, [tenant_id, *chunk]))
    return found


@dataclass(frozen=True)
class _Order:
    """The lines of one order in a request (a line repeated in the request once), and the
    purchase event they make, built before the write."""

    lines: list[Item]
    event: PurchaseEvent


@dataclass(frozen=True)
class _Orders:
    """The purchases of a request, made into events before the write (outside the writer,
    which writes one transaction at a time for the whole process): the orders, and the
    indexes of lines repeated within the request (duplicates)."""

    orders: list[_Order]
    repeated: list[int]


def _orders(caller: Caller, items: list[Item]) -> _Orders:
    """Optimove sends one event per item, dedup key order id + line. Verified lines of one
    order in one request become one event (a purchase of several lines, as /v1/events takes
    it). Reported events (no orders to look at) stay one event per item, each its own dedup
    key."""
    if caller.trust is Trust.reported:
        return _Orders([_Order([item], _purchase([item])) for item in items], [])
    seen: set[tuple[str, str]] = set()
    repeated: list[int] = []
    by_order: dict[str, list[Item]] = {}
    for item in items:
        key = (item.order_id, item.line_id)
        if key in seen:
            repeated.append(item.index)
            continue
        seen.add(key)
        by_order.setdefault(item.order_id, []).append(item)
    return _Orders([_Order(lines, _purchase(lines)) for lines in by_order.values()], repeated)


def _purchases(
    session: Session, caller: Caller, purchases: _Orders
) -> tuple[list[tuple[PurchaseEvent, list[int]]], list[int]]:
    """Purchase events, and the indexes of items that are duplicates already: those repeated
    in the request, and (verified) the lines the order already has; an order some of whose
    lines are recorded becomes the event of the others."""
    duplicates = list(purchases.repeated)
    if caller.trust is Trust.reported:
        return [(order.event, [order.lines[0].index]) for order in purchases.orders], duplicates
    existing = _existing_lines(
        session, caller.tenant_id, {order.lines[0].order_id for order in purchases.orders}
    )
    events = []
    for order in purchases.orders:
        new = [item for item in order.lines if (item.order_id, item.line_id) not in existing]
        if len(new) < len(order.lines):
            duplicates.extend(
                item.index for item in order.lines if (item.order_id, item.line_id) in existing
            )
        if not new:
            continue
        event = order.event if len(new) == len(order.lines) else _purchase(new)
        events.append((event, [item.index for item in new]))
    return events, duplicates


def _return(items: list[Item], event_id: str, *, refunded_before: int = 0) -> ReturnEvent:
    first = items[0]
    refund = sum(item.refund or 0 for item in items)
    if refunded_before + refund > MAX_AMOUNT:
        name = "ootb_refund_amount" if first.kind == PRODUCT_REFUND else "ootb_total_return_value"
        raise Rejected(f"context.{name}", "the return exceeds the largest amount")
    return ReturnEvent(
        type="return",
        id=event_id,
        timestamp=max(item.moment for item in items),
        channel="online",
        order_id=first.order_id,
        currency=next((item.currency for item in items if item.currency), None),
        customer=_customer(first),
        items=[
            ReturnItem(
                product_id=item.product_id,
                variant_id=item.variant_id,
                quantity=item.quantity,
                reason=item.reason,
                unit_price=item.unit_price,
            )
            for item in items
        ],
        refund=Refund(amount=refund, method=first.refund_method),
    )


def _word(kind: str) -> str:
    return "refund" if kind == PRODUCT_REFUND else "return"


@dataclass
class _Returns:
    """Return and refund events as facts: events, the options of each, and the indexes of
    items that were duplicates or did not fit their return."""

    facts: list[tuple[ReturnEvent, list[int]]]
    options: dict[str, ReturnOptions]
    duplicates: list[int]
    rejected: list[dict[str, Any]]


def _reported_returns(items: list[Item]) -> _Returns:
    """A publishable key's returns: signals, one event per item, dedup key return id +
    product id (no returns to add to)."""
    facts = [
        (_return([item], event_key(SOURCE, "return", item.group_id, item.product_id)), [item.index])
        for item in items
    ]
    return _Returns(facts, {}, [], [])


def _mismatch(item: Item, like: Item | RecordedSummary, group: str) -> str | None:
    """Why an item cannot join its return: one return is of one order, customer, currency."""
    orders = like.order_ids if isinstance(like, RecordedSummary) else {like.order_id}
    if item.order_id not in orders:
        return f"context.ootb_order_id: {group} is of order {min(orders)!r}"
    if item.customer_id != like.customer_id or (
        item.email is not None and like.email is not None and item.email != like.email
    ):
        return f"customer: {group} is of another customer"
    if item.currency and like.currency and item.currency != like.currency:
        return f"context.ootb_currency: {group} is in {like.currency}"
    return None


def _verified_returns(session: Session, caller: Caller, items: list[Item]) -> _Returns:
    """Optimove sends one event per returned (or refunded) item, and the items of one return
    may come in several requests: they make one return, found by the event that recorded
    it. Dedup key: return (or refund) id + product id."""
    groups: dict[tuple[str, str], list[Item]] = {}
    for item in items:
        assert item.group_id is not None
        groups.setdefault((item.kind, item.group_id), []).append(item)
    first_event = {key: event_key(SOURCE, _word(key[0]), key[1]) for key in groups}
    # Two requests with items of one new return: the second waits, then adds to it.
    lock_names(session, [f"{caller.tenant_id}:{event_id}" for event_id in first_event.values()])
    earlier = recorded_returns_by_event(
        session, tenant_id=caller.tenant_id, client_ids=list(first_event.values())
    )
    result = _Returns([], {}, [], [])
    for (kind, group_id), group in groups.items():
        found = earlier.get(first_event[(kind, group_id)])
        like: Item | RecordedSummary = found or group[0]
        products = set(found.product_ids) if found else set()
        kept = []
        for item in group:
            why = _mismatch(item, like, f"{_word(kind)} {group_id!r}")
            if why is not None:
                result.rejected.append({"index": item.index, "message": why})
            elif item.product_id in products:
                result.duplicates.append(item.index)
            else:
                products.add(item.product_id)
                kept.append(item)
        if not kept:
            continue
        goods_back = kind == PRODUCT_RETURN
        try:
            if found is None:
                event = _return(kept, first_event[(kind, group_id)])
                options = ReturnOptions(goods_back=goods_back)
            else:
                later = event_key(
                    SOURCE, _word(kind), group_id, sorted(item.product_id for item in kept)
                )
                event = _return(kept, later, refunded_before=found.refund_amount)
                options = ReturnOptions(adds_to=found.id, goods_back=goods_back)
        except Rejected as exc:
            result.rejected.extend({"index": item.index, "message": str(exc)} for item in kept)
            continue
        result.facts.append((event, [item.index for item in kept]))
        result.options[event.id] = options
    return result


def _known(session: Session, caller: Caller, ids: list[str]) -> set[str]:
    """Which of these event ids were recorded before (to count duplicates per event)."""
    model = Event if caller.trust == Trust.verified else ReportedEvent
    found: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        found.update(
            session.scalars(
                select(model.client_id).where(
                    model.tenant_id == caller.tenant_id, model.client_id.in_(chunk)
                )
            )
        )
    return found


def _write(
    session: Session, caller: Caller, orders: _Orders, returned: list[Item]
) -> tuple[int, int, list[dict[str, Any]]]:
    """Record the valid items: accepted, duplicates, and the items rejected as not fitting
    their return. Changes nothing else (the writer may run it again, alone)."""
    # Optimove sends one event per item: the lines of an order make one order, the items of
    # one return one return (across requests too).
    purchases, duplicate_lines = _purchases(session, caller, orders)
    facts: list[tuple[PurchaseEvent | ReturnEvent, list[int]]] = list(purchases)
    returns = (
        _verified_returns(session, caller, returned)
        if caller.trust is Trust.verified
        else _reported_returns(returned)
    )
    facts.extend(returns.facts)

    accepted, duplicates = 0, len(duplicate_lines) + len(returns.duplicates)
    if facts:
        # Verified purchases are new by construction (their lines were not there): only
        # returns and reported events are looked up in their ledger, to be counted.
        looked_up = {
            event.id
            for event, _ in facts
            if caller.trust is Trust.reported or isinstance(event, ReturnEvent)
        }
        known = _known(session, caller, sorted(looked_up))
        seen: set[str] = set()
        for event, indexes in facts:
            if event.id in known or event.id in seen:
                duplicates += len(indexes)
            else:
                accepted += len(indexes)
            seen.add(event.id)
        events = [event for event, _ in facts]
        record(session, caller, events, source=SOURCE, return_options=returns.options)
    return accepted, duplicates, returns.rejected


def _ingest(request: Request, body: bytes) -> Response:
    caller = _caller(request)
    document = load_json(body)
    raw_events = document if isinstance(document, list) else [document]
    if not raw_events:
        raise bad_request("events", "must not be empty")
    if len(raw_events) > MAX_EVENTS:
        raise bad_request(
            "events", f"at most {MAX_EVENTS} events per request, not {len(raw_events)}"
        )

    rejected: list[dict[str, Any]] = []
    items: list[Item] = []
    latest = datetime.now(UTC) + FUTURE_TOLERANCE
    seen = _Seen()
    for index, raw in enumerate(raw_events):
        try:
            item = _check(index, raw, caller.principal.default_currency, latest, seen)
        except Rejected as exc:
            rejected.append({"index": index, "message": str(exc).removeprefix(": ")})
            continue
        if item.kind == PRODUCT_REFUND and caller.trust is Trust.reported:
            message = "event: ootb_product_refund (money back) needs a secret key"
            rejected.append({"index": index, "message": message})
            continue
        items.append(item)

    # Through the process's event writer (group commit, as POST /v1/events): what is already
    # recorded is read in the transaction that records the rest, committed before the answer.
    accepted, duplicates = 0, 0
    if items:
        orders = _orders(caller, [item for item in items if item.kind == ORDER_COMPLETED])
        returned = [item for item in items if item.kind != ORDER_COMPLETED]
        accepted, duplicates, misfits = write(
            request,
            lambda session: _write(session, caller, orders, returned),
            units=len(items),
        )
        rejected.extend(misfits)
    rejected.sort(key=lambda entry: entry["index"])
    payload = {"accepted": accepted, "duplicates": duplicates, "rejected": rejected}
    return Response(orjson.dumps(payload), media_type="application/json")


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": '{"status", "error", "message"}'},
    401: {"description": '{"status", "error", "message"}'},
}


@router.post(
    "/optimove/events",
    response_model=OptimoveEventsResult,
    openapi_extra=BODY_DOC,
    responses=ERRORS,
)
def optimove_events(request: Request, body: Annotated[bytes, Depends(raw_body)]) -> Response:
    """One OOTB event or an array of up to 1,000: orders completed and product returns,
    one event per item. Valid events are written; invalid ones are listed by index."""
    return _ingest(request, body)


@router.post(
    "/optimove/events/batch",
    response_model=OptimoveEventsResult,
    openapi_extra=BODY_DOC,
    responses=ERRORS,
)
def optimove_events_batch(request: Request, body: Annotated[bytes, Depends(raw_body)]) -> Response:
    """The same as /optimove/events, for batches."""
    return _ingest(request, body)
