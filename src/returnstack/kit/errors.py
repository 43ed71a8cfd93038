"""Domain errors carry their HTTP status; one set of handlers renders the contract's shape:

{"error": {"type": "...", "message": "...", "details": [{"path": "...", "message": "..."}]}}
"""

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Self

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from returnstack.kit.logs import error_fields
from returnstack.kit.responses import JSONResponse

log = logging.getLogger("returnstack.errors")


class ApiError(Exception):
    status_code = 400
    type = "invalid_request"
    message = "The request is invalid."

    def __init__(
        self,
        message: str | None = None,
        *,
        details: Sequence[dict[str, Any]] = (),
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.message = message or self.message
        self.details = list(details)
        self.headers = headers
        self.extra = extra or {}
        super().__init__(self.message)

    @classmethod
    def at(cls, path: str, problem: str, message: str | None = None, **kwargs: Any) -> Self:
        """The error about one field, `path`: `problem` says what is wrong with it."""
        return cls(message, details=[{"path": path, "message": problem}], **kwargs)

    def body(self) -> dict[str, Any]:
        error = {"type": self.type, "message": self.message, "details": self.details}
        return {"error": error | self.extra}


class InvalidRequest(ApiError):
    status_code = 400
    type = "invalid_request"


class AuthenticationFailed(ApiError):
    status_code = 401
    type = "authentication_failed"
    message = "A valid API key is required: Authorization: Bearer <key>."


class Forbidden(ApiError):
    status_code = 403
    type = "forbidden"
    message = "This key may not use this endpoint."


class NotFound(ApiError):
    status_code = 404
    type = "not_found"
    message = "Not found."


class MethodNotAllowed(ApiError):
    status_code = 405
    type = "method_not_allowed"
    message = "This method is not allowed on this path."


class Conflict(ApiError):
    status_code = 409
    type = "conflict"


class InvalidTransition(ApiError):
    status_code = 409
    type = "invalid_transition"


class PreconditionFailed(ApiError):
    status_code = 412
    type = "precondition_failed"
    message = "The resource changed since the version given in If-Match."


class PayloadTooLarge(ApiError):
    status_code = 413
    type = "payload_too_large"
    message = "The request is too large."


class ValidationFailed(ApiError):
    status_code = 422
    type = "validation_failed"
    message = "The request failed validation."


class RateLimited(ApiError):
    status_code = 429
    type = "rate_limited"
    message = "Too many requests."


class ServiceUnavailable(ApiError):
    status_code = 503
    type = "unavailable"
    message = "The service is unavailable."


class Overloaded(ApiError):
    """Too much work is waiting: refused at once, nothing written; retry after Retry-After."""

    status_code = 503
    type = "overloaded"
    message = "The server is overloaded; nothing was written. Retry after the delay in Retry-After."


def format_path(loc: Iterable[int | str], prefix: str = "") -> str:
    """('events', 3, 'items', 0, 'quantity') -> 'events[3].items[0].quantity'."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _clean_message(message: str) -> str:
    # Pydantic prefixes custom errors with "Value error, "; the path already says where.
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def validation_details(
    errors: Iterable[Any], *, prefix: str = "", skip: int = 0
) -> list[dict[str, Any]]:
    """Pydantic errors -> contract details. `skip` drops leading loc parts (e.g. 'body')."""
    details = []
    for error in errors:
        loc = tuple(error.get("loc", ()))[skip:]
        details.append(
            {
                "path": format_path(loc, prefix),
                "message": _clean_message(str(error.get("msg", "is invalid"))),
                "code": error.get("type", "invalid"),
            }
        )
    return details


def error_response(error: ApiError) -> Response:
    return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)


_STATUS_TYPES = {
    400: InvalidRequest,
    401: AuthenticationFailed,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    412: PreconditionFailed,
    413: PayloadTooLarge,
    422: ValidationFailed,
    429: RateLimited,
}


# Paths that answer errors in another shape (the vendor adapters, COMPAT.md) say how, for
# the errors raised before their route runs: a method the path does not take (405), a body
# over the limit (413, kit/middleware.py).
ErrorShape = Callable[[Request, int, str], Response]
_SHAPES: dict[str, tuple[Callable[[str], bool], ErrorShape]] = {}


def register_error_shape(name: str, matches: Callable[[str], bool], render: ErrorShape) -> None:
    _SHAPES[name] = (matches, render)


def shaped_error(request: Request, status_code: int, message: str) -> Response | None:
    """The error in the shape its path answers in, if it has one of its own."""
    for matches, render in _SHAPES.values():
        if matches(request.url.path):
            return render(request, status_code, message)
    return None


def install_error_handlers(app: FastAPI) -> None:
    async def unconfirmed_key(request: Request) -> ApiError | None:
        """A caller found in a key cache and not yet confirmed by its work is confirmed
        before it hears of its request (tenants/auth.py, cached_secret_key): a revoked key
        hears 401, not what was wrong with its request."""
        confirm = getattr(request.state, "confirm_key", None)
        if confirm is not None:
            try:
                await confirm()
            except ApiError as refused:
                return refused
        return None

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        # Not for 401 and 429 (decided by the key already), nor 5xx: an overloaded server
        # refuses at once, without a read.
        if 400 <= exc.status_code < 500 and exc.status_code not in (401, 429):
            refused = await unconfirmed_key(request)
            if refused is not None:
                return error_response(refused)
        return error_response(exc)

    async def on_request_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        refused = await unconfirmed_key(request)
        if refused is not None:
            return error_response(refused)
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(
                InvalidRequest.at(
                    "", str(errors[0].get("msg", "invalid JSON")), "The body is not valid JSON."
                )
            )
        # Query and path parameter errors are 400; body errors are 422.
        if errors and all(
            e.get("loc", ("body",))[0] in ("query", "path", "header") for e in errors
        ):
            return error_response(
                InvalidRequest("Invalid parameters.", details=validation_details(errors, skip=1))
            )
        return error_response(ValidationFailed(details=validation_details(errors, skip=1)))

    async def on_pydantic_validation(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ValidationError)
        return error_response(ValidationFailed(details=validation_details(exc.errors())))

    async def on_http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        shaped = shaped_error(request, exc.status_code, str(exc.detail))
        if shaped is not None:
            shaped.headers.update(dict(exc.headers or {}))
            return shaped
        kind = _STATUS_TYPES.get(exc.status_code)
        if kind is None:
            body = {"error": {"type": "http_error", "message": str(exc.detail), "details": []}}
            return JSONResponse(body, status_code=exc.status_code, headers=dict(exc.headers or {}))
        message = str(exc.detail) if exc.detail else None
        error = kind(message)
        headers = dict(exc.headers or {})
        return JSONResponse(error.body(), status_code=exc.status_code, headers=headers)

    async def on_data_error(request: Request, exc: Exception) -> Response:
        # A value the database refuses (validation should have caught it): the client's fault.
        log.warning("request.data_error", extra=error_fields(exc))
        message = "The request holds a value the database cannot store."
        shaped = shaped_error(request, 400, message)  # a vendor's path answers in its shape
        if shaped is not None:
            return shaped
        return error_response(InvalidRequest.at("", "a value cannot be stored", message))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_request_validation)
    app.add_exception_handler(ValidationError, on_pydantic_validation)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    app.add_exception_handler(DataError, on_data_error)
    # Unexpected errors become a 500 in the request middleware, which adds the request id.
