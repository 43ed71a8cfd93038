"""The events' SQL: the ledgers of recorded event ids (verified and reported)."""

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from returnstack.kit.bulk import insert_rows_returning
from returnstack.models import Event, ReportedEvent

Ledger = type[Event] | type[ReportedEvent]


def insert_new(session: Session, ledger: Ledger, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Insert the ledger rows whose (tenant, client id) is new; answer their client ids.
    A unique key with ON CONFLICT DO NOTHING decides, so concurrent transactions (and the
    requests of one group, which see each other's rows) cannot both record one id."""
    inserted = insert_rows_returning(
        session,
        ledger,
        # Sorted, as every insert of the event path: concurrent transactions naming the
        # same keys then lock them in one order and cannot deadlock (PostgreSQL).
        sorted(rows, key=lambda row: row["client_id"]),
        on_conflict="ON CONFLICT DO NOTHING",
        returning=("client_id",),
    )
    return {client_id for (client_id,) in inserted}


def recorded_ids(
    session: Session, ledger: Ledger, *, tenant_id: str, client_ids: Iterable[str]
) -> dict[str, str]:
    """Client id -> server id of events recorded before."""
    rows = session.execute(
        select(ledger.client_id, ledger.id).where(
            ledger.tenant_id == tenant_id, ledger.client_id.in_(list(client_ids))
        )
    )
    return {client_id: server_id for client_id, server_id in rows}
