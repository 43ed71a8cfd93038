"""Server-made ids: a type prefix and a ULID (time-sortable, 26 Crockford base32 characters)."""

import os
import threading
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


class _RandomBytes(threading.local):
    """Each thread's bytes from the OS's CSPRNG, read 4 KB at a time (one `os.urandom`
    system call per id cost about as much as the rest of the id)."""

    buffer = b""
    offset = 0


_random = _RandomBytes()


def _forget_random_bytes() -> None:
    # A forked child must not hand out the bytes its parent has not used yet.
    global _random
    _random = _RandomBytes()


os.register_at_fork(after_in_child=_forget_random_bytes)

# The last millisecond's encoding: the ids of a batch are made within a few milliseconds.
_time_part: tuple[int, str] = (-1, "")


def ulid() -> str:
    """48 bits of milliseconds then 80 random bits, so ids sort by creation time."""
    global _time_part
    pairs = _PAIRS
    millis = time.time_ns() // 1_000_000
    known, prefix = _time_part
    if millis != known:  # the first 10 characters: 2 zero bits, then the 48 bits of time
        prefix = "".join([pairs[(millis >> shift) & 0x3FF] for shift in range(40, -1, -10)])
        _time_part = (millis, prefix)
    random = _random
    offset = random.offset
    if offset + 10 > len(random.buffer):
        random.buffer, offset = os.urandom(4096), 0
    random.offset = offset + 10
    bits = int.from_bytes(random.buffer[offset : offset + 10], "big")
    return (  # the other 16 characters: the 80 random bits, 10 at a time
        prefix
        + pairs[bits >> 70]
        + pairs[(bits >> 60) & 0x3FF]
        + pairs[(bits >> 50) & 0x3FF]
        + pairs[(bits >> 40) & 0x3FF]
        + pairs[(bits >> 30) & 0x3FF]
        + pairs[(bits >> 20) & 0x3FF]
        + pairs[(bits >> 10) & 0x3FF]
        + pairs[bits & 0x3FF]
    )


def new_id(prefix: str) -> str:
    return f"{prefix}_{ulid()}"


def id_floor(prefix: str, moment: datetime) -> str:
    """The smallest id of `prefix` made at `moment` or later, so that "made before" is a
    range of the primary key."""
    return f"{prefix}_{_encode(int(moment.timestamp() * 1000) << 80)}"
