"""Trust on the storefront (API.md 4.1, issue 8): guest sessions reach only guest orders,
customer tokens live at most 24 h, guest sign-in is limited without locking the rightful
owner out for more than a minute, and customers see a return shape without staff fields."""

import random
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from returnstack.app import create_app
from returnstack.storefront.signin import GuestSignIns
from tests.conftest import DatabaseFixture, TenantFixture
from tests.factories import item, unique
from tests.returns.test_attachments import JPEG, upload
from tests.storefront.test_storefront import (
    HEADER,
    assert_401,
    buy,
    codes,
    customer_headers,
    email,
    guest_headers,
    open_return,
    open_session,
    order_ids,
    return_ids,
    wanted,
)

HOUR = 3600

# --- guest sessions reach only guest orders ------------------------------------------------


def test_an_order_of_a_customer_account_does_not_open_a_guest_session(
    client: TestClient, tenant: TenantFixture
) -> None:
    """The right email of an order that belongs to a customer account is refused exactly
    like a wrong pair: the account holder signs in with a customer token."""
    address = email()
    registered = buy(client, tenant, customer_id=unique("cust"), email_address=address)
    guest_order = buy(client, tenant, email_address=email())
    right_pair = {"order_id": registered["order_id"], "email": address}
    wrong_pair = {"order_id": guest_order["order_id"], "email": email()}
    refused = open_session(client, tenant, right_pair, expect=401).json()
    assert refused == open_session(client, tenant, wrong_pair, expect=401).json()


def test_a_guest_session_reaches_only_the_guest_orders_of_its_email(
    client: TestClient, tenant: TenantFixture
) -> None:
    address, customer_id = email(), unique("cust")
    guest_order = buy(client, tenant, email_address=address, days_ago=2)
    account_order = buy(client, tenant, customer_id=customer_id, email_address=address)
    # The account holder has a return, with a photo, on their account's order.
    customer = customer_headers(client, tenant, customer_id)
    accounts_return = open_return(client, customer, wanted(account_order))
    path = f"/v1/storefront/returns/{accounts_return['id']}"
    photo = upload(client, f"{path}/attachments", customer, JPEG, filename="a.jpg").json()

    guest = guest_headers(client, tenant, guest_order["order_id"], address)
    assert order_ids(client, guest) == [guest_order["order_id"]]
    assert return_ids(client, guest) == []
    for url in (path, f"/v1/storefront/returns/{accounts_return['number']}", photo["url"]):
        assert client.get(url, headers=guest).status_code == 404, url
    assert client.post(f"{path}/cancel", headers=guest).status_code == 404
    upload(client, f"{path}/attachments", guest, JPEG, expect=404)
    body = {"items": [wanted(guest_order), wanted(account_order)]}
    response = client.post("/v1/storefront/returns", json=body, headers=guest)
    assert codes(response) == {("items[1]", "order_not_found")}
    preview = client.post("/v1/storefront/returns/preview", json=body, headers=guest).json()
    assert [[e["code"] for e in i["errors"]] for i in preview["items"]] == [[], ["order_not_found"]]
    # The guest's own return works, and the account's return was not touched.
    mine = open_return(client, guest, wanted(guest_order))
    assert return_ids(client, guest) == [mine["id"]]
    staff = client.get(f"/v1/returns/{accounts_return['id']}", headers=tenant.headers).json()
    assert staff["status"] == "requested"
    assert staff["version"] == accounts_return["version"] + 1  # the photo, nothing else


# --- customer tokens live at most 24 h -----------------------------------------------------


def signed(tenant: TenantFixture, **claims: Any) -> str:
    return jwt.encode({"sub": "cust-24h"} | claims, tenant.signing_secret, algorithm="HS256")


@pytest.mark.parametrize(
    "lifetime",
    [
        pytest.param({"iat": 0, "exp": 25 * HOUR}, id="iat_to_exp_25h"),
        pytest.param({"iat": -2 * HOUR, "exp": 23 * HOUR}, id="issued_2h_ago_for_25h"),
        pytest.param({"exp": 25 * HOUR}, id="no_iat_expires_in_25h"),
        pytest.param({"exp": 365 * 24 * HOUR}, id="no_iat_a_year"),
    ],
)
def test_a_customer_token_living_longer_than_24_hours_is_401(
    client: TestClient, tenant: TenantFixture, lifetime: dict[str, int]
) -> None:
    now = int(time.time())
    claims = {name: now + offset for name, offset in lifetime.items()}
    response = open_session(
        client, tenant, {"customer_token": signed(tenant, **claims)}, expect=401
    )
    error = assert_401(response)
    assert error["details"][0]["path"] == "customer_token"
    assert "24" in error["details"][0]["message"]


@pytest.mark.parametrize(
    "lifetime",
    [
        pytest.param({"iat": 0, "exp": 24 * HOUR}, id="iat_to_exp_24h"),
        pytest.param({"iat": -20 * HOUR, "exp": 4 * HOUR}, id="issued_20h_ago_for_24h"),
        pytest.param({"exp": 24 * HOUR - 5}, id="no_iat_expires_within_24h"),
    ],
)
def test_a_customer_token_of_at_most_24_hours_opens_a_session(
    client: TestClient, tenant: TenantFixture, lifetime: dict[str, int]
) -> None:
    now = int(time.time())
    claims = {name: now + offset for name, offset in lifetime.items()}
    response = open_session(client, tenant, {"customer_token": signed(tenant, **claims)})
    assert response.json()["session"].startswith("sfs_")


# --- guest sign-in: limited, never locking the owner out for more than a minute -------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def client_address_from_header(app: ASGIApp) -> ASGIApp:
    """The test's stand-in for a network: `X-Test-Client` sets the client address."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"x-test-client":
                    scope = dict(scope, client=(value.decode(), 40000))
        await app(scope, receive, send)

    return wrapped


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limited_app(database: DatabaseFixture, clock: FakeClock) -> FastAPI:
    """An app of its own, whose guest sign-in limits run on a clock the test moves."""
    app = create_app(database.settings, database=database.db)
    app.state.guest_sign_ins = GuestSignIns(clock=clock)
    return app


@pytest.fixture
def net(limited_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(
        client_address_from_header(limited_app), raise_server_exceptions=False
    ) as test_client:
        yield test_client


def sign_in(net: TestClient, tenant: TenantFixture, address: str, body: dict[str, str]) -> int:
    response = net.post(
        "/v1/storefront/sessions",
        json=body,
        headers=tenant.publishable_headers | {"X-Test-Client": address},
    )
    assert response.status_code in (201, 401, 429), response.text
    if response.status_code == 429:
        assert 1 <= int(response.headers["retry-after"]) <= 60
    return response.status_code


def victim(net: TestClient, tenant: TenantFixture) -> tuple[dict[str, str], dict[str, str]]:
    """A guest order: its right pair and a wrong one."""
    address = email()
    order = buy(net, tenant, email_address=address)
    return (
        {"order_id": order["order_id"], "email": address},
        {"order_id": order["order_id"], "email": email()},
    )


def test_an_attacker_failing_without_pause_never_locks_the_owner_out(
    client: TestClient, tenant: TenantFixture
) -> None:
    """Without a clock: however often someone fails on an order, its owner (at another
    address) signs in at once."""
    net = TestClient(client_address_from_header(client.app), raise_server_exceptions=False)
    right, wrong = victim(net, tenant)
    for _ in range(40):
        sign_in(net, tenant, "203.0.113.66", wrong)
    assert sign_in(net, tenant, "198.51.100.7", right) == 201
    assert sign_in(net, tenant, "203.0.113.66", wrong) == 429


def test_the_owner_signs_in_within_a_minute_whatever_attackers_do(
    net: TestClient, tenant: TenantFixture, clock: FakeClock
) -> None:
    right, wrong = victim(net, tenant)
    attackers = [f"203.0.113.{n}" for n in range(1, 13)]
    owner = "198.51.100.7"
    for minute in range(3):
        # Every attacker fails on the order as fast as it may, all minute long.
        for _ in range(3):
            for attacker in attackers:
                sign_in(net, tenant, attacker, wrong)
            clock.advance(20)
        # The owner, who has not failed, gets in at once.
        assert sign_in(net, tenant, owner, right) == 201, minute
    # An owner who mistyped until refused waits at most a minute, while the attack goes on.
    statuses = [sign_in(net, tenant, owner, wrong) for _ in range(8)]
    assert statuses[0] == 401
    assert statuses[-1] == 429
    assert sign_in(net, tenant, owner, right) == 429  # refused unchecked, as any attempt
    for _ in range(3):
        for attacker in attackers:
            sign_in(net, tenant, attacker, wrong)
        clock.advance(20)
    assert sign_in(net, tenant, owner, right) == 201


def test_one_address_gets_few_guesses_on_an_order(
    net: TestClient, tenant: TenantFixture, clock: FakeClock
) -> None:
    right, wrong = victim(net, tenant)
    guesses = 0
    for _ in range(10 * 12):  # ten minutes, one attempt every 5 seconds
        guesses += sign_in(net, tenant, "203.0.113.9", wrong) == 401
        clock.advance(5)
    assert guesses <= 5 + 10  # a burst, then one a minute
    assert sign_in(net, tenant, "198.51.100.7", right) == 201


def test_many_addresses_get_one_guess_a_minute_each_on_a_hot_order(
    net: TestClient, tenant: TenantFixture, clock: FakeClock
) -> None:
    _, wrong = victim(net, tenant)
    attackers = [f"203.0.113.{n}" for n in range(1, 21)]
    first_minute = sum(
        sign_in(net, tenant, attacker, wrong) == 401 for attacker in attackers for _ in range(6)
    )
    assert first_minute <= 10 + len(attackers)  # the order's burst, then one per address
    clock.advance(60)
    second_minute = sum(
        sign_in(net, tenant, attacker, wrong) == 401 for attacker in attackers for _ in range(3)
    )
    assert second_minute <= len(attackers)


def test_one_address_failing_on_many_orders_is_slowed_down(
    net: TestClient, tenant: TenantFixture, clock: FakeClock
) -> None:
    right, _ = victim(net, tenant)
    guesses = sum(
        sign_in(net, tenant, "203.0.113.5", {"order_id": unique("o"), "email": email()}) == 401
        for _ in range(30)
    )
    assert guesses == 20
    assert sign_in(net, tenant, "203.0.113.5", right) == 429  # the address is refused
    assert sign_in(net, tenant, "198.51.100.7", right) == 201  # others are not
    clock.advance(60)
    assert sign_in(net, tenant, "203.0.113.5", right) == 201


@pytest.mark.parametrize("seed", range(20))
def test_random_attacks_never_keep_an_owner_out_for_more_than_a_minute(
    clock: FakeClock, seed: int
) -> None:
    """The rules themselves, on random streams of failures from many addresses at random
    moments: an owner who has not failed is never refused; an owner who has waits at most
    60 s; and no address makes more than 5 guesses on the order, then one a minute."""
    rng = random.Random(seed)
    limits = GuestSignIns(clock=clock)
    attackers = [f"a{n}" for n in range(rng.randint(1, 40))]
    guesses: dict[str, list[float]] = {attacker: [] for attacker in attackers}
    owner_failed_at: float | None = None
    for _ in range(2000):
        clock.advance(rng.expovariate(rng.choice([0.2, 2.0, 50.0])))
        if rng.random() < 0.05:  # the owner tries
            wait = limits.wait(tenant_id="t", order_id="o", client="owner")
            if owner_failed_at is None:
                assert wait == 0
            else:
                assert wait <= 60
            if wait == 0 and rng.random() < 0.3:  # and mistypes
                limits.failed(tenant_id="t", order_id="o", client="owner")
                owner_failed_at = clock.now
            elif wait == 0:
                owner_failed_at = None  # signed in: a fresh start
            continue
        attacker = rng.choice(attackers)
        if limits.wait(tenant_id="t", order_id="o", client=attacker) == 0:
            limits.failed(tenant_id="t", order_id="o", client=attacker)
            guesses[attacker].append(clock.now)
    for times in guesses.values():
        for start in times:
            later = [t for t in times if start <= t < start + 600]
            assert len(later) <= 5 + 10


def test_the_guest_sign_in_table_stays_bounded(clock: FakeClock) -> None:
    limits = GuestSignIns(clock=clock, max_keys=500)
    for n in range(5000):
        limits.failed(tenant_id="t", order_id=f"o-{n}", client=f"10.0.{n // 250}.{n % 250}")
    assert limits.size() <= 3 * 500
    clock.advance(24 * HOUR)
    limits.failed(tenant_id="t", order_id="o-last", client="10.9.9.9")
    assert limits.size() == 3  # every other bucket was full again, and forgotten


# --- the storefront's own return shape ------------------------------------------------------

RETURN_FIELDS = {
    "id",
    "number",
    "status",
    "source",
    "channel",
    "store",
    "customer",
    "currency",
    "items",
    "refund",
    "fees",
    "attachments",
    "created_at",
    "updated_at",
    "closed_at",
    "version",
    "allowed_actions",
    "history",
}
ITEM_FIELDS = {
    "order_id",
    "line_id",
    "product_id",
    "variant_id",
    "quantity",
    "received_quantity",
    "reason",
    "note",
    "resolution",
    "unit_price",
    "outcome",
}
STAFF_ONLY = ("zendesk-5512", "fraud-watch", "internal: check", "api_key:", "not_restocked")


def assert_storefront_shape(view: dict[str, Any], tenant: TenantFixture) -> None:
    assert set(view) == RETURN_FIELDS
    for entry in view["items"]:
        assert set(entry) == ITEM_FIELDS
    for entry in view["history"]:
        assert set(entry) == {"at", "from", "to", "action", "actor", "note"}
        assert entry["actor"] == "merchant" or entry["actor"].startswith("storefront:")
    text = str(view)
    for staff_only in (*STAFF_ONLY, tenant.secret_key_id):
        assert staff_only not in text


def test_the_storefront_shows_returns_without_staff_fields(
    client: TestClient, tenant: TenantFixture
) -> None:
    customer_id = unique("cust")
    order = buy(
        client,
        tenant,
        customer_id=customer_id,
        email_address=email(),
        lines=[item(line_id="1", quantity=2), item(line_id="2", quantity=1)],
    )
    headers = customer_headers(client, tenant, customer_id)
    staff = tenant.headers
    received = open_return(client, headers, wanted(order, note="too tight"))
    to_cancel = open_return(client, headers, wanted(order, "2"))
    views = [received, to_cancel]
    for ret in (received, to_cancel):
        patch: dict[str, Any] = {"note": "internal: check", "external_id": "zendesk-5512"}
        patch["metadata"] = {"risk": "fraud-watch"}
        response = client.patch(f"/v1/returns/{ret['id']}", json=patch, headers=staff)
        assert response.status_code == 200, response.text
        assert response.json()["metadata"] == {"risk": "fraud-watch"}  # staff see it all
    approve = {"note": "internal: check the seams"}
    assert client.post(f"/v1/returns/{received['id']}/approve", json=approve, headers=staff)
    receipt = {
        "items": [
            {"order_id": order["order_id"], "line_id": "1", "quantity": 1}
            | {"outcome": "damaged", "disposition": "not_restocked"}
        ]
    }
    response = client.post(f"/v1/returns/{received['id']}/receive", json=receipt, headers=staff)
    assert response.status_code == 200, response.text
    views.append(client.get(f"/v1/storefront/returns/{received['id']}", headers=headers).json())
    views += client.get("/v1/storefront/returns", headers=headers).json()["data"]
    cancel = client.post(f"/v1/storefront/returns/{to_cancel['id']}/cancel", headers=headers)
    assert cancel.status_code == 200, cancel.text
    views.append(cancel.json())
    assert len(views) == 6
    for view in views:
        assert_storefront_shape(view, tenant)
    got = views[2]
    assert got["items"][0]["outcome"] == "damaged"
    assert got["items"][0]["note"] == "too tight"
    assert [(e["action"], e["actor"], e["note"]) for e in got["history"]][1:] == [
        ("update", "merchant", None),
        ("approve", "merchant", None),
        ("receive", "merchant", None),
    ]


def test_the_storefront_return_schema_has_no_staff_fields(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    paths = document["paths"]
    schemas = document["components"]["schemas"]

    def schema_of(path: str, method: str, status: str) -> dict[str, Any]:
        content = paths[path][method]["responses"][status]["content"]["application/json"]
        reference: str = content["schema"]["$ref"]
        schema: dict[str, Any] = schemas[reference.rsplit("/", 1)[-1]]
        return schema

    returns = [
        schema_of("/v1/storefront/returns", "post", "201"),
        schema_of("/v1/storefront/returns/{return_id}", "get", "200"),
        schema_of("/v1/storefront/returns/{return_id}/cancel", "post", "200"),
    ]
    page = schema_of("/v1/storefront/returns", "get", "200")
    listed = page["properties"]["data"]["items"]["$ref"].rsplit("/", 1)[-1]
    assert listed == returns[0]["title"]
    for schema in returns:
        assert set(schema["properties"]) == RETURN_FIELDS


@pytest.mark.parametrize(
    "staff_field",
    [{"metadata": {"a": "b"}}, {"external_id": "x-1"}, {"note": "hello"}],
    ids=["metadata", "external_id", "note"],
)
def test_customers_cannot_write_staff_fields(
    client: TestClient, tenant: TenantFixture, staff_field: dict[str, Any]
) -> None:
    customer_id = unique("cust")
    order = buy(client, tenant, customer_id=customer_id)
    headers = customer_headers(client, tenant, customer_id)
    body = {"items": [wanted(order)]} | staff_field
    response = client.post("/v1/storefront/returns", json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert [d["path"] for d in response.json()["error"]["details"]] == list(staff_field)
    assert return_ids(client, headers) == []


def test_the_session_header_alone_names_the_caller(
    client: TestClient, tenant: TenantFixture
) -> None:
    """(Kept with the trust tests: a session never needs the publishable key.)"""
    address = email()
    order = buy(client, tenant, email_address=address)
    headers = guest_headers(client, tenant, order["order_id"], address)
    assert set(headers) == {HEADER}
    assert order_ids(client, headers) == [order["order_id"]]


def test_a_customer_sees_no_guest_orders_of_an_email_linked_to_someone_else(
    client: TestClient, tenant: TenantFixture
) -> None:
    """API.md 5: an email's guest history merges into the customer it is linked to (the
    first link wins). Another customer who later gave the same email does not own it."""
    shared = email()
    first, second = unique("c1"), unique("c2")
    buy(client, tenant, customer_id=first, email_address=shared)  # links the email to c1
    guest = buy(client, tenant, email_address=shared)  # c1's guest history
    buy(client, tenant, customer_id=second, email_address=shared)  # c2's latest email too

    seen = client.get("/v1/storefront/orders", headers=customer_headers(client, tenant, second))
    owner = client.get("/v1/storefront/orders", headers=customer_headers(client, tenant, first))

    assert seen.status_code == 200, seen.text
    assert guest["order_id"] not in {order["order_id"] for order in seen.json()["data"]}
    assert guest["order_id"] in {order["order_id"] for order in owner.json()["data"]}


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": str(int(time.time()) + 600)},  # a numeric string: PyJWT lets it through
        {"iat": str(int(time.time()))},
    ],
)
def test_token_times_that_are_not_numbers_are_401(
    client: TestClient, tenant: TenantFixture, claims: dict[str, Any]
) -> None:
    signed = jwt.encode(
        {"sub": unique("c"), "exp": int(time.time()) + 600} | claims,
        tenant.signing_secret,
        algorithm="HS256",
    )

    response = client.post(
        "/v1/storefront/sessions",
        json={"customer_token": signed},
        headers=tenant.publishable_headers,
    )

    assert response.status_code == 401, response.text
    assert response.json()["error"]["details"][0]["path"] == "customer_token"
