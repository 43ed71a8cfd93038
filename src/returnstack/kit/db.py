"""Engine, sessions and transactions for SQLite (embedded) and PostgreSQL.

One transaction per request or command, owned by its entry point: business code flushes
and executes, it never commits.
"""

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from returnstack.config import Settings

try:  # POSIX file locks; elsewhere writers of other processes fall back to the busy handler
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("returnstack.db")

# Sync endpoints run on AnyIO's thread pool (40 threads): as many connections may be wanted at
# once, so the pool may overflow up to that, rather than time requests out under load.
THREAD_POOL_SIZE = 40
# SQLite's planner statistics (ANALYZE) are gathered again when a table has grown or shrunk
# this many times. Every row is read: `PRAGMA analysis_limit` (what sqlite.org suggests for
# `PRAGMA optimize`) reads an index's first N entries, and where those are one value (the
# NULL customer_id of guests' orders sorts first) it takes that column for unselective:
# with 1,000 a customer's orders page walked the tenant's orders by date again.
STALE_FACTOR = 10
# Connections kept open for statements that commit at once (Database.committed).
COMMITTED_POOL_SIZE = 4
COMMITTED_ENGINE = "returnstack.committed_engine"  # the key of Session.info


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class Database:
    """The engine of one process, and the sessions made from it."""

    def __init__(self, settings: Settings, *, background_checkpoints: bool = False) -> None:
        self.url = settings.database_url
        self.is_sqlite = settings.is_sqlite
        self._checkpointer: _Checkpointer | None = None
        if self.is_sqlite:
            # A long-running writer (the server, an import) moves WAL checkpoints off the
            # commit path onto a background thread; commits then only append to the WAL.
            autocheckpoint = 20_000 if background_checkpoints else 1000
            self.engine = _sqlite_engine(settings, autocheckpoint)
            if background_checkpoints:
                self._checkpointer = _Checkpointer(self.engine)
                self._checkpointer.start()
        else:
            self.engine = create_engine(
                self.url,
                pool_size=settings.db_pool_size,
                max_overflow=THREAD_POOL_SIZE - settings.db_pool_size,
                pool_recycle=1800,
                json_serializer=_json_dumps,
                json_deserializer=orjson.loads,
                hide_parameters=True,  # they hold personal data: never in logs or errors
            )
        # Lean reads (kit.deps.read_json): on PostgreSQL without BEGIN and ROLLBACK, two
        # round trips fewer. At READ COMMITTED each statement takes its own snapshot inside a
        # transaction too, so their statements see the same as in one.
        self.reads = (
            self.engine
            if self.is_sqlite
            else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        # PostgreSQL: statements that commit at once, outside the caller's transaction, on
        # a pool of their own (a request holding its connection while it takes one of these
        # cannot wait for itself): the reservation of a return number (run_committed).
        self.committed = (
            None
            if self.is_sqlite
            else create_engine(
                self.url,
                pool_size=COMMITTED_POOL_SIZE,
                max_overflow=THREAD_POOL_SIZE - COMMITTED_POOL_SIZE,
                pool_recycle=1800,
                isolation_level="AUTOCOMMIT",
                hide_parameters=True,
            )
        )
        info = {COMMITTED_ENGINE: self.committed}
        # Writers on SQLite take the write lock when they begin (BEGIN IMMEDIATE), so a
        # read-then-write never fails half-way with "database is locked".
        self._write_bind = self.engine.execution_options(returnstack_write=True)
        self._writer = sessionmaker(
            self._write_bind, expire_on_commit=False, autoflush=False, info=info
        )
        self._reader = sessionmaker(self.engine, expire_on_commit=False, autoflush=False, info=info)

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

    def fetch_one(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """One row of a quick read outside any transaction, on the driver's own cursor
        (authentication, on every request). `sql` uses ? placeholders.

        On `reads`: on PostgreSQL in autocommit, so no BEGIN and ROLLBACK around the one
        SELECT (two round trips fewer), and no ROLLBACK at all, at which psycopg forgets the
        connection's prepared statements (one a request kept every statement of every
        request from ever being prepared)."""
        return _first_row(self.reads, sql if self.is_sqlite else sql.replace("?", "%s"), params)

    def analyze(self) -> None:
        """Gather the planner's statistics of every table now (after a bulk load): on
        PostgreSQL not when autovacuum does; on SQLite, which gathers none by itself, reading
        every row."""
        if not self.is_sqlite:
            with self.engine.connect() as connection:
                connection.execute(text("ANALYZE"))
                connection.commit()
            return
        with self.transaction() as session:
            session.connection().exec_driver_sql("ANALYZE")

    def optimize(self, *, missing_only: bool = False) -> list[str]:
        """SQLite: ANALYZE the tables whose statistics are missing (never analyzed, now not
        empty) or, unless `missing_only`, stale (rows grown or shrunk `STALE_FACTOR` times
        since): what `PRAGMA optimize` does from SQLite 3.46 with 0x10000 set, on any version.
        One write transaction per table (writers wait for one table at a time). Returns the
        tables analyzed. PostgreSQL: nothing (autovacuum)."""
        if not self.is_sqlite:
            return []
        with self.transaction(write=False) as session:
            stale = _stale_tables(session.connection(), missing_only=missing_only)
        if not stale:
            return []
        for table in stale:
            with self.transaction() as session:
                session.connection().exec_driver_sql(f'ANALYZE "{table}"')
        log.info("sqlite.analyzed", extra={"tables": stale})
        return stale

    def session(self, *, write: bool = False) -> Session:
        return (self._writer if write else self._reader)()

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        self.engine.dispose()
        if self.committed is not None:
            self.committed.dispose()


def run_committed(session: Session, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """PostgreSQL: one statement in a transaction of its own, committed at once, on the
    driver's cursor (`sql` with ? placeholders); its first row. None, and nothing run, when
    the session's database has no such engine (SQLite, whose writers are serialized anyway,
    or a session not made by a Database): the caller then runs it in its own transaction."""
    engine: Engine | None = session.info.get(COMMITTED_ENGINE)
    if engine is None:
        return None
    return _first_row(engine, sql.replace("?", "%s"), params)


def _first_row(engine: Engine, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The first row of one statement on a pooled connection's own driver cursor (`sql` in
    the driver's paramstyle)."""
    with engine.connect() as connection:
        cursor = connection.connection.cursor()
        cursor.execute(sql, params)
        row = cursor.fetchone()
        cursor.close()
        return None if row is None else tuple(row)


def _stale_tables(connection: Connection, *, missing_only: bool) -> list[str]:
    """The tables (of the schema; not SQLite's own) whose statistics are missing or stale.

    sqlite_stat1 holds, per table, the rows it had when analyzed (an empty table leaves no
    row). Counting stops at `STALE_FACTOR` times that, so a table that has not grown costs
    one scan of its smallest index, and one never analyzed a single row."""
    names = [
        row[0]
        for row in connection.exec_driver_sql(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name"
        )
    ]
    analyzed: dict[str, int] = {}
    has_stats = connection.exec_driver_sql(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'sqlite_stat1'"
    ).first()
    if has_stats:
        for table, stat in connection.exec_driver_sql("SELECT tbl, stat FROM sqlite_stat1"):
            rows = int(str(stat).split(" ", 1)[0] or 0)
            analyzed[table] = max(analyzed.get(table, 0), rows)
    stale = []
    for name in names:
        before = analyzed.get(name)
        if before is not None and missing_only:
            continue
        bound = 1 if before is None else STALE_FACTOR * before + 1
        rows = connection.exec_driver_sql(
            f'SELECT count(*) FROM (SELECT 1 FROM "{name}" LIMIT {bound})'
        ).scalar_one()
        if before is None:
            if rows:
                stale.append(name)
        elif rows > STALE_FACTOR * before or rows * STALE_FACTOR < before:
            stale.append(name)
    return stale


class StatisticsKeeper(threading.Thread):
    """Keeps a long-running SQLite server's planner statistics (`Database.optimize`): soon
    after it starts those of tables never analyzed (cheap: a row read per table), then every
    `interval` seconds those missing or stale (a count of each table). SQLite gathers none
    by itself, and
    without them it assumes that `tenant_id = ?` selects about ten rows, so it plans every
    read of a large tenant as if it were tiny (a customer's orders page walked all the
    tenant's orders by date)."""

    def __init__(self, db: "Database", interval: float, first_delay: float = 5.0) -> None:
        super().__init__(name="sqlite-statistics", daemon=True)
        self.db = db
        self.interval = interval
        self.first_delay = first_delay
        self._stopped = threading.Event()

    def run(self) -> None:
        delay, missing_only = self.first_delay, True
        while not self._stopped.wait(delay):
            try:
                self.db.optimize(missing_only=missing_only)
            except Exception:  # a closing database, a busy writer: try again next time
                log.warning("sqlite.optimize_failed", exc_info=True)
            delay, missing_only = self.interval, False

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=30)


class _Checkpointer(threading.Thread):
    """Runs PRAGMA wal_checkpoint(PASSIVE) every `interval` seconds on its own connection.

    PASSIVE never waits for readers or writers; if it falls behind, SQLite's own
    autocheckpoint (set high) still bounds the WAL.
    """

    def __init__(self, engine: Engine, interval: float = 0.5) -> None:
        super().__init__(name="sqlite-checkpointer", daemon=True)
        self.engine = engine
        self.interval = interval
        self._stopped = threading.Event()

    def run(self) -> None:
        connection = self.engine.raw_connection()
        try:
            while not self._stopped.wait(self.interval):
                try:
                    connection.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")  # type: ignore[union-attr]
                except Exception:  # a busy or closing database: try again next time
                    log.debug("sqlite.checkpoint_failed", exc_info=True)
        finally:
            connection.close()

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5)


def _sqlite_engine(settings: Settings, autocheckpoint: int) -> Engine:
    engine = create_engine(
        settings.database_url,
        connect_args={"check_same_thread": False, "timeout": 30, "factory": _Connection},
        pool_size=settings.db_pool_size,
        max_overflow=THREAD_POOL_SIZE - settings.db_pool_size,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        hide_parameters=True,  # they hold personal data: never in logs or errors
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
        cursor.execute("PRAGMA cache_size=-16384")  # 16 MiB per connection
        cursor.execute(f"PRAGMA wal_autocheckpoint={autocheckpoint}")
        cursor.close()

    # Writers queue before BEGIN IMMEDIATE: those of this process on a lock, those of all
    # processes on one file (`<database>-writer.lock`, e.g. the server and its webhook
    # dispatcher). A waiting writer then starts the moment the writer before it ends, where
    # SQLite's busy handler would poll with sleeps of up to 100 ms, and a process holding
    # the lock for short transactions could starve another for seconds. (SQLite's own lock
    # still guards the data; the busy timeout still applies to programs not queueing here.)
    writers = threading.Lock()
    queue = _WriterFile(engine.url.database)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if not conn.get_execution_options().get("returnstack_write"):
            conn.exec_driver_sql("BEGIN")
            return
        if not writers.acquire(timeout=30):
            raise OperationalError("BEGIN IMMEDIATE", None, Exception("database is locked"))
        try:
            queue.acquire()
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                queue.release()
                raise
        except BaseException:
            writers.release()
            raise
        # Let go once the COMMIT or ROLLBACK has ended (_Connection).
        conn.connection.dbapi_connection.writer_release = _release_writer  # type: ignore[union-attr]

    def _release_writer() -> None:
        queue.release()
        writers.release()

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection: Any, record: Any) -> None:
        # A connection back in the pool holds no lock (the pool's reset rolled back what
        # was left open, which let it go; an invalidated connection was closed, which did).
        if dbapi_connection is not None:  # None: invalidated (closing it let the lock go)
            dbapi_connection.end_write()

    return engine


class _Connection(sqlite3.Connection):
    """A connection that lets the writers queued behind it go once its COMMIT or ROLLBACK
    has ended. (SQLAlchemy's commit and rollback events come before the driver's call: a
    writer let go then began while SQLite still held the lock for that COMMIT, and slept in
    SQLite's busy handler, 1, 2, 5, 10 ms and on, however soon the lock was free.) A COMMIT
    that runs SQLite's automatic checkpoint (the WAL past `wal_autocheckpoint` pages) holds
    the queue through it."""

    writer_release: Callable[[], None] | None = None

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.end_write()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.end_write()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.end_write()

    def end_write(self) -> None:
        release, self.writer_release = self.writer_release, None
        if release is not None:
            release()


class _WriterFile:
    """An exclusive lock on `<database>-writer.lock` (flock) that the writers of every process
    of one SQLite file queue on. The kernel wakes the next waiter when it is released and
    drops it with its process (a killed writer leaves nothing held). Only one thread of a
    process holds it at a time (the caller's lock sees to that)."""

    def __init__(self, database: str | None) -> None:
        in_memory = not database or database == ":memory:" or database.startswith("file::memory:")
        self._path = None if in_memory or fcntl is None else f"{database}-writer.lock"
        self._fd: int | None = None
        self._pid = 0

    def acquire(self) -> None:
        if self._path is None:
            return
        if self._fd is None or self._pid != os.getpid():  # opened per process (not inherited)
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            fcntl.flock(self._fd, fcntl.LOCK_UN)
