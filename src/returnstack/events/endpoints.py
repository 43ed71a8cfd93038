from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query

from returnstack.events.schemas import EventBatch, EventBatchResult, Trust
from returnstack.events.service import record_events
from returnstack.events.validation import all_or_nothing_error, check_batch, parse_body
from returnstack.kit.deps import DbSession
from returnstack.kit.errors import (
    AuthenticationFailed,
    Conflict,
    InvalidRequest,
    PayloadTooLarge,
    RateLimited,
    ValidationFailed,
)
from returnstack.kit.idempotency import Idempotency
from returnstack.kit.metrics import EVENTS_INGESTED
from returnstack.kit.openapi import errors, json_body, raw_body
from returnstack.kit.responses import RawJSONResponse
from returnstack.kit.routing import RenderInThreadRoute
from returnstack.tenants.auth import AnyKey

router = APIRouter(route_class=RenderInThreadRoute, tags=["events"])


@router.post(
    "/v1/events",
    response_model=EventBatchResult,
    openapi_extra=json_body(EventBatch),
    responses=errors(
        InvalidRequest,
        AuthenticationFailed,
        Conflict,
        PayloadTooLarge,
        ValidationFailed,
        RateLimited,
    ),
)
def post_events(
    body: Annotated[bytes, Depends(raw_body)],
    principal: AnyKey,
    session: DbSession,
    idempotency: Idempotency,
    partial: Annotated[
        bool, Query(description="Write the valid events and list the invalid ones.")
    ] = False,
) -> RawJSONResponse:
    """Record purchases and returns, online and in store: up to 1,000 events a request.

    The whole request is validated first. By default it is all-or-nothing: one invalid event
    answers 422 listing every invalid event, and nothing is written. With `?partial=true`
    the valid events are written and the invalid ones listed in `rejected`. An event whose
    `id` was recorded before is a duplicate and changes nothing. A 200 means committed.

    With a secret key the events are facts: orders, returns, refunds, customers, profiles.
    With a publishable key (public: web pages, apps, tills) they are only *reported*: kept
    for product signals, announced as `purchase.reported` / `return.reported`, and never
    an order, a return, a refund, a customer or a profile. Event ids and Idempotency-Keys
    are scoped by trust: a reported id never makes a verified event a duplicate.
    """
    # Validation first: no transaction (nor SQLite's write lock) is held while it runs.
    batch = check_batch(parse_body(body))
    if batch.rejected and not partial:
        raise all_or_nothing_error(batch.rejected)
    replay = idempotency.replay(session, tenant_id=principal.tenant_id)
    if replay is not None:
        return replay
    result = record_events(
        session,
        tenant_id=principal.tenant_id,
        default_currency=principal.default_currency,
        events=batch.valid,
        source="api",
        actor=principal.actor,
        # A publishable key is public: what it sends is reported, never a fact (API.md 2).
        trust=Trust.reported if principal.kind == "publishable" else Trust.verified,
    )
    payload = orjson.dumps(
        {
            "accepted": result.accepted,
            "duplicates": result.duplicates,
            "rejected": batch.rejected,
            "ids": result.ids,
        }
    )
    idempotency.remember(session, tenant_id=principal.tenant_id, status_code=200, body=payload)
    EVENTS_INGESTED.inc(result.accepted)
    return RawJSONResponse(payload)
