"""Every route of the app, and what each stranger gets from it (API.md 2 and 4.1).

The callers: no credentials; tenant A's publishable key (public: it ships in web pages);
a storefront session of customer A; a guest session of email B (a guest order of tenant A);
and another tenant's secret key. Each route's path names tenant A's things (customer A's
return, order, attachment, segment...), so a caller that may not reach them gets 401, 403 or
404 exactly as the table says, and a caller that may use the route gets through.

A route missing from the table fails `test_every_route_has_its_place_in_the_matrix`: a new
route cannot be added without deciding who may call it. Add one line per route; a new path
parameter needs a value in `path_values`."""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from returnstack.app import create_app
from returnstack.kit.routing import RenderInThreadRoute
from returnstack.webhooks import service as webhooks_service
from tests.conftest import DatabaseFixture, TenantFixture
from tests.factories import unique
from tests.kit.test_routing import api_routes
from tests.returns.test_attachments import JPEG, upload
from tests.storefront.test_storefront import (
    buy,
    customer_headers,
    email,
    guest_headers,
    open_return,
    token,
    wanted,
)

PASS = "pass"  # the caller may use this route on these things: anything but 401, 403, 404
OWN = "own"  # the route works for the caller, on its own data: nothing of customer A shows

CALLERS = ("anonymous", "publishable", "customer_a", "guest_b", "other_tenant")

# Routes that are not the API: documentation and operations (no data, no key).
NOT_API = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/healthz", "/readyz"}
NOT_API |= {"/metrics"}

# fmt: off
# (method, path):                                        anonymous, publishable, customer_a,
#                                                                         guest_b, other_tenant
MATRIX: dict[tuple[str, str], tuple[int | str, ...]] = {
    ("POST", "/v1/events"):                                   (401, PASS, 401, 401, OWN),
    ("GET", "/v1/orders/{order_id}"):                         (401, 403, 401, 401, 404),
    ("POST", "/v1/returns"):                                  (401, 403, 401, 401, OWN),
    ("POST", "/v1/returns/preview"):                          (401, 403, 401, 401, OWN),
    ("GET", "/v1/returns"):                                   (401, 403, 401, 401, OWN),
    ("GET", "/v1/returns/{return_id}"):                       (401, 403, 401, 401, 404),
    ("PATCH", "/v1/returns/{return_id}"):                     (401, 403, 401, 401, 404),
    ("DELETE", "/v1/returns/{return_id}"):                    (401, 403, 401, 401, 404),
    ("POST", "/v1/returns/{return_id}/approve"):              (401, 403, 401, 401, 404),
    ("POST", "/v1/returns/{return_id}/decline"):              (401, 403, 401, 401, 404),
    ("POST", "/v1/returns/{return_id}/receive"):              (401, 403, 401, 401, 404),
    ("POST", "/v1/returns/{return_id}/refund"):               (401, 403, 401, 401, 404),
    ("POST", "/v1/returns/{return_id}/close"):                (401, 403, 401, 401, 404),
    ("POST", "/v1/returns/{return_id}/cancel"):               (401, 403, 401, 401, 404),
    ("POST", "/v1/returns/{return_id}/reopen"):               (401, 403, 401, 401, 404),
    ("GET", "/v1/policy"):                                    (401, 403, 401, 401, OWN),
    ("PUT", "/v1/policy"):                                    (401, 403, 401, 401, OWN),
    ("POST", "/v1/returns/{return_id}/attachments"):          (401, 403, 401, 401, 404),
    ("GET", "/v1/returns/{return_id}/attachments/{attachment_id}"): (401, 403, 401, 401, 404),
    ("POST", "/v1/storefront/sessions"):                      (401, PASS, 401, 401, 401),
    ("GET", "/v1/storefront/orders"):                         (401, 401, PASS, OWN, 401),
    ("GET", "/v1/storefront/returns"):                        (401, 401, PASS, OWN, 401),
    ("POST", "/v1/storefront/returns"):                       (401, 401, PASS, OWN, 401),
    ("POST", "/v1/storefront/returns/preview"):               (401, 401, PASS, OWN, 401),
    ("GET", "/v1/storefront/returns/{return_id}"):            (401, 401, PASS, 404, 401),
    ("POST", "/v1/storefront/returns/{return_id}/cancel"):    (401, 401, PASS, 404, 401),
    ("POST", "/v1/storefront/returns/{return_id}/attachments"): (401, 401, PASS, 404, 401),
    ("GET", "/v1/storefront/returns/{return_id}/attachments/{attachment_id}"): (401, 401, PASS, 404, 401),  # noqa: E501
    ("GET", "/v1/customers"):                                 (401, 403, 401, 401, OWN),
    ("POST", "/v1/segments"):                                 (401, 403, 401, 401, OWN),
    ("GET", "/v1/segments"):                                  (401, 403, 401, 401, OWN),
    ("GET", "/v1/segments/{segment_id}"):                     (401, 403, 401, 401, 404),
    ("DELETE", "/v1/segments/{segment_id}"):                  (401, 403, 401, 401, 404),
    ("GET", "/v1/segments/{segment_id}/customers"):           (401, 403, 401, 401, 404),
    ("GET", "/v1/customers/lookup"):                          (401, 403, 401, 401, 404),
    ("GET", "/v1/customers/{customer_id}/orders"):            (401, 403, 401, 401, 404),
    ("GET", "/v1/customers/{customer_id}/returns"):           (401, 403, 401, 401, 404),
    ("GET", "/v1/customers/{customer_id}"):                   (401, 403, 401, 401, 404),
    ("DELETE", "/v1/customers/{customer_id}"):                (401, 403, 401, 401, 404),
    ("DELETE", "/v1/customers/lookup"):                       (401, 403, 401, 401, 404),
    ("GET", "/v1/products/{product_id}/stats"):               (401, 403, 401, 401, 404),
    ("GET", "/v1/products"):                                  (401, 403, 401, 401, OWN),
    ("POST", "/v1/rankings"):                                 (401, 403, 401, 401, OWN),
    ("GET", "/v1/reports/returns"):                           (401, 403, 401, 401, OWN),
    # Vendor-compatible endpoints (COMPAT.md): keys the vendors' way. Constructor's key is a
    # query parameter (none here: 401 for all); a publishable key may send Sailthru and
    # Optimove events (reported); Emporix takes only a secret key of the path's tenant.
    ("POST", "/v1/offline_behavioral_actions"):               (401, 401, 401, 401, 401),
    ("POST", "/v2/behavioral_action/purchase"):               (401, 401, 401, 401, 401),
    ("POST", "/v2/behavioral_action/return"):                 (401, 401, 401, 401, 401),
    ("POST", "/purchase"):                                    (401, PASS, 401, 401, OWN),
    ("POST", "/return"):                                      (401, PASS, 401, 401, OWN),
    ("POST", "/optimove/events"):                             (401, PASS, 401, 401, OWN),
    ("POST", "/optimove/events/batch"):                       (401, PASS, 401, 401, OWN),
    ("POST", "/return/{tenant}/returns"):                     (401, 403, 401, 401, 403),
    ("GET", "/return/{tenant}/returns"):                      (401, 403, 401, 401, 403),
    ("GET", "/return/{tenant}/returns/{return_id}"):          (401, 403, 401, 401, 403),
    ("PATCH", "/return/{tenant}/returns/{return_id}"):        (401, 403, 401, 401, 403),
    ("DELETE", "/return/{tenant}/returns/{return_id}"):       (401, 403, 401, 401, 403),
    ("POST", "/v1/webhooks"):                                 (401, 403, 401, 401, OWN),
    ("GET", "/v1/webhooks"):                                  (401, 403, 401, 401, OWN),
    ("GET", "/v1/webhooks/{webhook_id}"):                     (401, 403, 401, 401, 404),
    ("PATCH", "/v1/webhooks/{webhook_id}"):                   (401, 403, 401, 401, 404),
    ("DELETE", "/v1/webhooks/{webhook_id}"):                  (401, 403, 401, 401, 404),
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"):          (401, 403, 401, 401, 404),
    ("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry"): (401, 403, 401, 401, 404),
    ("POST", "/v1/webhooks/{webhook_id}/recover"):            (401, 403, 401, 401, 404),
    ("POST", "/v1/webhooks/{webhook_id}/rotate-secret"):      (401, 403, 401, 401, 404),
    ("GET", "/v1/messages"):                                  (401, 403, 401, 401, OWN),
}
# fmt: on

# Query strings a route needs to name tenant A's things.
QUERIES: dict[tuple[str, str], dict[str, str]] = {
    ("GET", "/v1/reports/returns"): {"group_by": "product"},
}
# Valid bodies, where an empty one would be refused before the route looks at anything.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", "/v1/returns/{return_id}"): {"note": "n"},
    ("POST", "/v1/returns/{return_id}/decline"): {"reason": "other"},
    ("POST", "/v1/returns/{return_id}/receive"): {
        "items": [{"order_id": "o-1", "line_id": "1", "quantity": 1}]
    },
    ("POST", "/v1/returns/{return_id}/refund"): {"method": "cash"},
    # Another tenant may subscribe its own (private, refused) URL: a 422 names the field.
    ("POST", "/v1/webhooks"): {"url": "http://127.0.0.1:9/hook", "events": ["*"]},
    ("PATCH", "/v1/webhooks/{webhook_id}"): {"description": "d"},
    ("POST", "/v1/webhooks/{webhook_id}/recover"): {"since": "2026-01-01T00:00:00Z"},
}
# Bodies that name tenant A's things, filled in by the world.
NAMED_BODIES = {("POST", "/v1/rankings")}


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    # The dashboard's pages take no key, only a dashboard session: every stranger (and every
    # API key) is sent to its login page, tested route by route in
    # tests/dashboard/test_dashboard.py.
    return {
        (method, route.path_format)
        for route in api_routes(app)
        if route.path_format not in NOT_API and not route.path_format.startswith("/dashboard")
        for method in route.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }


def test_every_route_has_its_place_in_the_matrix(app: FastAPI) -> None:
    routes = app_routes(app)
    missing = sorted(routes - set(MATRIX))
    assert missing == [], f"add these routes to MATRIX (one line each): {missing}"
    assert sorted(set(MATRIX) - routes) == [], "MATRIX names routes the app does not have"
    assert all(len(expected) == len(CALLERS) for expected in MATRIX.values())


def test_a_new_route_fails_the_matrix_until_it_has_a_line(database: DatabaseFixture) -> None:
    app = create_app(database.settings, database=database.db)
    router = APIRouter(route_class=RenderInThreadRoute)

    @router.get("/v1/brand-new/{thing_id}")
    def brand_new(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    app.include_router(router)
    assert sorted(app_routes(app) - set(MATRIX)) == [("GET", "/v1/brand-new/{thing_id}")]


@dataclass
class World:
    """Tenant A with customer A (a return with a photo, a segment) and guest B (a guest
    order); every caller's headers; what must never show to anyone but customer A."""

    path_values: dict[str, str]
    queries: dict[tuple[str, str], dict[str, str]]
    headers: dict[str, dict[str, str]]
    customer_a: dict[str, str]
    guest_b_order: str
    customer_token: str  # customer A's, for the publishable key to sign in with


@pytest.fixture
def world(
    client: TestClient,
    database: DatabaseFixture,
    tenant: TenantFixture,
    other_tenant: TenantFixture,
) -> World:
    # A webhook of tenant A (on loopback, allowed here; the test app never delivers), so
    # that the messages below queue deliveries for it.
    with database.db.transaction() as session:
        hook = webhooks_service.create_subscription(
            session,
            tenant_id=tenant.id,
            url="http://127.0.0.1:9/hook",
            events=["*"],
            description=None,
            enabled=True,
            allow_private=True,
        )
    customer_id, address = unique("cust-a"), email()
    order = buy(client, tenant, customer_id=customer_id, email_address=address)
    session_a = customer_headers(client, tenant, customer_id)
    ret = open_return(client, session_a, wanted(order))
    attachment = upload(
        client, f"/v1/returns/{ret['id']}/attachments", tenant.headers, JPEG, filename="a.jpg"
    ).json()
    segment = client.post(
        "/v1/segments", json={"name": "all", "where": "orders >= 0"}, headers=tenant.headers
    )
    assert segment.status_code == 201, segment.text
    guest_email = email()
    guest_order = buy(client, tenant, email_address=guest_email)
    session_b = guest_headers(client, tenant, guest_order["order_id"], guest_email)
    # Number every committed message (the suite's other tenants' too: one call does a batch).
    while True:
        with database.db.transaction() as session:
            if not webhooks_service.publish(session, now=datetime.now(UTC)):
                break
    deliveries = client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=tenant.headers)
    assert deliveries.status_code == 200, deliveries.text
    # Disabled, so its queued attempts end and no dispatcher of another test sends them.
    disabled = client.patch(
        f"/v1/webhooks/{hook['id']}", json={"enabled": False}, headers=tenant.headers
    )
    assert disabled.status_code == 200, disabled.text
    return World(
        path_values={
            "return_id": ret["id"],
            "order_id": order["order_id"],
            "attachment_id": attachment["id"],
            "customer_id": customer_id,
            "segment_id": segment.json()["id"],
            "product_id": order["items"][0]["product_id"],
            "tenant": tenant.name,  # Emporix's path names the tenant
            "webhook_id": hook["id"],
            "delivery_id": deliveries.json()["data"][0]["id"],
        },
        queries={
            ("GET", "/v1/customers/lookup"): {"email": address},
            ("DELETE", "/v1/customers/lookup"): {"email": address},
        }
        | QUERIES,
        headers={
            "anonymous": {},
            "publishable": tenant.publishable_headers,
            "customer_a": session_a,
            "guest_b": session_b,
            "other_tenant": other_tenant.headers,
        },
        customer_a={
            "customer id": customer_id,
            "email": address,
            "order id": order["order_id"],
            "return id": ret["id"],
            "return number": ret["number"],
        },
        guest_b_order=guest_order["order_id"],
        customer_token=token(tenant, customer_id),
    )


def call(client: TestClient, world: World, method: str, path: str, caller: str) -> httpx.Response:
    url = path.format(**world.path_values)
    headers = world.headers[caller]
    params = world.queries.get((method, path))
    if path.endswith("/attachments"):
        files = {"file": ("photo.jpg", JPEG, "image/jpeg")}
        return client.request(method, url, headers=headers, params=params, files=files)
    json: Any = None
    if path == "/v1/storefront/sessions":
        json = {"order_id": world.guest_b_order, "email": "nobody@example.com"}
        if caller == "publishable":
            json = {"customer_token": world.customer_token}
    elif (method, path) in NAMED_BODIES:  # a ranking of customer A's product
        json = {"product_ids": [world.path_values["product_id"]]}
    elif method in ("POST", "PUT", "PATCH"):
        json = BODIES.get((method, path), {})
    return client.request(method, url, headers=headers, params=params, json=json)


@pytest.mark.parametrize(("method", "path"), list(MATRIX), ids=[f"{m} {p}" for m, p in MATRIX])
def test_each_caller_gets_what_section_2_allows(
    client: TestClient, world: World, method: str, path: str
) -> None:
    unknown = [
        name for name in path.replace("}", "{").split("{")[1::2] if name not in world.path_values
    ]
    assert unknown == [], f"add a value for {unknown} to World.path_values"
    for caller, expected in zip(CALLERS, MATRIX[(method, path)], strict=True):
        response = call(client, world, method, path, caller)
        where = f"{caller}: {method} {path} -> {response.status_code} {response.text[:300]}"
        if isinstance(expected, int):
            assert response.status_code == expected, where
            continue
        assert response.status_code not in (401, 403, 404), where
        assert response.status_code < 500, where
        if expected == OWN:
            for what, value in world.customer_a.items():
                assert value not in response.text, f"{where}: shows customer A's {what}"
