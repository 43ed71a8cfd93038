"""Who is calling: the API key of the request, resolved once per request."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from returnstack.kit.db import Database
from returnstack.kit.errors import AuthenticationFailed, Forbidden
from returnstack.kit.ratelimit import check_rate_limit, client_address
from returnstack.tenants.service import hash_key


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: str
    key_id: str
    kind: str  # secret | publishable
    default_currency: str

    @property
    def actor(self) -> str:
        return f"api_key:{self.key_id}"


# One indexed lookup per request; no cache, so a revoked key is refused at once everywhere.
_KEY_LOOKUP = (
    "SELECT k.id, k.kind, k.tenant_id, t.default_currency FROM api_keys k "
    "JOIN tenants t ON t.id = k.tenant_id WHERE k.key_hash = ? AND k.revoked_at IS NULL"
)


def _refuse(message: str, reason: str) -> AuthenticationFailed:
    return AuthenticationFailed(
        message,
        details=[{"path": "Authorization", "message": reason}],
        headers={"WWW-Authenticate": "Bearer"},
    )


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise _refuse(AuthenticationFailed.message, "missing")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _refuse("The Authorization header must be 'Bearer <key>'.", "malformed")
    return token


def find_principal(request: Request, token: str) -> Principal | None:
    """The live key `token` names, or None. Also used by the compatibility endpoints, which
    take keys the way each vendor's clients send them."""
    # A read of its own: the request's transaction (and SQLite's write lock) begins only
    # when the request writes, after it is authenticated and its body validated.
    db: Database = request.app.state.db
    row = db.fetch_one(_KEY_LOOKUP, (hash_key(token),))
    if row is None:
        return None
    return Principal(key_id=row[0], kind=row[1], tenant_id=row[2], default_currency=row[3])


def rate_limit_bucket(request: Request, principal: Principal) -> str:
    """A secret key is one caller; a publishable key is every shopper of the tenant, so its
    traffic is counted per client address."""
    if principal.kind == "secret":
        return principal.key_id
    return f"{principal.key_id}:{client_address(request)}"


def authenticate(request: Request) -> Principal:
    principal = find_principal(request, _bearer(request))
    if principal is None:
        raise _refuse("The API key is unknown or revoked.", "unknown or revoked key")
    check_rate_limit(request, rate_limit_bucket(request, principal))
    request.state.principal = principal
    return principal


async def require_secret_key(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    if principal.kind != "secret":
        raise Forbidden(
            "This endpoint needs a secret key (sk_...); publishable keys may only send events."
        )
    return principal


AnyKey = Annotated[Principal, Depends(authenticate)]
SecretKey = Annotated[Principal, Depends(require_secret_key)]
