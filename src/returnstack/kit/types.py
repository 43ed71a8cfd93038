"""Field types shared by request schemas: client ids, emails, currencies, money, timestamps,
and the size bounds of API.md section 1 (metadata, notes, line values)."""

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    PlainValidator,
    Strict,
    StringConstraints,
    WithJsonSchema,
)

from returnstack.kit.money import is_currency

MAX_QUANTITY = 100_000
MAX_AMOUNT = 10**12  # minor units; far above any real price, far below int64
# The largest integer every JSON client reads exactly (JavaScript's Number.MAX_SAFE_INTEGER):
# a line's value (unit_price x quantity) and every stored sum of money stay at or below it.
MAX_SAFE_INTEGER = 2**53 - 1
MAX_NOTE = 2000
MAX_ITEMS_PER_RETURN = 500
METADATA_KEYS = 50
METADATA_KEY_CHARS = 40
METADATA_VALUE_CHARS = 500
METADATA_INTEGER = 2**53  # values are integers within +-2^53
FUTURE_TOLERANCE = timedelta(minutes=5)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalize_email(value: str) -> str:
    value = value.strip().lower()
    if len(value) > 254 or not _EMAIL.match(value):
        raise ValueError("is not a valid email address")
    return value


def _currency(value: str) -> str:
    code = value.upper()
    if not is_currency(code):
        raise ValueError(f"{value!r} is not an ISO 4217 currency code")
    return code


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def _timestamp_input(value: Any) -> Any:
    # RFC 3339 strings only: a bare number is ambiguous (seconds? milliseconds?).
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 timestamp with an offset: 2026-11-02T14:03:00Z")
    return value


def _not_in_future(value: datetime) -> datetime:
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None
    if value > datetime.now(UTC) + FUTURE_TOLERANCE:
        raise ValueError("is in the future (more than 5 minutes ahead of the server clock)")
    return value


def no_nul(value: str) -> str:
    # PostgreSQL text cannot hold U+0000, so no backend may accept it. Request bodies on
    # kit.schemas.Schema check every string; vendor shapes add `NoNul` to their own types.
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    return value


NoNul = AfterValidator(no_nul)

# The NUL check of these comes from kit.schemas.Schema, the base of every request body.
ClientId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Name = Annotated[str, StringConstraints(max_length=200)]
CountryCode = Annotated[str, StringConstraints(min_length=2, max_length=2)]
PostalCode = Annotated[str, StringConstraints(max_length=20)]
Url = Annotated[str, StringConstraints(max_length=2048)]
Email = Annotated[str, StringConstraints(max_length=320), AfterValidator(normalize_email)]
CurrencyCode = Annotated[
    str, StringConstraints(min_length=3, max_length=3), AfterValidator(_currency)
]
Quantity = Annotated[int, Strict(), Field(ge=1, le=MAX_QUANTITY)]
Amount = Annotated[int, Strict(), Field(ge=0, le=MAX_AMOUNT)]
Timestamp = Annotated[
    AwareDatetime, BeforeValidator(_timestamp_input), AfterValidator(_not_in_future)
]
ShortText = Annotated[str, StringConstraints(max_length=500)]
Note = Annotated[str, StringConstraints(max_length=MAX_NOTE)]


def line_value_error(unit_price: int, quantity: int) -> str | None:
    """Why a line's value (unit_price x quantity) cannot be kept, or None."""
    if unit_price * quantity > MAX_SAFE_INTEGER:
        return (
            f"unit_price x quantity = {unit_price * quantity} is above {MAX_SAFE_INTEGER} "
            "(2^53 - 1), the largest amount every JSON client reads exactly"
        )
    return None


# Stripe-like metadata: every JSON client reads each value exactly (no floats, no integers
# beyond 2^53), and a PostgreSQL jsonb column can hold every key and value (no NUL).
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=METADATA_KEY_CHARS)]


def _metadata_value(value: Any) -> str | int:
    # One validator for the value, so that an error names `metadata.<key>`, not a union member.
    if isinstance(value, str):
        if len(value) > METADATA_VALUE_CHARS:
            raise ValueError(f"must be at most {METADATA_VALUE_CHARS} characters")
        no_nul(value)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode (no lone surrogate escape)") from None
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > METADATA_INTEGER:
            raise ValueError("must be an integer within +-2^53")
        return value
    raise ValueError("must be a string or an integer")


MetadataValue = Annotated[
    str | int,
    PlainValidator(_metadata_value),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "maxLength": METADATA_VALUE_CHARS},
                {"type": "integer", "minimum": -METADATA_INTEGER, "maximum": METADATA_INTEGER},
            ]
        }
    ),
]
Metadata = Annotated[
    dict[MetadataKey, MetadataValue],
    Field(
        max_length=METADATA_KEYS,
        description=f"Up to {METADATA_KEYS} keys of 1-{METADATA_KEY_CHARS} characters; each "
        f"value a string of at most {METADATA_VALUE_CHARS} characters or an integer within "
        "+-2^53.",
    ),
]
