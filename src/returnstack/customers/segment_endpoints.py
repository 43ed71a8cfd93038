"""Segmentation (GET /v1/customers?where=) and saved segments (API.md sections 5 and 11)."""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import ColumnElement

from returnstack.customers import segments
from returnstack.customers.expressions import Sort, compile_where
from returnstack.customers.schemas import (
    CustomerRowPage,
    SegmentCreate,
    SegmentDetail,
    SegmentOut,
    SegmentPage,
)
from returnstack.kit.deps import DbSession
from returnstack.kit.errors import (
    Conflict,
    NotFound,
    ValidationFailed,
)
from returnstack.kit.http import Limit
from returnstack.kit.idempotency import Idempotency
from returnstack.kit.openapi import STAFF_ERRORS, errors
from returnstack.kit.routing import RenderInThreadRoute
from returnstack.tenants.auth import SecretKey

router = APIRouter(route_class=RenderInThreadRoute, tags=["segments"])

CSV = {200: {"content": {"text/csv": {"schema": {"type": "string"}}}}}
LIST_RESPONSES = errors(*STAFF_ERRORS) | CSV
MEMBERS_RESPONSES = errors(*STAFF_ERRORS, NotFound) | CSV

Where = Annotated[
    str | None,
    Query(
        description='A segmentation expression: `net_revenue >= 10000 and currency = "EUR"`. '
        "Fields: " + ", ".join(segments.COLUMNS) + ". Operators `= != < <= > >=`, "
        '`in [...]`, `not in [...]`, `"serial_returner" in flags`; `and`, `or`, `not`, '
        "parentheses; strings in quotes, timestamps as RFC 3339 strings or dates "
        "(`YYYY-MM-DD`: that day at 00:00 UTC); `= null` / `!= null`. Empty: every row. "
        "Malformed: 400 whose detail gives the 0-based `position`.",
    ),
]
SortParam = Annotated[
    str | None,
    Query(
        max_length=40,
        description="A field (" + ", ".join(segments.SORTABLE) + "), `-` first for "
        "descending. Nulls come last either way; ties by customer, then currency. "
        f"Default `{segments.DEFAULT_SORT}`.",
    ),
]
Cursor = Annotated[str | None, Query(max_length=1000)]
SegmentId = Annotated[str, Path(description="seg_...")]


def wants_csv(request: Request) -> bool:
    """`Accept: text/csv` (preferred at least as much as JSON) asks for CSV."""
    quality: dict[str, float] = {}
    for part in request.headers.get("accept", "").split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        quality[media] = max(quality.get(media, 0.0), q)
    csv = quality.get("text/csv", 0.0)
    return csv > 0 and csv >= quality.get("application/json", 0.0)


def csv_response(
    request: Request, *, tenant_id: str, condition: ColumnElement[bool], sort: Sort, filename: str
) -> StreamingResponse:
    """Every row `condition` selects, streamed as CSV (`segments.stream_csv`)."""
    return StreamingResponse(
        segments.stream_csv(
            request.app.state.db, tenant_id=tenant_id, condition=condition, sort=sort
        ),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}.csv"'},
    )


def _rows(
    request: Request,
    session: DbSession,
    *,
    tenant_id: str,
    condition: ColumnElement[bool],
    sort: str | None,
    limit: int,
    cursor: str | None,
    filename: str,
) -> Any:
    order = segments.parse_sort(sort)
    if wants_csv(request):
        return csv_response(
            request, tenant_id=tenant_id, condition=condition, sort=order, filename=filename
        )
    return segments.list_customers(
        session, tenant_id=tenant_id, condition=condition, sort=order, limit=limit, cursor=cursor
    )


@router.get("/v1/customers", response_model=CustomerRowPage, responses=LIST_RESPONSES)
def list_customers(
    request: Request,
    principal: SecretKey,
    session: DbSession,
    where: Where = None,
    sort: SortParam = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Any:
    """Segmentation: the (customer, currency) profile rows `where` selects, guests
    included (`customer_id` null). With `Accept: text/csv`, every matching row is streamed
    as CSV (`limit` and `cursor` do not apply; `flags` joined with `;`)."""
    condition = compile_where(where)
    return _rows(
        request,
        session,
        tenant_id=principal.tenant_id,
        condition=condition,
        sort=sort,
        limit=limit,
        cursor=cursor,
        filename="customers",
    )


@router.post(
    "/v1/segments",
    status_code=201,
    response_model=SegmentOut,
    responses=errors(*STAFF_ERRORS, Conflict, ValidationFailed),
)
def create_segment(
    data: SegmentCreate, principal: SecretKey, session: DbSession, idempotency: Idempotency
) -> Any:
    """Save a segment: a name and a `where` expression, evaluated whenever its members are
    listed."""
    return idempotency.respond(
        session,
        tenant_id=principal.tenant_id,
        status_code=201,
        produce=lambda: segments.create_segment(
            session, tenant_id=principal.tenant_id, name=data.name, where=data.where
        ),
    )


@router.get("/v1/segments", response_model=SegmentPage, responses=errors(*STAFF_ERRORS))
def list_segments(
    principal: SecretKey, session: DbSession, limit: Limit = 50, cursor: Cursor = None
) -> Any:
    """Saved segments, newest first."""
    return segments.list_segments(
        session, tenant_id=principal.tenant_id, limit=limit, cursor=cursor
    )


@router.get(
    "/v1/segments/{segment_id}",
    response_model=SegmentDetail,
    responses=errors(*STAFF_ERRORS, NotFound),
)
def read_segment(segment_id: SegmentId, principal: SecretKey, session: DbSession) -> Any:
    """A segment, with `customer_count`: how many (customer, currency) rows it selects now."""
    return segments.get_segment(session, tenant_id=principal.tenant_id, segment_id=segment_id)


@router.delete(
    "/v1/segments/{segment_id}",
    status_code=204,
    response_class=Response,
    responses=errors(*STAFF_ERRORS, NotFound),
)
def delete_segment(segment_id: SegmentId, principal: SecretKey, session: DbSession) -> Response:
    """Delete a saved segment (the customers it selects are not touched)."""
    segments.delete_segment(session, tenant_id=principal.tenant_id, segment_id=segment_id)
    return Response(status_code=204)


@router.get(
    "/v1/segments/{segment_id}/customers",
    response_model=CustomerRowPage,
    responses=MEMBERS_RESPONSES,
)
def segment_customers(
    request: Request,
    segment_id: SegmentId,
    principal: SecretKey,
    session: DbSession,
    sort: SortParam = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Any:
    """The segment's members now, as GET /v1/customers?where=<its expression> lists them
    (CSV too, with `Accept: text/csv`)."""
    segment = segments.find_segment(session, tenant_id=principal.tenant_id, segment_id=segment_id)
    return _rows(
        request,
        session,
        tenant_id=principal.tenant_id,
        condition=compile_where(segment.expression),
        sort=sort,
        limit=limit,
        cursor=cursor,
        filename=segment.id,
    )
