"""The storefront API (API.md 4.1): sessions with a publishable key, then calls that carry
only `X-Storefront-Session`."""

import hashlib
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import StreamingResponse

from returnstack.kit.deps import DbSession
from returnstack.kit.errors import (
    AuthenticationFailed,
    Conflict,
    InvalidRequest,
    InvalidTransition,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ValidationFailed,
)
from returnstack.kit.http import IfMatch, Limit, etag, versioned
from returnstack.kit.idempotency import Idempotency, IdempotentRequest
from returnstack.kit.openapi import errors
from returnstack.kit.responses import JSONResponse, RawJSONResponse
from returnstack.kit.routing import RenderInThreadRoute
from returnstack.returns.attachments_endpoints import (
    DOWNLOAD_RESPONSES,
    MULTIPART_BODY,
    QuotaBytes,
    ReceivedFile,
    Storage,
    Upload,
    UploadIdempotency,
    stream,
)
from returnstack.returns.dependencies import AttachmentId, ReturnId
from returnstack.returns.errors import VersionMismatch
from returnstack.returns.schemas import AttachmentOut, CancelBody, Preview
from returnstack.storefront import service
from returnstack.storefront.auth import (
    Storefront,
    StorefrontCaller,
    check_guest_sign_in,
    guest_sign_in_failed,
)
from returnstack.storefront.schemas import (
    SessionCreate,
    SessionOut,
    StorefrontOrderPage,
    StorefrontReturn,
    StorefrontReturnCreate,
    StorefrontReturnPage,
)
from returnstack.tenants.auth import AnyKey

router = APIRouter(route_class=RenderInThreadRoute, tags=["storefront"])

# What a storefront call may answer: no session or key, bad input, too many attempts.
CALLER_ERRORS = (AuthenticationFailed, InvalidRequest, RateLimited)
Cursor = Annotated[str | None, Query(max_length=500)]


def _scoped(idempotency: IdempotentRequest, caller: StorefrontCaller) -> IdempotentRequest:
    """Idempotency keys of storefront callers are theirs alone: the same key sent by another
    customer or guest of the tenant never replays this caller's response."""
    if idempotency.key is None:
        return idempotency
    digest = hashlib.sha256(f"{caller.identity}\n{idempotency.key}".encode()).hexdigest()
    return replace(idempotency, key=digest, scope="storefront")


@router.post(
    "/v1/storefront/sessions",
    status_code=201,
    response_model=SessionOut,
    responses=errors(*CALLER_ERRORS, ValidationFailed),
)
def create_session(
    data: SessionCreate, principal: AnyKey, session: DbSession, request: Request
) -> JSONResponse:
    """Open a storefront session (1 hour) with a publishable key (a secret key works too).

    - `{"customer_token": "<JWT>"}`: HS256, signed with the tenant's signing secret by the
      merchant's backend; `sub` is the customer id, `exp` is required and at most 24 h after
      `iat` (or after now). A bad, expired, too long-lived or otherwise signed token is 401.
    - `{"order_id": "...", "email": "..."}`: a guest, for an order bought without a customer
      account; the email must be the order's (any case). A wrong pair (or an account's
      order) is 401 without saying which half was wrong. Repeated failures from a client
      address, on one order or on many, make its attempts 429 (`Retry-After` at most 60 s);
      failures from elsewhere never lock anyone else out.

    Idempotency-Key is not honoured here: a replay would have to store the session token,
    and opening a second session is harmless.
    """
    if data.customer_token is not None:
        payload = service.open_customer_session(
            session, tenant_id=principal.tenant_id, token=data.customer_token
        )
        return JSONResponse(payload, status_code=201)
    assert data.order_id is not None
    assert data.email is not None
    check_guest_sign_in(request, tenant_id=principal.tenant_id, order_id=data.order_id)
    if not service.guest_pair_matches(
        session, tenant_id=principal.tenant_id, order_id=data.order_id, email=data.email
    ):
        guest_sign_in_failed(request, tenant_id=principal.tenant_id, order_id=data.order_id)
        raise AuthenticationFailed(service.GUEST_REFUSED)
    payload = service.open_guest_session(session, tenant_id=principal.tenant_id, email=data.email)
    return JSONResponse(payload, status_code=201)


@router.get(
    "/v1/storefront/orders",
    response_model=StorefrontOrderPage,
    responses=errors(*CALLER_ERRORS),
)
def list_orders(
    caller: Storefront, session: DbSession, limit: Limit = 50, cursor: Cursor = None
) -> Any:
    """The caller's orders, newest first: a customer's (by id, and those bought as a guest
    with the customer's email), or a guest's (by email). Each line carries its
    `returnable_quantity`, the end of its return window, and `ineligible` codes."""
    return service.list_orders(session, caller=caller, limit=limit, cursor=cursor)


@router.get(
    "/v1/storefront/returns", response_model=StorefrontReturnPage, responses=errors(*CALLER_ERRORS)
)
def list_returns(
    caller: Storefront, session: DbSession, limit: Limit = 50, cursor: Cursor = None
) -> Any:
    """The caller's returns, newest first."""
    return service.list_returns(session, caller=caller, limit=limit, cursor=cursor)


@router.post(
    "/v1/storefront/returns",
    status_code=201,
    response_model=StorefrontReturn,
    responses=errors(*CALLER_ERRORS, Conflict, ValidationFailed),
)
def create_return(
    data: StorefrontReturnCreate, caller: Storefront, session: DbSession, idempotency: Idempotency
) -> RawJSONResponse:
    """Open a return (`source: "storefront"`) of items from one or more of the caller's
    orders, in one currency. The body is that of POST /v1/returns without `customer` (the
    session names the customer) and without the staff's `note`, `external_id` and
    `metadata` (sending any is 422). Orders that are not the caller's are
    `order_not_found`; the other codes are those of POST /v1/returns."""
    scoped = _scoped(idempotency, caller)
    return scoped.respond(
        session,
        tenant_id=caller.tenant_id,
        status_code=201,
        produce=lambda: service.open_return(session, caller=caller, data=data.as_return_create()),
        headers=lambda payload: etag(payload["version"]),
    )


@router.post(
    "/v1/storefront/returns/preview",
    response_model=Preview,
    responses=errors(*CALLER_ERRORS, ValidationFailed),
)
def preview_return(data: StorefrontReturnCreate, caller: Storefront, session: DbSession) -> Any:
    """The checks of POST /v1/storefront/returns, and the money, without writing anything."""
    return service.preview_return(session, caller=caller, data=data.as_return_create())


@router.get(
    "/v1/storefront/returns/{return_id}",
    response_model=StorefrontReturn,
    responses=errors(*CALLER_ERRORS, NotFound),
)
def read_return(return_id: ReturnId, caller: Storefront, session: DbSession) -> JSONResponse:
    """One of the caller's returns, by id or number; anyone else's is 404."""
    return versioned(service.get_return(session, caller=caller, reference=return_id))


@router.post(
    "/v1/storefront/returns/{return_id}/cancel",
    response_model=StorefrontReturn,
    responses=errors(
        *CALLER_ERRORS, NotFound, InvalidTransition, VersionMismatch, ValidationFailed
    ),
)
def cancel_return(
    return_id: ReturnId,
    caller: Storefront,
    session: DbSession,
    if_match: IfMatch,
    body: Annotated[CancelBody | None, Body()] = None,
) -> JSONResponse:
    """Cancel one of the caller's returns while it is requested or approved (not once
    anything was received)."""
    return versioned(
        service.cancel_return(
            session,
            caller=caller,
            reference=return_id,
            body=body or CancelBody(),
            if_match=if_match,
        )
    )


@router.post(
    "/v1/storefront/returns/{return_id}/attachments",
    status_code=201,
    response_model=AttachmentOut,
    responses=errors(*CALLER_ERRORS, NotFound, Conflict, PayloadTooLarge, ValidationFailed),
    openapi_extra=MULTIPART_BODY,
)
def upload_attachment(
    caller: Storefront,  # first: nobody unknown makes the server read a body
    _received: ReceivedFile,  # then the body, received before the transaction begins
    return_id: ReturnId,
    session: DbSession,
    upload: Upload,
    idempotency: UploadIdempotency,
    storage: Storage,
    quota: QuotaBytes,
) -> RawJSONResponse:
    """Attach a photo or document (JPEG, PNG, WebP or PDF, at most 10 MB) to one of the
    caller's returns, until it is refunded, declined, closed or cancelled (then 409)."""
    return _scoped(idempotency, caller).respond(
        session,
        tenant_id=caller.tenant_id,
        status_code=201,
        produce=lambda: service.attach(
            session,
            caller=caller,
            storage=storage,
            reference=return_id,
            source=upload.file,
            filename=upload.filename,
            quota_bytes=quota,
        ),
    )


@router.get(
    "/v1/storefront/returns/{return_id}/attachments/{attachment_id}",
    response_class=StreamingResponse,
    responses={200: DOWNLOAD_RESPONSES[200], **errors(*CALLER_ERRORS, NotFound)},
)
def download_attachment(
    return_id: ReturnId,
    attachment_id: AttachmentId,
    caller: Storefront,
    session: DbSession,
    storage: Storage,
) -> StreamingResponse:
    """Download an attachment of one of the caller's returns."""
    row = service.own_attachment(
        session, caller=caller, reference=return_id, attachment_id=attachment_id
    )
    return stream(storage, row)
