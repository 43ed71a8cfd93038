"""Server-made ids (kit/ids.py): ULIDs in Crockford base32, sortable by the time they were made."""

import base64
import os
import random
import time
from datetime import UTC, datetime, timedelta

from returnstack.kit.ids import _encode, id_floor, new_id, ulid

# The reference encoding: RFC 4648 base32 of the value, mapped onto Crockford's alphabet.
_TO_CROCKFORD = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
)


def _reference(value: int) -> str:
    return base64.b32encode(value.to_bytes(20, "big"))[6:].translate(_TO_CROCKFORD).decode()


def test_the_encoding_is_crockford_base32_of_the_128_bit_value() -> None:
    rng = random.Random(14)
    values = [0, 1, 2**80, 2**127, 2**128 - 1] + [rng.getrandbits(128) for _ in range(20_000)]
    for value in values:
        assert _encode(value) == _reference(value), value
    assert _encode(0) == "0" * 26
    assert _encode(2**128 - 1) == "7" + "Z" * 25


def test_ids_sort_by_the_time_they_were_made() -> None:
    first = new_id("evt")
    moment = datetime.now(UTC) + timedelta(milliseconds=5)
    floor = id_floor("evt", moment)
    assert first.startswith("evt_")
    assert len(first) == 4 + 26
    assert first < floor
    while datetime.now(UTC) < moment + timedelta(milliseconds=2):
        pass
    assert new_id("evt") >= floor


def _decode(text: str) -> int:
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    value = 0
    for char in text:
        value = value * 32 + alphabet.index(char)
    return value


def test_a_ulid_is_the_encoding_of_its_time_and_80_random_bits() -> None:
    before = time.time_ns() // 1_000_000
    made = [ulid() for _ in range(2_000)]  # (more than one 4 KB read of random bytes)
    after = time.time_ns() // 1_000_000
    assert len(set(made)) == len(made)
    for text in made:
        value = _decode(text)
        assert _encode(value) == text
        assert before <= value >> 80 <= after
    # The random parts are not all alike (each of 80 bits is set in some id, clear in another).
    parts = [_decode(text) & (2**80 - 1) for text in made]
    assert all(any(part >> bit & 1 for part in parts) for bit in range(80))
    assert all(not all(part >> bit & 1 for part in parts) for bit in range(80))


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    ulid()  # the parent holds unused random bytes when it forks
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its ids to the pipe, then out at once
        os.close(reader)
        os.write(writer, " ".join(ulid() for _ in range(50)).encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        theirs = set(pipe.read().split())
    os.waitpid(child, 0)
    ours = {ulid() for _ in range(50)}
    assert len(theirs) == 50
    assert {text[10:] for text in ours}.isdisjoint({text[10:] for text in theirs})
