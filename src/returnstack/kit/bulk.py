"""Bulk inserts straight to the driver, for the ingestion hot path.

SQLAlchemy's per-row parameter processing costs more than the database spends writing the
row, so the write path hands plain values to the driver:

- SQLite: `executemany` of one prepared INSERT (in process, so a statement per row is cheap);
  one multi-row statement when RETURNING is needed.
- PostgreSQL: one `INSERT ... SELECT * FROM unnest($1::type[], ...)` per call, with one array
  per column, sent in binary. The statement text never changes, so the server plans it
  once; a multi-row VALUES list would be re-parsed with every row count.

The conflict clauses are the same on both: `ON CONFLICT ... DO NOTHING / DO UPDATE SET
col = excluded.col`, and `RETURNING`. Values are converted here as the ORM types would
(UTC timestamps, JSON).
"""

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from operator import itemgetter
from typing import Any, cast

import orjson
from sqlalchemy import JSON, Connection, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from returnstack.models.base import Base, UTCDateTime

SQLITE_ROWS_PER_STATEMENT = 1000  # 1000 rows x up to 32 columns stays under 32,766 variables

Converter = Callable[[Any], Any]


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


@lru_cache(maxsize=4096)  # most timestamps of a batch are the same "now"
def _sqlite_datetime(value: datetime | None) -> str | None:
    # The exact text SQLAlchemy's SQLite DATETIME stores, so ORM reads and SQL comparisons agree.
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


@lru_cache(maxsize=256)
def _converters(
    dialect: str, table: Table, columns: tuple[str, ...]
) -> tuple[Converter | None, ...]:
    converters: list[Converter | None] = []
    for name in columns:
        column_type = table.c[name].type
        if isinstance(column_type, UTCDateTime) and dialect == "sqlite":
            converters.append(_sqlite_datetime)
        elif isinstance(column_type, JSON):
            converters.append(_json)
        else:
            converters.append(None)  # psycopg sends aware datetimes as timestamptz itself
    return tuple(converters)


@lru_cache(maxsize=256)
def _sqlite_sql(table: Table, columns: tuple[str, ...], suffix: str, rows: int) -> str:
    group = "(" + ", ".join("?" * len(columns)) + ")"
    values = ", ".join([group] * rows)
    return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES {values} {suffix}".rstrip()


@lru_cache(maxsize=256)
def _postgresql_sql(table: Table, columns: tuple[str, ...], suffix: str) -> str:
    dialect = postgresql.dialect()
    # %b: the arrays travel in binary (no text to format and parse on either side).
    arrays = ", ".join(f"%b::{table.c[name].type.compile(dialect=dialect)}[]" for name in columns)
    names = ", ".join(columns)
    return f"INSERT INTO {table.name} ({names}) SELECT * FROM unnest({arrays}) {suffix}".rstrip()


@lru_cache(maxsize=256)
def _postgresql_one_row_sql(table: Table, columns: tuple[str, ...], suffix: str) -> str:
    """One row: its values as parameters, not arrays of one (a return's rows, one by one:
    dumping an array per column cost more than the rest of the insert)."""
    dialect = postgresql.dialect()
    values = ", ".join(f"%b::{table.c[name].type.compile(dialect=dialect)}" for name in columns)
    names = ", ".join(columns)
    return f"INSERT INTO {table.name} ({names}) VALUES ({values}) {suffix}".rstrip()


def _tuples(
    rows: Sequence[Mapping[str, Any]],
    columns: tuple[str, ...],
    converters: tuple[Converter | None, ...],
) -> list[tuple[Any, ...]]:
    get = itemgetter(*columns)
    if len(columns) == 1:
        return [(get(row),) for row in rows]
    converted = [(i, convert) for i, convert in enumerate(converters) if convert is not None]
    if not converted:
        return [get(row) for row in rows]
    result = []
    for row in rows:
        values = list(get(row))
        for index, convert in converted:
            values[index] = convert(values[index])
        result.append(tuple(values))
    return result


_CONNECTION = "returnstack.bulk.connection"


def _connection(session: Session) -> Connection:
    """The session's connection (its transaction begun if need be), kept on the session for
    the rest of that transaction: Session.connection() costs more than a small insert, and
    the ingestion path writes a dozen statements per transaction."""
    transaction = session.get_transaction()
    cached = session.info.get(_CONNECTION)
    if transaction is not None and cached is not None and cached[0] is transaction:
        connection: Connection = cached[1]
        return connection
    connection = session.connection()
    session.info[_CONNECTION] = (session.get_transaction(), connection)
    return connection


def _execute(
    session: Session,
    model: type[Base],
    rows: Sequence[Mapping[str, Any]],
    suffix: str,
    *,
    returning: bool,
) -> list[Any]:
    connection = _connection(session)
    dialect = connection.dialect
    table = _table(model)
    columns = tuple(rows[0])
    values = _tuples(rows, columns, _converters(dialect.name, table, columns))
    # The driver's own cursor, in the session's transaction: SQLAlchemy's execution layer
    # costs more per statement than a small insert does.
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    sql = ""
    try:
        if dialect.name == "postgresql" and len(values) == 1:
            sql = _postgresql_one_row_sql(table, columns, suffix)
            cursor.execute(sql, values[0])
            return list(cursor.fetchall()) if returning else []
        if dialect.name == "postgresql":
            sql = _postgresql_sql(table, columns, suffix)
            cursor.execute(sql, tuple(list(column) for column in zip(*values, strict=True)))
            return list(cursor.fetchall()) if returning else []
        if not returning:
            sql = _sqlite_sql(table, columns, suffix, 1)
            cursor.executemany(sql, values)
            return []
        returned: list[Any] = []
        for start in range(0, len(values), SQLITE_ROWS_PER_STATEMENT):
            chunk = values[start : start + SQLITE_ROWS_PER_STATEMENT]
            sql = _sqlite_sql(table, columns, suffix, len(chunk))
            cursor.execute(sql, tuple(value for row in chunk for value in row))
            returned.extend(cursor.fetchall())
        return returned
    except dialect.loaded_dbapi.Error as exc:
        # The exception SQLAlchemy would raise (IntegrityError, DataError, ...).
        raise DBAPIError.instance(sql, None, exc, dialect.loaded_dbapi.Error) from exc
    finally:
        cursor.close()


def insert_rows(
    session: Session,
    model: type[Base],
    rows: Sequence[Mapping[str, Any]],
    *,
    on_conflict: str = "",
) -> None:
    """Insert `rows` (dicts with the same keys) into the model's table.

    `on_conflict` is an optional clause, e.g. "ON CONFLICT DO NOTHING" or
    "ON CONFLICT (tenant_id, id) DO UPDATE SET name = excluded.name" (with DO UPDATE, each
    key may appear once in `rows`).
    """
    if rows:
        _execute(session, model, rows, on_conflict, returning=False)


def insert_rows_returning(
    session: Session,
    model: type[Base],
    rows: Sequence[Mapping[str, Any]],
    *,
    on_conflict: str,
    returning: Sequence[str],
) -> list[tuple[Any, ...]]:
    """INSERT ... RETURNING the columns: one tuple per row inserted or updated."""
    if not rows:
        return []
    suffix = f"{on_conflict} RETURNING {', '.join(returning)}"
    return [tuple(row) for row in _execute(session, model, rows, suffix, returning=True)]


def select_rows(session: Session, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """A small read on the driver's own cursor, in the session's transaction, for the reads
    of the ingestion path (SQLAlchemy's statement layer costs several times what a read by
    key does). `sql` is portable SQL with `?` placeholders; values come as the driver gives
    them (on SQLite, timestamps as text)."""
    connection = _connection(session)
    dialect = connection.dialect
    if dialect.name == "postgresql":
        sql = sql.replace("?", "%s")
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, tuple(params))
        return list(cursor.fetchall())
    except dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(sql, None, exc, dialect.loaded_dbapi.Error) from exc
    finally:
        cursor.close()


def insert_tuples(
    session: Session,
    model: type[Base],
    columns: tuple[str, ...],
    rows: Sequence[tuple[Any, ...]],
    *,
    suffix: str = "",
    returning: bool = False,
) -> list[tuple[Any, ...]]:
    """As `insert_rows` (with `returning`, as `insert_rows_returning`, `suffix` ending with
    its RETURNING clause) for rows already in `columns` order: no dict per row to build and
    take apart again (the product-signal upkeep writes thousands per transaction)."""
    if not rows:
        return []
    connection = _connection(session)
    dialect = connection.dialect
    table = _table(model)
    converters = _converters(dialect.name, table, columns)
    if any(convert is not None for convert in converters):
        rows = [
            tuple(
                value if convert is None else convert(value)
                for value, convert in zip(row, converters, strict=True)
            )
            for row in rows
        ]
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    sql = ""
    try:
        if dialect.name == "postgresql":
            sql = _postgresql_sql(table, columns, suffix)
            cursor.execute(sql, tuple(list(column) for column in zip(*rows, strict=True)))
            return [tuple(row) for row in cursor.fetchall()] if returning else []
        if not returning:
            sql = _sqlite_sql(table, columns, suffix, 1)
            cursor.executemany(sql, rows)
            return []
        returned: list[tuple[Any, ...]] = []
        for start in range(0, len(rows), SQLITE_ROWS_PER_STATEMENT):
            chunk = rows[start : start + SQLITE_ROWS_PER_STATEMENT]
            sql = _sqlite_sql(table, columns, suffix, len(chunk))
            cursor.execute(sql, tuple(value for row in chunk for value in row))
            returned.extend(tuple(row) for row in cursor.fetchall())
        return returned
    except dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(sql, None, exc, dialect.loaded_dbapi.Error) from exc
    finally:
        cursor.close()


def execute_many(session: Session, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """One SQLite statement (`?` placeholders) run for each row on the driver's own cursor,
    in the session's transaction: an UPDATE by key per row, prepared once (SQLite runs in
    this process, so a statement per row costs no round trip). Values as the driver takes
    them (timestamps as `sqlite_datetime` text)."""
    if not rows:
        return
    connection = _connection(session)
    dialect = connection.dialect
    assert dialect.name == "sqlite", "execute_many is for SQLite"
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(sql, rows)
    except dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(sql, None, exc, dialect.loaded_dbapi.Error) from exc
    finally:
        cursor.close()


sqlite_datetime = _sqlite_datetime  # the text a timestamp is stored as on SQLite
