"""Keyset pagination, written once: a cursor holds the sort values of the last row of a
page (usually its timestamp and id), opaque to clients (base64url of a JSON array)."""

import base64
import binascii
from datetime import datetime
from typing import Any, TypeVar

import orjson
from sqlalchemy import ColumnElement, Row, Select, and_, or_, true
from sqlalchemy.engine import Connection
from sqlalchemy.orm import InstrumentedAttribute, Session

from returnstack.kit.errors import InvalidRequest

T = TypeVar("T")


def invalid_cursor() -> InvalidRequest:
    return InvalidRequest.at("cursor", "not a cursor", "The cursor is not valid.")


def encode_cursor(*values: Any) -> str:
    """An opaque cursor holding the values (datetimes as ISO 8601 text)."""
    plain = [value.isoformat() if isinstance(value, datetime) else value for value in values]
    return base64.urlsafe_b64encode(orjson.dumps(plain)).decode().rstrip("=")


def cursor_values(cursor: str, count: int) -> list[Any]:
    """The `count` values of a cursor; 400 on `cursor` for anything this API did not make."""
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise invalid_cursor() from None
    if not isinstance(values, list) or len(values) != count:
        raise invalid_cursor()
    return values


def cursor_moment(value: Any) -> datetime:
    """A timestamp of a cursor, with its offset; 400 on `cursor` otherwise."""
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise invalid_cursor() from None
    if moment.tzinfo is None:
        raise invalid_cursor()
    return moment


def keyset_page(
    session: Session,
    query: Select[T],
    *,
    at: InstrumentedAttribute[datetime],
    row_id: InstrumentedAttribute[str],
    limit: int,
    cursor: str | None,
    oldest_first: bool = False,
) -> tuple[list[T], str | None]:
    """One page of `query`'s rows, newest first by (timestamp, id), or oldest first; the
    cursor is the pair of the page's last row, and every row appears on exactly one page."""
    if cursor is not None:
        moment, after_id = cursor_values(cursor, 2)
        if not isinstance(after_id, str):
            raise invalid_cursor()
        after_at = cursor_moment(moment)
        if oldest_first:
            query = query.where(or_(at > after_at, and_(at == after_at, row_id > after_id)))
        else:
            query = query.where(or_(at < after_at, and_(at == after_at, row_id < after_id)))
    order = (at.asc(), row_id.asc()) if oldest_first else (at.desc(), row_id.desc())
    rows = list(session.scalars(query.order_by(*order).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(getattr(last, at.key), getattr(last, row_id.key))


def after_cursor(
    at: ColumnElement[datetime], row_id: ColumnElement[str], cursor: str | None
) -> ColumnElement[bool]:
    """The rows after a cursor of `keyset_rows`, newest first (all of them without one)."""
    if cursor is None:
        return true()
    moment, after_id = cursor_values(cursor, 2)
    if not isinstance(after_id, str):
        raise invalid_cursor()
    after_at = cursor_moment(moment)
    return or_(at < after_at, and_(at == after_at, row_id < after_id))


def keyset_rows(
    connection: Connection,
    query: Select[Any],
    *,
    at: ColumnElement[datetime],
    row_id: ColumnElement[str],
    limit: int,
) -> tuple[list[Row[Any]], str | None]:
    """`keyset_page` for a Core query of columns, already past the cursor (`after_cursor`),
    read on a connection: newest first by the selected columns `at` and `row_id`."""
    rows = list(connection.execute(query.order_by(at.desc(), row_id.desc()).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]._mapping
    return rows[:limit], encode_cursor(last[at], last[row_id])
