"""/v1/webhooks (subscriptions, deliveries, retry, recover) and /v1/messages (API.md 7)."""

from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import StringConstraints

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
from returnstack.webhooks import service
from returnstack.webhooks.schemas import (
    Delivery,
    DeliveryPage,
    MessagePage,
    RecoverAccepted,
    RecoverRequest,
    Webhook,
    WebhookCreate,
    WebhookPage,
    WebhookUpdate,
    WebhookWithSecret,
)

router = APIRouter(route_class=RenderInThreadRoute, tags=["webhooks"])

WebhookId = Annotated[str, Path(max_length=64, description="whk_...")]
DeliveryId = Annotated[str, Path(max_length=64, description="del_...")]
Cursor = Annotated[str | None, Query(max_length=1000)]


@router.post(
    "/v1/webhooks",
    status_code=201,
    response_model=WebhookWithSecret,
    responses=errors(*STAFF_ERRORS, Conflict, ValidationFailed),
)
def create_webhook(
    request: Request,
    data: WebhookCreate,
    principal: SecretKey,
    session: DbSession,
    idempotency: Idempotency,
) -> Any:
    """Subscribe a URL to event types (or `["*"]`). The answer carries the signing
    `secret`, shown only now: verify each delivery's `webhook-signature` with it
    (Standard Webhooks)."""
    allow_private = request.app.state.settings.webhooks_allow_private
    return idempotency.respond(
        session,
        tenant_id=principal.tenant_id,
        status_code=201,
        produce=lambda: service.create_subscription(
            session,
            tenant_id=principal.tenant_id,
            url=data.url,
            events=data.events,
            description=data.description,
            enabled=data.enabled,
            allow_private=allow_private,
        ),
    )


@router.get("/v1/webhooks", response_model=WebhookPage, responses=errors(*STAFF_ERRORS))
def list_webhooks(
    principal: SecretKey, session: DbSession, limit: Limit = 50, cursor: Cursor = None
) -> Any:
    """The tenant's subscriptions, newest first (without secrets)."""
    return service.list_subscriptions(
        session, tenant_id=principal.tenant_id, limit=limit, cursor=cursor
    )


@router.get(
    "/v1/webhooks/{webhook_id}",
    response_model=Webhook,
    responses=errors(*STAFF_ERRORS, NotFound),
)
def read_webhook(webhook_id: WebhookId, principal: SecretKey, session: DbSession) -> Any:
    return service.get_subscription(
        session, tenant_id=principal.tenant_id, subscription_id=webhook_id
    )


@router.patch(
    "/v1/webhooks/{webhook_id}",
    response_model=Webhook,
    responses=errors(*STAFF_ERRORS, NotFound, ValidationFailed),
)
def update_webhook(
    request: Request,
    webhook_id: WebhookId,
    data: WebhookUpdate,
    principal: SecretKey,
    session: DbSession,
) -> Any:
    """Change the URL, event types, description or `enabled`. Disabling ends the queued
    attempts as failed; enabling delivers new events (use recover for the ones missed)."""
    return service.update_subscription(
        session,
        tenant_id=principal.tenant_id,
        subscription_id=webhook_id,
        changes=data.model_dump(exclude_unset=True),
        allow_private=request.app.state.settings.webhooks_allow_private,
    )


@router.delete(
    "/v1/webhooks/{webhook_id}",
    status_code=204,
    response_class=Response,
    responses=errors(*STAFF_ERRORS, NotFound),
)
def delete_webhook(webhook_id: WebhookId, principal: SecretKey, session: DbSession) -> Response:
    """Delete a subscription and its delivery log; nothing more is sent to it."""
    service.delete_subscription(session, tenant_id=principal.tenant_id, subscription_id=webhook_id)
    return Response(status_code=204)


@router.post(
    "/v1/webhooks/{webhook_id}/rotate-secret",
    response_model=WebhookWithSecret,
    responses=errors(*STAFF_ERRORS, NotFound),
)
def rotate_webhook_secret(
    webhook_id: WebhookId, principal: SecretKey, session: DbSession, idempotency: Idempotency
) -> Any:
    """A new signing secret, shown only now. For 24 h deliveries carry two signatures
    (`v1,<new> v1,<old>`), so receivers can switch without missing one. With an
    `Idempotency-Key`, a retry shows the secret the first request made."""
    return idempotency.respond(
        session,
        tenant_id=principal.tenant_id,
        status_code=200,
        produce=lambda: service.rotate_secret(
            session, tenant_id=principal.tenant_id, subscription_id=webhook_id
        ),
    )


@router.get(
    "/v1/webhooks/{webhook_id}/deliveries",
    response_model=DeliveryPage,
    responses=errors(*STAFF_ERRORS, NotFound),
)
def list_webhook_deliveries(
    webhook_id: WebhookId,
    principal: SecretKey,
    session: DbSession,
    limit: Limit = 50,
    cursor: Cursor = None,
    status: Annotated[
        Literal["pending", "succeeded", "failed"] | None, Query(description="Only these.")
    ] = None,
) -> Any:
    """Delivery attempts, newest first: one row per attempt, and the pending next one."""
    return service.list_deliveries(
        session,
        tenant_id=principal.tenant_id,
        subscription_id=webhook_id,
        limit=limit,
        cursor=cursor,
        status=status,
    )


@router.post(
    "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
    status_code=202,
    response_model=Delivery,
    responses=errors(*STAFF_ERRORS, NotFound, Conflict),
)
def retry_webhook_delivery(
    webhook_id: WebhookId,
    delivery_id: DeliveryId,
    principal: SecretKey,
    session: DbSession,
    idempotency: Idempotency,
) -> Any:
    """Send the delivery's message again now: answers with the new pending attempt (one
    attempt; it is not retried automatically)."""
    return idempotency.respond(
        session,
        tenant_id=principal.tenant_id,
        status_code=202,
        produce=lambda: service.retry_delivery(
            session,
            tenant_id=principal.tenant_id,
            subscription_id=webhook_id,
            delivery_id=delivery_id,
        ),
    )


@router.post(
    "/v1/webhooks/{webhook_id}/recover",
    status_code=202,
    response_model=RecoverAccepted,
    responses=errors(*STAFF_ERRORS, NotFound, Conflict, ValidationFailed),
)
def recover_webhook(
    request: Request,
    webhook_id: WebhookId,
    data: RecoverRequest,
    principal: SecretKey,
    session: DbSession,
    idempotency: Idempotency,
) -> Any:
    """Send again, now and oldest first, every message since `since` that this
    subscription has not received (no succeeded delivery), with the usual retries."""
    retention = timedelta(days=request.app.state.settings.webhooks_retention_days)
    return idempotency.respond(
        session,
        tenant_id=principal.tenant_id,
        status_code=202,
        produce=lambda: {
            "queued": service.recover(
                session,
                tenant_id=principal.tenant_id,
                subscription_id=webhook_id,
                since=data.since,
                retention=retention,
            )
        },
    )


@router.get("/v1/messages", response_model=MessagePage, responses=errors(*STAFF_ERRORS))
def list_messages(
    request: Request,
    principal: SecretKey,
    session: DbSession,
    after: Annotated[
        str | None,
        Query(max_length=64, description="The id of the last message you processed."),
    ] = None,
    cursor: Cursor = None,
    type: Annotated[
        list[Annotated[str, StringConstraints(max_length=1000)]] | None,
        Query(max_length=100, description="Event types: comma separated, or repeated."),
    ] = None,
    limit: Limit = 50,
) -> Any:
    """The tenant's domain events in the order they became visible (commit order), oldest
    first, kept 30 days; each with the body of its webhook. Pass the id of the last message
    you processed as `after`: you will never miss one, nor see one twice."""
    from returnstack.webhooks.dispatcher import publish_now

    publish_now(request.app.state.db)
    return service.list_messages(
        session,
        tenant_id=principal.tenant_id,
        after=after or cursor,
        types=",".join(type) if type else None,
        limit=limit,
    )
