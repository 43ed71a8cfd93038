"""Segmentation: the (customer, currency) rows of `customer_profiles` a `where` expression
selects, sorted and paged, or streamed as CSV; and saved segments (a named expression).

Rows are read from `customer_profiles` outer-joined to `customers` (a customer's email is
`customers.email`, a guest's the row's `guest_email`). Sorting is by one field, nulls last
in both directions, ties broken by the row's key (owner, currency), which also makes the
keyset cursor exact: every row appears exactly once while walking the pages.
"""

import base64
import binascii
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Row, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from returnstack.customers.expressions import (
    FIELDS,
    SERIAL_RETURNER,
    Field,
    compile_where,
)
from returnstack.kit.csvcells import spreadsheet_safe
from returnstack.kit.db import Database
from returnstack.kit.errors import InvalidRequest, NotFound
from returnstack.kit.ids import new_id
from returnstack.kit.pagination import decode_cursor, encode_cursor
from returnstack.kit.timefmt import rfc3339
from returnstack.models import Customer, CustomerProfile, Segment

COLUMNS = (
    "customer_id",
    "email",
    "currency",
    "orders",
    "items_purchased",
    "gross_revenue",
    "returns",
    "items_returned",
    "refunded",
    "net_revenue",
    "return_rate_items",
    "return_rate_value",
    "first_order_at",
    "last_order_at",
    "last_return_at",
    "flags",
)
TIMESTAMPS = ("first_order_at", "last_order_at", "last_return_at")
VALUES = COLUMNS[:-1]  # read as they are (but timestamps), in this order; then:
FLAG = len(VALUES)  # serial_returner (-> flags)
_TIMESTAMP_INDEXES = tuple(VALUES.index(name) for name in TIMESTAMPS)
SORTABLE = tuple(name for name in COLUMNS if name != "flags")
DEFAULT_SORT = "customer_id"  # customers by id, then guests by email; each by currency
CSV_BATCH = 1000  # rows fetched from the database, and written, at a time

RowsQuery = Select[*tuple[Any, ...]]


@dataclass(frozen=True)
class Sort:
    field: Field
    descending: bool = False

    @property
    def spec(self) -> str:
        return f"-{self.field.name}" if self.descending else self.field.name

    @property
    def by_key(self) -> bool:
        """customer_id ascending, nulls (guests) last, is the order of the table's key
        (owner: "c:<customer id>" before "g:<email>"), which its index reads as it is."""
        return self.field.name == "customer_id" and not self.descending


def parse_sort(value: str | None) -> Sort:
    """`net_revenue` (ascending) or `-net_revenue` (descending); 400 on `sort` otherwise."""
    text = (value or DEFAULT_SORT).strip()
    name = text.removeprefix("-")
    if name not in SORTABLE:
        raise InvalidRequest(
            f"Cannot sort by {name!r}.",
            details=[
                {
                    "path": "sort",
                    "message": f"must be one of {', '.join(SORTABLE)}, with - for descending",
                }
            ],
        )
    return Sort(FIELDS[name], descending=text.startswith("-"))


def _rows_query(tenant_id: str, condition: ColumnElement[bool]) -> RowsQuery:
    joined = CustomerProfile.__table__.outerjoin(
        Customer.__table__,
        and_(
            Customer.tenant_id == CustomerProfile.tenant_id,
            Customer.id == CustomerProfile.customer_id,
        ),
    )
    values = [FIELDS[name].column.label(name) for name in VALUES]
    return (
        select(*values, CustomerProfile.serial_returner, CustomerProfile.owner)
        .select_from(joined)
        .where(CustomerProfile.tenant_id == tenant_id, condition)
    )


def _sorted(query: RowsQuery, sort: Sort) -> RowsQuery:
    tie = (CustomerProfile.owner.asc(), CustomerProfile.currency.asc())
    if sort.by_key:
        return query.order_by(*tie)
    column = sort.field.column
    key = column.desc() if sort.descending else column.asc()
    # (Only where a null can be: the index of net_revenue then serves both directions.)
    return query.order_by(key.nulls_last() if sort.field.nullable else key, *tie)


def _after(sort: Sort, value: Any, owner: str, currency: str) -> ColumnElement[bool]:
    """The rows that come after (value, owner, currency) in the sort order."""
    column = sort.field.column
    tie = or_(
        CustomerProfile.owner > owner,
        and_(CustomerProfile.owner == owner, CustomerProfile.currency > currency),
    )
    if sort.by_key:
        return tie
    if value is None:  # nulls come last: only later nulls follow
        return and_(column.is_(None), tie)
    beyond = column < value if sort.descending else column > value
    if not sort.field.nullable:
        return or_(beyond, and_(column == value, tie))
    return or_(beyond, and_(column == value, tie), column.is_(None))


# Cursors: base64url of [sort, value, owner, currency]; opaque to clients.


def _encode(sort: Sort, row: Row[Any]) -> str:
    value = row._mapping[sort.field.name]
    if isinstance(value, datetime):
        value = value.isoformat()
    raw = orjson.dumps([sort.spec, value, row.owner, row.currency])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(sort: Sort, cursor: str) -> tuple[Any, str, str]:
    bad = InvalidRequest(
        "The cursor is not valid.", details=[{"path": "cursor", "message": "not a cursor"}]
    )
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        spec, value, owner, currency = orjson.loads(base64.urlsafe_b64decode(padded))
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
        raise bad from None
    if spec != sort.spec:
        raise InvalidRequest(
            "The cursor belongs to another sort order.",
            details=[{"path": "cursor", "message": f"was made for sort={spec}"}],
        )
    if not isinstance(owner, str) or not isinstance(currency, str):
        raise bad
    if value is None:
        return None, owner, currency
    kind = sort.field.kind
    if kind == "timestamp" and isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise bad from None
        if moment.tzinfo is None:
            raise bad
        return moment.astimezone(UTC), owner, currency
    ok = {
        "text": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "rate": isinstance(value, int | float) and not isinstance(value, bool),
    }.get(kind, False)
    if not ok:
        raise bad
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
    query = _rows_query(tenant_id, condition)
    if cursor is not None:
        query = query.where(_after(sort, *_decode(sort, cursor)))
    rows = list(session.execute(_sorted(query, sort).limit(limit + 1)))
    next_cursor = _encode(sort, rows[limit - 1]) if len(rows) > limit else None
    return {"data": [render_row(row) for row in rows[:limit]], "next_cursor": next_cursor}


def count_customers(session: Session, *, tenant_id: str, condition: ColumnElement[bool]) -> int:
    query = _rows_query(tenant_id, condition)
    return session.scalar(select(func.count()).select_from(query.subquery())) or 0


def _csv_cells(row: Row[Any]) -> list[Any]:
    cells = list(row[:FLAG])
    for index in _TIMESTAMP_INDEXES:
        cells[index] = rfc3339(cells[index])
    cells.append(SERIAL_RETURNER if row[FLAG] else "")  # several flags: joined with ;
    return ["" if cell is None else spreadsheet_safe(cell) for cell in cells]


def stream_csv(
    db: Database, *, tenant_id: str, condition: ColumnElement[bool], sort: Sort
) -> Iterator[bytes]:
    """Every row `condition` selects, as CSV (a header row first), `CSV_BATCH` rows at a
    time: one query read through a server-side cursor, so memory stays flat whatever the
    size. It opens its own read transaction: the request's ends before the body is sent."""
    query = _sorted(_rows_query(tenant_id, condition), sort)
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> bytes:
        chunk = buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
        return chunk

    writer.writerow(COLUMNS)
    yield flush()
    with db.transaction(write=False) as session:
        connection = session.connection()
        if connection.dialect.name == "postgresql":
            # A server-side cursor is planned for its first rows (cursor_tuple_fraction 0.1):
            # walking the key index and filtering, where reading every match and sorting
            # them is many times faster for an export that reads them all.
            connection.exec_driver_sql("SET LOCAL cursor_tuple_fraction = 1.0")
        streamed = query.execution_options(stream_results=True, max_row_buffer=CSV_BATCH)
        result = connection.execute(streamed)
        for batch in result.partitions(CSV_BATCH):
            writer.writerows(_csv_cells(row) for row in batch)
            yield flush()


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
    segment = (
        None
        if "\x00" in segment_id
        else session.scalar(
            select(Segment).where(Segment.tenant_id == tenant_id, Segment.id == segment_id)
        )
    )
    if segment is None:
        raise NotFound(f"No segment {segment_id!r}.")
    return segment


def get_segment(session: Session, *, tenant_id: str, segment_id: str) -> dict[str, Any]:
    """The segment and how many (customer, currency) rows it selects now."""
    segment = find_segment(session, tenant_id=tenant_id, segment_id=segment_id)
    condition = compile_where(segment.expression)
    count = count_customers(session, tenant_id=tenant_id, condition=condition)
    return render_segment(segment) | {"customer_count": count}


def list_segments(
    session: Session, *, tenant_id: str, limit: int, cursor: str | None
) -> dict[str, Any]:
    """Newest first; the cursor is the (created_at, id) of the last segment of the page."""
    query = select(Segment).where(Segment.tenant_id == tenant_id)
    if cursor is not None:
        created_at, segment_id = decode_cursor(cursor)
        query = query.where(
            or_(
                Segment.created_at < created_at,
                and_(Segment.created_at == created_at, Segment.id < segment_id),
            )
        )
    query = query.order_by(Segment.created_at.desc(), Segment.id.desc()).limit(limit + 1)
    segments = list(session.scalars(query))
    last = segments[limit - 1] if len(segments) > limit else None
    return {
        "data": [render_segment(segment) for segment in segments[:limit]],
        "next_cursor": encode_cursor(last.created_at, last.id) if last else None,
    }


def delete_segment(session: Session, *, tenant_id: str, segment_id: str) -> None:
    session.delete(find_segment(session, tenant_id=tenant_id, segment_id=segment_id))
    session.flush()
