"""The ceiling for batch ingestion: the rows the service wrote for the measured events, written
again (with new keys) straight into the same database by the fastest plain client path.

- SQLite: sqlite3 `executemany` per table in one transaction, on a connection made by the
  service's own engine (returnstack.kit.db), so with the PRAGMAs the server's connections
  have (WAL, synchronous=NORMAL, foreign keys, cache size, autocheckpoint).
- PostgreSQL: psycopg `COPY ... FROM STDIN` (cursor.copy) per table in one transaction.

The rows are copies of the service's own rows (same values, same sizes, same storage format),
so the ceiling writes exactly what the service wrote; only the keys change (a `c1.` prefix on
the key columns, taken from the models' primary keys, unique and foreign key constraints).
Rows are built before the clock starts; the clock covers BEGIN to COMMIT.
"""

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import ForeignKeyConstraint, Table, UniqueConstraint

from bench.harness import sql
from bench.server import Target, libpq
from returnstack.config import Settings
from returnstack.kit.db import Database
from returnstack.models import Base

# The tables an event can write to, parents before children.
TABLES = ["stores", "customers", "customer_emails", "events", "orders", "order_lines", "outbox"]


def measured_filters(phase: str) -> dict[str, tuple[str, str]]:
    """Per table, the column and prefix that pick the rows of the phase's events
    (see bench/workload.py); tables not listed give every row as a template."""
    return {
        "events": ("client_id", f"{phase}p-"),
        "orders": ("id", f"{phase}o-"),
        "order_lines": ("order_id", f"{phase}o-"),
        "customers": ("id", f"{phase}c-"),
        "customer_emails": ("email", f"{phase}c-"),
    }


def table(name: str) -> Table:
    return Base.metadata.tables[name]


def key_columns(name: str) -> set[str]:
    """Columns to rewrite so copies are new rows: the first non-tenant column of the primary
    key and of each unique constraint, and the foreign key columns that point at those."""
    tbl = table(name)
    keys: set[str] = set()
    constraints: list[Sequence[str]] = [[c.name for c in tbl.primary_key.columns]]
    constraints += [
        [c.name for c in con.columns]
        for con in tbl.constraints
        if isinstance(con, UniqueConstraint)
    ]
    for columns in constraints:
        keys.update([c for c in columns if c != "tenant_id"][:1])
    for con in tbl.constraints:
        if isinstance(con, ForeignKeyConstraint):
            parent = con.referred_table.name
            if parent in TABLES:
                parent_keys = key_columns(parent)
                for column, fk in zip(con.column_keys, con.elements, strict=True):
                    if fk.column.name in parent_keys:
                        keys.add(column)
    return keys


def columns(name: str) -> list[str]:
    return [c.name for c in table(name).columns]


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def count_rows(target: Target) -> dict[str, int]:
    return {name: int(sql(target, f"SELECT count(*) FROM {_quote(name)}")[0][0]) for name in TABLES}


def _templates(target: Target, name: str, phase: str) -> list[tuple[Any, ...]]:
    cols = columns(name)
    where = ""
    params: tuple[Any, ...] = ()
    chosen = measured_filters(phase).get(name)
    if target.backend == "sqlite":
        select = ", ".join(map(_quote, cols))
        if chosen:
            where, params = (
                f" WHERE substr({_quote(chosen[0])}, 1, ?) = ?",
                (
                    len(chosen[1]),
                    chosen[1],
                ),
            )
        with sqlite3.connect(target.sqlite_path) as conn:
            return conn.execute(f"SELECT {select} FROM {_quote(name)}{where}", params).fetchall()
    # Every value as text: COPY's text format reads it back into the column's own type.
    select = ", ".join(f"{_quote(c)}::text" for c in cols)
    if chosen:
        where, params = f" WHERE left({_quote(chosen[0])}, %s) = %s", (len(chosen[1]), chosen[1])
    with psycopg.connect(libpq(target.url)) as conn:
        return conn.execute(f"SELECT {select} FROM {_quote(name)}{where}", params).fetchall()


def build_rows(target: Target, name: str, count: int, phase: str) -> list[tuple[Any, ...]]:
    """`count` copies of the phase's rows of `name`, with rewritten keys."""
    if count <= 0:
        return []
    templates = _templates(target, name, phase)
    if not templates:
        raise RuntimeError(f"no {name} rows to copy for the ceiling")
    cols = columns(name)
    rewrite = [index for index, col in enumerate(cols) if col in key_columns(name)]
    # Columns the service writes empty and a later step fills (the dispatcher publishes an
    # outbox row: numbers it, marks it dispatched): copied as the service wrote them.
    unset = [index for index, col in enumerate(cols) if col in AS_WRITTEN_EMPTY.get(name, ())]
    rows = []
    for number in range(count):
        row = list(templates[number % len(templates)])
        prefix = f"c{number // len(templates) + 1}."
        for index in rewrite:
            row[index] = prefix + row[index]
        for index in unset:
            row[index] = None
        rows.append(tuple(row))
    return rows


AS_WRITTEN_EMPTY = {"outbox": ("seq", "dispatched_at")}


@dataclass
class CeilingResult:
    backend: str
    method: str
    per_table: dict[str, int]
    seconds: float
    events: int
    counts_after: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(self.per_table.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "rows": self.rows,
            "rows_per_table": self.per_table,
            "seconds": round(self.seconds, 4),
            "rows_per_s": round(self.rows / self.seconds, 1),
            "events": self.events,
            "events_per_s": round(self.events / self.seconds, 1),
        }


def run(target: Target, delta: dict[str, int], phase: str) -> CeilingResult:
    """Insert `delta[table]` copied rows per table directly; time the transaction."""
    rows = {name: build_rows(target, name, delta.get(name, 0), phase) for name in TABLES}
    rows = {name: batch for name, batch in rows.items() if batch}
    per_table = {name: len(batch) for name, batch in rows.items()}
    if target.backend == "sqlite":
        seconds = _insert_sqlite(target, rows)
        method = "sqlite3 executemany, one transaction (BEGIN IMMEDIATE ... COMMIT)"
    else:
        seconds = _copy_postgres(target, rows)
        method = "psycopg COPY FROM STDIN (cursor.copy, write_row), one transaction"
    return CeilingResult(
        target.backend, method, per_table, seconds, delta.get("events", 0), count_rows(target)
    )


def _insert_sqlite(target: Target, rows: dict[str, list[tuple[Any, ...]]]) -> float:
    # A connection made by the service's own engine (returnstack.kit.db), as the server makes
    # it: the same PRAGMAs (WAL, synchronous, foreign keys, cache, autocheckpoint) and the
    # same background checkpointer.
    db = Database(Settings(database_url=target.url, _env_file=None), background_checkpoints=True)
    raw = db.engine.raw_connection()
    try:
        conn = raw.driver_connection
        assert isinstance(conn, sqlite3.Connection)
        assert conn.isolation_level is None  # BEGIN is ours, as in the service
        statements = {
            name: f"INSERT INTO {_quote(name)} ({', '.join(map(_quote, columns(name)))}) "
            f"VALUES ({', '.join('?' for _ in columns(name))})"
            for name in rows
        }
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        for name, batch in rows.items():
            conn.executemany(statements[name], batch)
        conn.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        raw.close()
        db.dispose()


def _copy_postgres(target: Target, rows: dict[str, list[tuple[Any, ...]]]) -> float:
    with psycopg.connect(libpq(target.url)) as conn:
        statements = {
            name: f"COPY {_quote(name)} ({', '.join(map(_quote, columns(name)))}) FROM STDIN"
            for name in rows
        }
        conn.execute("SELECT 1")
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cursor:
            for name, batch in rows.items():
                with cursor.copy(statements[name]) as copy:
                    for row in batch:
                        copy.write_row(row)
        conn.commit()
        return time.perf_counter() - started
