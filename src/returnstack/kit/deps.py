"""Request-scoped dependencies shared by every domain."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from returnstack.kit.db import Database


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
        await run_in_threadpool(_roll_back, session)
        raise
    await run_in_threadpool(_commit, session)


DbSession = Annotated[Session, Depends(get_session, scope="function")]


def read_session(request: Request) -> Session:
    """A short read of its own, for authentication: the request's transaction (and, on
    SQLite, the write lock) then begins only when the request writes, after it is
    authenticated and its body validated. Use as a context manager."""
    db: Database = request.app.state.db
    return db.session(write=False)
