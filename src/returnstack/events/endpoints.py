from dataclasses import dataclass
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from returnstack.events.ingest import EventWrite, write_together
from returnstack.events.schemas import EventBatch, EventBatchResult
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
from returnstack.kit.idempotency import IdempotentRequest, idempotent_request
from returnstack.kit.metrics import EVENTS_INGESTED
from returnstack.kit.openapi import errors, json_body, raw_body
from returnstack.kit.responses import RawJSONResponse
from returnstack.kit.routing import RenderInThreadRoute
from returnstack.tenants.auth import CachedCaller, cached_caller, confirm_live

router = APIRouter(route_class=RenderInThreadRoute, tags=["events"])


@dataclass(frozen=True, slots=True)
class EventRequest:
    body: bytes
    caller: CachedCaller
    idempotency: IdempotentRequest


async def event_request(request: Request) -> EventRequest:
    """The body, the caller (401 for an unknown or revoked key, rate limited) and the
    Idempotency-Key, in that order: one dependency, where three cost FastAPI three times its
    per-dependency work on every request of the busiest route."""
    body = await raw_body(request)
    caller = await cached_caller(request)
    return EventRequest(body, caller, await idempotent_request(request))


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
    sent: Annotated[EventRequest, Depends(event_request)],
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
    body, caller, idempotency = sent.body, sent.caller, sent.idempotency
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
    write = EventWrite(
        key_hash=key_hash,
        keys=request.app.state.keys,
        events=batch.valid,
        rejected=batch.rejected,
        idempotency=idempotency,
    )
    writer: GroupCommitter = request.app.state.ingest
    if writer.alone(len(batch.valid)):
        outcome = await writer.run_beside(write)
    else:
        outcome = await writer.run(
            write,
            units=len(batch.valid),
            combine=write_together if write.combinable else None,
        )
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
