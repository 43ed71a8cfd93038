"""JSON bodies hold valid Unicode only (API.md 1).

JSON may escape a lone UTF-16 surrogate (`"\\ud800"`), which is no character at all: no
database can store it and UTF-8 cannot encode it. Bodies that FastAPI parses are checked by
Pydantic, which refuses such a string in any `str` field (422 `string_unicode` naming the
field). Bodies read by hand (`POST /v1/events`, vendor payloads) use `loads_fast`: orjson
refuses a lone surrogate only as "not JSON", without a path, so that refusal is turned into
the same 422 naming the field. Fields typed `Any` are not checked by Pydantic: call
`check_text` on them.
"""

import json
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import orjson

from returnstack.kit.errors import InvalidRequest, ValidationFailed, format_path

Path = tuple[int | str, ...]


def _surrogate_paths(value: Any, path: Path = ()) -> Iterator[Path]:
    if isinstance(value, str):
        if not value.isascii() and not _encodable(value):
            yield path
    elif isinstance(value, dict):
        for key, child in value.items():
            if not key.isascii() and not _encodable(key):
                yield (*path, key)
            yield from _surrogate_paths(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _surrogate_paths(child, (*path, index))


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(document: Any, *, prefix: str = "") -> None:
    """422 naming every field (or object key) of a parsed document with a lone surrogate."""
    paths = list(_surrogate_paths(document))
    if paths:
        raise ValidationFailed(
            "The request holds text that is not valid Unicode (a lone surrogate escape).",
            details=[
                {
                    "path": format_path(path, prefix),
                    "message": "must be valid Unicode: a lone surrogate escape (\\ud800-\\udfff "
                    "without its pair) is not a character",
                    "code": "string_unicode",
                }
                for path in paths
            ],
        )


def loads_fast(body: bytes) -> Any:
    """orjson's reading (fast; integers beyond 64 bits become floats), with its one refusal
    that is about Unicode, not syntax, turned into the 422 naming the field; 400 otherwise."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        with suppress(ValueError, RecursionError):  # (not JSON for either)
            check_text(json.loads(body))
        raise InvalidRequest.at("", str(exc), "The body is not valid JSON.") from None
