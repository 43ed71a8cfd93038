"""Keyset pagination, written once: a cursor is the (timestamp, id) of the last row of a
page, opaque to clients (base64url of a JSON pair)."""

import base64
import binascii
from datetime import datetime
from typing import TypeVar

import orjson
from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

from returnstack.kit.errors import InvalidRequest

T = TypeVar("T")


def encode_cursor(at: datetime, row_id: str) -> str:
    raw = orjson.dumps([at.isoformat(), row_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (timestamp, id) of a cursor; 400 on `cursor` for anything this API did not make."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, row_id = orjson.loads(base64.urlsafe_b64decode(padded))
        moment = datetime.fromisoformat(at)
        if moment.tzinfo is None or not isinstance(row_id, str):
            raise ValueError("not a cursor of this API")
        return moment, row_id
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
        raise InvalidRequest(
            "The cursor is not valid.", details=[{"path": "cursor", "message": "not a cursor"}]
        ) from None


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
        after_at, after_id = decode_cursor(cursor)
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
