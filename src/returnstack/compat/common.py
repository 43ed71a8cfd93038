"""What the vendor adapters share: errors in each vendor's shape, exact decimal JSON, money,
keys, event ids, and the one call into the event service.

An adapter only translates: it checks the vendor's payload (errors name the vendor's field),
builds the native events of POST /v1/events or the requests of /v1/returns, and hands them
to the same service functions. It never writes by a path of its own.
"""

import hashlib
import json
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from http import HTTPStatus
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.responses import Response

from returnstack.events.schemas import PurchaseEvent, ReturnEvent, Trust
from returnstack.events.service import RecordResult, record_events
from returnstack.kit.errors import ApiError, format_path, register_error_shape
from returnstack.kit.groupcommit import GroupCommitter
from returnstack.kit.metrics import EVENTS_INGESTED
from returnstack.kit.money import CURRENCY_EXPONENTS, to_minor_units
from returnstack.kit.ratelimit import check_rate_limit
from returnstack.kit.routing import RenderInThreadRoute
from returnstack.kit.types import FUTURE_TOLERANCE, MAX_AMOUNT
from returnstack.returns.service import ReturnOptions
from returnstack.tenants.auth import Principal, find_principal, rate_limit_bucket

T = TypeVar("T")


class CompatError(Exception):
    """A refusal an adapter answers in its vendor's shape; `path` names the vendor's field."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        path: str | None = None,
        headers: dict[str, str] | None = None,
        code: int | None = None,
    ) -> None:
        self.status_code = status_code
        self.path = path
        self.code = code  # the vendor's own error number, where it has them (Sailthru)
        self.message = f"{path}: {message}" if path else message
        self.headers = headers or {}
        super().__init__(self.message)


def bad_request(path: str | None, message: str, *, code: int | None = None) -> CompatError:
    return CompatError(400, message, path=path, code=code)


def unauthorized(message: str) -> CompatError:
    return CompatError(401, message)


def _describe(error: ApiError) -> str:
    """A domain error as one line: its message, then each detail's path and reason."""
    parts = []
    for detail in error.details:
        if not detail.get("message"):
            continue
        text = f"{detail['path']}: {detail['message']}" if detail.get("path") else detail["message"]
        if detail.get("code") and detail["code"] not in text:
            text += f" ({detail['code']})"
        parts.append(text)
    return " ".join([error.message, "; ".join(parts)]).strip()


RenderError = Callable[[int, str, int | None], Response]  # status, message, vendor's code
Decorate = Callable[[Request, Response], Response]


def status_phrase(status_code: int) -> str:
    return HTTPStatus(status_code).phrase if status_code in HTTPStatus._value2member_map_ else ""


def _as_is(_request: Request, response: Response) -> Response:
    return response


def vendor_router(
    name: str,
    tag: str,
    paths: Callable[[str], bool],
    render: RenderError,
    decorate: Decorate = _as_is,
) -> APIRouter:
    """The router of a vendor's endpoints: every refusal in the vendor's shape, on its routes
    (VendorRoute) and for the errors raised before one runs (405, 413: kit/errors.py).
    `decorate` adds the headers a vendor sends on every answer (Sailthru's rate limits)."""

    class VendorRoute(RenderInThreadRoute):
        """A route that answers every refusal in its vendor's error shape: the adapter's own
        errors, the domain's (e.g. a return that is not eligible), a key refused, a rate
        limit, and FastAPI's parameter errors."""

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def handle(request: Request) -> Response:
                try:
                    response = await handler(request)
                except CompatError as exc:
                    response = render(exc.status_code, exc.message, exc.code)
                    response.headers.update(exc.headers)
                except ApiError as exc:
                    response = render(exc.status_code, _describe(exc), None)
                    response.headers.update(exc.headers or {})
                except (RequestValidationError, ValidationError) as exc:
                    # FastAPI's parameter errors (their loc starts with "query"/"path"), or a
                    # domain request built by the adapter that breaks a limit of the domain.
                    first = exc.errors()[0] if exc.errors() else {}
                    loc = tuple(first.get("loc", ()))
                    path = format_path(loc[1:] if isinstance(exc, RequestValidationError) else loc)
                    message = str(first.get("msg", "is invalid")).removeprefix("Value error, ")
                    response = render(400, f"{path}: {message}" if path else message, None)
                if response.status_code >= 400:
                    # An error answered here never reaches the request's transaction: marked, it
                    # is rolled back instead of committed (kit/deps.py get_session).
                    request.state.failed = True
                return decorate(request, response)

            return handle

    register_error_shape(
        name,
        paths,
        lambda request, status, message: decorate(request, render(status, message, None)),
    )
    return APIRouter(route_class=VendorRoute, tags=[tag])


# --- bodies -------------------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def load_json(body: bytes | str) -> Any:
    """JSON with every non-integer number read as a Decimal, exactly as written (never a
    float): 34.99 stays 34.99, and 34.999 is not silently rounded."""
    try:
        document = json.loads(body, parse_float=Decimal, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise bad_request(None, f"the body is not valid JSON ({exc})") from None
    escaped = b"\\u" in body if isinstance(body, bytes) else "\\u" in body
    if escaped:
        try:  # \ud800 escapes decode to lone surrogates, which no database can store
            orjson.dumps(document, default=str)
        except TypeError:
            raise bad_request(None, "the body holds invalid Unicode (a lone surrogate)") from None
    return document


def minor_units(value: Any, currency: str, path: str, *, allow_string: bool = False) -> int:
    """A decimal price (Decimal or int; a numeric string when the vendor allows it) as an
    exact count of the currency's minor unit. More decimals than the currency has, a
    negative amount or a huge one is an error naming `path`."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise bad_request(path, "must be a number")
    if isinstance(value, str):
        text = value.strip()
        if not allow_string or not text or len(text) > 40:
            raise bad_request(path, "must be a number")
        value = text
    try:
        amount = to_minor_units(value, currency)
    except ValueError as exc:
        raise bad_request(path, str(exc)) from None
    if amount < 0:
        raise bad_request(path, "must not be negative")
    if amount > MAX_AMOUNT:
        raise bad_request(path, f"must be at most {MAX_AMOUNT} minor units")
    return amount


def decimal_amount(minor: int, currency: str) -> Decimal:
    return Decimal(minor).scaleb(-CURRENCY_EXPONENTS[currency])


def check_time(value: datetime, path: str) -> datetime:
    if value > datetime.now(UTC) + FUTURE_TOLERANCE:
        raise bad_request(path, "is in the future (more than 5 minutes ahead of the server clock)")
    return value


def event_key(vendor: str, *parts: Any) -> str:
    """The event id an adapter gives a vendor's fact: a digest of the vendor's dedup key, so
    a repeat is a duplicate (and no client id of /v1/events can collide with it)."""
    digest = hashlib.sha256(orjson.dumps(parts, default=str)).hexdigest()[:48]
    return f"{vendor}:{digest}"


# --- keys ---------------------------------------------------------------------------------


def find_key(request: Request, token: str | None) -> Principal | None:
    """The live key a vendor credential names; rate limited as any request with that key."""
    if not token or len(token) > 200:
        return None
    principal = find_principal(request, token)
    if principal is not None:
        check_rate_limit(request, rate_limit_bucket(request, principal))
        request.state.principal = principal
    return principal


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sends a vendor request, and whether what it sends is a fact or a signal."""

    principal: Principal
    trust: Trust

    @property
    def tenant_id(self) -> str:
        return self.principal.tenant_id

    @property
    def actor(self) -> str:
        return self.principal.actor


def write(request: Request, work: Callable[[Session], T], *, units: int) -> T:
    """Run `work` by the process's event writer (group commit, as POST /v1/events do): in
    the group's transaction, committed before this returns. The writer may run it again
    alone (its group failed for another request's reason), so it changes nothing but the
    database."""
    writer: GroupCommitter = request.app.state.ingest
    return writer.run_sync(work, units=units)


def record(
    session: Session,
    caller: Caller,
    events: Sequence[PurchaseEvent | ReturnEvent],
    *,
    source: str,
    return_options: Mapping[str, ReturnOptions] | None = None,
) -> RecordResult:
    """The one path of every adapter's facts: the event service of POST /v1/events."""
    result = record_events(
        session,
        tenant_id=caller.tenant_id,
        default_currency=caller.principal.default_currency,
        events=events,
        source=source,
        actor=caller.actor,
        trust=caller.trust,
        return_options=return_options,
    )
    EVENTS_INGESTED.inc(result.accepted)
    return result
