"""Sailthru (Marigold Engage) SailthruPurchase and Return APIs (seed 002; COMPAT.md "Sailthru").

Transport as Sailthru's clients send it: a form with `api_key`, `sig`, `format=json` and
`json=<the parameters as a JSON string>`, where `sig` is the hex MD5 of the tenant's signing
secret followed by the sorted values of the other fields. A valid signature proves the
secret, so what it sends is verified. A plain JSON body with `Authorization: Bearer <key>`
is accepted too (a secret key: verified; a publishable key: reported).
"""

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from fractions import Fraction
from typing import Annotated, Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from fastapi import Depends, Request
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    ValidationError,
)
from pydantic import Strict as StrictType
from sqlalchemy.orm import Session
from starlette.responses import Response

from returnstack.compat.carts import close_cart, keep_cart
from returnstack.compat.common import (
    Caller,
    CompatError,
    bad_request,
    check_time,
    event_key,
    find_key,
    load_json,
    record,
    vendor_router,
    write,
)
from returnstack.events.schemas import (
    CustomerRef,
    PurchaseEvent,
    PurchaseItem,
    Refund,
    ReturnEvent,
    ReturnItem,
    Trust,
)
from returnstack.events.service import RecordResult
from returnstack.kit.deps import read_session
from returnstack.kit.errors import format_path
from returnstack.kit.ids import ulid
from returnstack.kit.openapi import json_body, raw_body
from returnstack.kit.ratelimit import remaining_tokens
from returnstack.kit.responses import JSONResponse
from returnstack.kit.timefmt import rfc3339
from returnstack.kit.types import MAX_AMOUNT, MAX_QUANTITY, CurrencyCode, NoNul, normalize_email
from returnstack.tenants.auth import rate_limit_bucket
from returnstack.tenants.service import valid_signing_secrets

SOURCE = "sailthru"
MAX_ITEMS = 500
UNKNOWN_ORDER = "unknown"  # a returned item that names no order_id

# Sailthru's error numbers (its API documentation, "Error Codes").
MISSING_PARAMETER = 2
INVALID_API_KEY = 3
AUTHENTICATION_FAILED = 5
INVALID_EMAIL = 11
INVALID_TIME = 18
OTHER_ERROR = 99
_DEFAULT_CODES = {400: OTHER_ERROR, 401: AUTHENTICATION_FAILED}  # 429: no number documented


def render_error(status_code: int, message: str, code: int | None) -> Response:
    number = code if code is not None else _DEFAULT_CODES.get(status_code, OTHER_ERROR)
    return JSONResponse({"error": number, "errormsg": message}, status_code=status_code)


def rate_limit_headers(request: Request, response: Response) -> Response:
    """Sailthru's clients read the rate-limit headers on every answer."""
    settings = request.app.state.settings
    limit, remaining, reset_in = settings.rate_limit_burst, settings.rate_limit_burst, 0.0
    principal = getattr(request.state, "principal", None)
    if principal is not None:
        tokens = remaining_tokens(request, rate_limit_bucket(request, principal))
        if tokens is not None:
            limit, remaining, reset_in = tokens
    response.headers["X-Rate-Limit-Limit"] = str(limit)
    response.headers["X-Rate-Limit-Remaining"] = str(remaining)
    response.headers["X-Rate-Limit-Reset"] = str(int(datetime.now(UTC).timestamp() + reset_in))
    return response


router = vendor_router(
    "sailthru",
    "compat: Sailthru",
    lambda path: path in ("/purchase", "/return"),
    render_error,
    rate_limit_headers,
)


# --- request shapes -----------------------------------------------------------------------


class _SailthruLenient(BaseModel):
    # Sailthru's APIs take many optional fields (vars, tags, images, tenders, ...): they are
    # accepted and not stored.
    model_config = ConfigDict(extra="allow", frozen=True)


Text = Annotated[str, StringConstraints(min_length=1, max_length=500), NoNul]
Id = Annotated[str | StrictInt, Field(union_mode="left_to_right")]  # a boolean is no id
Cents = Annotated[int, StrictType(), Field(ge=0, le=MAX_AMOUNT)]
Qty = Annotated[int, StrictType(), Field(ge=1, le=MAX_QUANTITY)]
Url = Annotated[str, StringConstraints(min_length=1, max_length=2048), NoNul]
Email = Annotated[str, StringConstraints(max_length=320), NoNul, AfterValidator(normalize_email)]


class SailthruPurchaseLine(_SailthruLenient):
    qty: Qty
    title: Text
    price: Cents = Field(description="Integer cents, per unit.")
    id: Id
    url: Url


class SailthruAdjustment(_SailthruLenient):
    title: Text
    price: Annotated[int, StrictType(), Field(ge=-MAX_AMOUNT, le=MAX_AMOUNT)] = Field(
        description="Integer cents; negative for a discount."
    )


class SailthruPurchaseKeys(_SailthruLenient):
    extid: Id | None = None


class SailthruPurchase(_SailthruLenient):
    email: Email
    items: list[SailthruPurchaseLine] = Field(min_length=1, max_length=MAX_ITEMS)
    date: str | int | None = Field(
        None, description="'2026-02-14 09:30:00 America/New_York', RFC 3339; default now."
    )
    incomplete: int | str | bool | None = None
    adjustments: list[SailthruAdjustment] | None = None
    purchase_keys: SailthruPurchaseKeys | None = None
    extid: Id | None = None
    currency: CurrencyCode | None = None


class SailthruReturnLine(_SailthruLenient):
    qty: Qty
    price: Cents = Field(description="Integer cents, per unit.")
    url: Url
    id: Id | None = None
    order_id: Id | None = None


class SailthruReturnRequest(_SailthruLenient):
    email: Email
    items: list[SailthruReturnLine] = Field(min_length=1, max_length=MAX_ITEMS)
    currency: CurrencyCode | None = None


# --- transport and signature --------------------------------------------------------------


def signature(values: list[str], secret: str) -> str:
    """As Sailthru's clients sign: MD5 of the secret then the sorted parameter values."""
    return hashlib.md5((secret + "".join(sorted(values))).encode()).hexdigest()


@dataclass(frozen=True)
class Incoming:
    caller: Caller
    params: dict[str, Any]


def _form(body: bytes) -> list[tuple[str, str]]:
    try:
        return parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise CompatError(400, "the form holds invalid UTF-8", code=6) from None


def _incoming(request: Request, body: bytes) -> Incoming:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if request.headers.get("authorization") and content_type != "application/x-www-form-urlencoded":
        return _bearer_request(request, body)
    fields = _form(body)
    if not fields and request.url.query:
        fields = parse_qsl(request.url.query, keep_blank_values=True)
    form = dict(fields)
    api_key = form.get("api_key")
    if not api_key:
        raise CompatError(401, "api_key: missing", code=MISSING_PARAMETER)
    principal = find_key(request, api_key)
    if principal is None:
        raise CompatError(401, "api_key: unknown or revoked", code=INVALID_API_KEY)
    sig = form.get("sig")
    if not sig:
        raise CompatError(401, "sig: missing", code=MISSING_PARAMETER)
    values = [value for name, value in fields if name != "sig"]
    with read_session(request) as reader:
        # The current secret, and the one it replaced for 24 h after `tenants rotate-secret`.
        secrets = valid_signing_secrets(reader, tenant_id=principal.tenant_id)
    expected = [signature(values, secret) for secret in secrets]
    if not any(hmac.compare_digest(sig.lower(), candidate) for candidate in expected):
        raise CompatError(
            401,
            "sig: does not match the signing secret and the parameters",
            code=AUTHENTICATION_FAILED,
        )
    raw = form.get("json")
    if raw is None:
        raise bad_request("json", "is required (format=json)", code=MISSING_PARAMETER)
    if form.get("format", "json") != "json":
        raise bad_request("format", "must be json")
    params = load_json(raw)
    if not isinstance(params, dict):
        raise bad_request("json", "must be a JSON object")
    return Incoming(Caller(principal, Trust.verified), params)


def _bearer_request(request: Request, body: bytes) -> Incoming:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    principal = find_key(request, token.strip()) if scheme.lower() == "bearer" else None
    if principal is None:
        raise CompatError(401, "Authorization: unknown or revoked key", code=INVALID_API_KEY)
    params = load_json(body)
    if not isinstance(params, dict):
        raise bad_request(None, "the body must be a JSON object")
    trust = Trust.verified if principal.kind == "secret" else Trust.reported
    return Incoming(Caller(principal, trust), params)


def _validate(model: type[BaseModel], params: dict[str, Any]) -> Any:
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        error = exc.errors()[0]
        path = format_path(tuple(error.get("loc", ())))
        # A union's member names trail the path ("id.str"); the field is what matters.
        path = re.sub(r"\.(str|int)$", "", path)
        message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
        code = MISSING_PARAMETER if error.get("type") == "missing" else OTHER_ERROR
        if path == "email" and code != MISSING_PARAMETER:
            code = INVALID_EMAIL
        raise bad_request(path or None, message, code=code) from None


def _client_id(value: str | int, path: str) -> str:
    text = str(value)
    if not 1 <= len(text) <= 128 or "\x00" in text:
        raise bad_request(path, "must be 1-128 characters")
    return text


# --- dates --------------------------------------------------------------------------------

_DATE_TIME = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})(?:[ T](?P<time>\d{1,2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?))?"
    r"\s*(?P<zone>Z|UTC|GMT|[+-]\d{2}:?\d{2}|[A-Za-z_]+(?:/[A-Za-z0-9_+-]+)*)?$"
)


def _zone(name: str | None) -> tzinfo:
    if name is None or name.upper() in ("Z", "UTC", "GMT"):
        return UTC
    if name[0] in "+-":
        digits = name[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:])
        if hours > 23 or minutes > 59:  # timezone() takes less than a day (+99:99 was a 500)
            raise bad_request("date", f"no such offset {name!r}", code=INVALID_TIME)
        offset = timedelta(hours=hours, minutes=minutes)
        return timezone(offset if name[0] == "+" else -offset)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise bad_request("date", f"unknown time zone {name!r}", code=INVALID_TIME) from None


def parse_date(value: str | int | None) -> datetime:
    """Sailthru's `date`: Unix seconds, RFC 3339, or `YYYY-MM-DD[ HH:MM[:SS]][ zone]` with a
    zone name (America/New_York), an offset or UTC; no zone means UTC. Default: now."""
    if value is None or value == "":
        return datetime.now(UTC)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return check_time(datetime.fromtimestamp(value, UTC), "date")
        except (OverflowError, ValueError, OSError):
            raise bad_request("date", "is out of range", code=INVALID_TIME) from None
    match = _DATE_TIME.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise bad_request(
            "date", "must look like 2026-02-14 09:30:00 America/New_York", code=INVALID_TIME
        )
    clock_text = match["time"] or ""
    if clock_text[1:2] == ":":  # 9:30:00
        clock_text = "0" + clock_text
    try:
        day = date.fromisoformat(match["date"])
        clock = time.fromisoformat(clock_text) if clock_text else time()
    except ValueError:
        raise bad_request("date", "is not a valid date and time", code=INVALID_TIME) from None
    moment = datetime.combine(day, clock, tzinfo=_zone(match["zone"]))
    try:
        return check_time(moment.astimezone(UTC), "date")
    except OverflowError:
        raise bad_request("date", "is out of range", code=INVALID_TIME) from None


# --- money --------------------------------------------------------------------------------


def spread(lines: list[tuple[int, int]], adjustment: int) -> list[list[tuple[int, int]]]:
    """Spread an order-level adjustment (cents; negative for a discount) over lines of
    (quantity, unit price) in proportion to their value, exactly: largest remainder over the
    units, so no cent is lost and units of one line differ by at most one cent. Returns each
    line's (quantity, unit price) parts (one part, or two when its units differ)."""
    if adjustment == 0:
        return [[line] for line in lines]
    sign, amount = (1, adjustment) if adjustment > 0 else (-1, -adjustment)
    weights = [price for _, price in lines]
    if sum(qty * price for qty, price in lines) == 0:
        weights = [1 for _ in lines]  # nothing has a price: spread per unit
    total = sum(qty * weight for (qty, _), weight in zip(lines, weights, strict=True))
    shares = [Fraction(amount * weight, total) for weight in weights]
    base = [share.numerator // share.denominator for share in shares]
    left = amount - sum(qty * cents for (qty, _), cents in zip(lines, base, strict=True))
    extra = [0] * len(lines)
    by_remainder = sorted(range(len(lines)), key=lambda i: (-(shares[i] - base[i]), i))
    for i in by_remainder:
        if left <= 0:
            break
        if shares[i] == base[i]:
            continue
        extra[i] = min(lines[i][0], left)
        left -= extra[i]
    parts = []
    for (qty, price), cents, more in zip(lines, base, extra, strict=True):
        low = price + sign * cents
        high = price + sign * (cents + 1)
        line_parts = [(qty - more, low), (more, high)] if more else [(qty, low)]
        parts.append([(units, unit) for units, unit in line_parts if units])
    return parts


# --- translation -------------------------------------------------------------------------


def _incomplete(value: int | str | bool | None) -> bool:
    if value in (None, 0, "0", "", False):
        return False
    if value in (1, "1", True):
        return True
    raise bad_request("incomplete", "must be 0 or 1")


def _purchase_event(
    data: SailthruPurchase, default_currency: str
) -> tuple[PurchaseEvent, str | None]:
    currency = data.currency or default_currency
    extid_value = data.purchase_keys.extid if data.purchase_keys else None
    extid_value = extid_value if extid_value is not None else data.extid
    extid = None if extid_value is None else _client_id(extid_value, "purchase_keys.extid")
    moment = parse_date(data.date)
    lines = [(item.qty, item.price) for item in data.items]
    adjustment = sum(adj.price for adj in data.adjustments or [])
    value = sum(qty * price for qty, price in lines)
    if value + adjustment < 0:
        raise bad_request("adjustments", f"take off more than the items' value ({value} cents)")
    if value + adjustment > MAX_AMOUNT:
        raise bad_request("items", "the purchase's value exceeds the largest amount")
    items = []
    for position, (item, parts) in enumerate(
        zip(data.items, spread(lines, adjustment), strict=True), 1
    ):
        product_id = _client_id(item.id, f"items[{position - 1}].id")
        for part, (qty, unit_price) in enumerate(parts):
            items.append(
                PurchaseItem(
                    line_id=str(position) if part == 0 else f"{position}.{part + 1}",
                    product_id=product_id,
                    quantity=qty,
                    unit_price=unit_price,
                    name=item.title,
                    url=item.url,
                )
            )
    order_id = extid or f"st_{ulid()}"
    event = PurchaseEvent(
        type="purchase",
        id=event_key(SOURCE, "purchase", extid) if extid else event_key(SOURCE, order_id),
        timestamp=moment,
        channel="online",
        order_id=order_id,
        currency=currency,
        customer=CustomerRef(email=data.email),
        items=items,
    )
    return event, extid


def _return_events(data: SailthruReturnRequest, default_currency: str) -> list[ReturnEvent]:
    """One return per order named by the items (Sailthru posts several orders at once)."""
    currency = data.currency  # None: each return takes its order's (record_events)
    groups: dict[str, list[ReturnItem]] = {}
    for index, item in enumerate(data.items):
        order_id = (
            UNKNOWN_ORDER
            if item.order_id is None
            else _client_id(item.order_id, f"items[{index}].order_id")
        )
        if item.id is not None:
            product_id = _client_id(item.id, f"items[{index}].id")
        elif len(item.url) <= 128:
            product_id = item.url
        else:
            raise bad_request(f"items[{index}].id", "is required when url is over 128 characters")
        groups.setdefault(order_id, []).append(
            ReturnItem(product_id=product_id, quantity=item.qty, unit_price=item.price)
        )
    now = datetime.now(UTC)
    events = []
    for order_id, items in groups.items():
        refund = sum(item.quantity * (item.unit_price or 0) for item in items)
        if refund > MAX_AMOUNT:
            raise bad_request("items", "the return's value exceeds the largest amount")
        events.append(
            ReturnEvent(
                type="return",
                # Sailthru names no key for returns: each request is a return of its own.
                id=event_key(SOURCE, "return", ulid(), order_id),
                timestamp=now,
                channel="online",
                order_id=order_id,
                currency=currency,
                customer=CustomerRef(email=data.email),
                items=items,
                refund=Refund(amount=refund, method="original_payment"),
            )
        )
    return events


def _ok(payload: dict[str, Any]) -> Response:
    return Response(orjson.dumps({"ok": True, **payload}), media_type="application/json")


def _item_view(item: PurchaseItem | ReturnItem) -> dict[str, Any]:
    return {"id": item.product_id, "qty": item.quantity, "price": item.unit_price}


def _cart_item(item: PurchaseItem) -> dict[str, Any]:
    return {
        "id": item.product_id,
        "title": item.name,
        "url": item.url,
        "qty": item.quantity,
        "price": item.unit_price,
    }


POST_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "api_key": {"type": "string"},
                        "sig": {"type": "string"},
                        "format": {"type": "string", "enum": ["json"]},
                        "json": {"type": "string"},
                    },
                    "required": ["api_key", "sig", "json"],
                }
            }
        },
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": '{"error": <int>, "errormsg": "..."}'},
    401: {"description": '{"error": <int>, "errormsg": "..."}'},
}


def _with_json(model: type[BaseModel]) -> dict[str, Any]:
    document = json_body(model)
    document["requestBody"]["content"].update(POST_DOC["requestBody"]["content"])
    return document


@router.post("/purchase", openapi_extra=_with_json(SailthruPurchase), responses=ERRORS)
def purchase(request: Request, body: Annotated[bytes, Depends(raw_body)]) -> Response:
    """A purchase: `email`, `items` (`qty`, `title`, `price` in cents per unit, `id`,
    `url`), optional `date`, `adjustments` (spread over the lines exactly), and
    `purchase_keys.extid` (or `extid`), the order id and the dedup key. `incomplete: 1`
    marks a cart: stored (one per email, replaced by a newer cart, removed by a completed
    purchase), never counted as revenue."""
    incoming = _incoming(request, body)
    data = _validate(SailthruPurchase, incoming.params)
    cart = _incomplete(data.incomplete)
    event, extid = _purchase_event(data, incoming.caller.principal.default_currency)
    view = {
        "email": data.email,
        "extid": extid,
        "order_id": event.order_id,
        "time": rfc3339(event.timestamp),
        "currency": event.currency,
        "price": sum(item.quantity * item.unit_price for item in event.items),
        "qty": sum(item.quantity for item in event.items),
        "items": [_item_view(item) for item in event.items],
        "incomplete": int(cart),
    }
    caller = incoming.caller
    if cart:
        # A cart names a person: only a verified caller stores one (a publishable key's
        # requests keep no customer data, API.md section 2).
        stored = caller.trust is Trust.verified
        if stored:
            items = [_cart_item(item) for item in event.items]

            def store(session: Session) -> None:
                keep_cart(
                    session,
                    tenant_id=caller.tenant_id,
                    source=SOURCE,
                    email=data.email,
                    extid=extid,
                    currency=event.currency or caller.principal.default_currency,
                    items=items,
                    carted_at=event.timestamp,
                )

            write(request, store, units=1)
        return _ok({"purchase": view | {"recorded": False, "stored": stored}})

    def purchased(session: Session) -> RecordResult:
        result = record(session, caller, [event], source=SOURCE)
        if caller.trust is Trust.verified:
            close_cart(session, tenant_id=caller.tenant_id, email=data.email)
        return result

    # Through the process's event writer (group commit), as POST /v1/events.
    result = write(request, purchased, units=1)
    return _ok({"purchase": view | {"id": result.ids[0], "duplicate": result.duplicates > 0}})


@router.post("/return", openapi_extra=_with_json(SailthruReturnRequest), responses=ERRORS)
def sailthru_return(request: Request, body: Annotated[bytes, Depends(raw_body)]) -> Response:
    """A return: `email` and `items` (`qty`, `price` in cents per unit, `url`, optional `id`
    and `order_id`). Recorded closed and refunded `qty x price` per item: it lowers the
    customer's net revenue, not the gross."""
    incoming = _incoming(request, body)
    data = _validate(SailthruReturnRequest, incoming.params)
    events = _return_events(data, incoming.caller.principal.default_currency)
    result = write(
        request,
        lambda session: record(session, incoming.caller, events, source=SOURCE),
        units=len(events),
    )
    return _ok(
        {
            "return": {
                "email": data.email,
                "time": rfc3339(events[0].timestamp),
                "price": sum(event.refund.amount for event in events if event.refund),
                "qty": sum(item.quantity for event in events for item in event.items),
                "returns": [
                    {
                        "id": event_id,
                        "order_id": event.order_id,
                        "price": event.refund.amount if event.refund else 0,
                        "items": [_item_view(item) for item in event.items],
                    }
                    for event_id, event in zip(result.ids, events, strict=True)
                ],
            }
        }
    )
