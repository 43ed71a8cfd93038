from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request

from returnstack.kit.deps import DbSession
from returnstack.kit.errors import (
    Conflict,
    InvalidTransition,
    NotFound,
    ValidationFailed,
)
from returnstack.kit.http import IfMatch, Limit, etag, versioned
from returnstack.kit.idempotency import Idempotency
from returnstack.kit.openapi import STAFF_ERRORS, errors
from returnstack.kit.responses import JSONResponse, RawJSONResponse
from returnstack.kit.routing import RenderInThreadRoute
from returnstack.returns import policy as policies
from returnstack.returns import service
from returnstack.returns.dependencies import ListFilters, ReturnId
from returnstack.returns.errors import RefundExceedsRefundable, VersionMismatch, code_list
from returnstack.returns.schemas import (
    CancelBody,
    DeclineBody,
    NoteBody,
    Preview,
    ReceiveBody,
    RefundBody,
    ReturnCreate,
    ReturnOut,
    ReturnPage,
    ReturnUpdate,
)
from returnstack.tenants.auth import CachedSecretKey, SecretKey, confirmed

router = APIRouter(route_class=RenderInThreadRoute, tags=["returns"])


def _with_etag(payload: Any) -> dict[str, str]:
    return etag(payload["version"])


@router.post(
    "/v1/returns",
    status_code=201,
    response_model=ReturnOut,
    responses=errors(*STAFF_ERRORS, Conflict, ValidationFailed),
    description="Open a return of items from one or more orders of one customer, in one "
    "currency.\n\nEvery item is checked against the policy; a violation answers 422 whose "
    f"details name the item (`items[1]`) and a code: {code_list()}.",
)
def create_return(
    request: Request,
    data: ReturnCreate,
    caller: CachedSecretKey,
    session: DbSession,
    idempotency: Idempotency,
) -> RawJSONResponse:
    principal = confirmed(request, session, caller)
    return idempotency.respond(
        session,
        tenant_id=principal.tenant_id,
        status_code=201,
        produce=lambda: service.open_return(
            session,
            tenant_id=principal.tenant_id,
            requester=None,
            data=data,
            source="api",
            actor=principal.actor,
        ),
        headers=_with_etag,
    )


@router.post(
    "/v1/returns/preview", response_model=Preview, responses=errors(*STAFF_ERRORS, ValidationFailed)
)
def preview_return(data: ReturnCreate, principal: SecretKey, session: DbSession) -> Any:
    """The same checks as POST /v1/returns, and the money, without writing anything."""
    return service.preview_return(session, tenant_id=principal.tenant_id, requester=None, data=data)


@router.get("/v1/returns", response_model=ReturnPage, responses=errors(*STAFF_ERRORS))
def list_returns(
    request: Request,
    caller: CachedSecretKey,
    session: DbSession,
    query: ListFilters,
    limit: Limit = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> JSONResponse:
    """Returns, newest first, with recorded returns (`source: "event"`) among them."""
    principal = confirmed(request, session, caller)
    page = service.list_returns(
        session, tenant_id=principal.tenant_id, query=query, limit=limit, cursor=cursor
    )
    return JSONResponse(page)  # rendered as ReturnOut (GET /v1/returns/{id}) is


@router.get(
    "/v1/returns/{return_id}", response_model=ReturnOut, responses=errors(*STAFF_ERRORS, NotFound)
)
def read_return(
    request: Request, return_id: ReturnId, caller: CachedSecretKey, session: DbSession
) -> JSONResponse:
    """A return by id (`ret_...`) or number (`R-000123`)."""
    principal = confirmed(request, session, caller)
    return versioned(
        service.get_return(session, tenant_id=principal.tenant_id, reference=return_id)
    )


@router.patch(
    "/v1/returns/{return_id}",
    response_model=ReturnOut,
    responses=errors(*STAFF_ERRORS, NotFound, InvalidTransition, VersionMismatch, ValidationFailed),
)
def patch_return(
    return_id: ReturnId,
    data: ReturnUpdate,
    principal: SecretKey,
    session: DbSession,
    if_match: IfMatch,
) -> JSONResponse:
    """Edit items, note, external id or metadata while the return is `requested`."""
    return versioned(
        service.update_return(
            session,
            tenant_id=principal.tenant_id,
            reference=return_id,
            data=data,
            actor=principal.actor,
            if_match=if_match,
        )
    )


@router.delete(
    "/v1/returns/{return_id}",
    response_model=ReturnOut,
    responses=errors(*STAFF_ERRORS, NotFound, InvalidTransition, VersionMismatch),
)
def delete_return(
    return_id: ReturnId, principal: SecretKey, session: DbSession, if_match: IfMatch
) -> JSONResponse:
    """Cancel (requested, approved) or close (refunded, declined): a return is never erased."""
    return versioned(
        service.delete_return(
            session,
            tenant_id=principal.tenant_id,
            reference=return_id,
            actor=principal.actor,
            if_match=if_match,
        )
    )


@dataclass
class ReturnAction:
    """What every lifecycle action takes: the return, the caller, If-Match, Idempotency-Key."""

    request: Request
    return_id: ReturnId
    caller: CachedSecretKey
    session: DbSession
    if_match: IfMatch
    idempotency: Idempotency

    def run(self, action: str, body: Any) -> RawJSONResponse:
        principal = confirmed(self.request, self.session, self.caller)
        return self.idempotency.respond(
            self.session,
            tenant_id=principal.tenant_id,
            status_code=200,
            produce=lambda: service.apply_action(
                self.session,
                tenant_id=principal.tenant_id,
                reference=self.return_id,
                action=action,
                body=body,
                actor=principal.actor,
                if_match=self.if_match,
            ),
            headers=_with_etag,
        )


async def return_action(
    request: Request,
    return_id: ReturnId,
    caller: CachedSecretKey,
    session: DbSession,
    if_match: IfMatch,
    idempotency: Idempotency,
) -> ReturnAction:
    # A function, not Depends() on the class: FastAPI runs a class (sync) on the thread
    # pool, a trip of its own for every action (and, under load, a wait in its queue). The
    # caller comes from the key cache (no trip either) and is confirmed by `run`, in the
    # action's transaction.
    return ReturnAction(request, return_id, caller, session, if_match, idempotency)


Action = Annotated[ReturnAction, Depends(return_action)]
ACTION_ERRORS = (*STAFF_ERRORS, NotFound, InvalidTransition, VersionMismatch, ValidationFailed)


@router.post(
    "/v1/returns/{return_id}/approve", response_model=ReturnOut, responses=errors(*ACTION_ERRORS)
)
def approve(action: Action, body: Annotated[NoteBody | None, Body()] = None) -> RawJSONResponse:
    """requested -> approved."""
    return action.run("approve", body or NoteBody())


@router.post(
    "/v1/returns/{return_id}/decline", response_model=ReturnOut, responses=errors(*ACTION_ERRORS)
)
def decline(action: Action, body: DeclineBody) -> RawJSONResponse:
    """requested -> declined; its items no longer count against their orders."""
    return action.run("decline", body)


@router.post(
    "/v1/returns/{return_id}/receive", response_model=ReturnOut, responses=errors(*ACTION_ERRORS)
)
def receive(action: Action, body: ReceiveBody) -> RawJSONResponse:
    """approved or received -> received; partial receipts add up."""
    return action.run("receive", body)


@router.post(
    "/v1/returns/{return_id}/refund",
    response_model=ReturnOut,
    responses=errors(*ACTION_ERRORS, RefundExceedsRefundable),
)
def refund(action: Action, body: RefundBody) -> RawJSONResponse:
    """received -> refunded. The default amount is the value of what was received (outcome
    `received`, and `damaged` if the policy refunds it) minus fees, rounded down; an explicit
    amount may be lower, never higher."""
    return action.run("refund", body)


@router.post(
    "/v1/returns/{return_id}/close", response_model=ReturnOut, responses=errors(*ACTION_ERRORS)
)
def close(action: Action, body: Annotated[NoteBody | None, Body()] = None) -> RawJSONResponse:
    """refunded or declined -> closed."""
    return action.run("close", body or NoteBody())


@router.post(
    "/v1/returns/{return_id}/cancel", response_model=ReturnOut, responses=errors(*ACTION_ERRORS)
)
def cancel(action: Action, body: Annotated[CancelBody | None, Body()] = None) -> RawJSONResponse:
    """requested or approved -> cancelled (not once anything was received)."""
    return action.run("cancel", body or CancelBody())


@router.post(
    "/v1/returns/{return_id}/reopen", response_model=ReturnOut, responses=errors(*ACTION_ERRORS)
)
def reopen(action: Action, body: Annotated[NoteBody | None, Body()] = None) -> RawJSONResponse:
    """closed or cancelled -> requested (not for returns recorded from events)."""
    return action.run("reopen", body or NoteBody())


policy_router = APIRouter(route_class=RenderInThreadRoute, tags=["policy"])


@policy_router.get(
    "/v1/policy", response_model=policies.PolicyDocument, responses=errors(*STAFF_ERRORS)
)
def read_policy(principal: SecretKey, session: DbSession) -> Any:
    """The return policy; every field has a default."""
    return policies.get_policy(session, tenant_id=principal.tenant_id)


@policy_router.put(
    "/v1/policy",
    response_model=policies.PolicyDocument,
    responses=errors(*STAFF_ERRORS, ValidationFailed),
)
def replace_policy(data: policies.PolicyDocument, principal: SecretKey, session: DbSession) -> Any:
    """Replace the policy; fields left out take their defaults."""
    return service.put_policy(session, tenant_id=principal.tenant_id, policy=data)
