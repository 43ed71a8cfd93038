"""Request-scoped dependencies shared by every domain."""

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from typing import Annotated

from anyio import CancelScope, CapacityLimiter, to_thread
from fastapi import Depends, Request
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from returnstack.kit.admission import admit
from returnstack.kit.db import Database
from returnstack.kit.responses import RawJSONResponse


def _commit(session: Session) -> None:
    try:
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _roll_back(session: Session) -> None:
    try:
        session.rollback()
    finally:
        session.close()


_commit_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CapacityLimiter] = (
    weakref.WeakKeyDictionary()
)


def _commits() -> CapacityLimiter:
    """Commits and rollbacks get threads of their own (their own capacity limiter, one per
    event loop): a request holding SQLite's write lock or PostgreSQL row locks must be able
    to commit even when every thread of the default pool is taken by requests waiting for
    those locks, or they would wait for each other."""
    loop = asyncio.get_running_loop()
    limiter = _commit_limiters.get(loop)
    if limiter is None:
        limiter = _commit_limiters[loop] = CapacityLimiter(16)
    return limiter


async def get_session(request: Request) -> AsyncIterator[Session]:
    """The request's one transaction: committed before the response is sent, so a 2xx
    means committed; rolled back on any error. Reads do not take SQLite's write lock.

    Async, so that making the session (no I/O: it connects on first use) costs no trip
    to the thread pool; the commit, which does I/O, runs there."""
    db: Database = request.app.state.db
    session = db.session(write=request.method not in ("GET", "HEAD", "OPTIONS"))
    try:
        yield session
    except BaseException:
        await _finish(_roll_back, session)
        raise
    # A route that answers its own errors (the vendor adapters) marks the request failed.
    failed = getattr(request.state, "failed", False)
    await _finish(_roll_back if failed else _commit, session)


async def _finish(finish: Callable[[Session], None], session: Session) -> None:
    """Commit or roll back on a thread of its own, shielded from the request's cancellation
    (its client gone); if cancelled even so before the thread ran, roll back right here. A
    session left open keeps its pooled connection (and, on SQLite, the write lock) until
    garbage collection, and a few of those under load exhaust the pool for good."""
    try:
        with CancelScope(shield=True):
            await to_thread.run_sync(finish, session, limiter=_commits())
    except BaseException:
        _roll_back(session)  # nothing if the thread already closed it
        raise


DbSession = Annotated[Session, Depends(get_session, scope="function")]


def read_session(request: Request) -> AbstractContextManager[Session]:
    """A short read of its own, for authentication: the request's transaction (and, on
    SQLite, the write lock) then begins only when the request writes, after it is
    authenticated and its body validated. Use as a context manager. It ends with COMMIT,
    not ROLLBACK: the same for a read, but psycopg forgets the connection's prepared
    statements at every ROLLBACK."""
    db: Database = request.app.state.db
    return db.transaction(write=False)


async def read_json(request: Request, read: Callable[[Connection], bytes]) -> RawJSONResponse:
    """A lean read: `read` on a connection of its own (`Database.reads`: nothing to commit),
    in one trip to the thread pool; the JSON it renders is the answer."""
    db: Database = request.app.state.db
    return RawJSONResponse(await to_thread.run_sync(_read, db, read))


def _read(db: Database, read: Callable[[Connection], bytes]) -> bytes:
    admit()
    with db.reads.connect() as connection:
        return read(connection)
