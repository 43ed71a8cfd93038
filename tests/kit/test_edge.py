"""The edge of the service (API.md 2, 9; issue 8): rate limits per key, per shopper and per
session; uploads authenticated before their body is read, and a storage quota per tenant;
/readyz that tells nobody why the database is down; CORS only where browsers belong."""

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from returnstack.app import create_app
from returnstack.kit.db import Database
from returnstack.kit.middleware import UPLOAD_BODY_BYTES
from returnstack.kit.ratelimit import TokenBuckets
from returnstack.models import Tenant
from returnstack.tenants.service import create_key, revoke_key
from tests.conftest import DatabaseFixture, TenantFixture, make_tenant
from tests.factories import batch, purchase, unique
from tests.returns.test_attachments import JPEG, PNG, upload
from tests.storefront.test_storefront import (
    HEADER,
    buy,
    customer_headers,
    email,
    guest_headers,
    open_return,
    wanted,
)
from tests.storefront.test_trust import FakeClock, client_address_from_header

# --- rate limits ---------------------------------------------------------------------------


@pytest.fixture
def limited(database: DatabaseFixture) -> Iterator[TestClient]:
    """An app with a tiny rate limit: a burst of 3 requests, then one every 100 s."""
    settings = database.settings.model_copy(
        update={"rate_limit_per_second": 0.01, "rate_limit_burst": 3}
    )
    app = create_app(settings, database=database.db)
    with TestClient(client_address_from_header(app), raise_server_exceptions=False) as client:
        yield client


def statuses(client: TestClient, path: str, headers: dict[str, str], times: int) -> list[int]:
    return [client.get(path, headers=headers).status_code for _ in range(times)]


def test_a_secret_key_has_one_bucket_and_429_says_when_to_retry(
    limited: TestClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    for address in ("10.0.0.1", "10.0.0.2"):  # one bucket per key, from anywhere
        headers = tenant.headers | {"X-Test-Client": address}
        assert limited.get("/v1/policy", headers=headers).status_code == 200
    assert limited.get("/v1/policy", headers=tenant.headers).status_code == 200
    refused = limited.get("/v1/policy", headers=tenant.headers)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["type"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 100
    # Other keys have buckets of their own: another tenant's, and a second key of this one.
    assert statuses(limited, "/v1/policy", other_tenant.headers, 3) == [200] * 3


def test_a_second_secret_key_of_the_tenant_has_its_own_bucket(
    limited: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    assert statuses(limited, "/v1/policy", tenant.headers, 4) == [200, 200, 200, 429]
    with database.db.transaction() as session:
        second = create_key(session, tenant=session.get_one(Tenant, tenant.id), kind="secret")
    headers = {"Authorization": f"Bearer {second.key}"}
    assert statuses(limited, "/v1/policy", headers, 3) == [200] * 3


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/events"), ("GET", "/v1/customers/nobody")],  # the routes with the key cache
)
def test_a_revoked_key_over_its_rate_limit_hears_401_not_429(
    limited: TestClient, tenant: TenantFixture, database: DatabaseFixture, method: str, path: str
) -> None:
    """Revocation is immediate whatever the bucket says: a client told 429 would wait and
    retry a key that can never work again."""
    body = batch(purchase()) if method == "POST" else None
    answers = [
        limited.request(method, path, json=body, headers=tenant.headers).status_code
        for _ in range(4)
    ]
    assert 429 not in answers[:3], answers
    assert answers[3] == 429, answers
    with database.db.transaction() as session:
        revoke_key(session, key_id=tenant.secret_key_id)
    refused = limited.request(method, path, json=body, headers=tenant.headers)
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"]["type"] == "authentication_failed"


def test_shoppers_do_not_share_the_publishable_keys_bucket(
    limited: TestClient, tenant: TenantFixture
) -> None:
    """The publishable key ships in every shopper's browser: one shopper (or one abuser)
    exhausting their bucket leaves the others theirs."""
    body = batch(purchase())
    sent = [
        limited.post(
            "/v1/events", json=body, headers=tenant.publishable_headers | {"X-Test-Client": "a"}
        ).status_code
        for _ in range(4)
    ]
    assert sent == [200, 200, 200, 429]
    other = tenant.publishable_headers | {"X-Test-Client": "b"}
    assert limited.post("/v1/events", json=body, headers=other).status_code == 200
    # Storefront calls count per session.
    address = email()
    order = buy(limited, tenant, email_address=address)
    first = guest_headers(limited, tenant, order["order_id"], address)
    assert statuses(limited, "/v1/storefront/orders", first, 4) == [200, 200, 200, 429]
    second = guest_headers(limited, tenant, order["order_id"], address)
    assert statuses(limited, "/v1/storefront/orders", second, 1) == [200]


def test_the_rate_limit_table_stays_bounded() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate=10, burst=20, max_keys=1000, clock=clock)
    for n in range(10_000):
        assert buckets.take(f"key-{n}") == 0
    assert len(buckets) <= 1000
    clock.advance(2)  # 20 tokens at 10 a second: every bucket is full again
    buckets.take("key-last")
    assert len(buckets) == 1
    # A bucket that is not full is kept while full ones are forgotten.
    for _ in range(20):
        buckets.take("busy")
    assert buckets.take("busy") > 0
    clock.advance(1)
    for n in range(50):
        buckets.take(f"new-{n}")
    assert buckets.wait("busy") == 0  # 10 tokens back, and still tracked
    assert buckets.take("busy") == 0


# --- uploads -------------------------------------------------------------------------------


class BodyReads:
    """Counts the body messages the app asks for."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.reads = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counting() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.reads += 1
            return message

        await self.app(scope, counting, send)


@pytest.fixture
def owned_return(client: TestClient, tenant: TenantFixture) -> dict[str, Any]:
    customer_id = unique("cust")
    order = buy(client, tenant, customer_id=customer_id, email_address=email())
    headers = customer_headers(client, tenant, customer_id)
    return {"headers": headers, "return": open_return(client, headers, wanted(order))}


def test_uploads_are_authenticated_before_their_body_is_read(
    client: TestClient, tenant: TenantFixture, owned_return: dict[str, Any]
) -> None:
    counter = BodyReads(client.app)
    net = TestClient(counter, raise_server_exceptions=False)
    ret = owned_return["return"]
    staff_path = f"/v1/returns/{ret['id']}/attachments"
    storefront_path = f"/v1/storefront/returns/{ret['id']}/attachments"
    huge = b"--zzz\r\n" + b"x" * (UPLOAD_BODY_BYTES + 1024)
    malformed = b"--zzz\r\nnot a part at all"
    multipart = {"Content-Type": "multipart/form-data; boundary=zzz"}
    cases = [
        (staff_path, {}, 401),
        (staff_path, {"Authorization": "Bearer sk_wrong"}, 401),
        (staff_path, tenant.publishable_headers, 403),
        (staff_path, owned_return["headers"], 401),  # a session is not a key
        (storefront_path, {}, 401),
        (storefront_path, {HEADER: "sfs_nobody"}, 401),
        (storefront_path, tenant.headers, 401),  # a key is not a session
    ]
    for path, headers, status in cases:
        for body in (huge, malformed):
            response = net.post(path, content=body, headers=multipart | headers)
            assert response.status_code == status, (path, headers, response.text)
    assert counter.reads == 0
    # Authenticated, the same bodies are refused for what they are.
    too_large = net.post(staff_path, content=huge, headers=multipart | tenant.headers)
    assert too_large.status_code == 413, too_large.text
    bad = net.post(storefront_path, content=malformed, headers=multipart | owned_return["headers"])
    assert bad.status_code in (400, 422), bad.text


@pytest.fixture
def quota_app(database: DatabaseFixture, tmp_path: Path) -> Iterator[tuple[TestClient, Path]]:
    """An app whose tenants may store 2,500 bytes of attachments each."""
    settings = database.settings.model_copy(
        update={"attachment_quota_bytes": 2500, "data_dir": tmp_path / "data"}
    )
    app = create_app(settings, database=database.db)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, tmp_path / "data"


def files_under(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file()) if root.exists() else []


def test_a_tenant_stores_attachments_up_to_its_quota(
    quota_app: tuple[TestClient, Path], database: DatabaseFixture
) -> None:
    client, data_dir = quota_app
    tenant, other = make_tenant(database.db), make_tenant(database.db)
    customer_id = unique("cust")
    order = buy(client, tenant, customer_id=customer_id, lines=None)
    headers = customer_headers(client, tenant, customer_id)
    ret = open_return(client, headers, wanted(order))
    staff_path = f"/v1/returns/{ret['id']}/attachments"
    storefront_path = f"/v1/storefront/returns/{ret['id']}/attachments"
    assert len(JPEG) + len(PNG) <= 2500 < 2 * len(JPEG) + len(PNG)
    upload(client, staff_path, tenant.headers, JPEG)
    upload(client, storefront_path, headers, PNG)
    before = client.get(f"/v1/returns/{ret['id']}", headers=tenant.headers).json()
    files = files_under(data_dir)
    for path, who in ((staff_path, tenant.headers), (storefront_path, headers)):
        response = upload(client, path, who, JPEG, expect=413)
        error = response.json()["error"]
        assert error["type"] == "payload_too_large"
        assert [d["path"] for d in error["details"]] == ["file"]
        assert "quota" in error["message"]
    # Nothing was written: no file, no row, no new version.
    assert files_under(data_dir) == files
    after = client.get(f"/v1/returns/{ret['id']}", headers=tenant.headers).json()
    assert after == before
    # The quota is the tenant's: another tenant still has all of its own.
    other_customer = unique("cust")
    other_order = buy(client, other, customer_id=other_customer)
    other_return = open_return(
        client, customer_headers(client, other, other_customer), wanted(other_order)
    )
    upload(client, f"/v1/returns/{other_return['id']}/attachments", other.headers, JPEG)


def test_the_default_quota_is_documented(database: DatabaseFixture) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert "RETURNSTACK_ATTACHMENT_QUOTA_BYTES" in readme
    assert database.settings.attachment_quota_bytes >= 1024**3


# --- readiness -----------------------------------------------------------------------------


@pytest.fixture
def unreachable(database: DatabaseFixture, tmp_path: Path) -> Iterator[TestClient]:
    """An app whose database cannot be reached: a SQLite file in a directory that does not
    exist, or a PostgreSQL server on a closed port."""
    if database.backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'removed' / 'returnstack.db'}"
    else:
        url = "postgresql+psycopg://returnstack@127.0.0.1:9/secretdb?connect_timeout=2"
    settings = database.settings.model_copy(update={"database_url": url})
    db = Database(settings)
    app = create_app(settings, database=db)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client
    db.dispose()


def test_readyz_says_only_unavailable_and_logs_why(
    unreachable: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        response = unreachable.get("/readyz")
    assert response.status_code == 503, response.text
    body = response.json()
    assert body == {
        "status": "unavailable",
        "error": {"type": "unavailable", "message": "unavailable", "details": []},
    }
    logged = " ".join(
        f"{record.getMessage()} {record.__dict__.get('error', '')} {record.exc_text or ''}"
        for record in caplog.records
    )
    assert "readyz" in logged
    assert ("unable to open" in logged) or ("9" in logged and "connect" in logged.lower())
    assert unreachable.get("/healthz").status_code == 200


def test_readyz_is_ok_when_the_database_answers(client: TestClient) -> None:
    assert client.get("/readyz").json() == {"status": "ok"}


# --- CORS ----------------------------------------------------------------------------------

ORIGIN = "https://shop.example"
PUBLIC_PATHS = [
    ("POST", "/v1/events", "authorization,content-type"),
    ("POST", "/v1/storefront/sessions", "authorization,content-type"),
    ("GET", "/v1/storefront/orders", "x-storefront-session"),
    ("POST", "/v1/storefront/returns/ret_1/cancel", "x-storefront-session,if-match"),
    ("POST", "/v1/offline_behavioral_actions", "content-type"),
    ("POST", "/v2/behavioral_action/purchase", "content-type"),
    ("POST", "/v2/behavioral_action/return", "content-type"),
    ("POST", "/purchase", "content-type"),
    ("POST", "/return", "content-type"),
    ("POST", "/optimove/events", "authorization,content-type"),
    ("POST", "/optimove/events/batch", "x-api-key,content-type"),
]
PRIVATE_PATHS = [
    ("GET", "/v1/returns"),
    ("POST", "/v1/returns"),
    ("GET", "/v1/orders/o-1"),
    ("DELETE", "/v1/customers/c-1"),
    ("PUT", "/v1/policy"),
    ("GET", "/v1/events"),  # only POST is an event route
    ("GET", "/return/acme/returns"),  # Emporix: secret keys, staff systems
]


def preflight(client: TestClient, method: str, path: str, headers: str = "authorization") -> Any:
    return client.options(
        path,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers,
        },
    )


@pytest.mark.parametrize(("method", "path", "headers"), PUBLIC_PATHS)
def test_browsers_may_call_the_storefront_and_event_routes(
    client: TestClient, method: str, path: str, headers: str
) -> None:
    response = preflight(client, method, path, headers)
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] in ("*", ORIGIN)
    assert method in response.headers["access-control-allow-methods"]
    allowed = response.headers["access-control-allow-headers"].lower()
    for header in headers.split(","):
        assert header in allowed


@pytest.mark.parametrize(("method", "path"), PRIVATE_PATHS)
def test_browsers_get_no_cross_origin_access_elsewhere(
    client: TestClient, method: str, path: str
) -> None:
    response = preflight(client, method, path)
    assert "access-control-allow-origin" not in response.headers
    assert response.status_code >= 400


def test_simple_requests_carry_cors_headers_only_on_public_routes(
    client: TestClient, tenant: TenantFixture
) -> None:
    address = email()
    order = buy(client, tenant, email_address=address)
    session = guest_headers(client, tenant, order["order_id"], address)
    public = client.get("/v1/storefront/orders", headers=session | {"Origin": ORIGIN})
    assert public.status_code == 200
    assert public.headers["access-control-allow-origin"] in ("*", ORIGIN)
    assert "x-request-id" in public.headers["access-control-expose-headers"].lower()
    private = client.get("/v1/policy", headers=tenant.headers | {"Origin": ORIGIN})
    assert private.status_code == 200
    assert "access-control-allow-origin" not in private.headers


@pytest.fixture
def configured_cors(database: DatabaseFixture) -> Iterator[TestClient]:
    settings = database.settings.model_copy(update={"cors_origins": [ORIGIN]})
    with TestClient(create_app(settings, database=database.db)) as client:
        yield client


def test_cors_origins_are_configurable(configured_cors: TestClient) -> None:
    allowed = preflight(configured_cors, "POST", "/v1/events")
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    other = configured_cors.options(
        "/v1/events",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert other.headers.get("access-control-allow-origin") != "https://evil.example"
    assert (
        "access-control-allow-origin"
        not in preflight(configured_cors, "GET", "/v1/returns").headers
    )
