"""One pure-ASGI middleware for every request: request id, body size limit, admission
(kit/admission.py), metrics and the access log. (Pure ASGI, not BaseHTTPMiddleware: it costs
microseconds, not a task per request.)"""

import logging
import re
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from returnstack.kit.admission import Admission, body_received, left
from returnstack.kit.errors import PayloadTooLarge, shaped_error
from returnstack.kit.logs import error_fields
from returnstack.kit.metrics import LATENCY, REQUESTS
from returnstack.kit.responses import JSONResponse

log = logging.getLogger("returnstack.http")

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


UPLOAD_BODY_BYTES = 10 * 1024 * 1024 + 64 * 1024  # a 10 MiB attachment and its multipart frame

INTERNAL_ERROR = {
    "error": {
        "type": "internal_error",
        "message": "An internal error occurred; nothing was changed.",
        "details": [],
    }
}


class _BodyTooLarge(Exception):
    pass


class RequestMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        log_requests: bool,
        admission: Admission | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.log_requests = log_requests
        self.admission = admission
        # The metrics' children by (route, method, status): `labels()` validates and joins
        # its labels and takes a lock on every call. Routes are templates (a bounded set).
        self._metrics: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _header(scope, b"x-request-id")
        if request_id is None or not _VALID_REQUEST_ID.match(request_id):
            request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        response_started = False
        limit = self.max_body_bytes
        upload = scope["method"] == "POST" and scope["path"].endswith("/attachments")
        if upload:
            # Uploads have their own limit (checked by the upload); leave room for multipart.
            # Their declared size is checked once the caller is authenticated (an unknown
            # caller gets 401, whatever its body), and the limit applies while reading.
            limit = max(limit, UPLOAD_BODY_BYTES)

        declared = _header(scope, b"content-length")
        if (
            not upload
            and declared is not None
            and declared.isascii()
            and declared.isdigit()
            and int(declared) > limit
        ):
            await self._too_large(scope, receive, send, request_id, limit)
            self._observe(scope, 413, started, request_id)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
                if not message.get("more_body", False):
                    body_received()
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        arrival = None if self.admission is None else self.admission.arrived()
        try:
            await self.app(scope, limited_receive, send_with_id)
        except _BodyTooLarge:
            if response_started:
                raise
            status = 413
            await self._too_large(scope, receive, send, request_id, limit)
        except Exception:
            # Rendered here, inside the request id's reach; the transaction was rolled back.
            log.error("request.failed", extra={"request_id": request_id, **error_fields()})
            if response_started:
                raise
            status = 500
            response = JSONResponse(
                INTERNAL_ERROR, status_code=500, headers={"x-request-id": request_id}
            )
            await response(scope, receive, send)
        finally:
            left(arrival)
            self._observe(scope, status, started, request_id)

    async def _too_large(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, limit: int
    ) -> None:
        error = PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.")
        response = shaped_error(Request(scope), 413, error.message) or JSONResponse(
            error.body(), status_code=413
        )
        response.headers.update({"x-request-id": request_id, "connection": "close"})
        await response(scope, receive, send)

    def _observe(self, scope: Scope, status: int, started: float, request_id: str) -> None:
        elapsed = time.perf_counter() - started
        route = scope.get("route")
        # The route's template without convertors: /v1/orders/{order_id}
        path = getattr(route, "path_format", None) or "unmatched"
        method = scope["method"]
        key = (path, method, status)
        children = self._metrics.get(key)
        if children is None:
            children = REQUESTS.labels(path, method, str(status)), LATENCY.labels(path, method)
            if len(self._metrics) < 10_000:  # methods are the client's: keep the map bounded
                self._metrics[key] = children
        requests, latency = children
        requests.inc()
        latency.observe(elapsed)
        if self.log_requests:
            # The route's template, not the path: a path may name a person
            # (/v1/customers/{customer_id}), and logs never carry personal data.
            extra: dict[str, Any] = {
                "request_id": request_id,
                "method": method,
                "route": path,
                "status": status,
                "duration_ms": round(elapsed * 1000, 3),
            }
            principal = scope.get("state", {}).get("principal")
            if principal is not None:
                extra["tenant_id"] = principal.tenant_id
                extra["key_id"] = principal.key_id
            log.info("http.request", extra=extra)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
