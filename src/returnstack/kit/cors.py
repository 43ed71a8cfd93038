"""CORS by route: browsers of other origins may call only the routes made for browsers (the
storefront, and sending events with a publishable key); the rest of the API is for servers
holding secret keys, and answers cross-origin requests without any CORS header (the browser
then refuses them), unless staff origins are configured."""

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

STOREFRONT_PREFIX = "/v1/storefront/"
# POST-only routes that browsers send events to: the native one and the vendor paths of
# shared/spec/COMPAT.md whose clients run in browsers (Constructor, Sailthru, Optimove).
EVENT_PATHS = frozenset(
    {
        "/v1/events",
        "/v1/offline_behavioral_actions",
        "/v2/behavioral_action/purchase",
        "/v2/behavioral_action/return",
        "/purchase",
        "/return",
        "/optimove/events",
        "/optimove/events/batch",
    }
)
EXPOSE_HEADERS = ["ETag", "Retry-After", "X-Request-Id", "Idempotent-Replayed"]
REQUEST_HEADERS = [
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "If-Match",
    "X-Request-Id",
    "X-Storefront-Session",
]


def is_public(scope: Scope) -> bool:
    path: str = scope["path"]
    if path.startswith(STOREFRONT_PREFIX):
        return True
    if path not in EVENT_PATHS:
        return False
    method = scope["method"]
    if method == "OPTIONS":  # a preflight names the method it asks for
        for name, value in scope["headers"]:
            if name == b"access-control-request-method":
                method = value.decode("latin-1").strip().upper()
    return method == "POST"


class RouteCORS:
    def __init__(
        self, app: ASGIApp, *, public_origins: list[str], staff_origins: list[str]
    ) -> None:
        self.app = app

        def cors(origins: list[str], methods: list[str], headers: list[str]) -> ASGIApp | None:
            if not origins:
                return None
            return CORSMiddleware(
                app,
                allow_origins=origins,
                allow_methods=methods,
                allow_headers=headers,
                expose_headers=EXPOSE_HEADERS,
                max_age=600,
            )

        self.public = cors(public_origins, ["GET", "POST"], [*REQUEST_HEADERS, "X-API-Key"])
        self.staff = cors(staff_origins, ["GET", "POST", "PUT", "PATCH", "DELETE"], REQUEST_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            cors = self.public if is_public(scope) else self.staff
            if cors is not None:
                await cors(scope, receive, send)
                return
        await self.app(scope, receive, send)
