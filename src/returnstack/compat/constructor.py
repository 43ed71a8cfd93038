"""Constructor.io behavioral actions (seeds 000, 001; COMPAT.md "Constructor").

POST /v1/offline_behavioral_actions (mixed batches of in-store purchases and returns) and
POST /v2/behavioral_action/purchase | return (online, as Constructor's own clients send
them). The key (`?key=`) names the tenant; the secret token (HTTP Basic `token:` or
`x-cnstrc-token`) makes the actions verified facts, without it they are reported signals.
"""

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import Depends, Query, Request
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic import Strict as StrictType
from starlette.responses import Response

from returnstack.compat.common import (
    Caller,
    bad_request,
    check_time,
    event_key,
    find_key,
    load_json,
    minor_units,
    record,
    unauthorized,
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
    StoreRef,
    Trust,
)
from returnstack.kit.errors import format_path
from returnstack.kit.openapi import json_body, raw_body
from returnstack.kit.responses import JSONResponse
from returnstack.kit.types import MAX_AMOUNT, MAX_QUANTITY, CurrencyCode, NoNul

SOURCE = "constructor"
MAX_ACTIONS = 100
MAX_ITEMS = 500
MAX_ONLINE_ITEMS = 100
MILLISECONDS_ABOVE = 10**11  # a `_dt` above this is milliseconds (Constructor's JS clients)
UNKNOWN_STORE = "unknown"  # an in-store action that names no store

Text250 = Annotated[str, StringConstraints(min_length=1, max_length=250), NoNul]
# Ids become order, product and store ids, which are at most 128 characters here.
Id = Annotated[str, StringConstraints(min_length=1, max_length=128), NoNul]
Coordinate = Annotated[str, StringConstraints(min_length=1, max_length=20), NoNul]
# Strict members: a boolean is no price (JSON numbers arrive as int or exact Decimal).
Price = Decimal | StrictInt | StrictStr
Count = Annotated[int, StrictType(), Field(ge=1, le=MAX_QUANTITY)]
Timestamp = Annotated[int, StrictType(), Field(ge=0, le=10**14)]


def render_error(status_code: int, message: str, _code: int | None) -> Response:
    return JSONResponse({"message": message}, status_code=status_code)


router = vendor_router(
    "constructor",
    "compat: Constructor",
    lambda path: (
        path == "/v1/offline_behavioral_actions" or path.startswith("/v2/behavioral_action/")
    ),
    render_error,
)


class _ConstructorStrict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConstructorItem(_ConstructorStrict):
    item_id: Id | None = None
    item_name: Text250 | None = None
    variation_id: Id | None = None
    price: Price | None = Field(None, description="Currency units: 34.99 (a numeric string too).")
    count: Count = 1

    @model_validator(mode="after")
    def _named(self) -> "ConstructorItem":
        if self.item_id is None and self.item_name is None:
            raise ValueError("item_id or item_name is required")
        if self.item_id is None and self.item_name is not None and len(self.item_name) > 128:
            raise ValueError("item_name is the product id when item_id is missing: 1-128 chars")
        return self

    @property
    def product_id(self) -> str:
        return self.item_id or self.item_name or ""


class _ConstructorCommon(_ConstructorStrict):
    currency: CurrencyCode | None = Field(None, description="Default: the tenant's currency.")


class ConstructorOfflinePurchase(_ConstructorCommon):
    dt: Timestamp = Field(alias="_dt", description="Unix seconds (milliseconds above 10^11).")
    ui: Id | None = Field(None, description="Optional: anonymous purchases count for products.")
    order_id: Id | None = None
    store_id: Id | None = None
    lat: Coordinate | None = None
    lon: Coordinate | None = None
    revenue: Price | None = None
    items: list[ConstructorItem] = Field(min_length=1, max_length=MAX_ITEMS)


class _ConstructorReturnFields(_ConstructorCommon):
    order_id: Id
    items_returned: list[ConstructorItem] = Field(min_length=1, max_length=MAX_ITEMS)
    items_kept: list[ConstructorItem] | None = Field(None, min_length=1, max_length=MAX_ITEMS)
    items_cross_sold: list[ConstructorItem] | None = Field(None, min_length=1, max_length=MAX_ITEMS)
    revenue: Price | None = None
    refund: Price | None = Field(None, description="Default: price x count of items_returned.")
    return_expenses: Price | None = None
    return_shipping_cost: Price | None = None
    return_reason: Annotated[str, StringConstraints(max_length=500), NoNul] | None = None
    return_type: Literal["full", "partial"] | None = None
    return_preference: Literal["refund", "replacement"] | None = None
    lat: Coordinate | None = None
    lon: Coordinate | None = None
    return_drop_off: Id | None = None


class ConstructorOfflineReturn(_ConstructorReturnFields):
    dt: Timestamp = Field(alias="_dt")
    ui: Id = Field(description="The customer: a return belongs to someone.")


class ConstructorOfflineAction(_ConstructorStrict):
    action: Literal["purchase", "return"]
    data: ConstructorOfflinePurchase | ConstructorOfflineReturn


class ConstructorOfflineBatch(_ConstructorStrict):
    """POST /v1/offline_behavioral_actions (documentation; validated action by action)."""

    behavioral_actions: list[ConstructorOfflineAction] = Field(min_length=1, max_length=MAX_ACTIONS)


# The parameters every Constructor client sends, in the query and (Node client) the body.
COMMON_PARAMETERS = frozenset(
    {"key", "c", "i", "s", "ui", "us", "_dt", "beacon", "origin_referrer", "section"}
    | {"analytics_tags", "currency"}
)


class ConstructorOnlinePurchase(_ConstructorStrict):
    order_id: Id | None = None
    revenue: Price | None = None
    items: list[ConstructorItem] = Field(min_length=1, max_length=MAX_ONLINE_ITEMS)


class ConstructorOnlineReturn(_ConstructorReturnFields):
    pass


# --- who is calling ----------------------------------------------------------------------


def _secret_token(request: Request) -> str | None:
    token = request.headers.get("x-cnstrc-token")
    if token:
        return token.strip()
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise unauthorized("The Authorization header is not valid HTTP Basic.") from None
    return decoded.partition(":")[0] or None


def _caller(request: Request, key: str | None) -> Caller:
    """`key` names the tenant; the secret token, when given, must be that tenant's secret key
    (then the actions are verified facts); without it they are reported signals."""
    principal = find_key(request, key)
    if principal is None:
        raise unauthorized(
            "key: missing, unknown or revoked" if key else "key: the API key is required"
        )
    token = _secret_token(request)
    has_credentials = "authorization" in request.headers or "x-cnstrc-token" in request.headers
    if token is None:
        if has_credentials:
            raise unauthorized("The secret token is missing from the credentials.")
        return Caller(principal, Trust.reported)
    secret = find_key(request, token)
    if secret is None or secret.kind != "secret" or secret.tenant_id != principal.tenant_id:
        raise unauthorized("The secret token is unknown, revoked or not this key's.")
    return Caller(secret, Trust.verified)


# --- translation -------------------------------------------------------------------------


def _validate(model: type[BaseModel], raw: Any, prefix: str) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        path = format_path(tuple(error.get("loc", ())), prefix)
        message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
        if error.get("type") == "extra_forbidden":
            message = "unknown field"
        raise bad_request(path or None, message) from None


def _time(dt: int, path: str) -> datetime:
    seconds = Decimal(dt) / 1000 if dt > MILLISECONDS_ABOVE else Decimal(dt)
    try:
        moment = datetime.fromtimestamp(float(seconds), UTC)
    except (OverflowError, ValueError, OSError):
        raise bad_request(path, "is out of range") from None
    return check_time(moment, path)


def _unit_prices(items: list[ConstructorItem], currency: str, path: str) -> list[int]:
    # An item without a price is recorded at 0: its units still count for the product.
    return [
        0
        if item.price is None
        else minor_units(item.price, currency, f"{path}[{i}].price", allow_string=True)
        for i, item in enumerate(items)
    ]


def _line_ids(items: list[ConstructorItem]) -> list[str]:
    """A line per product (and variation), so that purchases merged by order_id add their
    own lines; a product repeated within one action gets a numbered line."""
    seen: dict[str, int] = {}
    ids: list[str] = []
    for item in items:
        key = item.variation_id or item.product_id
        seen[key] = seen.get(key, 0) + 1
        line_id = key if seen[key] == 1 else f"{key}#{seen[key]}"
        ids.append(line_id if len(line_id) <= 128 else f"#{len(ids) + 1}")
    return ids


def _purchase(
    data: ConstructorOfflinePurchase | ConstructorOnlinePurchase,
    *,
    currency: str,
    moment: datetime,
    ui: str | None,
    channel: str,
    store_id: str | None,
    path: str,
) -> PurchaseEvent:
    prices = _unit_prices(data.items, currency, f"{path}items")
    lines = [
        (line_id, item.product_id, item.variation_id, item.count, price)
        for line_id, item, price in zip(_line_ids(data.items), data.items, prices, strict=True)
    ]
    if any(count * price > MAX_AMOUNT for _, _, _, count, price in lines):
        raise bad_request(f"{path}items", "a line's value exceeds the largest amount")
    order_id = data.order_id or event_key("cnstrc-order", ui, moment.isoformat(), store_id, lines)
    return PurchaseEvent(
        type="purchase",
        # An order is recorded once: the same order with the same lines is a duplicate.
        id=event_key(SOURCE, "purchase", order_id, lines),
        timestamp=moment,
        channel=channel,
        store=StoreRef(id=store_id) if channel == "offline" and store_id else None,
        order_id=order_id,
        currency=currency,
        customer=CustomerRef(id=ui) if ui else None,
        items=[
            PurchaseItem(
                line_id=line_id,
                product_id=item.product_id,
                variant_id=item.variation_id,
                quantity=item.count,
                unit_price=price,
                name=item.item_name,
            )
            for (line_id, *_), item, price in zip(lines, data.items, prices, strict=True)
        ],
    )


def _return(
    data: ConstructorOfflineReturn | ConstructorOnlineReturn,
    *,
    currency: str | None,
    default_currency: str,
    moment: datetime,
    ui: str,
    channel: str,
    path: str,
) -> ReturnEvent:
    """`currency` None: the return takes its order's (record_events); its amounts are read
    in the default currency's decimals."""
    given, currency = currency, currency or default_currency
    prices = _unit_prices(data.items_returned, currency, f"{path}items_returned")
    for field in ("revenue", "return_expenses", "return_shipping_cost"):
        value = getattr(data, field)
        if value is not None:  # checked, though only the refund is stored
            minor_units(value, currency, f"{path}{field}", allow_string=True)
    if data.refund is not None:
        refund = minor_units(data.refund, currency, f"{path}refund", allow_string=True)
    else:
        refund = sum(
            item.count * price for item, price in zip(data.items_returned, prices, strict=True)
        )
        if refund > MAX_AMOUNT:
            raise bad_request(f"{path}items_returned", "the refund exceeds the largest amount")
    items = [
        (item.product_id, item.variation_id, item.count, price)
        for item, price in zip(data.items_returned, prices, strict=True)
    ]
    store = data.return_drop_off or UNKNOWN_STORE
    return ReturnEvent(
        type="return",
        id=event_key(SOURCE, "return", data.order_id, moment.isoformat(), items),
        timestamp=moment,
        channel=channel,
        store=StoreRef(id=store) if channel == "offline" else None,
        order_id=data.order_id,
        currency=given,
        customer=CustomerRef(id=ui),
        items=[
            ReturnItem(
                product_id=product_id,
                variant_id=variant_id,
                quantity=count,
                reason=data.return_reason,
                unit_price=price,
            )
            for product_id, variant_id, count, price in items
        ],
        refund=Refund(
            amount=refund,
            method="exchange" if data.return_preference == "replacement" else "original_payment",
        ),
    )


def _offline_actions(document: Any, default_currency: str) -> list[PurchaseEvent | ReturnEvent]:
    if not isinstance(document, dict):
        raise bad_request(None, "the body must be an object")
    unknown = sorted(set(document) - {"behavioral_actions"})
    if unknown:
        raise bad_request(unknown[0], "unknown field")
    actions = document.get("behavioral_actions")
    if not isinstance(actions, list):
        raise bad_request("behavioral_actions", "is required: a list of 1-100 actions")
    if not 1 <= len(actions) <= MAX_ACTIONS:
        raise bad_request(
            "behavioral_actions", f"must hold 1-{MAX_ACTIONS} actions, not {len(actions)}"
        )
    events: list[PurchaseEvent | ReturnEvent] = []
    for index, action in enumerate(actions):
        path = f"behavioral_actions[{index}]"
        if not isinstance(action, dict):
            raise bad_request(path, "must be an object")
        unknown = sorted(set(action) - {"action", "data"})
        if unknown:
            raise bad_request(f"{path}.{unknown[0]}", "unknown field")
        kind = action.get("action")
        if kind not in ("purchase", "return"):
            raise bad_request(f"{path}.action", "must be 'purchase' or 'return'")
        if "data" not in action:
            raise bad_request(f"{path}.data", "is required")
        data_path = f"{path}.data"
        if kind == "purchase":
            purchase = _validate(ConstructorOfflinePurchase, action["data"], data_path)
            currency = purchase.currency or default_currency
            events.append(
                _purchase(
                    purchase,
                    currency=currency,
                    moment=_time(purchase.dt, f"{data_path}._dt"),
                    ui=purchase.ui,
                    channel="offline",
                    store_id=purchase.store_id or UNKNOWN_STORE,
                    path=f"{data_path}.",
                )
            )
        else:
            returned = _validate(ConstructorOfflineReturn, action["data"], data_path)
            events.append(
                _return(
                    returned,
                    currency=returned.currency,
                    default_currency=default_currency,
                    moment=_time(returned.dt, f"{data_path}._dt"),
                    ui=returned.ui,
                    channel="offline",
                    path=f"{data_path}.",
                )
            )
    return events


def _save(request: Request, caller: Caller, events: list[PurchaseEvent | ReturnEvent]) -> Response:
    # Through the process's event writer (group commit), as POST /v1/events: committed
    # before the 204, together with the other requests waiting at that moment.
    write(
        request, lambda session: record(session, caller, events, source=SOURCE), units=len(events)
    )
    return Response(status_code=204)


KeyParam = Annotated[str | None, Query(max_length=200, description="The tenant's publishable key.")]
SectionParam = Annotated[str | None, Query(max_length=100)]


@router.post(
    "/v1/offline_behavioral_actions",
    status_code=204,
    openapi_extra=json_body(ConstructorOfflineBatch),
    responses={400: {"description": '{"message": ...}'}, 401: {"description": '{"message"}'}},
)
def offline_behavioral_actions(
    request: Request,
    body: Annotated[bytes, Depends(raw_body)],
    key: KeyParam = None,
    section: SectionParam = None,
) -> Response:
    """In-store purchases and returns: 1-100 actions, 1-500 items each, all or nothing.

    With the secret token (HTTP Basic `token:` or `x-cnstrc-token`) the actions are
    verified facts: orders, returns and profiles. With the key alone they are reported:
    product signals only. 204 on success; errors are `{"message": ...}` naming the field."""
    caller = _caller(request, key)
    events = _offline_actions(load_json(body), caller.principal.default_currency)
    return _save(request, caller, events)


# --- v2: online actions, as Constructor's clients send them --------------------------------


def _online_parameters(request: Request, body: bytes) -> tuple[dict[str, Any], Mapping[str, Any]]:
    """The JSON body (whatever its Content-Type: clients send text/plain for beacons) and the
    common parameters, body values overriding query values."""
    document = load_json(body) if body.strip() else {}
    if not isinstance(document, dict):
        raise bad_request(None, "the body must be a JSON object")
    parameters: dict[str, Any] = dict(request.query_params)
    for name in list(document):
        if name in COMMON_PARAMETERS or name.startswith("ef-"):
            parameters[name] = document.pop(name)
    return document, parameters


def _text_parameter(parameters: Mapping[str, Any], name: str) -> str | None:
    value = parameters.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise bad_request(name, "must be a string")
    text = str(value)
    if len(text) > 128 or "\x00" in text:
        raise bad_request(name, "must be 1-128 characters")
    return text


def _online_time(parameters: Mapping[str, Any]) -> datetime:
    value = parameters.get("_dt")
    if value is None or value == "":
        return datetime.now(UTC)
    if isinstance(value, str) and value.isdigit() and len(value) <= 15:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 10**14:
        raise bad_request("_dt", "must be a Unix time in seconds or milliseconds")
    return _time(value, "_dt")


class ConstructorCurrencyCodeModel(BaseModel):
    currency: CurrencyCode


def _online_currency(parameters: Mapping[str, Any], default: str) -> str:
    value = parameters.get("currency")
    if value is None:
        return default
    try:
        return str(ConstructorCurrencyCodeModel.model_validate({"currency": value}).currency)
    except ValidationError:
        raise bad_request("currency", "is not an ISO 4217 currency code") from None


def _online(
    request: Request, body: bytes, kind: Literal["purchase", "return"]
) -> tuple[Caller, PurchaseEvent | ReturnEvent]:
    document, parameters = _online_parameters(request, body)
    caller = _caller(request, _text_parameter(parameters, "key"))
    for name in ("c", "i", "s", "section", "origin_referrer"):
        value = parameters.get(name)
        if value is not None and (isinstance(value, dict | list) or len(str(value)) > 2048):
            raise bad_request(name, "must be a short string")
    moment = _online_time(parameters)
    ui = _text_parameter(parameters, "ui")
    currency = _online_currency(parameters, caller.principal.default_currency)
    if kind == "purchase":
        purchase = _validate(ConstructorOnlinePurchase, document, "")
        event: PurchaseEvent | ReturnEvent = _purchase(
            purchase,
            currency=currency,
            moment=moment,
            ui=ui,
            channel="online",
            store_id=None,
            path="",
        )
    else:
        returned = _validate(ConstructorOnlineReturn, document, "")
        if ui is None:
            raise bad_request("ui", "is required: a return belongs to a customer")
        event = _return(
            returned,
            currency=None if parameters.get("currency") is None else currency,
            default_currency=caller.principal.default_currency,
            moment=moment,
            ui=ui,
            channel="online",
            path="",
        )
    return caller, event


ONLINE_QUERY = {
    "parameters": [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
        for name in ("c", "i", "s", "ui", "_dt", "us", "origin_referrer", "currency")
    ]
}


@router.post(
    "/v2/behavioral_action/purchase",
    status_code=204,
    openapi_extra=json_body(ConstructorOnlinePurchase) | ONLINE_QUERY,
    responses={400: {"description": '{"message": ...}'}, 401: {"description": '{"message"}'}},
)
def online_purchase(
    request: Request,
    body: Annotated[bytes, Depends(raw_body)],
    key: KeyParam = None,
    section: SectionParam = None,
) -> Response:
    """An online purchase (up to 100 items); `ui` and `_dt` from the query or the body."""
    caller, event = _online(request, body, "purchase")
    return _save(request, caller, [event])


@router.post(
    "/v2/behavioral_action/return",
    status_code=204,
    openapi_extra=json_body(ConstructorOnlineReturn) | ONLINE_QUERY,
    responses={400: {"description": '{"message": ...}'}, 401: {"description": '{"message"}'}},
)
def online_return(
    request: Request,
    body: Annotated[bytes, Depends(raw_body)],
    key: KeyParam = None,
    section: SectionParam = None,
) -> Response:
    """An online return: the offline return's fields; `ui` and `_dt` from the query."""
    caller, event = _online(request, body, "return")
    return _save(request, caller, [event])
