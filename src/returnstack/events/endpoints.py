from typing import Annotated

import orjson
from anyio import to_thread
from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from returnstack.events.schemas import EventBatch, EventBatchResult, Trust
from returnstack.events.service import record_events
from returnstack.events.validation import (
    CheckedBatch,
    all_or_nothing_error,
    check_batch,
    parse_body,
)
from returnstack.kit.errors import (
    ApiError,
    AuthenticationFailed,
    Conflict,
    InvalidRequest,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    ValidationFailed,
)
from returnstack.kit.groupcommit import GroupCommitter
from returnstack.kit.idempotency import Idempotency
from returnstack.kit.metrics import EVENTS_INGESTED
from returnstack.kit.openapi import errors, json_body, raw_body
from returnstack.kit.responses import RawJSONResponse
from returnstack.kit.routing import RenderInThreadRoute
from returnstack.tenants.auth import (
    CachedCaller,
    KeyCache,
    cached_caller,
    confirm_live,
    live_principal,
    refused_key,
)

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
        Overloaded,
    ),
)
async def post_events(
    request: Request,
    body: Annotated[bytes, Depends(raw_body)],
    caller: Annotated[CachedCaller, Depends(cached_caller)],
    idempotency: Idempotency,
    partial: Annotated[
        bool, Query(description="Write the valid events and list the invalid ones.")
    ] = False,
) -> Response:
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

    When the server is overloaded (its writer has more waiting than it takes in
    `RETURNSTACK_INGEST_MAX_WAIT`), the answer is 503 `overloaded` with `Retry-After`, and
    nothing is written.
    """
    # No thread-pool trip on the way: the caller from the key cache (confirmed in the write
    # transaction), validation on the event loop (a large batch on a thread), and the write
    # by the process's writer, which commits the events of all waiting requests at once.
    key_hash = caller.key_hash
    try:
        if len(body) > INLINE_BODY_BYTES:
            batch = await to_thread.run_sync(_validated, body, partial)
        else:
            batch = _validated(body, partial)
    except ApiError:
        if caller.cached:
            await confirm_live(request, key_hash)  # a revoked key hears 401, not 422
        raise
    keys: KeyCache = request.app.state.keys

    def write(session: Session) -> Response | tuple[bytes, int]:
        # The key is read again in the write transaction: revoked since it was cached,
        # nothing is written and the request is refused.
        live = live_principal(session, key_hash)
        if live is None:
            keys.forget(key_hash)
            raise refused_key()
        replay = idempotency.replay(session, tenant_id=live.tenant_id)
        if replay is not None:
            return replay
        result = record_events(
            session,
            tenant_id=live.tenant_id,
            default_currency=live.default_currency,
            events=batch.valid,
            source="api",
            actor=live.actor,
            # A publishable key is public: what it sends is reported, never a fact (API.md 2).
            trust=Trust.reported if live.kind == "publishable" else Trust.verified,
        )
        payload = orjson.dumps(
            {
                "accepted": result.accepted,
                "duplicates": result.duplicates,
                "rejected": batch.rejected,
                "ids": result.ids,
            }
        )
        idempotency.remember(session, tenant_id=live.tenant_id, status_code=200, body=payload)
        return payload, result.accepted

    writer: GroupCommitter = request.app.state.ingest
    outcome = await writer.run(write, units=len(batch.valid))
    if isinstance(outcome, Response):
        return outcome
    payload, accepted = outcome
    EVENTS_INGESTED.inc(accepted)
    return RawJSONResponse(payload)


# Bodies up to this size are validated on the event loop (a few hundred microseconds);
# larger ones on a thread, so that one big batch does not hold up every other request.
INLINE_BODY_BYTES = 16 * 1024


def _validated(body: bytes, partial: bool) -> CheckedBatch:
    batch = check_batch(parse_body(body))
    if batch.rejected and not partial:
        raise all_or_nothing_error(batch.rejected)
    return batch
