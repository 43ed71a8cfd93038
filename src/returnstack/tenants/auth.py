"""Who is calling: the API key of the request, resolved once per request."""

from collections.abc import Collection
from dataclasses import dataclass
from typing import Annotated

from anyio import to_thread
from fastapi import Depends, Request
from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from returnstack.kit.admission import admit
from returnstack.kit.bulk import select_rows
from returnstack.kit.db import Database
from returnstack.kit.errors import AuthenticationFailed, Forbidden, RateLimited
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


# One indexed lookup per request, so a revoked key is refused at once everywhere. (The
# event path caches principals, and confirms them in its write transaction: KeyCache.)
_KEY_LOOKUP = (
    "SELECT k.id, k.kind, k.tenant_id, t.default_currency FROM api_keys k "
    "JOIN tenants t ON t.id = k.tenant_id WHERE k.key_hash = ? AND k.revoked_at IS NULL"
)
_LIVE_KEYS_SQL = (
    "SELECT k.key_hash, k.id, k.kind, k.tenant_id, t.default_currency FROM api_keys k "
    "JOIN tenants t ON t.id = k.tenant_id "
    "WHERE k.key_hash IN ({}) AND k.revoked_at IS NULL"
)


def _refuse(message: str, reason: str) -> AuthenticationFailed:
    return AuthenticationFailed.at(
        "Authorization", reason, message, headers={"WWW-Authenticate": "Bearer"}
    )


def bearer(request: Request) -> str:
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
    return _lookup(request.app.state.db, hash_key(token))


def _lookup(db: Database, key_hash: str) -> Principal | None:
    row = db.fetch_one(_KEY_LOOKUP, (key_hash,))
    if row is None:
        return None
    return Principal(key_id=row[0], kind=row[1], tenant_id=row[2], default_currency=row[3])


_KEY_LIVE = text(
    "SELECT 1 FROM api_keys WHERE key_hash = :key_hash AND revoked_at IS NULL"
).bindparams(bindparam("key_hash"))


def live_principals(session: Session, key_hashes: Collection[str]) -> dict[str, Principal]:
    """The live keys among `key_hashes` (by hash), read in the caller's transaction (on the
    driver's cursor: it is read by every group the writer commits)."""
    hashes = sorted(key_hashes)
    if not hashes:
        return {}
    rows = select_rows(session, _LIVE_KEYS_SQL.format(", ".join("?" * len(hashes))), hashes)
    return {
        row[0]: Principal(key_id=row[1], kind=row[2], tenant_id=row[3], default_currency=row[4])
        for row in rows
    }


class KeyCache:
    """Principals by key hash, per process: a request on the event path finds its caller
    without a trip to the database before it writes. A cached principal is never trusted
    alone: the request's write transaction reads the key again (`live_principals`), and a
    request refused before it writes (invalid body) reads it first, so a revoked key is
    refused on its very next request, on every process."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._principals: dict[str, Principal] = {}

    def get(self, key_hash: str) -> Principal | None:
        return self._principals.get(key_hash)

    def put(self, key_hash: str, principal: Principal) -> None:
        if len(self._principals) >= self.size:
            self._principals.clear()  # a flood of keys: start again rather than grow
        self._principals[key_hash] = principal

    def forget(self, key_hash: str) -> None:
        self._principals.pop(key_hash, None)


def refused_key() -> AuthenticationFailed:
    return _refuse("The API key is unknown or revoked.", "unknown or revoked key")


@dataclass(frozen=True, slots=True)
class CachedCaller:
    principal: Principal
    key_hash: str
    cached: bool  # found in the cache: confirm it before answering an error


async def cached_caller(request: Request) -> CachedCaller:
    """The caller (rate-limited), from the key cache; 401 for a key that is unknown or
    revoked. A cache miss reads the database (one thread trip)."""
    key_hash = hash_key(bearer(request))
    keys: KeyCache = request.app.state.keys
    principal = keys.get(key_hash)
    cached = principal is not None
    if principal is None:
        principal = await to_thread.run_sync(_lookup, request.app.state.db, key_hash)
        if principal is None:
            raise refused_key()
        keys.put(key_hash, principal)
    try:
        check_rate_limit(request, rate_limit_bucket(request, principal))
    except RateLimited:
        if cached:  # a revoked key hears 401, never "retry later"
            await confirm_live(request, key_hash)
        raise
    request.state.principal = principal
    return CachedCaller(principal, key_hash, cached)


async def confirm_live(request: Request, key_hash: str) -> None:
    """401 if the key is no longer live (before answering another error to a caller found
    in the cache)."""
    if await to_thread.run_sync(_lookup, request.app.state.db, key_hash) is None:
        request.app.state.keys.forget(key_hash)
        raise refused_key()


def rate_limit_bucket(request: Request, principal: Principal) -> str:
    """A secret key is one caller; a publishable key is every shopper of the tenant, so its
    traffic is counted per client address."""
    if principal.kind == "secret":
        return principal.key_id
    return f"{principal.key_id}:{client_address(request)}"


def authenticate(request: Request) -> Principal:
    admit()  # the first thread a request waits for: refused here, it waits for no other
    principal = find_principal(request, bearer(request))
    if principal is None:
        raise refused_key()
    check_rate_limit(request, rate_limit_bucket(request, principal))
    request.state.principal = principal
    return principal


def _secret_only() -> Forbidden:
    return Forbidden(
        "This endpoint needs a secret key (sk_...); publishable keys may only send events."
    )


async def require_secret_key(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    if principal.kind != "secret":
        raise _secret_only()
    return principal


async def cached_secret_key(request: Request) -> CachedCaller:
    """The caller of a lean read: a secret key from the key cache (no thread-pool trip), which
    the read confirms in its own connection (`confirm_key`) before it answers anything. An
    error answered before that (403, or FastAPI's 400 for a bad parameter) confirms it first
    too, so a revoked key hears 401 on its very next request, as with `authenticate`."""
    caller = await cached_caller(request)
    if caller.principal.kind != "secret":
        if caller.cached:
            await confirm_live(request, caller.key_hash)
        raise _secret_only()
    if caller.cached:
        request.state.confirm_key = lambda: confirm_live(request, caller.key_hash)
    return caller


def confirm_key(request: Request, connection: Connection, caller: CachedCaller) -> None:
    """401 unless the caller's key is still live: one indexed read on the read's own
    connection (a key found in the cache is never trusted alone)."""
    if not caller.cached:
        return  # read from the database for this request
    if connection.execute(_KEY_LIVE, {"key_hash": caller.key_hash}).first() is None:
        request.app.state.keys.forget(caller.key_hash)
        raise refused_key()
    request.state.confirm_key = None  # confirmed: an error answered now needs no other read


def confirmed(request: Request, session: Session, caller: CachedCaller) -> Principal:
    """The caller of a request that works in a session (the returns API), confirmed in that
    session's transaction by its first statement: no thread trip and no connection of its
    own to authenticate, and a revoked key still reads and writes nothing."""
    confirm_key(request, session.connection(), caller)
    return caller.principal


AnyKey = Annotated[Principal, Depends(authenticate)]
SecretKey = Annotated[Principal, Depends(require_secret_key)]
CachedSecretKey = Annotated[CachedCaller, Depends(cached_secret_key)]
