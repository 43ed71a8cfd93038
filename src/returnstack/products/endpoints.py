"""Product signals, return-aware rankings and return reports (API.md 6). Secret key only:
they read the tenant's business data."""

import csv
import io
import re
from datetime import UTC, date, datetime, time
from typing import Annotated, Any, Literal

import orjson
from anyio import to_thread
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import BeforeValidator, Field
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from returnstack.customers.segment_endpoints import wants_csv
from returnstack.kit.admission import admit
from returnstack.kit.csvcells import spreadsheet_safe
from returnstack.kit.db import Database
from returnstack.kit.deps import DbSession, read_json
from returnstack.kit.errors import (
    AuthenticationFailed,
    Forbidden,
    InvalidRequest,
    NotFound,
    ValidationFailed,
)
from returnstack.kit.http import (
    ClientIdConvertor,  # noqa: F401  (registers {…:client_id})
    Limit,
)
from returnstack.kit.idempotency import Idempotency
from returnstack.kit.openapi import errors
from returnstack.kit.pagination import cursor_values, encode_cursor
from returnstack.kit.routing import RenderInThreadRoute
from returnstack.products import service
from returnstack.products.repository import GROUPS, SORTABLE
from returnstack.products.schemas import (
    ProductPage,
    ProductStats,
    Ranking,
    RankingRequest,
    Report,
)
from returnstack.tenants.auth import CachedSecretKey, SecretKey, confirm_key

router = APIRouter(route_class=RenderInThreadRoute, tags=["products"])

READ_ERRORS = errors(InvalidRequest, AuthenticationFailed, Forbidden)
CSV: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}}
}
SORTS = tuple(f"{sign}{name}" for name in SORTABLE for sign in ("", "-"))
MAX_INT64 = 2**63 - 1
# A parameter sent empty (`?category=&min_units_sold=`, API.md 6's own template, and what
# forms send) means "not given" (the document says so: schema tools send it too).
MinUnits = Annotated[
    Annotated[int, Field(ge=0, le=2**53)] | None,
    BeforeValidator(lambda value: None if value == "" else value),
    Query(
        json_schema_extra={
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": 2**53},
                {"const": ""},
                {"type": "null"},
            ]
        }
    ),
]


def _smoothing(request: Request) -> service.Smoothing:
    return service.Smoothing.configured(request.app.state.settings)


@router.get(
    "/v1/products/{product_id:client_id}/stats",
    response_model=ProductStats,
    responses=errors(InvalidRequest, AuthenticationFailed, Forbidden, NotFound),
)
async def product_stats(
    product_id: Annotated[str, Path(min_length=1, max_length=128)],
    request: Request,
    caller: CachedSecretKey,
) -> Response:
    """A product's units sold and returned, return rate and its smoothed rate (with the
    prior it was shrunk toward), refunded value, reasons, and the figures per variant,
    channel and store; `reported` is the part from publishable-key events. 404 for a
    product never sold or returned."""
    smoothing = _smoothing(request)

    # A lean read (as a customer's profile): the caller from the key cache, confirmed on
    # the read's own connection, one trip to the thread pool, two Core queries.
    def read(connection: Connection) -> bytes:
        confirm_key(request, connection, caller)
        stats = service.product_stats(
            connection,
            tenant_id=caller.principal.tenant_id,
            product_id=product_id,
            smoothing=smoothing,
        )
        return orjson.dumps(stats)  # built to the model's shape (tests check)

    return await read_json(request, read)


def _decode_cursor(cursor: str, sort: str) -> tuple[Any, str]:
    """The (value, product id) of a cursor made for this sort; 400 on `cursor` otherwise."""
    made_for, value, product_id = cursor_values(cursor, 3)
    field = sort.removeprefix("-")
    expected: type | tuple[type, ...] = (
        str if field == "product_id" else (float, int) if field == "return_rate" else int
    )
    wrong = made_for != sort or not isinstance(product_id, str) or not isinstance(value, expected)
    # A hand-made cursor's integer past 64 bits: no database binds it (a 500 on SQLite).
    if wrong or (isinstance(value, int) and abs(value) > MAX_INT64):
        raise InvalidRequest(
            "The cursor is not valid for this sort.",
            details=[{"path": "cursor", "message": "not a cursor of this list and sort"}],
        )
    return value, product_id


@router.get("/v1/products", response_model=ProductPage, responses=READ_ERRORS)
def list_products(
    request: Request,
    principal: SecretKey,
    session: DbSession,
    sort: Annotated[
        Literal[SORTS],  # type: ignore[valid-type]
        Query(description="units_sold, units_returned, return_rate or product_id; - for desc."),
    ] = "-units_sold",
    category: Annotated[
        str | None,
        Query(max_length=500, description="A category path: it and every category under it."),
    ] = None,
    min_units_sold: MinUnits = None,
    limit: Limit = 50,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> dict[str, Any]:
    """Products with their stats (as `/v1/products/{id}/stats`), sorted and paged."""
    after = _decode_cursor(cursor, sort) if cursor else None
    rows, last = service.list_products(
        session,
        tenant_id=principal.tenant_id,
        sort=sort,
        category=category or None,
        min_units_sold=min_units_sold,
        after=after,
        limit=limit,
        smoothing=_smoothing(request),
    )
    return {
        "data": rows,
        "next_cursor": encode_cursor(sort, *last) if last is not None else None,
    }


@router.post(
    "/v1/rankings",
    response_model=Ranking,
    responses=errors(InvalidRequest, AuthenticationFailed, Forbidden, ValidationFailed),
)
async def rank_products(
    body: RankingRequest,
    request: Request,
    caller: CachedSecretKey,
    idempotency: Idempotency,
) -> Response:
    """Re-order up to 1,000 products by `base_score x (1 - smoothed_return_rate) ^
    return_weight` (base score 1.0 unless given), highest first; ties keep the input order.
    Each row explains its score. A product never seen gets the prior (the tenant's rate)."""
    tenant_id = caller.principal.tenant_id
    smoothing = _smoothing(request)
    scores = None if body.scores is None else {k: float(v) for k, v in body.scores.items()}

    def ranking(reader: Session | Connection) -> dict[str, Any]:
        # Rendered with orjson as built: validating 1,000 rows against the response model
        # again cost more than computing them (a test checks their shape).
        rows = service.rank(
            reader,
            tenant_id=tenant_id,
            product_ids=body.product_ids,
            scores=scores,
            return_weight=float(body.return_weight),
            smoothing=smoothing,
        )
        return {"ranking": rows}

    if idempotency.key is None:
        # A ranking writes nothing: without an Idempotency-Key it is a lean read (the
        # caller from the key cache, confirmed on the read's own connection).
        def read(connection: Connection) -> bytes:
            confirm_key(request, connection, caller)
            return orjson.dumps(ranking(connection))

        return await read_json(request, read)

    # API.md 1: Idempotency-Key on any POST (a replay answers the first ranking), its
    # response stored in a transaction of its own.
    db: Database = request.app.state.db

    def remembered() -> Response:
        admit()
        with db.transaction() as session:
            confirm_key(request, session.connection(), caller)
            return idempotency.respond(
                session, tenant_id=tenant_id, status_code=200, produce=lambda: ranking(session)
            )

    return await to_thread.run_sync(remembered)


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _moment(value: str | None, name: str) -> datetime | None:
    """An RFC 3339 timestamp with an offset, or a date (midnight UTC)."""
    if value is None:
        return None
    try:
        if _DATE.fullmatch(value):
            return datetime.combine(date.fromisoformat(value), time(), tzinfo=UTC)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        if moment.tzinfo is None or "T" not in value.upper():
            raise ValueError("no offset")
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):  # past year 1 or 9999 once in UTC
        raise InvalidRequest(
            f"{name} must be an RFC 3339 timestamp with an offset or a YYYY-MM-DD date.",
            details=[{"path": name, "message": "not an RFC 3339 timestamp or YYYY-MM-DD date"}],
        ) from None


def _cell(value: Any) -> Any:
    """A CSV cell a spreadsheet will not run as a formula."""
    return "" if value is None else spreadsheet_safe(value)


_REPORT_COLUMNS = ("group", "returns", "units_returned", "refunded", "units_sold", "return_rate")


@router.get("/v1/reports/returns", response_model=Report, responses=READ_ERRORS | CSV)
def returns_report(
    request: Request,
    principal: SecretKey,
    session: DbSession,
    group_by: Annotated[Literal[GROUPS], Query()],  # type: ignore[valid-type]
    from_: Annotated[
        str | None,
        Query(alias="from", max_length=40, description="Inclusive; default to - 90 days."),
    ] = None,
    to: Annotated[str | None, Query(max_length=40, description="Exclusive; default now.")] = None,
    currency: Annotated[
        str | None, Query(max_length=3, description="ISO 4217; default (or empty) the tenant's.")
    ] = None,
) -> Any:
    """Returns, units returned, refunded value, units sold and return rate per group, for
    one currency (default the tenant's). Dates are UTC; `Accept: text/csv` gives the same
    rows as CSV."""
    start, end = _moment(from_ or None, "from"), _moment(to or None, "to")
    if start is None and end is None:
        start, end = service.default_range(service.now())
    elif start is None:
        assert end is not None
        try:
            start = service.default_range(end)[0]
        except OverflowError:
            raise InvalidRequest(
                "`to` is too early: the default range starts 90 days before it.",
                details=[{"path": "to", "message": "too early for the default 90-day range"}],
            ) from None
    elif end is None:
        end = service.now()
    if end <= start:
        raise InvalidRequest(
            "`to` must come after `from`.",
            details=[{"path": "to", "message": "must be after from"}],
        )
    code = (currency or principal.default_currency).upper()
    if len(code) != 3 or not code.isascii() or not code.isalpha():
        raise InvalidRequest(
            "currency must be an ISO 4217 code.",
            details=[{"path": "currency", "message": "not a currency code"}],
        )
    rows = service.returns_report(
        session,
        tenant_id=principal.tenant_id,
        group_by=group_by,
        start=start,
        end=end,
        currency=code,
    )
    if wants_csv(request):
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(_REPORT_COLUMNS)
        writer.writerows([_cell(row[name]) for name in _REPORT_COLUMNS] for row in rows)
        return Response(
            buffer.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="returns-by-{group_by}.csv"'},
        )
    return {"data": rows}
