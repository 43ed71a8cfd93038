"""Emporix Returns Service (seed 004; COMPAT.md "Emporix returns").

/return/{tenant}/returns: create, list, read, JSON Patch, delete, mapped onto the returns
lifecycle of /v1/returns (the same service functions, the same eligibility rules), in
Emporix's object shape. A secret key; `{tenant}` is its tenant's id or name.
"""

import re
from decimal import Decimal
from typing import Annotated, Any

import orjson
from fastapi import Depends, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.responses import Response

from returnstack.compat import emporix_query
from returnstack.compat.common import (
    CompatError,
    bad_request,
    decimal_amount,
    find_key,
    load_json,
    status_phrase,
    unauthorized,
    vendor_router,
)
from returnstack.kit.deps import DbSession
from returnstack.kit.errors import (
    PreconditionFailed,
    ValidationFailed,
    format_path,
)
from returnstack.kit.openapi import json_body, raw_body
from returnstack.kit.responses import JSONResponse
from returnstack.kit.schemas import Schema
from returnstack.kit.types import Email
from returnstack.models import Tenant
from returnstack.returns import service
from returnstack.returns.policy import get_policy
from returnstack.returns.reasons import normalize_free_text_reason
from returnstack.returns.repository import find_return, render_returns
from returnstack.returns.schemas import (
    CancelBody,
    CustomerRef,
    DeclineBody,
    NoteBody,
    ReceiveBody,
    ReceiveItem,
    ReturnCreate,
    ReturnItemCreate,
    ReturnUpdate,
)
from returnstack.tenants.auth import Principal

MAX_PAGE_SIZE = 60
METADATA_MIXINS = "emporix_mixins"  # where the mixins are kept, as one JSON text


def render_error(status_code: int, message: str, _code: int | None) -> Response:
    """Emporix's error body: {"code": 404, "status": "Not Found", "message": "..."}."""
    body = {"code": status_code, "status": status_phrase(status_code), "message": message}
    return JSONResponse(body, status_code=status_code)


router = vendor_router(
    "emporix", "compat: Emporix", lambda path: path.startswith("/return/"), render_error
)


# --- request shapes ------------------------------------------------------------------------

Id = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Text = Annotated[str, StringConstraints(max_length=2000)]


class _EmporixStrict(Schema):
    model_config = ConfigDict(frozen=True)


class EmporixReason(_EmporixStrict):
    code: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    details: Text | None = None


class EmporixOrderItem(_EmporixStrict):
    id: Id = Field(description="The order line's id.")
    quantity: Annotated[int, Field(strict=True, ge=1, le=100_000)]
    reason: EmporixReason | None = None


class EmporixOrderRef(_EmporixStrict):
    id: Id
    items: list[EmporixOrderItem] = Field(min_length=1, max_length=100)


class EmporixRequestor(_EmporixStrict):
    customerId: Id | None = None
    email: Email | None = None
    anonymous: bool | None = None


class EmporixReturnCreateBody(_EmporixStrict):
    orders: list[EmporixOrderRef] = Field(min_length=1, max_length=100)
    reason: EmporixReason | None = None
    requestor: EmporixRequestor | None = None
    mixins: dict[str, Any] | None = None
    externalReturnId: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None


class EmporixPatchOperation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    op: str
    path: str
    value: Any = None


# --- who is calling ------------------------------------------------------------------------


def _principal(request: Request, session: Session, tenant: str) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    principal = find_key(request, token.strip()) if scheme.lower() == "bearer" else None
    if principal is None:
        raise unauthorized("A valid secret key is required: Authorization: Bearer <key>.")
    if principal.kind != "secret":
        raise CompatError(403, "This endpoint needs a secret key.")
    name = session.scalar(select(Tenant.name).where(Tenant.id == principal.tenant_id))
    if tenant not in (principal.tenant_id, name):
        raise CompatError(403, f"tenant: {tenant!r} is not the key's tenant")
    return principal


# --- translation -----------------------------------------------------------------------------


def _reason(
    item: EmporixReason | None, fallback: EmporixReason | None, known: frozenset[str]
) -> tuple[str, str]:
    """Emporix reason codes are the merchant's own: a known code stays, anything else is
    `other` with the text kept as the note (which `other` requires)."""
    reason = item or fallback
    code = reason.code if reason else None
    details = reason.details if reason else None
    normalized, note = normalize_free_text_reason(code, details, known)
    if normalized == "other" and not note:
        note = "no reason given" if code is None else code
    return normalized, note or ""


def _create_request(
    session: Session, tenant_id: str, body: EmporixReturnCreateBody
) -> ReturnCreate:
    known = frozenset(reason.code for reason in get_policy(session, tenant_id=tenant_id).reasons)
    items = []
    for order in body.orders:
        for item in order.items:
            code, note = _reason(item.reason, body.reason, known)
            items.append(
                ReturnItemCreate(
                    order_id=order.id,
                    line_id=item.id,
                    quantity=item.quantity,
                    reason=code,
                    note=note or None,
                )
            )
    customer = None
    if body.requestor and (body.requestor.customerId or body.requestor.email):
        customer = CustomerRef(id=body.requestor.customerId, email=body.requestor.email)
    metadata = {METADATA_MIXINS: _mixins_text(body.mixins)} if body.mixins else None
    return ReturnCreate(
        customer=customer,
        items=items,
        external_id=body.externalReturnId,
        note=body.reason.details if body.reason else None,
        metadata=metadata,
    )


def _mixins_text(mixins: dict[str, Any]) -> str:
    try:
        text = orjson.dumps(mixins, default=str).decode()
    except TypeError:  # an integer past 64 bits: kept exactly by no JSON reader we use
        raise bad_request("mixins", "numbers must be within 64-bit integers") from None
    if len(text) > 500:
        raise bad_request("mixins", "must be at most 500 characters as JSON")
    return text


def _mixins(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """The mixins kept in a return's metadata (edited through /v1/returns too: any text)."""
    try:
        mixins = orjson.loads((metadata or {}).get(METADATA_MIXINS) or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {}
    return mixins if isinstance(mixins, dict) else {}


def _money(minor: int | None, currency: str) -> dict[str, Any] | None:
    if minor is None:
        return None
    value: Decimal = decimal_amount(minor, currency)
    # Decimal values as Emporix sends them, written exactly (never through a float).
    return {"value": orjson.Fragment(str(value).encode()), "currency": currency}


def emporix_views(
    session: Session, tenant_id: str, returns: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Returns (as /v1/returns renders them) in Emporix's shape; the names of all their
    lines are read at once (not one query per return)."""
    names = emporix_query.line_names(
        session,
        tenant_id=tenant_id,
        lines=[(i["order_id"], i["line_id"]) for ret in returns for i in ret["items"]],
    )
    return [_view(ret, names) for ret in returns]


def emporix_view(session: Session, tenant_id: str, ret: dict[str, Any]) -> dict[str, Any]:
    """A return (as /v1/returns renders it) in Emporix's shape."""
    return emporix_views(session, tenant_id, [ret])[0]


def _view(ret: dict[str, Any], names: dict[tuple[str, str], str | None]) -> dict[str, Any]:
    orders: dict[str, list[dict[str, Any]]] = {}
    total = 0
    currency = ret["currency"]
    for item in ret["items"]:
        unit = item["unit_price"]
        line_total = None if unit is None else unit * item["quantity"]
        total += line_total or 0
        orders.setdefault(item["order_id"], []).append(
            {
                "id": item["line_id"],
                "productId": item["product_id"],
                "name": names.get((item["order_id"], item["line_id"])),
                "quantity": item["quantity"],
                "receivedQuantity": item["received_quantity"],
                "unitPrice": _money(unit, currency),
                "total": _money(line_total, currency),
                "reason": {"code": item["reason"], "details": item["note"]},
            }
        )
    mixins = _mixins(ret["metadata"])
    customer = ret["customer"] or {}
    return {
        "id": ret["id"],
        "number": ret["number"],
        "externalReturnId": ret["external_id"],
        "approvalStatus": emporix_query.STATUS_TO_APPROVAL[ret["status"]],
        "status": ret["status"],
        "received": any(item["received_quantity"] for item in ret["items"]),
        "orders": [{"id": order_id, "items": items} for order_id, items in orders.items()],
        "total": _money(total, currency),
        "reason": {"details": ret["note"]} if ret["note"] else None,
        "requestor": {
            "customerId": customer.get("id"),
            "email": customer.get("email"),
            "anonymous": customer.get("id") is None,
        },
        "mixins": mixins,
        "metadata": {
            "createdAt": ret["created_at"],
            "modifiedAt": ret["updated_at"],
            "version": ret["version"],
        },
    }


def _validate(model: type[BaseModel], raw: Any) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        path = format_path(tuple(error.get("loc", ())))
        message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
        if error.get("type") == "extra_forbidden":
            message = "unknown field"
        raise bad_request(path or None, message) from None


# --- endpoints ------------------------------------------------------------------------------

TenantPath = Annotated[str, "The tenant's id or name."]
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": '{"code", "status", "message"}'} for code in (400, 401, 403, 404, 409)
}


@router.post(
    "/return/{tenant}/returns",
    status_code=201,
    openapi_extra=json_body(EmporixReturnCreateBody),
    responses=ERRORS,
)
def create_return(
    tenant: str,
    request: Request,
    body: Annotated[bytes, Depends(raw_body)],
    session: DbSession,
) -> Response:
    """A return of items from one or more orders (one currency), checked as POST /v1/returns
    checks it; 201 `{"id"}`."""
    principal = _principal(request, session, tenant)
    data = _validate(EmporixReturnCreateBody, load_json(body))
    try:
        created = service.open_return(
            session,
            tenant_id=principal.tenant_id,
            requester=None,
            data=_create_request(session, principal.tenant_id, data),
            source="api",
            actor=principal.actor,
        )
    except ValidationFailed as exc:
        exc.details = [_emporix_path(detail, data) for detail in exc.details]
        raise
    return JSONResponse({"id": created["id"]}, status_code=201)


def _emporix_path(detail: dict[str, Any], data: EmporixReturnCreateBody) -> dict[str, Any]:
    """items[3].quantity (the flat list of /v1/returns) -> orders[1].items[0].quantity."""
    match = re.match(r"^items\[(\d+)\](.*)$", detail.get("path", ""))
    if match is None:
        return detail
    flat = [
        f"orders[{i}].items[{j}]"
        for i, order in enumerate(data.orders)
        for j, _ in enumerate(order.items)
    ]
    index = int(match[1])
    if index >= len(flat):
        return detail
    return detail | {"path": flat[index] + match[2]}


@router.get("/return/{tenant}/returns", responses=ERRORS)
def list_returns(
    tenant: str,
    request: Request,
    session: DbSession,
    pageSize: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = MAX_PAGE_SIZE,
    pageNumber: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    sort: Annotated[str | None, Query(max_length=200)] = None,
    q: Annotated[str | None, Query(max_length=1000)] = None,
    x_total_count: Annotated[str | None, Header(alias="X-Total-Count")] = None,
) -> Response:
    """Returns, newest first by default: `pageSize` (1-60), `pageNumber` (from 1),
    `sort=metadata.createdAt:desc`, `q=approvalStatus:PENDING requestor.customerId:c1
    metadata.createdAt:>=2026-01-01`; with `X-Total-Count: true` the total comes back in the
    header of that name. A bare JSON array."""
    principal = _principal(request, session, tenant)
    rows, total = emporix_query.list_returns(
        session,
        tenant_id=principal.tenant_id,
        conditions=emporix_query.parse_q(q),
        order_by=emporix_query.parse_sort(sort),
        page_size=pageSize,
        page_number=pageNumber,
        with_total=(x_total_count or "").strip().lower() == "true",
    )
    rendered = render_returns(session, tenant_id=principal.tenant_id, returns=rows)
    response = JSONResponse(emporix_views(session, principal.tenant_id, rendered))
    if total is not None:
        response.headers["X-Total-Count"] = str(total)
    return response


@router.get("/return/{tenant}/returns/{return_id}", responses=ERRORS)
def read_return(tenant: str, return_id: str, request: Request, session: DbSession) -> Response:
    """One return in Emporix's shape."""
    principal = _principal(request, session, tenant)
    ret = service.get_return(session, tenant_id=principal.tenant_id, reference=return_id)
    return JSONResponse(emporix_view(session, principal.tenant_id, ret))


PATCH_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json-patch+json": {
                "schema": {"type": "array", "items": EmporixPatchOperation.model_json_schema()}
            },
            "application/json": {
                "schema": {"type": "array", "items": EmporixPatchOperation.model_json_schema()}
            },
        },
    }
}


@router.patch(
    "/return/{tenant}/returns/{return_id}",
    status_code=204,
    openapi_extra=PATCH_DOC,
    responses=ERRORS,
)
def patch_return(
    tenant: str,
    return_id: str,
    request: Request,
    body: Annotated[bytes, Depends(raw_body)],
    session: DbSession,
) -> Response:
    """RFC 6902 operations on `/approvalStatus` (APPROVED approves, REJECTED declines,
    CLOSED cancels or closes, PENDING reopens), `/received` (true receives every unit still
    expected), `/reason` and `/mixins/...` (while PENDING). The version travels as
    `{"op": "replace", "path": "/metadata/version", "value": <current>}` or `If-Match`;
    a stale version is 409."""
    principal = _principal(request, session, tenant)
    document = load_json(body)
    if not isinstance(document, list) or not document:
        raise bad_request(None, "the body must be a JSON Patch: a non-empty array of operations")
    operations = [
        _validate(EmporixPatchOperation, raw) if isinstance(raw, dict) else _bad_operation(index)
        for index, raw in enumerate(document)
    ]
    ret = find_return(session, tenant_id=principal.tenant_id, reference=return_id, for_update=True)
    expected = _expected_version(request, operations)
    if expected is not None and expected != ret.version:
        raise CompatError(
            409, f"metadata.version: the return is at version {ret.version}, not {expected}"
        )
    try:
        for index, operation in enumerate(operations):
            _apply(session, principal, ret.id, operation, index)
    except PreconditionFailed as exc:
        raise CompatError(409, exc.message) from None
    return Response(status_code=204)


def _bad_operation(index: int) -> EmporixPatchOperation:
    raise bad_request(f"[{index}]", "an operation must be an object")


def _expected_version(request: Request, operations: list[EmporixPatchOperation]) -> int | None:
    for index, operation in enumerate(operations):
        if operation.path == "/metadata/version":
            if (
                operation.op not in ("replace", "test")
                or isinstance(operation.value, bool)
                or not isinstance(operation.value, int)
            ):
                raise bad_request(f"[{index}].value", "the version must be an integer")
            return int(operation.value)
    header = request.headers.get("if-match")
    if header:
        value = header.strip().removeprefix("W/").strip('"')
        if not value.isdigit() or len(value) > 18:
            raise bad_request("If-Match", "must be the version, as in metadata.version")
        return int(value)
    return None


def _apply(
    session: Session,
    principal: Principal,
    return_id: str,
    operation: EmporixPatchOperation,
    index: int,
) -> None:
    path, op, value = operation.path, operation.op, operation.value
    where = f"[{index}]"
    if path == "/metadata/version":
        return
    if op not in ("add", "replace", "remove", "test"):
        raise bad_request(f"{where}.op", "must be add, replace, remove or test")
    ret = service.get_return(session, tenant_id=principal.tenant_id, reference=return_id)
    if op == "test":
        if _pointer(emporix_view(session, principal.tenant_id, ret), path) != value:
            raise CompatError(409, f"{where}: the test of {path} failed")
        return
    status = ret["status"]
    if op == "remove" and path in ("/approvalStatus", "/received"):
        raise bad_request(f"{where}.op", f"{path} cannot be removed; replace it")

    def act(action: str, body: Any) -> None:
        service.apply_action(
            session,
            tenant_id=principal.tenant_id,
            reference=return_id,
            action=action,
            body=body,
            actor=principal.actor,
        )

    if path == "/approvalStatus":
        wanted = str(value).upper() if isinstance(value, str) else None
        if wanted not in emporix_query.APPROVAL_STATUSES:
            raise bad_request(f"{where}.value", "must be PENDING, APPROVED, REJECTED or CLOSED")
        if emporix_query.STATUS_TO_APPROVAL[status] == wanted:
            return
        if wanted == "APPROVED":
            act("approve", NoteBody())
        elif wanted == "REJECTED":
            act("decline", DeclineBody(reason="other"))
        elif wanted == "CLOSED":
            act(
                "cancel" if status in ("requested", "approved") else "close",
                CancelBody() if status in ("requested", "approved") else NoteBody(),
            )
        else:
            act("reopen", NoteBody())
    elif path == "/received":
        if not isinstance(value, bool):
            raise bad_request(f"{where}.value", "must be true or false")
        expected = [
            ReceiveItem(
                order_id=item["order_id"],
                line_id=item["line_id"],
                quantity=item["quantity"] - item["received_quantity"],
            )
            for item in ret["items"]
            if item["line_id"] is not None and item["quantity"] > item["received_quantity"]
        ]
        received = any(item["received_quantity"] for item in ret["items"])
        if value and expected:
            act("receive", ReceiveBody(items=expected))
        elif not value and received:
            raise CompatError(409, f"{where}: received items cannot be un-received")
    elif path in ("/reason", "/reason/details"):
        details = value.get("details") if isinstance(value, dict) else value
        if op == "remove":
            details = None
        if details is not None and not isinstance(details, str):
            raise bad_request(f"{where}.value", "must be a reason {code, details} or its details")
        _update(session, principal, return_id, ReturnUpdate(note=details))
    elif path == "/mixins" or path.startswith("/mixins/"):
        metadata = dict(ret["metadata"] or {})
        mixins = _mixins(metadata)
        if path == "/mixins":
            mixins = {} if op == "remove" else value
            if not isinstance(mixins, dict):
                raise bad_request(f"{where}.value", "must be an object")
        else:
            name = path.removeprefix("/mixins/").replace("~1", "/").replace("~0", "~")
            if op == "remove":
                mixins.pop(name, None)
            else:
                mixins[name] = value
        if mixins:
            metadata[METADATA_MIXINS] = _mixins_text(mixins)
        else:
            metadata.pop(METADATA_MIXINS, None)
        _update(session, principal, return_id, ReturnUpdate(metadata=metadata))
    else:
        raise bad_request(
            f"{where}.path",
            "must be /approvalStatus, /received, /reason, /mixins/... or /metadata/version",
        )


def _update(session: Session, principal: Principal, return_id: str, data: ReturnUpdate) -> None:
    service.update_return(
        session,
        tenant_id=principal.tenant_id,
        reference=return_id,
        data=data,
        actor=principal.actor,
    )


def _pointer(document: Any, path: str) -> Any:
    for part in path.lstrip("/").split("/") if path != "/" else []:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(document, dict):
            document = document.get(part)
        elif isinstance(document, list) and part.isdigit() and int(part) < len(document):
            document = document[int(part)]
        else:
            return None
    return None if isinstance(document, orjson.Fragment) else document


@router.delete("/return/{tenant}/returns/{return_id}", status_code=204, responses=ERRORS)
def delete_return(tenant: str, return_id: str, request: Request, session: DbSession) -> Response:
    """Cancels a return not yet received, or closes a refunded or rejected one (a return is
    never erased); 204."""
    principal = _principal(request, session, tenant)
    service.delete_return(
        session, tenant_id=principal.tenant_id, reference=return_id, actor=principal.actor
    )
    return Response(status_code=204)
