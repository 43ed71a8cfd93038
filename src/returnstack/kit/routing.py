"""Routes whose response is rendered in the endpoint's own thread.

FastAPI validates and serialises a sync endpoint's return value on another trip to the
thread pool, and only then closes the request's dependencies, so the request's database
session keeps its pooled connection while it waits for a thread. Under overload every
thread of the pool can be waiting for a connection while every connection waits for a
thread: the server stalls for good. Rendering the response (with the route's
`response_model`, as FastAPI would) before the endpoint's thread returns removes that
second trip.

The endpoint's thread is also where the request's work starts: a request that waited too long
to get there is refused (kit/admission.py).
"""

import inspect
from collections.abc import Callable
from functools import wraps
from typing import Any

from fastapi.routing import APIRoute
from starlette.responses import Response

from returnstack.kit.admission import admit
from returnstack.kit.responses import RawJSONResponse


class RenderInThreadRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = self._rendering(endpoint)
        super().__init__(path, endpoint, **kwargs)

    def _rendering(self, endpoint: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(endpoint)  # the signature FastAPI reads stays the endpoint's
        def rendered(*args: Any, **kwargs: Any) -> Any:
            admit()
            content = endpoint(*args, **kwargs)
            field = self.response_field
            if field is None or isinstance(content, Response):
                return content
            value, errors = field.validate(content, {}, loc=("response",))
            if errors:  # a bug: let FastAPI report it as it always does
                return content
            return RawJSONResponse(field.serialize_json(value), status_code=self.status_code or 200)

        return rendered
