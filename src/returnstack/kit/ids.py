"""Server-made ids: a type prefix and a ULID (time-sortable, 26 Crockford base32 characters)."""

import base64
import os
import time
from datetime import datetime

# base64's RFC 4648 alphabet, mapped onto Crockford's (which ULIDs use).
_TO_CROCKFORD = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
)


def _encode(value: int) -> str:
    # 20 bytes encode to 32 characters; the last 26 hold the 128-bit value (130 bits, zero-led).
    return base64.b32encode(value.to_bytes(20, "big"))[6:].translate(_TO_CROCKFORD).decode()


def ulid() -> str:
    """48 bits of milliseconds then 80 random bits, so ids sort by creation time."""
    return _encode((time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big"))


def new_id(prefix: str) -> str:
    return f"{prefix}_{ulid()}"


def id_floor(prefix: str, moment: datetime) -> str:
    """The smallest id of `prefix` made at `moment` or later, so that "made before" is a
    range of the primary key."""
    return f"{prefix}_{_encode(int(moment.timestamp() * 1000) << 80)}"
