"""Idempotency-Key on POST: the same key and body within 24 h replays the first response.

The response is stored in the request's own transaction, so it exists exactly when the work
it describes was committed.
"""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from returnstack.kit.bulk import insert_rows_returning
from returnstack.kit.errors import Conflict, InvalidRequest
from returnstack.kit.responses import RawJSONResponse
from returnstack.models import IdempotencyKey

TTL = timedelta(hours=24)
MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class IdempotentRequest:
    key: str | None
    fingerprint: str
    # Whose key space the key lives in (the API key's kind): a publishable key's key never
    # replays or blocks a secret key's request (API.md section 2).
    scope: str

    def replay(self, session: Session, *, tenant_id: str) -> RawJSONResponse | None:
        """The stored response for this key, or None when the work should be done."""
        if self.key is None:
            return None
        row = session.execute(
            select(
                IdempotencyKey.request_hash,
                IdempotencyKey.status_code,
                IdempotencyKey.response_body,
                IdempotencyKey.response_headers,
            ).where(
                IdempotencyKey.tenant_id == tenant_id,
                IdempotencyKey.scope == self.scope,
                IdempotencyKey.key == self.key,
                IdempotencyKey.created_at > datetime.now(UTC) - TTL,
            )
        ).first()
        if row is None:
            return None
        if row.request_hash != self.fingerprint:
            raise Conflict.at(
                "Idempotency-Key",
                "reused with a different body",
                "This Idempotency-Key was used with a different request body.",
            )
        headers = dict(row.response_headers or {}) | {"Idempotent-Replayed": "true"}
        return RawJSONResponse(row.response_body, status_code=row.status_code, headers=headers)

    def remember(
        self,
        session: Session,
        *,
        tenant_id: str,
        status_code: int,
        body: bytes,
        headers: dict[str, str] | None = None,
    ) -> None:
        if self.key is None:
            return
        now = datetime.now(UTC)
        session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.tenant_id == tenant_id,
                IdempotencyKey.scope == self.scope,
                IdempotencyKey.key == self.key,
                IdempotencyKey.created_at <= now - TTL,
            )
        )
        stored = insert_rows_returning(
            session,
            IdempotencyKey,
            [
                {
                    "tenant_id": tenant_id,
                    "scope": self.scope,
                    "key": self.key,
                    "request_hash": self.fingerprint,
                    "status_code": status_code,
                    "response_body": body,
                    "response_headers": headers,
                    "created_at": now,
                }
            ],
            on_conflict="ON CONFLICT DO NOTHING",
            returning=("key",),
        )
        if not stored:
            # Another request with this key committed while this one ran: this one's work
            # is rolled back, and a retry will replay the other's response.
            raise Conflict.at(
                "Idempotency-Key",
                "used by a concurrent request",
                "A request with this Idempotency-Key is already being processed; retry.",
            )

    def respond(
        self,
        session: Session,
        *,
        tenant_id: str,
        status_code: int,
        produce: Callable[[], Any],
        headers: Callable[[Any], dict[str, str]] | None = None,
    ) -> RawJSONResponse:
        """Replay the stored response, or produce, remember and return a new one."""
        replay = self.replay(session, tenant_id=tenant_id)
        if replay is not None:
            return replay
        payload = produce()
        body = orjson.dumps(payload)
        extra = headers(payload) if headers else None
        self.remember(
            session, tenant_id=tenant_id, status_code=status_code, body=body, headers=extra
        )
        return RawJSONResponse(body, status_code=status_code, headers=extra)


def _scope(request: Request) -> str:
    """The key space of the caller: publishable keys (pk_...) have their own. Authentication
    checks that the key is what its prefix says, so no caller can pick another's scope."""
    _, _, token = request.headers.get("authorization", "").partition(" ")
    return "publishable" if token.strip().startswith("pk_") else "secret"


async def idempotent_request(request: Request) -> IdempotentRequest:
    key = request.headers.get("idempotency-key")
    if key is not None and not (0 < len(key) <= MAX_KEY_LENGTH):
        raise InvalidRequest.at("Idempotency-Key", f"must be 1-{MAX_KEY_LENGTH} characters")
    fingerprint = ""
    if key is not None:
        body = await request.body()
        digest = hashlib.sha256(
            f"{request.method} {request.url.path}?{request.url.query}\n".encode()
        )
        digest.update(body)
        fingerprint = digest.hexdigest()
    return IdempotentRequest(key=key, fingerprint=fingerprint, scope=_scope(request))


Idempotency = Annotated[IdempotentRequest, Depends(idempotent_request)]
