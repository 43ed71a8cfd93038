"""Server-made ids: a type prefix and a ULID (time-sortable, 26 Crockford base32 characters)."""

import base64
import os
import time

# base64's RFC 4648 alphabet, mapped onto Crockford's (which ULIDs use).
_TO_CROCKFORD = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
)


def ulid() -> str:
    """48 bits of milliseconds then 80 random bits, so ids sort by creation time."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    # 20 bytes encode to 32 characters; the last 26 hold the 128-bit value (130 bits, zero-led).
    return base64.b32encode(value.to_bytes(20, "big"))[6:].translate(_TO_CROCKFORD).decode()


def new_id(prefix: str) -> str:
    return f"{prefix}_{ulid()}"
