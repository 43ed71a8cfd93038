"""Bulk inserts straight to the driver, for the ingestion hot path.

SQLAlchemy's per-row parameter processing costs more than SQLite spends writing the row, so
the event write path hands plain tuples to the driver's executemany (or one multi-row
statement when it needs RETURNING). The SQL is the same on SQLite and PostgreSQL: both
speak `ON CONFLICT ... DO NOTHING / DO UPDATE SET col = excluded.col` and `RETURNING`.
Values are converted here the way the ORM types would (UTC timestamps, JSON).
"""

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from operator import itemgetter
from typing import Any, cast

import orjson
from sqlalchemy import JSON, Table
from sqlalchemy.orm import Session

from returnstack.models.base import Base, UTCDateTime

MAX_ROWS_PER_STATEMENT = 1000
MAX_PARAMETERS = 30_000  # under SQLite's 32,766 and PostgreSQL's 65,535 bound parameters

Converter = Callable[[Any], Any]


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


@lru_cache(maxsize=4096)  # most timestamps of a batch are the same "now"
def _sqlite_datetime(value: datetime | None) -> str | None:
    # The exact text SQLAlchemy's SQLite DATETIME stores, so ORM reads and SQL comparisons agree.
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


@lru_cache(maxsize=256)
def _plan(
    dialect: str, table: Table, columns: tuple[str, ...], suffix: str, rows: int
) -> tuple[str, tuple[Converter | None, ...]]:
    marker = "?" if dialect == "sqlite" else "%s"
    group = "(" + ", ".join([marker] * len(columns)) + ")"
    values = ", ".join([group] * rows) if rows > 1 else group
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES {values} {suffix}".rstrip()
    converters: list[Converter | None] = []
    for name in columns:
        column_type = table.c[name].type
        if isinstance(column_type, UTCDateTime):
            converters.append(_sqlite_datetime if dialect == "sqlite" else _utc)
        elif isinstance(column_type, JSON):
            converters.append(_json)
        else:
            converters.append(None)
    return sql, tuple(converters)


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
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect.name
    table = _table(model)
    columns = tuple(rows[0])
    if dialect == "sqlite":
        # SQLite runs one prepared statement per row, in process: executemany is cheapest.
        sql, converters = _plan(dialect, table, columns, on_conflict, 1)
        connection.exec_driver_sql(sql, _tuples(rows, columns, converters))
        return
    # PostgreSQL pays a round trip per statement: send multi-row statements instead.
    for chunk in _chunks(rows, columns):
        sql, converters = _plan(dialect, table, columns, on_conflict, len(chunk))
        flat = tuple(value for row in _tuples(chunk, columns, converters) for value in row)
        connection.exec_driver_sql(sql, flat)


def _chunks(
    rows: Sequence[Mapping[str, Any]], columns: tuple[str, ...]
) -> list[Sequence[Mapping[str, Any]]]:
    size = max(1, min(MAX_ROWS_PER_STATEMENT, MAX_PARAMETERS // len(columns)))
    return [rows[start : start + size] for start in range(0, len(rows), size)]


def insert_rows_returning(
    session: Session,
    model: type[Base],
    rows: Sequence[Mapping[str, Any]],
    *,
    on_conflict: str,
    returning: str,
) -> list[Any]:
    """Multi-row INSERT ... RETURNING `returning`: the values of the rows actually inserted."""
    connection = session.connection()
    table = _table(model)
    columns = tuple(rows[0]) if rows else ()
    returned: list[Any] = []
    for chunk in _chunks(rows, columns):
        sql, converters = _plan(
            connection.dialect.name,
            table,
            columns,
            f"{on_conflict} RETURNING {returning}",
            len(chunk),
        )
        flat = tuple(value for row in _tuples(chunk, columns, converters) for value in row)
        returned.extend(row[0] for row in connection.exec_driver_sql(sql, flat))
    return returned
