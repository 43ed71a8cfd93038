"""The SQL of webhooks: subscriptions, delivery rows, publishing the outbox, claims, the feed."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, case, delete, func, or_, select, text, tuple_, update
from sqlalchemy.orm import Session, aliased

from returnstack.kit.bulk import insert_rows
from returnstack.kit.ids import id_floor, new_id
from returnstack.kit.pagination import keyset_page
from returnstack.models import (
    OutboxEvent,
    Tenant,
    WebhookDelivery,
    WebhookState,
    WebhookSubscription,
)

FEED_SEQUENCE = "feed_seq"
SQLITE_DISPATCHER = "sqlite_dispatcher"

# The dispatcher's updates by key, as Core statements run with many rows: the ORM's bulk
# update by primary key spent several times what SQLite does per row, inside the write
# transaction, where (on SQLite) the server's writer waits for it.
_outbox = cast(Table, OutboxEvent.__table__)
_deliveries = cast(Table, WebhookDelivery.__table__)
_MARK_PUBLISHED = (
    update(_outbox)
    .where(_outbox.c.tenant_id == bindparam("k_tenant_id"), _outbox.c.id == bindparam("k_id"))
    .values(seq=bindparam("v_seq"), dispatched_at=bindparam("v_dispatched_at"))
)
FINISH_COLUMNS = (
    "status",
    "attempted_at",
    "response_status",
    "response_body",
    "error",
    "duration_ms",
    "next_attempt_at",
    "lease_token",
    "lease_until",
)
_FINISH = (
    update(_deliveries)
    .where(
        _deliveries.c.tenant_id == bindparam("k_tenant_id"),
        _deliveries.c.id == bindparam("k_id"),
    )
    .values({column: bindparam(f"v_{column}") for column in FINISH_COLUMNS})
)


def is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# --- subscriptions ---------------------------------------------------------------------------


def find_subscription(
    session: Session, *, tenant_id: str, subscription_id: str, for_update: bool = False
) -> WebhookSubscription | None:
    query = select(WebhookSubscription).where(
        WebhookSubscription.tenant_id == tenant_id, WebhookSubscription.id == subscription_id
    )
    if for_update and is_postgresql(session):
        query = query.with_for_update()
    return session.scalar(query)


def list_subscriptions(
    session: Session, *, tenant_id: str, limit: int, cursor: str | None
) -> tuple[list[WebhookSubscription], str | None]:
    """Newest first."""
    query = select(WebhookSubscription).where(WebhookSubscription.tenant_id == tenant_id)
    return keyset_page(
        session,
        query,
        at=WebhookSubscription.created_at,
        row_id=WebhookSubscription.id,
        limit=limit,
        cursor=cursor,
    )


def count_subscriptions(session: Session, *, tenant_id: str) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(WebhookSubscription)
            .where(WebhookSubscription.tenant_id == tenant_id)
        )
        or 0
    )


def delete_subscription(session: Session, *, tenant_id: str, subscription_id: str) -> None:
    session.execute(
        delete(WebhookDelivery).where(
            WebhookDelivery.tenant_id == tenant_id,
            WebhookDelivery.subscription_id == subscription_id,
        )
    )
    session.execute(
        delete(WebhookSubscription).where(
            WebhookSubscription.tenant_id == tenant_id, WebhookSubscription.id == subscription_id
        )
    )


def fail_pending(
    session: Session, *, tenant_id: str, subscription_id: str, reason: str, now: datetime
) -> None:
    """A disabled subscription's queued attempts end as failed (recover sends them later)."""
    session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.tenant_id == tenant_id,
            WebhookDelivery.subscription_id == subscription_id,
            WebhookDelivery.status == "pending",
            WebhookDelivery.lease_token.is_(None),
        )
        .values(status="failed", error=reason, next_attempt_at=None, attempted_at=None)
        .execution_options(synchronize_session=False)
    )


# --- delivery rows ---------------------------------------------------------------------------


def delivery_row(
    *,
    tenant_id: str,
    subscription_id: str,
    message_id: str,
    message_seq: int,
    event_type: str,
    resource_key: str | None,
    attempt: int,
    step: int,
    trigger: str,
    due_at: datetime,
) -> dict[str, Any]:
    """A pending attempt, as insert_rows takes it (every column, so rows of a batch match)."""
    return {
        "tenant_id": tenant_id,
        "id": new_id("del"),
        "subscription_id": subscription_id,
        "message_id": message_id,
        "message_seq": message_seq,
        "event_type": event_type,
        # A message without a resource is ordered after nothing but itself.
        "resource_key": resource_key or message_id,
        "attempt": attempt,
        "step": step,
        "status": "pending",
        "trigger": trigger,
        "due_at": due_at,
        "lease_token": None,
        "lease_until": None,
        "attempted_at": None,
        "next_attempt_at": due_at,
        "response_status": None,
        "response_body": None,
        "error": None,
        "duration_ms": None,
        "created_at": due_at,
    }


def insert_deliveries(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    insert_rows(session, WebhookDelivery, rows)


def list_deliveries(
    session: Session,
    *,
    tenant_id: str,
    subscription_id: str,
    limit: int,
    before_id: str | None,
    status: str | None,
) -> tuple[list[WebhookDelivery], str | None]:
    """Newest first (ids sort by time); the cursor is the id of a page's last row."""
    query = select(WebhookDelivery).where(
        WebhookDelivery.tenant_id == tenant_id,
        WebhookDelivery.subscription_id == subscription_id,
    )
    if before_id is not None:
        query = query.where(WebhookDelivery.id < before_id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    rows = list(session.scalars(query.order_by(WebhookDelivery.id.desc()).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], rows[limit - 1].id


def find_delivery(
    session: Session, *, tenant_id: str, subscription_id: str, delivery_id: str
) -> WebhookDelivery | None:
    return session.scalar(
        select(WebhookDelivery).where(
            WebhookDelivery.tenant_id == tenant_id,
            WebhookDelivery.subscription_id == subscription_id,
            WebhookDelivery.id == delivery_id,
        )
    )


def pending_attempt(
    session: Session, *, tenant_id: str, subscription_id: str, message_id: str
) -> WebhookDelivery | None:
    return session.scalar(
        select(WebhookDelivery).where(
            WebhookDelivery.tenant_id == tenant_id,
            WebhookDelivery.subscription_id == subscription_id,
            WebhookDelivery.message_id == message_id,
            WebhookDelivery.status == "pending",
        )
    )


def message_attempts(
    session: Session, *, tenant_id: str, subscription_id: str, message_ids: Sequence[str]
) -> dict[str, tuple[int, bool]]:
    """Per message: its highest attempt number and whether it succeeded or is pending."""
    settled = func.max(case((WebhookDelivery.status.in_(("succeeded", "pending")), 1), else_=0))
    result: dict[str, tuple[int, bool]] = {}
    for start in range(0, len(message_ids), 500):
        rows = session.execute(
            select(WebhookDelivery.message_id, func.max(WebhookDelivery.attempt), settled)
            .where(
                WebhookDelivery.tenant_id == tenant_id,
                WebhookDelivery.subscription_id == subscription_id,
                WebhookDelivery.message_id.in_(message_ids[start : start + 500]),
            )
            .group_by(WebhookDelivery.message_id)
        )
        for message_id, attempt, done in rows:
            result[message_id] = (attempt or 0, bool(done))
    return result


def messages_of_resource(
    session: Session, *, tenant_id: str, resource_key: str, since: datetime, limit: int
) -> list[OutboxEvent]:
    """The messages about one resource (a return, ...), made at `since` or later, oldest
    first: a range of the primary key (ids are time first), filtered by the key's hash."""
    return list(
        session.scalars(
            select(OutboxEvent)
            .where(
                OutboxEvent.tenant_id == tenant_id,
                OutboxEvent.id >= id_floor("msg", since),
                OutboxEvent.resource_key == resource_key,
            )
            .order_by(OutboxEvent.id)
            .limit(limit)
        )
    )


def deliveries_of_messages(
    session: Session, *, tenant_id: str, message_ids: Sequence[str]
) -> list[WebhookDelivery]:
    """Every attempt of these messages to every subscription, in one query."""
    if not message_ids:
        return []
    return list(
        session.scalars(
            select(WebhookDelivery)
            .where(
                WebhookDelivery.tenant_id == tenant_id,
                WebhookDelivery.message_id.in_(list(message_ids)),
            )
            .order_by(WebhookDelivery.id)
        )
    )


def delivery_summaries(
    session: Session, *, tenant_id: str, subscription_ids: Sequence[str]
) -> dict[str, dict[str, int]]:
    """Per subscription: how many attempt rows are pending, succeeded and failed (one query)."""
    result: dict[str, dict[str, int]] = {}
    if not subscription_ids:
        return result
    rows = session.execute(
        select(WebhookDelivery.subscription_id, WebhookDelivery.status, func.count())
        .where(
            WebhookDelivery.tenant_id == tenant_id,
            WebhookDelivery.subscription_id.in_(list(subscription_ids)),
        )
        .group_by(WebhookDelivery.subscription_id, WebhookDelivery.status)
    )
    for subscription_id, status, count in rows:
        result.setdefault(subscription_id, {})[status] = int(count)
    return result


# --- publishing: number committed outbox rows and queue their deliveries ----------------------


@dataclass(frozen=True, slots=True)
class Unpublished:
    tenant_id: str
    id: str
    type: str
    resource_key: str | None


def lock_feed_sequence(session: Session) -> int | None:
    """The last feed number, with its row locked until commit; None when another
    publisher holds it now (PostgreSQL: it will publish these rows)."""
    query = select(WebhookState.value).where(WebhookState.name == FEED_SEQUENCE)
    if is_postgresql(session):
        query = query.with_for_update(skip_locked=True)
    return session.scalar(query)


def unpublished(session: Session, *, limit: int) -> list[Unpublished]:
    rows = session.execute(
        select(OutboxEvent.tenant_id, OutboxEvent.id, OutboxEvent.type, OutboxEvent.resource_key)
        .where(OutboxEvent.dispatched_at.is_(None))
        .order_by(OutboxEvent.created_at, OutboxEvent.id)
        .limit(limit)
    )
    return [Unpublished(*row) for row in rows]


def has_unpublished(session: Session) -> bool:
    """Whether any message waits for its webhooks. The oldest by the pending index's order:
    SQLite plans that read of the (small) index whatever its statistics say. `EXISTS`
    scanned the whole outbox once statistics had been taken during a large backlog (after
    an import, or the demo's load) and the backlog had drained: every poll."""
    oldest = (
        select(OutboxEvent.created_at)
        .where(OutboxEvent.dispatched_at.is_(None))
        .order_by(OutboxEvent.created_at)
        .limit(1)
    )
    return session.execute(oldest).first() is not None


def mark_published(
    session: Session, rows: Sequence[Unpublished], *, first_seq: int, now: datetime
) -> None:
    session.execute(
        _MARK_PUBLISHED,
        [
            {
                "k_tenant_id": row.tenant_id,
                "k_id": row.id,
                "v_seq": first_seq + i,
                "v_dispatched_at": now,
            }
            for i, row in enumerate(rows)
        ],
    )
    session.execute(
        update(WebhookState)
        .where(WebhookState.name == FEED_SEQUENCE)
        .values(value=first_seq + len(rows) - 1)
    )


def enabled_subscriptions(
    session: Session, *, tenant_ids: Sequence[str]
) -> list[WebhookSubscription]:
    return list(
        session.scalars(
            select(WebhookSubscription).where(
                WebhookSubscription.tenant_id.in_(tenant_ids),
                WebhookSubscription.enabled.is_(True),
            )
        )
    )


# --- claims ----------------------------------------------------------------------------------


# Made once: an alias copies every column of the table, which cost more CPU than the rest
# of a claim (the dispatcher claims after every commit that writes messages).
_EARLIER = aliased(WebhookDelivery)


def claimable(
    session: Session, *, now: datetime, limit: int, lock: bool = True
) -> list[tuple[str, str]]:
    """(tenant_id, id) of pending attempts that are due, not leased (or whose lease ran
    out), and not held up by an earlier pending message of the same resource, in the order
    of the claim index. PostgreSQL: the rows are locked, skipping those another worker
    holds. Whether their subscription is still enabled is checked once they are loaded
    (`load_claimed`): a join here would make PostgreSQL sort the whole queue."""
    # The first pending message of the row's resource: a lookup of the ordering index per
    # candidate (a scalar subquery, which the planner cannot turn into a scan of the queue).
    earlier = _EARLIER
    first_pending = (
        select(earlier.message_seq)
        .where(
            earlier.tenant_id == WebhookDelivery.tenant_id,
            earlier.subscription_id == WebhookDelivery.subscription_id,
            earlier.resource_key == WebhookDelivery.resource_key,
            earlier.status == "pending",
        )
        .order_by(earlier.message_seq)
        .limit(1)
        .scalar_subquery()
    )
    query = (
        select(WebhookDelivery.tenant_id, WebhookDelivery.id)
        .where(
            WebhookDelivery.status == "pending",
            WebhookDelivery.due_at <= now,
            or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until <= now),
            # The row is its resource's first pending message: `<=` means `==` here (the
            # first is never later than the row itself), but PostgreSQL estimates an
            # equality with a subquery as matching almost nothing, and would then sort the
            # whole queue rather than read the claim index in order and stop at `limit`.
            WebhookDelivery.message_seq <= first_pending,
        )
        .order_by(WebhookDelivery.due_at, WebhookDelivery.message_seq)
        .limit(limit)
    )
    if lock and is_postgresql(session):
        query = query.with_for_update(skip_locked=True)
    return [(tenant_id, row_id) for tenant_id, row_id in session.execute(query)]


def lease(
    session: Session, keys: Sequence[tuple[str, str]], *, token: str, until: datetime
) -> None:
    """One statement for the whole claim."""
    session.execute(
        update(WebhookDelivery)
        .where(tuple_(WebhookDelivery.tenant_id, WebhookDelivery.id).in_(list(keys)))
        .values(lease_token=token, lease_until=until)
        .execution_options(synchronize_session=False)
    )


@dataclass(frozen=True, slots=True)
class Claimed:
    """What sending a claimed attempt takes (columns, not ORM objects: a claim is hot)."""

    tenant_id: str
    id: str
    subscription_id: str
    message_id: str
    message_seq: int
    event_type: str
    resource_key: str
    attempt: int
    step: int
    url: str
    enabled: bool
    secret: str
    previous_secret: str | None
    previous_secret_expires_at: datetime | None
    # The message (None when it is no longer retained)
    message_type: str | None
    message_created_at: datetime | None
    data: Any
    changes: Any


def load_claimed(session: Session, keys: Sequence[tuple[str, str]]) -> list[Claimed]:
    """The claimed rows with their subscription and message."""
    d, s, m = WebhookDelivery, WebhookSubscription, OutboxEvent
    rows = session.execute(
        select(
            d.tenant_id,
            d.id,
            d.subscription_id,
            d.message_id,
            d.message_seq,
            d.event_type,
            d.resource_key,
            d.attempt,
            d.step,
            s.url,
            s.enabled,
            s.secret,
            s.previous_secret,
            s.previous_secret_expires_at,
            m.type.label("message_type"),
            m.created_at.label("message_created_at"),
            m.data,
            m.changes,
        )
        .join(s, and_(s.tenant_id == d.tenant_id, s.id == d.subscription_id))
        .outerjoin(m, and_(m.tenant_id == d.tenant_id, m.id == d.message_id))
        .where(tuple_(d.tenant_id, d.id).in_(list(keys)))
    )
    return [Claimed(**row._asdict()) for row in rows]


def unsent(session: Session, keys: Sequence[tuple[str, str]], *, reason: str) -> None:
    """Claimed attempts of a subscription disabled meanwhile end as failed, unsent."""
    session.execute(
        update(WebhookDelivery)
        .where(tuple_(WebhookDelivery.tenant_id, WebhookDelivery.id).in_(list(keys)))
        .values(
            status="failed", error=reason, next_attempt_at=None, lease_token=None, lease_until=None
        )
        .execution_options(synchronize_session=False)
    )


def held_attempts(
    session: Session, attempts: Sequence[tuple[str, str, str]]
) -> set[tuple[str, str]]:
    """Of (tenant_id, id, lease token), the attempts still leased with that token, locked
    until commit (PostgreSQL) so that no other dispatcher takes them over meanwhile."""
    if not attempts:
        return set()
    tokens = {(tenant_id, row_id): token for tenant_id, row_id, token in attempts}
    query = (
        select(WebhookDelivery.tenant_id, WebhookDelivery.id, WebhookDelivery.lease_token)
        .where(tuple_(WebhookDelivery.tenant_id, WebhookDelivery.id).in_(list(tokens)))
        .order_by(WebhookDelivery.tenant_id, WebhookDelivery.id)
    )
    if is_postgresql(session):
        query = query.with_for_update()
    return {
        (tenant_id, row_id)
        for tenant_id, row_id, token in session.execute(query)
        if token is not None and tokens.get((tenant_id, row_id)) == token
    }


def subscriptions_for_update(
    session: Session, keys: set[tuple[str, str]]
) -> dict[tuple[str, str], WebhookSubscription]:
    if not keys:
        return {}
    query = (
        select(WebhookSubscription)
        .where(tuple_(WebhookSubscription.tenant_id, WebhookSubscription.id).in_(sorted(keys)))
        .order_by(WebhookSubscription.tenant_id, WebhookSubscription.id)
    )
    if is_postgresql(session):
        query = query.with_for_update()
    return {(row.tenant_id, row.id): row for row in session.scalars(query)}


def finish_attempts(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Record outcomes (one executemany by primary key): rows of tenant_id, id and every
    one of FINISH_COLUMNS."""
    if rows:
        session.execute(
            _FINISH,
            [
                {"k_tenant_id": row["tenant_id"], "k_id": row["id"]}
                | {f"v_{column}": row[column] for column in FINISH_COLUMNS}
                for row in rows
            ],
        )


def analyze_queue(session: Session) -> None:
    """PostgreSQL: fresh statistics of the queue. The claim relies on them to look up the
    ordering index per candidate; with a table grown since the last ANALYZE it would scan."""
    if is_postgresql(session):
        session.execute(text("ANALYZE webhook_deliveries"))


# --- the SQLite dispatcher lease -------------------------------------------------------------


def take_lease(session: Session, *, holder: str, now: datetime, until: datetime) -> bool:
    """Hold (or renew) the one dispatcher lease; False while another holder's is valid."""
    result = session.execute(
        update(WebhookState)
        .where(
            WebhookState.name == SQLITE_DISPATCHER,
            or_(
                WebhookState.holder == holder,
                WebhookState.holder.is_(None),
                WebhookState.expires_at.is_(None),
                WebhookState.expires_at <= now,
            ),
        )
        .values(holder=holder, expires_at=until)
    )
    return bool(getattr(result, "rowcount", 0))


def lease_held_by_another(session: Session, *, holder: str, now: datetime) -> bool:
    row = session.execute(
        select(WebhookState.holder, WebhookState.expires_at).where(
            WebhookState.name == SQLITE_DISPATCHER
        )
    ).first()
    return bool(
        row is not None
        and row.holder not in (None, holder)
        and row.expires_at is not None
        and row.expires_at > now
    )


def release_lease(session: Session, *, holder: str) -> None:
    session.execute(
        update(WebhookState)
        .where(WebhookState.name == SQLITE_DISPATCHER, WebhookState.holder == holder)
        .values(holder=None, expires_at=None)
    )


# --- the feed --------------------------------------------------------------------------------


def message_seq(session: Session, *, tenant_id: str, message_id: str) -> int | None:
    return session.scalar(
        select(OutboxEvent.seq).where(
            OutboxEvent.tenant_id == tenant_id, OutboxEvent.id == message_id
        )
    )


def feed(
    session: Session, *, tenant_id: str, after_seq: int, types: Sequence[str] | None, limit: int
) -> list[OutboxEvent]:
    query = select(OutboxEvent).where(
        OutboxEvent.tenant_id == tenant_id,
        OutboxEvent.seq.is_not(None),
        OutboxEvent.seq > after_seq,
    )
    if types:
        query = query.where(OutboxEvent.type.in_(types))
    return list(session.scalars(query.order_by(OutboxEvent.seq).limit(limit)))


def published_since(
    session: Session, *, tenant_id: str, since: datetime, types: Sequence[str] | None, limit: int
) -> list[tuple[str, int, str, str | None]]:
    """(id, seq, type, resource_key) of published messages made at `since` or later."""
    query = select(
        OutboxEvent.id, OutboxEvent.seq, OutboxEvent.type, OutboxEvent.resource_key
    ).where(
        OutboxEvent.tenant_id == tenant_id,
        OutboxEvent.id >= id_floor("msg", since),
        OutboxEvent.created_at >= since,
        OutboxEvent.seq.is_not(None),
    )
    if types:
        query = query.where(OutboxEvent.type.in_(types))
    rows = session.execute(query.order_by(OutboxEvent.seq).limit(limit))
    return [(row[0], row[1] or 0, row[2], row[3]) for row in rows]


# --- metrics and retention -------------------------------------------------------------------


def pending_deliveries(session: Session) -> tuple[int, datetime | None]:
    """How many attempts are queued, and when the oldest undelivered message was made."""
    count, oldest = session.execute(
        select(func.count(), func.min(OutboxEvent.created_at))
        .select_from(WebhookDelivery)
        .outerjoin(
            OutboxEvent,
            and_(
                OutboxEvent.tenant_id == WebhookDelivery.tenant_id,
                OutboxEvent.id == WebhookDelivery.message_id,
            ),
        )
        .where(WebhookDelivery.status == "pending")
    ).one()
    unpublished_oldest = session.scalar(
        select(func.min(OutboxEvent.created_at)).where(OutboxEvent.dispatched_at.is_(None))
    )
    candidates = [moment for moment in (oldest, unpublished_oldest) if moment is not None]
    return int(count or 0), min(candidates) if candidates else None


def tenant_ids(session: Session) -> list[str]:
    return list(session.scalars(select(Tenant.id)))


def prune(session: Session, *, tenant_id: str, before: datetime, batch: int) -> int:
    """Delete up to `batch` published messages and finished attempts made before `before`."""
    old_messages = (
        select(OutboxEvent.id)
        .where(
            OutboxEvent.tenant_id == tenant_id,
            OutboxEvent.id < id_floor("msg", before),
            OutboxEvent.dispatched_at.is_not(None),
        )
        .limit(batch)
    )
    removed = session.execute(
        delete(OutboxEvent)
        .where(OutboxEvent.tenant_id == tenant_id, OutboxEvent.id.in_(old_messages))
        .execution_options(synchronize_session=False)
    )
    old_attempts = (
        select(WebhookDelivery.id)
        .where(
            WebhookDelivery.tenant_id == tenant_id,
            WebhookDelivery.id < id_floor("del", before),
            WebhookDelivery.status != "pending",
        )
        .limit(batch)
    )
    removed_attempts = session.execute(
        delete(WebhookDelivery)
        .where(WebhookDelivery.tenant_id == tenant_id, WebhookDelivery.id.in_(old_attempts))
        .execution_options(synchronize_session=False)
    )
    return int(getattr(removed, "rowcount", 0) or 0) + int(
        getattr(removed_attempts, "rowcount", 0) or 0
    )
