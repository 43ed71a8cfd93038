"""Request-scoped dependencies shared by every domain."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from returnstack.kit.db import Database


def get_session(request: Request) -> Iterator[Session]:
    """The request's one transaction: committed before the response is sent, so a 2xx
    means committed; rolled back on any error. Reads do not take SQLite's write lock."""
    db: Database = request.app.state.db
    write = request.method not in ("GET", "HEAD", "OPTIONS")
    with db.transaction(write=write) as session:
        yield session


DbSession = Annotated[Session, Depends(get_session, scope="function")]
