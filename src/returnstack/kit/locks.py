"""Locks on names, for the length of a transaction."""

from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.orm import Session

# Taken in the order of their keys, so two transactions locking overlapping names cannot
# deadlock on them.
_LOCK = text(
    "SELECT pg_advisory_xact_lock(key) FROM "
    "(SELECT DISTINCT hashtextextended(name, 0) AS key FROM unnest(CAST(:names AS text[])) AS name "
    "ORDER BY key) AS keys"
)


def lock_tables(session: Session, *tables: str) -> None:
    """Writers of the tables wait until this transaction ends; readers do not (PostgreSQL;
    SQLite has one writer at a time anyway)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"LOCK TABLE {', '.join(tables)} IN SHARE ROW EXCLUSIVE MODE"))


def lock_names(session: Session, names: Iterable[str]) -> None:
    """Hold a lock on each name until the transaction ends: a second transaction asking
    for one of them waits. PostgreSQL advisory locks; SQLite needs none (its writers hold
    the database's write lock for the whole transaction: BEGIN IMMEDIATE, kit/db.py)."""
    wanted = sorted(set(names))
    if wanted and session.get_bind().dialect.name == "postgresql":
        session.execute(_LOCK, {"names": wanted})
