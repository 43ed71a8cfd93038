"""Engine, sessions and transactions for SQLite (embedded) and PostgreSQL.

One transaction per request or command, owned by its entry point: business code flushes
and executes, it never commits.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.dml import Insert

from returnstack.config import Settings


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class Database:
    """The engine of one process, and the sessions made from it."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.database_url
        self.is_sqlite = settings.is_sqlite
        if self.is_sqlite:
            self.engine = _sqlite_engine(settings)
        else:
            self.engine = create_engine(
                self.url,
                pool_size=settings.db_pool_size,
                max_overflow=settings.db_pool_size,
                pool_recycle=1800,
                json_serializer=_json_dumps,
                json_deserializer=orjson.loads,
            )
        # Writers on SQLite take the write lock when they begin (BEGIN IMMEDIATE), so a
        # read-then-write never fails half-way with "database is locked".
        self._write_bind = self.engine.execution_options(returnstack_write=True)
        self._writer = sessionmaker(self._write_bind, expire_on_commit=False, autoflush=False)
        self._reader = sessionmaker(self.engine, expire_on_commit=False, autoflush=False)

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Session]:
        """A session whose work commits when the block ends, or rolls back on error."""
        factory = self._writer if write else self._reader
        with factory() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def session(self, *, write: bool = False) -> Session:
        return (self._writer if write else self._reader)()

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_engine(settings: Settings) -> Engine:
    engine = create_engine(
        settings.database_url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
    )
    synchronous = settings.sqlite_synchronous

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over BEGIN from the driver (see "begin" below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.execute("PRAGMA cache_size=-65536")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get("returnstack_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


def insert_ignore(session: Session, table: Table) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING for the session's dialect."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


def upsert(
    session: Session, table: Table, *, keys: list[str], update: dict[str, Any]
) -> Insert:
    """INSERT ... ON CONFLICT (keys) DO UPDATE SET update, for the session's dialect.

    `update` values may refer to the proposed row through `excluded(column)`.
    """
    stmt: postgresql.Insert | sqlite.Insert
    if session.get_bind().dialect.name == "postgresql":
        stmt = postgresql.insert(table)
    else:
        stmt = sqlite.insert(table)
    return stmt.on_conflict_do_update(
        index_elements=keys, set_={k: v(stmt.excluded) if callable(v) else v for k, v in update.items()}
    )
