"""The storefront: customers (signed by the merchant's backend) and guests (an order id and
its email) see their own orders and open, follow and cancel their own returns (API.md 4.1).

A storefront caller never learns that something of someone else's exists: other people's
orders are `order_not_found`, other people's returns and attachments are 404.
"""

import logging
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

import jwt
from sqlalchemy import ColumnElement
from sqlalchemy.orm import Session

from returnstack.kit.errors import AuthenticationFailed, Conflict, InvalidTransition, NotFound
from returnstack.kit.timefmt import rfc3339
from returnstack.kit.tokens import hash_token, new_token
from returnstack.models import Order, Return
from returnstack.models.returns import ReturnStatus
from returnstack.orders.service import render_orders
from returnstack.returns import attachments, service
from returnstack.returns.errors import ReturnErrorCode
from returnstack.returns.policy import get_policy, terms_for
from returnstack.returns.repository import find_return, render_returns
from returnstack.returns.schemas import CancelBody, ReturnCreate
from returnstack.storefront import repository
from returnstack.storefront.auth import TOKEN_PREFIX, StorefrontCaller
from returnstack.storefront.schemas import StorefrontReturn, StorefrontReturnItem
from returnstack.tenants.service import valid_signing_secrets

log = logging.getLogger("returnstack.storefront")

SESSION_TTL = timedelta(hours=1)
TOKEN_LEEWAY_SECONDS = 30
MAX_TOKEN_LIFETIME = timedelta(hours=24)
# A tenant's expired sessions are deleted when one of its sessions is opened, at most once
# this often per process: on a schedule, not by chance, and never a scan per sign-in.
PRUNE_EVERY = timedelta(minutes=1)
_last_pruned: dict[str, datetime] = {}  # tenant id -> last prune (one entry per tenant)
_last_pruned_lock = threading.Lock()
# Statuses in which a storefront caller may still add evidence to a return.
ATTACHABLE = frozenset({ReturnStatus.requested, ReturnStatus.approved, ReturnStatus.received})


# --- sessions ------------------------------------------------------------------------------


def _pruning_due(tenant_id: str, now: datetime) -> bool:
    with _last_pruned_lock:
        last = _last_pruned.get(tenant_id)
        if last is not None and now - last < PRUNE_EVERY:
            return False
        _last_pruned[tenant_id] = now
        return True


def _open_session(
    session: Session, *, tenant_id: str, kind: str, customer_id: str | None, email: str | None
) -> dict[str, Any]:
    now = datetime.now(UTC)
    if _pruning_due(tenant_id, now):
        repository.delete_expired_sessions(session, tenant_id=tenant_id, now=now)
    token = new_token(TOKEN_PREFIX, tenant_id)
    expires_at = now + SESSION_TTL
    repository.insert_session(
        session,
        tenant_id=tenant_id,
        token_hash=hash_token(token),
        kind=kind,
        customer_id=customer_id,
        email=email,
        created_at=now,
        expires_at=expires_at,
    )
    log.info("storefront.session_opened", extra={"tenant_id": tenant_id, "kind": kind})
    return {"session": token, "expires_at": rfc3339(expires_at)}


def open_customer_session(session: Session, *, tenant_id: str, token: str) -> dict[str, Any]:
    """A session for the customer named by `sub` of a JWT that the merchant's backend signed
    with the tenant's signing secret (HS256 only; `exp` and `sub` required)."""
    claims = _decode_customer_token(token, valid_signing_secrets(session, tenant_id=tenant_id))
    _check_lifetime(claims)
    subject = claims.get("sub")
    if not isinstance(subject, str) or not 1 <= len(subject) <= 128 or "\x00" in subject:
        raise _invalid_token("sub must be a customer id")
    return _open_session(
        session, tenant_id=tenant_id, kind="customer", customer_id=subject, email=None
    )


def _invalid_token(reason: str) -> AuthenticationFailed:
    return AuthenticationFailed.at(
        "customer_token", reason, "The customer token is invalid or expired."
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_lifetime(claims: dict[str, Any]) -> None:
    """A customer token lives at most 24 h: from its `iat`, or (without one) from now. A
    stolen long-lived token would otherwise open sessions for as long as it says."""
    limit = MAX_TOKEN_LIFETIME.total_seconds()
    expires, issued_at = claims["exp"], claims.get("iat")
    # PyJWT accepts numeric strings ("9999999999") for both; they must be numbers here.
    if not all(_is_number(value) for value in (expires, issued_at) if value is not None):
        raise _invalid_token("exp and iat must be numbers")
    if issued_at is not None:
        too_long = expires - issued_at > limit
        reason = "exp must be at most 24 hours after iat"
    else:
        too_long = expires - time.time() > limit + TOKEN_LEEWAY_SECONDS
        reason = "exp must be at most 24 hours from now"
    if too_long:
        raise _invalid_token(reason)


def _decode_customer_token(token: str, secrets_now: list[str]) -> dict[str, Any]:
    """The token's claims, verified with the tenant's valid secrets (after a rotation, the
    previous one too for 24 h): each secret is tried once, and only a bad signature moves on
    to the next one."""
    problem: jwt.PyJWTError = jwt.InvalidSignatureError("Signature verification failed")
    for secret in secrets_now:
        try:
            return jwt.decode(
                token,
                secret,
                algorithms=["HS256"],
                options={"require": ["exp", "sub"], "verify_aud": False},
                leeway=TOKEN_LEEWAY_SECONDS,
            )
        except jwt.InvalidSignatureError as exc:
            problem = exc
        except jwt.PyJWTError as exc:
            problem = exc
            break
    raise _invalid_token(str(problem) or "invalid token") from None


GUEST_REFUSED = "No order matches this order id and email."


def guest_pair_matches(session: Session, *, tenant_id: str, order_id: str, email: str) -> bool:
    """Whether the order is a guest order (no customer account) with this email."""
    order_email = repository.guest_order_email(session, tenant_id=tenant_id, order_id=order_id)
    # Compared in constant time; emails are stored and validated in lower case.
    return secrets.compare_digest((order_email or "").encode(), email.encode()) and bool(
        order_email
    )


def open_guest_session(session: Session, *, tenant_id: str, email: str) -> dict[str, Any]:
    """A session for a guest whose order id and email the caller has just matched."""
    return _open_session(session, tenant_id=tenant_id, kind="guest", customer_id=None, email=email)


# --- ownership -----------------------------------------------------------------------------


def _owned_by(caller: StorefrontCaller, model: type[Order] | type[Return]) -> ColumnElement[bool]:
    return repository.owned(
        kind=caller.kind,
        customer_id=caller.customer_id,
        email=caller.email,
        customer_column=model.customer_id,
        email_column=model.email,
    )


def own_return(
    session: Session, *, caller: StorefrontCaller, reference: str, for_update: bool = False
) -> Return:
    """The caller's return by id or number; 404 for anyone else's, as for none at all."""
    ret = find_return(
        session, tenant_id=caller.tenant_id, reference=reference, for_update=for_update
    )
    if not caller.requester.owns(ret.customer_id, ret.email):
        raise NotFound(f"No return {reference!r}.")
    return ret


# --- views ---------------------------------------------------------------------------------


def storefront_url(return_id: str, attachment_id: str) -> str:
    return f"/v1/storefront/returns/{return_id}/attachments/{attachment_id}"


ITEM_FIELDS = tuple(StorefrontReturnItem.model_fields)  # the documented ones, in order


def storefront_view(rendered: dict[str, Any]) -> dict[str, Any]:
    """A return as its customer sees it (storefront.schemas.StorefrontReturn), picked field
    by field from the staff's, so that a field added for staff never shows here unseen: no
    staff note, external id, metadata or disposition; attachment links under /v1/storefront;
    staff steps in the history as `merchant`, without their notes; only `cancel` as an
    action."""
    view = {field: rendered[field] for field in StorefrontReturn.model_fields}
    view["items"] = [{field: item[field] for field in ITEM_FIELDS} for item in rendered["items"]]
    view["attachments"] = [
        attachment | {"url": storefront_url(rendered["id"], attachment["id"])}
        for attachment in rendered["attachments"]
    ]
    view["allowed_actions"] = [
        action for action in rendered["allowed_actions"] if action == "cancel"
    ]
    view["history"] = [
        entry
        if str(entry["actor"]).startswith("storefront:")
        else entry | {"actor": "merchant", "note": None}
        for entry in rendered["history"]
    ]
    return view


def _line_view(line: dict[str, Any], order: Order, policy: Any, now: datetime) -> dict[str, Any]:
    terms = terms_for(policy, product_id=line["product_id"], category=line["category"])
    deadline = order.placed_at + timedelta(days=terms.window_days)
    codes = []
    if not terms.returnable:
        codes.append(ReturnErrorCode.final_sale)
    if now > deadline:
        codes.append(ReturnErrorCode.outside_return_window)
    if line["returnable_quantity"] <= 0:
        codes.append(ReturnErrorCode.quantity_exceeds_returnable)
    return line | {"ineligible": codes, "returnable_until": rfc3339(deadline)}


def list_orders(
    session: Session, *, caller: StorefrontCaller, limit: int, cursor: str | None
) -> dict[str, Any]:
    """The caller's orders, newest first, each line with its returnable quantity and the
    codes that keep it from being returned now."""
    rows, next_cursor = repository.list_owned(
        session,
        Order,
        tenant_id=caller.tenant_id,
        ownership=_owned_by(caller, Order),
        limit=limit,
        cursor=cursor,
    )
    policy = get_policy(session, tenant_id=caller.tenant_id)
    now = datetime.now(UTC)
    by_id = {row.id: row for row in rows}
    data = [
        order
        | {
            "lines": [
                _line_view(line, by_id[order["order_id"]], policy, now) for line in order["lines"]
            ]
        }
        for order in render_orders(session, tenant_id=caller.tenant_id, orders=rows)
    ]
    return {"data": data, "next_cursor": next_cursor}


def list_returns(
    session: Session, *, caller: StorefrontCaller, limit: int, cursor: str | None
) -> dict[str, Any]:
    rows, next_cursor = repository.list_owned(
        session,
        Return,
        tenant_id=caller.tenant_id,
        ownership=_owned_by(caller, Return),
        limit=limit,
        cursor=cursor,
    )
    rendered = render_returns(session, tenant_id=caller.tenant_id, returns=rows)
    return {"data": [storefront_view(ret) for ret in rendered], "next_cursor": next_cursor}


def get_return(session: Session, *, caller: StorefrontCaller, reference: str) -> dict[str, Any]:
    ret = own_return(session, caller=caller, reference=reference)
    return storefront_view(render_returns(session, tenant_id=caller.tenant_id, returns=[ret])[0])


# --- opening and cancelling returns --------------------------------------------------------


def preview_return(
    session: Session, *, caller: StorefrontCaller, data: ReturnCreate
) -> dict[str, Any]:
    return service.preview_return(
        session, tenant_id=caller.tenant_id, requester=caller.requester, data=data
    )


def open_return(
    session: Session, *, caller: StorefrontCaller, data: ReturnCreate
) -> dict[str, Any]:
    """Open a return for the caller (`source: "storefront"`), from one or more of their orders."""
    rendered = service.open_return(
        session,
        tenant_id=caller.tenant_id,
        requester=caller.requester,
        data=data,
        source="storefront",
        actor=caller.actor,
    )
    return storefront_view(rendered)


def cancel_return(
    session: Session,
    *,
    caller: StorefrontCaller,
    reference: str,
    body: CancelBody,
    if_match: int | None,
) -> dict[str, Any]:
    ret = own_return(session, caller=caller, reference=reference, for_update=True)
    try:
        rendered = service.apply_action(
            session,
            tenant_id=caller.tenant_id,
            reference=ret.id,
            action="cancel",
            body=body,
            actor=caller.actor,
            if_match=if_match,
            requester=caller.requester,
        )
    except InvalidTransition as refused:
        # Name the customer's actions (cancel is the only one, and it was refused), not
        # the staff's: a customer cannot refund or reopen.
        status = refused.extra.get("current_status", ret.status)
        raise InvalidTransition(
            f"This return cannot be cancelled now (it is {status}).",
            details=refused.details,
            extra={"current_status": status, "allowed_actions": []},
        ) from None
    return storefront_view(rendered)


# --- attachments ---------------------------------------------------------------------------


def attach(
    session: Session,
    *,
    caller: StorefrontCaller,
    storage: attachments.AttachmentStorage,
    reference: str,
    source: BinaryIO,
    filename: str | None,
    quota_bytes: int,
) -> dict[str, Any]:
    """Evidence on the caller's own return, while it is still being handled."""
    ret = own_return(session, caller=caller, reference=reference, for_update=True)
    if ret.status not in ATTACHABLE:
        raise Conflict.at(
            "status",
            f"is {ret.status}",
            f"Files can no longer be added to a return in status {ret.status!r}.",
        )
    return attachments.add_attachment(
        session,
        storage=storage,
        ret=ret,
        source=source,
        filename=filename,
        quota_bytes=quota_bytes,
        url=storefront_url,
    )


def own_attachment(
    session: Session, *, caller: StorefrontCaller, reference: str, attachment_id: str
) -> Any:
    ret = own_return(session, caller=caller, reference=reference)
    return attachments.find_attachment(session, ret=ret, attachment_id=attachment_id)
