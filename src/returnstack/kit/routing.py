"""Routes whose response is rendered in the endpoint's own thread.

FastAPI validates and serialises a sync endpoint's return value on another trip to the
thread pool, and only then closes the request's dependencies, so the request's database
session keeps its pooled connection while it waits for a thread. Under overload every
thread of the pool can be waiting for a connection while every connection waits for a
thread: the server stalls for good. Rendering the response (with the route's
`response_model`, as FastAPI would) before the endpoint's thread returns removes that
second trip.

They also read JSON bodies as the contract does (kit/jsontext.py): text that is not valid
Unicode is a 422 naming its field, where FastAPI would pass it on to the database.
"""

import email.message
import inspect
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from returnstack.kit import jsontext
from returnstack.kit.responses import RawJSONResponse

_UNREAD = object()


class _CheckedJsonRequest(Request):
    """A request whose JSON body was read (and its text checked) before FastAPI asks."""

    document: Any = _UNREAD

    async def json(self) -> Any:
        if self.document is _UNREAD:
            self.document = jsontext.loads(await self.body())
        return self.document

    async def read_json(self) -> None:
        """Parse a JSON body now: a lone surrogate is a 422 (an ApiError raised here reaches
        the app's handlers; raised inside FastAPI's own parsing it would become a bare 400).
        A body that is not JSON is left for FastAPI to report as it always does."""
        if not _is_json(self.headers.get("content-type")):
            return
        body = await self.body()
        if not body:
            return
        try:
            self.document = jsontext.loads(body)
        except (ValueError, RecursionError):
            pass


def _is_json(content_type: str | None) -> bool:
    # FastAPI's own test of whether it parses a body as JSON.
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class RenderInThreadRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = self._rendering(endpoint)
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            request = _CheckedJsonRequest(request.scope, request.receive)
            await request.read_json()
            return await handler(request)

        return checked

    def _rendering(self, endpoint: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(endpoint)  # the signature FastAPI reads stays the endpoint's
        def rendered(*args: Any, **kwargs: Any) -> Any:
            content = endpoint(*args, **kwargs)
            field = self.response_field
            if field is None or isinstance(content, Response):
                return content
            value, errors = field.validate(content, {}, loc=("response",))
            if errors:  # a bug: let FastAPI report it as it always does
                return content
            return RawJSONResponse(field.serialize_json(value), status_code=self.status_code or 200)

        return rendered
