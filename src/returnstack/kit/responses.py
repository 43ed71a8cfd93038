"""A JSON response rendered with orjson (fast, and exact for large integers)."""

from typing import Any

import orjson
from starlette.responses import JSONResponse as _StarletteJSONResponse
from starlette.responses import Response


class JSONResponse(_StarletteJSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class RawJSONResponse(Response):
    """A response whose JSON body is already rendered (replays, pre-serialised payloads):
    the bytes are the body (no rendering, and its headers made once)."""

    media_type = "application/json"

    def __init__(self, body: bytes, status_code: int = 200, headers: dict[str, str] | None = None):
        super().__init__(body, status_code=status_code, headers=headers)
