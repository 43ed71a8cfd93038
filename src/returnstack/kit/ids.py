"""Server-made ids: a type prefix and a ULID (time-sortable, 26 Crockford base32 characters)."""

import os
import time
from datetime import datetime

# Every pair of Crockford characters, by the 10 bits it encodes: 13 look-ups make a ULID
# (base64.b32encode is a Python loop, and ingestion makes three ids an event).
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]


def _encode(value: int) -> str:
    """The 128-bit `value` as 26 Crockford base32 characters (130 bits, zero-led)."""
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 0x3FF] for shift in range(120, -1, -10)])


def ulid() -> str:
    """48 bits of milliseconds then 80 random bits, so ids sort by creation time."""
    return _encode((time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big"))


def new_id(prefix: str) -> str:
    return f"{prefix}_{ulid()}"


def id_floor(prefix: str, moment: datetime) -> str:
    """The smallest id of `prefix` made at `moment` or later, so that "made before" is a
    range of the primary key."""
    return f"{prefix}_{_encode(int(moment.timestamp() * 1000) << 80)}"
