"""The write of one POST /v1/events request, run by the process's writer (group commit,
kit/groupcommit.py): alone, or together with the other requests of its group, whose events
are then recorded by one call of the event service per caller (one statement per table for
the whole group)."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.orm import Session
from starlette.responses import Response

from returnstack.events.schemas import PurchaseEvent, ReturnEvent, Trust
from returnstack.events.service import record_events
from returnstack.kit.errors import ApiError
from returnstack.kit.idempotency import IdempotentRequest
from returnstack.tenants.auth import KeyCache, Principal, live_principals, refused_key

# What a write answers: the stored response of an Idempotency-Key, or the new response's
# body and the number of events it recorded.
Outcome = Response | tuple[bytes, int]


@dataclass(eq=False)
class EventWrite:
    key_hash: str
    keys: KeyCache
    events: Sequence[PurchaseEvent | ReturnEvent]
    rejected: list[dict[str, Any]]
    idempotency: IdempotentRequest

    @property
    def combinable(self) -> bool:
        # A request with an Idempotency-Key replays or stores its response: written alone.
        return self.idempotency.key is None

    def _live(self, principals: dict[str, Principal]) -> Principal:
        # The key is read again in the write transaction: revoked since it was cached,
        # nothing is written and the request is refused.
        live = principals.get(self.key_hash)
        if live is None:
            self.keys.forget(self.key_hash)
            raise refused_key()
        return live

    def __call__(self, session: Session) -> Outcome:
        live = self._live(live_principals(session, [self.key_hash]))
        replay = self.idempotency.replay(session, tenant_id=live.tenant_id)
        if replay is not None:
            return replay
        result = record_events(session, events=self.events, **_caller(live))
        payload = self._payload(result.accepted, result.duplicates, result.ids)
        self.idempotency.remember(session, tenant_id=live.tenant_id, status_code=200, body=payload)
        return payload, result.accepted

    def _payload(self, accepted: int, duplicates: int, ids: list[str]) -> bytes:
        return orjson.dumps(
            {"accepted": accepted, "duplicates": duplicates, "rejected": self.rejected, "ids": ids}
        )


def write_together(session: Session, writes: list[EventWrite]) -> list[Outcome | ApiError]:
    """The writes of one group: one key read for all, then one `record_events` per caller
    with the events of all its requests, in the order the requests came. An event id that
    two requests share is recorded by the first and a duplicate for the second, as it would
    be across groups."""
    principals = live_principals(session, {write.key_hash for write in writes})
    outcomes: list[Outcome | ApiError | None] = [None] * len(writes)
    by_caller: dict[Principal, list[int]] = {}
    for index, write in enumerate(writes):
        try:
            by_caller.setdefault(write._live(principals), []).append(index)
        except ApiError as refused:
            outcomes[index] = refused
    for caller, indexes in by_caller.items():
        events = [event for index in indexes for event in writes[index].events]
        result = record_events(session, events=events, **_caller(caller))
        start = 0
        for index in indexes:
            end = start + len(writes[index].events)
            accepted = sum(result.new[start:end])
            outcomes[index] = (
                writes[index]._payload(accepted, end - start - accepted, result.ids[start:end]),
                accepted,
            )
            start = end
    assert all(outcome is not None for outcome in outcomes)
    return outcomes  # type: ignore[return-value]


def _caller(principal: Principal) -> dict[str, Any]:
    return {
        "tenant_id": principal.tenant_id,
        "default_currency": principal.default_currency,
        "source": "api",
        "actor": principal.actor,
        # A publishable key is public: what it sends is reported, never a fact (API.md 2).
        "trust": Trust.reported if principal.kind == "publishable" else Trust.verified,
    }
