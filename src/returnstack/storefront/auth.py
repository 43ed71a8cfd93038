"""Storefront sessions: opaque tokens that name their tenant, the X-Storefront-Session
dependency, and the limiter of failed guest sign-ins."""

import hashlib
import math
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from returnstack.kit.deps import read_session
from returnstack.kit.errors import AuthenticationFailed, RateLimited
from returnstack.kit.ratelimit import check_rate_limit
from returnstack.returns.eligibility import Requester
from returnstack.storefront import repository

TOKEN_PREFIX = "sfs_"
HEADER = "X-Storefront-Session"
_MAX_TOKEN_CHARS = 200


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


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(tenant_id: str) -> str:
    # The random part is hex (no "_"), so the token splits at its last "_" into the tenant
    # id and the secret.
    return f"{TOKEN_PREFIX}{tenant_id}_{secrets.token_hex(32)}"


def parse_token(token: str) -> str | None:
    """The tenant id named by a session token, or None if it is not one."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > _MAX_TOKEN_CHARS:
        return None
    tenant_id, _, secret = token[len(TOKEN_PREFIX) :].rpartition("_")
    if not tenant_id or len(tenant_id) > 40 or len(secret) != 64 or not secret.isalnum():
        return None
    if not tenant_id.isascii() or not tenant_id.replace("_", "").isalnum():
        return None
    return tenant_id


def resolve_session(
    session: Session, *, tenant_id: str, token_hash: str
) -> StorefrontCaller | None:
    """The caller of a live session, or None. Checked on every request: a customer's email
    is read again (it may have changed), and a guest's email must still have orders."""
    row = repository.find_session(session, tenant_id=tenant_id, token_hash=token_hash)
    if row is None:
        return None
    if row.kind == "customer":
        assert row.customer_id is not None
        email = repository.customer_email(session, tenant_id=tenant_id, customer_id=row.customer_id)
        return StorefrontCaller(tenant_id, "customer", row.customer_id, email, token_hash)
    if row.email is None or not repository.email_has_orders(
        session, tenant_id=tenant_id, email=row.email
    ):
        return None
    return StorefrontCaller(tenant_id, "guest", None, row.email, token_hash)


def refuse_session(message: str, reason: str) -> AuthenticationFailed:
    return AuthenticationFailed(message, details=[{"path": HEADER, "message": reason}])


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
        raise refuse_session(f"A storefront session is required: {HEADER}: <session>.", "missing")
    tenant_id = parse_token(token.strip())
    caller = None
    if tenant_id is not None:
        with read_session(request) as session:
            caller = resolve_session(
                session, tenant_id=tenant_id, token_hash=hash_token(token.strip())
            )
    if caller is None:
        raise refuse_session(
            "The storefront session is unknown or expired; open a new one.",
            "unknown or expired session",
        )
    check_rate_limit(request, f"storefront:{caller.tenant_id}:{caller.token_hash[:24]}")
    return caller


Storefront = Annotated[StorefrontCaller, Depends(storefront_caller)]


# --- failed guest sign-ins -------------------------------------------------------------------


class FailureLimiter:
    """Token buckets that only failures drain: each key allows `burst` failures, and earns
    one back every `1 / rate` seconds. While a key's bucket is empty every attempt is
    refused, right or wrong, so guessing cannot tell a right pair from a blocked one.

    Per process, like the API-key limiter: with N replicas an attacker gets N times more."""

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def _tokens(self, key: str, now: float) -> float:
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - last) * self.rate)

    def wait(self, key: str) -> float:
        """0 when an attempt may be made, else the seconds until one may."""
        now = time.monotonic()
        with self._lock:
            tokens = self._tokens(key, now)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def fail(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._buckets) >= self.max_keys:
                self._forget_full(now)
            self._buckets[key] = (max(0.0, self._tokens(key, now) - 1), now)

    def _forget_full(self, now: float) -> None:
        full = [key for key in self._buckets if self._tokens(key, now) >= self.burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self.max_keys:  # under attack from everywhere: start over
            self._buckets.clear()


# Per client address and tenant: 20 failures, then one more a minute.
GUEST_FAILURES_PER_CLIENT = (1 / 60, 20)
# Per order and tenant, from anywhere: 5 failures, then one more a minute.
GUEST_FAILURES_PER_ORDER = (1 / 60, 5)

_limiters_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class GuestLimiters:
    per_client: FailureLimiter
    per_order: FailureLimiter


def guest_limiters(request: Request) -> GuestLimiters:
    state = request.app.state
    limiters: GuestLimiters | None = getattr(state, "storefront_guest_limiters", None)
    if limiters is None:
        with _limiters_lock:
            limiters = getattr(state, "storefront_guest_limiters", None)
            if limiters is None:
                limiters = GuestLimiters(
                    FailureLimiter(*GUEST_FAILURES_PER_CLIENT),
                    FailureLimiter(*GUEST_FAILURES_PER_ORDER),
                )
                state.storefront_guest_limiters = limiters
    return limiters


@dataclass(frozen=True, slots=True)
class GuestAttempt:
    """The keys one guest sign-in counts against."""

    limiters: GuestLimiters
    client_key: str
    order_key: str

    def check(self) -> None:
        wait = max(
            self.limiters.per_client.wait(self.client_key),
            self.limiters.per_order.wait(self.order_key),
        )
        if wait:
            raise RateLimited(
                "Too many failed sign-ins; retry after the delay in Retry-After.",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )

    def failed(self) -> None:
        self.limiters.per_client.fail(self.client_key)
        self.limiters.per_order.fail(self.order_key)


def guest_attempt(request: Request, *, tenant_id: str, order_id: str) -> GuestAttempt:
    client = request.client.host if request.client else "unknown"
    return GuestAttempt(
        limiters=guest_limiters(request),
        client_key=f"{tenant_id}:{client}",
        order_key=f"{tenant_id}:{order_id}",
    )
