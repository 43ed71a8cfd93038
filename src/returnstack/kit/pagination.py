"""Cursor pagination: a cursor is the (timestamp, id) of the last row of a page, opaque to
clients (base64url of a JSON pair)."""

import base64
import binascii
from datetime import datetime

import orjson

from returnstack.kit.errors import InvalidRequest


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
