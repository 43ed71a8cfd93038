"""Storefront sessions: opaque tokens that name their tenant, the X-Storefront-Session
dependency, and the limits on failed guest sign-ins (storefront/signin.py)."""

import math
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from returnstack.kit.deps import read_session
from returnstack.kit.errors import AuthenticationFailed, RateLimited
from returnstack.kit.ratelimit import check_rate_limit, client_address
from returnstack.kit.tokens import hash_token, token_tenant
from returnstack.returns.eligibility import Requester
from returnstack.storefront import repository
from returnstack.storefront.signin import GuestSignIns

TOKEN_PREFIX = "sfs_"
HEADER = "X-Storefront-Session"


@dataclass(frozen=True, slots=True)
class StorefrontCaller:
    """Who calls the storefront: a signed-in customer or a guest (an email), of one tenant."""

    tenant_id: str
    kind: str  # customer | guest
    customer_id: str | None
    email: str | None  # the guest's email, or the customer's (customers.email), normalised
    token_hash: str

    @property
    def requester(self) -> Requester:
        return Requester(customer_id=self.customer_id, email=self.email, storefront=True)

    @property
    def actor(self) -> str:
        # No email in the actor: history outlives a guest's right to be forgotten.
        if self.kind == "customer":
            return f"storefront:customer:{self.customer_id}"
        return "storefront:guest"

    @property
    def identity(self) -> str:
        """Stable across sessions of the same person (for idempotency keys)."""
        return f"customer:{self.customer_id}" if self.kind == "customer" else f"guest:{self.email}"


def resolve_session(
    session: Session, *, tenant_id: str, token_hash: str
) -> StorefrontCaller | None:
    """The caller of a live session, or None. Checked on every request: a customer's email
    is read again (it may have changed), and a guest's email must still have guest orders."""
    row = repository.find_session(session, tenant_id=tenant_id, token_hash=token_hash)
    if row is None:
        return None
    if row.kind == "customer":
        assert row.customer_id is not None
        email = repository.customer_email(session, tenant_id=tenant_id, customer_id=row.customer_id)
        return StorefrontCaller(tenant_id, "customer", row.customer_id, email, token_hash)
    if row.email is None or not repository.email_has_guest_orders(
        session, tenant_id=tenant_id, email=row.email
    ):
        return None
    return StorefrontCaller(tenant_id, "guest", None, row.email, token_hash)


def storefront_caller(
    request: Request,
    token: Annotated[
        str | None,
        Header(
            alias=HEADER,
            description="The session from POST /v1/storefront/sessions.",
        ),
    ] = None,
) -> StorefrontCaller:
    if not token:
        raise AuthenticationFailed.at(
            HEADER, "missing", f"A storefront session is required: {HEADER}: <session>."
        )
    tenant_id = token_tenant(TOKEN_PREFIX, token.strip())
    caller = None
    if tenant_id is not None:
        with read_session(request) as session:
            caller = resolve_session(
                session, tenant_id=tenant_id, token_hash=hash_token(token.strip())
            )
    if caller is None:
        raise AuthenticationFailed.at(
            HEADER,
            "unknown or expired session",
            "The storefront session is unknown or expired; open a new one.",
        )
    check_rate_limit(request, f"storefront:{caller.tenant_id}:{caller.token_hash[:24]}")
    return caller


Storefront = Annotated[StorefrontCaller, Depends(storefront_caller)]


# --- failed guest sign-ins -------------------------------------------------------------------


def check_guest_sign_in(request: Request, *, tenant_id: str, order_id: str) -> None:
    """429 while this client may not try this order (see storefront/signin.py)."""
    limits: GuestSignIns = request.app.state.guest_sign_ins
    wait = limits.wait(tenant_id=tenant_id, order_id=order_id, client=client_address(request))
    if wait:
        raise RateLimited(
            "Too many failed sign-ins; retry after the delay in Retry-After.",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )


def guest_sign_in_failed(request: Request, *, tenant_id: str, order_id: str) -> None:
    request.app.state.guest_sign_ins.failed(
        tenant_id=tenant_id, order_id=order_id, client=client_address(request)
    )
