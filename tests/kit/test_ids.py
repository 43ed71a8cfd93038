"""Server-made ids (kit/ids.py): ULIDs in Crockford base32, sortable by the time they were made."""

import base64
import random
from datetime import UTC, datetime, timedelta

from returnstack.kit.ids import _encode, id_floor, new_id

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
