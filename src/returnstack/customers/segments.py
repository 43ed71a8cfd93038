"""Segmentation: the (customer, currency) rows of `customer_profiles` a `where` expression
selects, sorted and paged, or streamed as CSV; and saved segments (a named expression).

Rows are read from `customer_profiles` outer-joined to `customers` (a customer's email is
`customers.email`, a guest's the row's `guest_email`). Sorting is by one field, nulls last
in both directions, ties broken by the row's key (owner, currency), which also makes the
keyset cursor exact: every row appears exactly once while walking the pages.
"""

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Row
from sqlalchemy.orm import Session

from returnstack.customers import repository
from returnstack.customers.expressions import FIELDS, Sort, compile_where
from returnstack.customers.fields import COLUMNS, SERIAL_RETURNER, TIMESTAMPS
from returnstack.kit.db import Database
from returnstack.kit.errors import InvalidRequest, NotFound
from returnstack.kit.ids import new_id
from returnstack.kit.pagination import cursor_moment, cursor_values, encode_cursor, invalid_cursor
from returnstack.kit.timefmt import rfc3339
from returnstack.models import Segment

VALUES = COLUMNS[:-1]  # read as they are (but timestamps), in this order; then:
FLAG = len(VALUES)  # serial_returner (-> flags)
SORTABLE = tuple(name for name in COLUMNS if name != "flags")
DEFAULT_SORT = "customer_id"  # customers by id, then guests by email; each by currency
CSV_BATCH = 1000  # rows fetched from the database at a time (SQLite)
CSV_CHUNK = 256 * 1024  # bytes of CSV sent at a time


def parse_sort(value: str | None) -> Sort:
    """`net_revenue` (ascending) or `-net_revenue` (descending); 400 on `sort` otherwise."""
    text = (value or DEFAULT_SORT).strip()
    name = text.removeprefix("-")
    if name not in SORTABLE:
        raise InvalidRequest.at(
            "sort",
            f"must be one of {', '.join(SORTABLE)}, with - for descending",
            f"Cannot sort by {name!r}.",
        )
    return Sort(FIELDS[name], descending=text.startswith("-"))


# Cursors: base64url of [sort, value, owner, currency]; opaque to clients.


def _encode(sort: Sort, row: Row[Any]) -> str:
    return encode_cursor(sort.spec, row._mapping[sort.field.name], row.owner, row.currency)


def _decode(sort: Sort, cursor: str) -> tuple[Any, str, str]:
    spec, value, owner, currency = cursor_values(cursor, 4)
    if spec != sort.spec:
        raise InvalidRequest.at(
            "cursor", f"was made for sort={spec}", "The cursor belongs to another sort order."
        )
    if not isinstance(owner, str) or not isinstance(currency, str):
        raise invalid_cursor()
    kind = sort.field.kind
    if value is None:
        return None, owner, currency
    if kind == "timestamp":
        return cursor_moment(value).astimezone(UTC), owner, currency
    ok = {
        "text": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "rate": isinstance(value, int | float) and not isinstance(value, bool),
    }.get(kind, False)
    if not ok:
        raise invalid_cursor()
    return value, owner, currency


def render_row(row: Row[Any]) -> dict[str, Any]:
    data = dict(zip(VALUES, row[:FLAG], strict=True))
    for name in TIMESTAMPS:
        data[name] = rfc3339(data[name])
    data["flags"] = [SERIAL_RETURNER] if row[FLAG] else []
    return data


def list_customers(
    session: Session,
    *,
    tenant_id: str,
    condition: ColumnElement[bool],
    sort: Sort,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """One page of the rows `condition` (from `compile_where`) selects:
    {"data": [rows], "next_cursor": ...}."""
    after = _decode(sort, cursor) if cursor is not None else None
    rows = repository.segment_rows(
        session, tenant_id=tenant_id, condition=condition, sort=sort, after=after, limit=limit + 1
    )
    next_cursor = _encode(sort, rows[limit - 1]) if len(rows) > limit else None
    return {"data": [render_row(row) for row in rows[:limit]], "next_cursor": next_cursor}


def stream_csv(
    db: Database, *, tenant_id: str, condition: ColumnElement[bool], sort: Sort
) -> Iterator[bytes]:
    """Every row `condition` selects, as CSV (a header row first; `csv.writer`'s format:
    cells quoted only when they hold a comma, a quote or a line break, lines ended with
    CRLF), in chunks of about `CSV_CHUNK` bytes: one query streamed from the database, so
    memory stays flat whatever the size. It opens its own read transaction: the request's
    ends before the body is sent. The database makes every cell
    (`repository.export_csv_rows`); on PostgreSQL it writes the CSV lines too."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    yield buffer.getvalue().encode()
    rows = repository.export_csv_rows(
        db, tenant_id=tenant_id, condition=condition, sort=sort, batch=CSV_BATCH
    )
    if db.is_sqlite:
        yield from _written(rows, buffer, writer)
    else:
        yield from _crlf_chunks(rows)


# A row of cells (SQLite's: none null) as csv.writer writes it when no cell holds a comma,
# a quote or a line break; rates as `repr` writes a float (as csv.writer does).
_LINE = ",".join("%r" if name.startswith("return_rate_") else "%s" for name in COLUMNS) + "\r\n"


def _written(
    batches: Iterator[list[tuple[Any, ...]]], buffer: io.StringIO, writer: Any
) -> Iterator[bytes]:
    """Batches of rows of cells as CSV, CSV_CHUNK bytes or so a chunk. Formatted with
    `_LINE` (a third of csv.writer's time); a batch where a cell needed quotes (seen in
    the counts of commas and line breaks, or a quote) is written by `writer` instead."""
    commas = len(COLUMNS) - 1
    pending: list[str] = []
    size = 0
    for batch in batches:
        text = "".join([_LINE % row for row in batch])
        rows = len(batch)
        if (
            '"' in text
            or text.count(",") != commas * rows
            or text.count("\n") != rows
            or text.count("\r") != rows
        ):
            buffer.seek(0)
            buffer.truncate()
            writer.writerows(batch)
            text = buffer.getvalue()
        pending.append(text)
        size += len(text)
        if size >= CSV_CHUNK:
            yield "".join(pending).encode()
            pending, size = [], 0
    if pending:
        yield "".join(pending).encode()


def _crlf_chunks(lines: Iterator[Any]) -> Iterator[bytes]:
    """PostgreSQL's CSV lines (one a row, ending with LF) in chunks of about CSV_CHUNK bytes,
    each line ended with CRLF as `csv.writer` ends them. A line break inside a cell is in
    quotes: a chunk without a quote has none, and all its LFs end lines."""
    pending: list[bytes] = []
    size = 0
    for line in lines:
        pending.append(bytes(line))
        size += len(line)
        if size >= CSV_CHUNK:
            yield _crlf(pending)
            pending, size = [], 0
    if pending:
        yield _crlf(pending)


def _crlf(lines: list[bytes]) -> bytes:
    chunk = b"".join(lines)
    if b'"' not in chunk:
        return chunk.replace(b"\n", b"\r\n")
    return b"".join(line[:-1] + b"\r\n" for line in lines)


# Saved segments


def render_segment(segment: Segment) -> dict[str, Any]:
    return {
        "id": segment.id,
        "name": segment.name,
        "where": segment.expression,
        "created_at": rfc3339(segment.created_at),
        "updated_at": rfc3339(segment.updated_at),
    }


def create_segment(session: Session, *, tenant_id: str, name: str, where: str) -> dict[str, Any]:
    compile_where(where)  # a 400 naming the position, before anything is saved
    now = datetime.now(UTC)
    segment = Segment(
        tenant_id=tenant_id,
        id=new_id("seg"),
        name=name,
        expression=where,
        created_at=now,
        updated_at=now,
    )
    session.add(segment)
    session.flush()
    return render_segment(segment)


def find_segment(session: Session, *, tenant_id: str, segment_id: str) -> Segment:
    segment = repository.find_segment(session, tenant_id=tenant_id, segment_id=segment_id)
    if segment is None:
        raise NotFound(f"No segment {segment_id!r}.")
    return segment


def get_segment(session: Session, *, tenant_id: str, segment_id: str) -> dict[str, Any]:
    """The segment and how many (customer, currency) rows it selects now."""
    segment = find_segment(session, tenant_id=tenant_id, segment_id=segment_id)
    condition = compile_where(segment.expression)
    count = repository.count_segment_rows(session, tenant_id=tenant_id, condition=condition)
    return render_segment(segment) | {"customer_count": count}


def list_segments(
    session: Session, *, tenant_id: str, limit: int, cursor: str | None
) -> dict[str, Any]:
    """Newest first; the cursor is the (created_at, id) of the last segment of the page."""
    segments, next_cursor = repository.list_segments(
        session, tenant_id=tenant_id, limit=limit, cursor=cursor
    )
    return {"data": [render_segment(segment) for segment in segments], "next_cursor": next_cursor}


def delete_segment(session: Session, *, tenant_id: str, segment_id: str) -> None:
    session.delete(find_segment(session, tenant_id=tenant_id, segment_id=segment_id))
    session.flush()
