"""Webhook subscriptions, manual retries and recovery, publishing the outbox, and the feed."""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from returnstack.kit.errors import Conflict, InvalidRequest, NotFound, ValidationFailed
from returnstack.kit.ids import new_id
from returnstack.kit.pagination import invalid_cursor
from returnstack.kit.timefmt import rfc3339
from returnstack.models import OutboxEvent, WebhookDelivery, WebhookSubscription
from returnstack.outbox.service import EVENT_TYPES, notify_dispatchers
from returnstack.webhooks import repository
from returnstack.webhooks.network import check_url
from returnstack.webhooks.signing import new_secret

ROTATION_OVERLAP = timedelta(hours=24)
MAX_SUBSCRIPTIONS = 100  # per tenant
MAX_RECOVER = 10_000  # messages queued again by one recover
PUBLISH_BATCH = 1000
MANUAL_STEP = 1_000  # past the end of any retry schedule: one attempt, no follow-up


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- rendering -------------------------------------------------------------------------------


def render_subscription(row: WebhookSubscription, *, now: datetime) -> dict[str, Any]:
    expires = row.previous_secret_expires_at
    return {
        "id": row.id,
        "url": row.url,
        "events": list(row.events),
        "description": row.description,
        "enabled": row.enabled,
        "disabled_reason": row.disabled_reason,
        "previous_secret_expires_at": rfc3339(expires) if expires and expires > now else None,
        "created_at": rfc3339(row.created_at),
        "updated_at": rfc3339(row.updated_at),
    }


def render_delivery(row: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": row.id,
        "event_id": row.message_id,
        "event_type": row.event_type,
        "attempt": row.attempt,
        "status": row.status,
        "trigger": row.trigger,
        "response_status": row.response_status,
        "response_body": row.response_body,
        "error": row.error,
        "attempted_at": rfc3339(row.attempted_at),
        "next_attempt_at": rfc3339(row.next_attempt_at),
        "duration_ms": row.duration_ms,
    }


def render_message(row: OutboxEvent) -> dict[str, Any]:
    """The body of a message: in the feed, and (as JSON) of its webhook deliveries."""
    return message_body(
        id=row.id, type=row.type, created_at=row.created_at, data=row.data, changes=row.changes
    )


def message_body(
    *, id: str, type: str, created_at: datetime, data: Any, changes: Any
) -> dict[str, Any]:
    return {
        "id": id,
        "type": type,
        "timestamp": rfc3339(created_at),
        "data": data,
        "changes": changes,
    }


def secrets_in_use(row: repository.Claimed, *, now: datetime) -> list[str]:
    """The current secret, then (for 24 h after a rotation) the one it replaced."""
    expires = row.previous_secret_expires_at
    if row.previous_secret and expires is not None and expires > now:
        return [row.secret, row.previous_secret]
    return [row.secret]


# --- validation ------------------------------------------------------------------------------


def event_list(text: str) -> list[str]:
    """Event types written comma separated."""
    return [name.strip() for name in text.split(",") if name.strip()]


def _event_types(events: Sequence[str], *, path: str = "events") -> list[str]:
    details = []
    chosen: list[str] = []
    for index, name in enumerate(events):
        if name != "*" and name not in EVENT_TYPES:
            details.append(
                {
                    "path": f"{path}[{index}]",
                    "message": f"unknown event type {name!r}; known: * and "
                    + ", ".join(sorted(EVENT_TYPES)),
                    "code": "unknown_event_type",
                }
            )
        elif name not in chosen:
            chosen.append(name)
    if "*" in chosen and len(chosen) > 1:
        details.append({"path": path, "message": '"*" stands alone: it means every type'})
    if details:
        raise ValidationFailed(details=details)
    return chosen


def _url(url: str, *, allow_private: bool) -> str:
    problem = check_url(url, allow_private=allow_private)
    if problem is not None:
        raise ValidationFailed(details=[{"path": "url", "message": problem, "code": "invalid_url"}])
    return url


def _subscription(
    session: Session, tenant_id: str, subscription_id: str, *, for_update: bool = True
) -> WebhookSubscription:
    row = repository.find_subscription(
        session, tenant_id=tenant_id, subscription_id=subscription_id, for_update=for_update
    )
    if row is None:
        raise NotFound(f"No webhook {subscription_id!r}.")
    return row


def _check_enabled(subscription: WebhookSubscription) -> None:
    if not subscription.enabled:
        raise Conflict.at("enabled", "is false", "The webhook is disabled; enable it first.")


# --- subscriptions ---------------------------------------------------------------------------


def create_subscription(
    session: Session,
    *,
    tenant_id: str,
    url: str,
    events: Sequence[str],
    description: str | None,
    enabled: bool,
    allow_private: bool,
) -> dict[str, Any]:
    chosen = _event_types(events)
    _url(url, allow_private=allow_private)
    if repository.count_subscriptions(session, tenant_id=tenant_id) >= MAX_SUBSCRIPTIONS:
        raise Conflict.at(
            "",
            "too many webhooks; delete one first",
            f"A tenant may have at most {MAX_SUBSCRIPTIONS} webhooks.",
        )
    now = utcnow()
    row = WebhookSubscription(
        tenant_id=tenant_id,
        id=new_id("whk"),
        url=url,
        events=chosen,
        description=description,
        enabled=enabled,
        disabled_reason=None if enabled else "disabled on creation",
        secret=new_secret(),
        previous_secret=None,
        previous_secret_expires_at=None,
        failing_since=None,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return render_subscription(row, now=now) | {"secret": row.secret}


def list_subscriptions(
    session: Session, *, tenant_id: str, limit: int, cursor: str | None
) -> dict[str, Any]:
    rows, next_cursor = repository.list_subscriptions(
        session, tenant_id=tenant_id, limit=limit, cursor=cursor
    )
    now = utcnow()
    return {"data": [render_subscription(r, now=now) for r in rows], "next_cursor": next_cursor}


def get_subscription(session: Session, *, tenant_id: str, subscription_id: str) -> dict[str, Any]:
    row = _subscription(session, tenant_id, subscription_id, for_update=False)
    return render_subscription(row, now=utcnow())


def update_subscription(
    session: Session,
    *,
    tenant_id: str,
    subscription_id: str,
    changes: dict[str, Any],
    allow_private: bool,
) -> dict[str, Any]:
    row = _subscription(session, tenant_id, subscription_id)
    now = utcnow()
    for name in ("url", "events", "enabled"):
        if name in changes and changes[name] is None:
            raise ValidationFailed.at(name, "may not be null")
    if "url" in changes:
        row.url = _url(changes["url"], allow_private=allow_private)
    if "events" in changes:
        row.events = _event_types(changes["events"])
    if "description" in changes:
        row.description = changes["description"]
    if "enabled" in changes and changes["enabled"] != row.enabled:
        if changes["enabled"]:
            row.enabled, row.disabled_reason, row.failing_since = True, None, None
        else:
            disable(session, row, reason="disabled by request", now=now)
    row.updated_at = now
    session.flush()
    return render_subscription(row, now=now)


def disable(session: Session, row: WebhookSubscription, *, reason: str, now: datetime) -> None:
    row.enabled = False
    row.disabled_reason = reason
    row.updated_at = now
    repository.fail_pending(
        session,
        tenant_id=row.tenant_id,
        subscription_id=row.id,
        reason=f"not sent: subscription {reason}",
        now=now,
    )


def delete_subscription(session: Session, *, tenant_id: str, subscription_id: str) -> None:
    _subscription(session, tenant_id, subscription_id)
    repository.delete_subscription(session, tenant_id=tenant_id, subscription_id=subscription_id)


def rotate_secret(session: Session, *, tenant_id: str, subscription_id: str) -> dict[str, Any]:
    """A new secret; the current one keeps signing (as a second signature) for 24 h."""
    row = _subscription(session, tenant_id, subscription_id)
    now = utcnow()
    row.previous_secret = row.secret
    row.previous_secret_expires_at = now + ROTATION_OVERLAP
    row.secret = new_secret()
    row.updated_at = now
    session.flush()
    return render_subscription(row, now=now) | {"secret": row.secret}


# --- deliveries ------------------------------------------------------------------------------


def list_deliveries(
    session: Session,
    *,
    tenant_id: str,
    subscription_id: str,
    limit: int,
    cursor: str | None,
    status: str | None,
) -> dict[str, Any]:
    _subscription(session, tenant_id, subscription_id, for_update=False)
    if cursor is not None and not cursor.startswith("del_"):
        raise invalid_cursor()
    rows, next_cursor = repository.list_deliveries(
        session,
        tenant_id=tenant_id,
        subscription_id=subscription_id,
        limit=limit,
        before_id=cursor,
        status=status,
    )
    return {"data": [render_delivery(r) for r in rows], "next_cursor": next_cursor}


def resource_deliveries(
    session: Session, *, tenant_id: str, resource_key: str, since: datetime, limit: int = 100
) -> list[dict[str, Any]]:
    """The messages about one resource (say a return, since it was opened), each with every
    delivery attempt of it to every subscription: two queries, whatever the count."""
    messages = repository.messages_of_resource(
        session, tenant_id=tenant_id, resource_key=resource_key, since=since, limit=limit
    )
    attempts: dict[str, list[dict[str, Any]]] = {message.id: [] for message in messages}
    for row in repository.deliveries_of_messages(
        session, tenant_id=tenant_id, message_ids=list(attempts)
    ):
        attempts[row.message_id].append(render_delivery(row) | {"webhook_id": row.subscription_id})
    return [
        {
            "id": message.id,
            "type": message.type,
            "timestamp": rfc3339(message.created_at),
            "published": message.seq is not None,
            "deliveries": attempts[message.id],
        }
        for message in messages
    ]


def retry_delivery(
    session: Session, *, tenant_id: str, subscription_id: str, delivery_id: str
) -> dict[str, Any]:
    """Queue one more attempt of a delivery's message now (a single attempt: no automatic
    retries follow it). An attempt of it already pending is moved to now instead."""
    subscription = _subscription(session, tenant_id, subscription_id)
    delivery = repository.find_delivery(
        session, tenant_id=tenant_id, subscription_id=subscription_id, delivery_id=delivery_id
    )
    if delivery is None:
        raise NotFound(f"No delivery {delivery_id!r} of webhook {subscription_id!r}.")
    _check_enabled(subscription)
    now = utcnow()
    attempts = repository.message_attempts(
        session,
        tenant_id=tenant_id,
        subscription_id=subscription_id,
        message_ids=[delivery.message_id],
    )
    row = repository.pending_attempt(
        session,
        tenant_id=tenant_id,
        subscription_id=subscription_id,
        message_id=delivery.message_id,
    )
    if row is not None:
        if row.lease_token is None:
            row.due_at = row.next_attempt_at = now
        session.flush()
        return render_delivery(row)
    last_attempt = attempts.get(delivery.message_id, (delivery.attempt, False))[0]
    values = repository.delivery_row(
        tenant_id=tenant_id,
        subscription_id=subscription_id,
        message_id=delivery.message_id,
        message_seq=delivery.message_seq,
        event_type=delivery.event_type,
        resource_key=delivery.resource_key,
        attempt=last_attempt + 1,
        step=MANUAL_STEP,
        trigger="manual",
        due_at=now,
    )
    repository.insert_deliveries(session, [values])
    notify_dispatchers(session)
    return render_delivery(WebhookDelivery(**values))


def recover(
    session: Session, *, tenant_id: str, subscription_id: str, since: datetime, retention: timedelta
) -> int:
    """Queue again, now and oldest first, every message since `since` for the subscription
    that has no succeeded (or pending) delivery. Returns how many."""
    subscription = _subscription(session, tenant_id, subscription_id)
    now = utcnow()
    if since < now - retention:
        raise ValidationFailed.at("since", f"is older than the retention ({retention.days} days)")
    if since > now:
        raise ValidationFailed.at("since", "is in the future")
    _check_enabled(subscription)
    types = None if "*" in subscription.events else list(subscription.events)
    messages = repository.published_since(
        session, tenant_id=tenant_id, since=since, types=types, limit=MAX_RECOVER
    )
    attempts = repository.message_attempts(
        session,
        tenant_id=tenant_id,
        subscription_id=subscription_id,
        message_ids=[m[0] for m in messages],
    )
    rows = []
    for message_id, seq, event_type, resource_key in messages:
        last_attempt, settled = attempts.get(message_id, (0, False))
        if settled:
            continue
        rows.append(
            repository.delivery_row(
                tenant_id=tenant_id,
                subscription_id=subscription_id,
                message_id=message_id,
                message_seq=seq,
                event_type=event_type,
                resource_key=resource_key,
                attempt=last_attempt + 1,
                step=0,
                trigger="recover",
                due_at=now,
            )
        )
    repository.insert_deliveries(session, rows)
    if rows:
        notify_dispatchers(session)
    return len(rows)


# --- publishing ------------------------------------------------------------------------------


def publish(session: Session, *, now: datetime, limit: int = PUBLISH_BATCH) -> int:
    """Number the committed, unpublished outbox rows for the feed and queue their webhook
    deliveries, in one transaction; returns how many were published (0 when another
    publisher holds the sequence right now).

    Numbers are given only to committed rows (this transaction sees no others) while the
    sequence row is locked, and each publisher commits before the next one numbers; so a
    reader that has seen number n will never later find a row numbered below n.
    """
    last = repository.lock_feed_sequence(session)
    if last is None:
        return 0
    rows = repository.unpublished(session, limit=limit)
    if not rows:
        return 0
    first = last + 1
    repository.mark_published(session, rows, first_seq=first, now=now)
    subscriptions: dict[str, list[WebhookSubscription]] = {}
    for sub in repository.enabled_subscriptions(
        session, tenant_ids=sorted({row.tenant_id for row in rows})
    ):
        subscriptions.setdefault(sub.tenant_id, []).append(sub)
    deliveries = []
    for index, row in enumerate(rows):
        for sub in subscriptions.get(row.tenant_id, ()):
            if "*" in sub.events or row.type in sub.events:
                deliveries.append(
                    repository.delivery_row(
                        tenant_id=row.tenant_id,
                        subscription_id=sub.id,
                        message_id=row.id,
                        message_seq=first + index,
                        event_type=row.type,
                        resource_key=row.resource_key,
                        attempt=1,
                        step=0,
                        trigger="scheduled",
                        due_at=now,
                    )
                )
    repository.insert_deliveries(session, deliveries)
    if deliveries:
        notify_dispatchers(session)
    return len(rows)


# --- the feed --------------------------------------------------------------------------------


def list_messages(
    session: Session,
    *,
    tenant_id: str,
    after: str | None,
    types: str | None,
    limit: int,
) -> dict[str, Any]:
    chosen = None
    if types:
        chosen = event_list(types)
        unknown = [name for name in chosen if name not in EVENT_TYPES]
        if unknown:
            raise InvalidRequest.at(
                "type", f"unknown event type {unknown[0]!r}", "Unknown event type."
            )
    after_seq = 0
    if after:
        seq = repository.message_seq(session, tenant_id=tenant_id, message_id=after)
        if seq is None:
            raise InvalidRequest.at(
                "after",
                "not a message id of this tenant",
                "No such message (or it is older than the retention).",
            )
        after_seq = seq
    rows = repository.feed(
        session, tenant_id=tenant_id, after_seq=after_seq, types=chosen, limit=limit
    )
    next_cursor = rows[-1].id if len(rows) == limit else None
    return {"data": [render_message(row) for row in rows], "next_cursor": next_cursor}
