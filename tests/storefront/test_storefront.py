"""The storefront (API.md 4.1, 11): sessions for customers (signed tokens) and guests (an
order id and its email), and what a session may see and do: its own orders, and opening,
following and cancelling its own returns, never anyone else's."""

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from returnstack.models import Order, StorefrontSession
from returnstack.storefront import service as storefront_service
from returnstack.storefront.auth import hash_token
from tests.conftest import DatabaseFixture, TenantFixture
from tests.factories import batch, item, purchase, ts, unique

HEADER = "X-Storefront-Session"


# --- helpers -------------------------------------------------------------------------------


def email() -> str:
    return f"{unique('u')}@example.com"


def buy(
    client: TestClient,
    tenant: TenantFixture,
    *,
    customer_id: str | None = None,
    email_address: str | None = None,
    days_ago: float = 1,
    lines: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Record a purchase (by a customer id and/or an email) and return its event."""
    customer = {
        key: value
        for key, value in (("id", customer_id), ("email", email_address))
        if value is not None
    }
    event = purchase(
        customer=customer,
        timestamp=ts(days_ago),
        items=lines or [item(line_id="1", quantity=2)],
        **fields,
    )
    response = client.post("/v1/events", json=batch(event), headers=tenant.headers)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1, response.text
    return event


def token(
    tenant: TenantFixture,
    sub: str | None,
    *,
    expires_in: float | None = 3600,
    secret: str | None = None,
    algorithm: str = "HS256",
    **claims: Any,
) -> str:
    payload: dict[str, Any] = dict(claims)
    if sub is not None:
        payload["sub"] = sub
    if expires_in is not None:
        payload["exp"] = int(time.time() + expires_in)
    return jwt.encode(payload, secret or tenant.signing_secret, algorithm=algorithm)


def open_session(
    client: TestClient, tenant: TenantFixture, body: dict[str, Any], *, expect: int = 201
) -> httpx.Response:
    response = client.post("/v1/storefront/sessions", json=body, headers=tenant.publishable_headers)
    assert response.status_code == expect, response.text
    return response


def customer_headers(client: TestClient, tenant: TenantFixture, sub: str) -> dict[str, str]:
    response = open_session(client, tenant, {"customer_token": token(tenant, sub)})
    return {HEADER: response.json()["session"]}


def guest_headers(
    client: TestClient, tenant: TenantFixture, order_id: str, email_address: str
) -> dict[str, str]:
    response = open_session(client, tenant, {"order_id": order_id, "email": email_address})
    return {HEADER: response.json()["session"]}


def wanted(order: dict[str, Any], line_id: str = "1", **fields: Any) -> dict[str, Any]:
    return {
        "order_id": order["order_id"],
        "line_id": line_id,
        "quantity": 1,
        "reason": "size_too_small",
    } | fields


def open_return(
    client: TestClient, headers: dict[str, str], *items: dict[str, Any], expect: int = 201
) -> dict[str, Any]:
    response = client.post("/v1/storefront/returns", json={"items": list(items)}, headers=headers)
    assert response.status_code == expect, response.text
    body: dict[str, Any] = response.json()
    return body


def codes(response: httpx.Response) -> set[tuple[str, str]]:
    assert response.status_code == 422, response.text
    return {(d["path"], d.get("code", "")) for d in response.json()["error"]["details"]}


def order_ids(client: TestClient, headers: dict[str, str], **params: Any) -> list[str]:
    response = client.get("/v1/storefront/orders", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return [order["order_id"] for order in response.json()["data"]]


def return_ids(client: TestClient, headers: dict[str, str]) -> list[str]:
    response = client.get("/v1/storefront/returns", headers=headers)
    assert response.status_code == 200, response.text
    return [ret["id"] for ret in response.json()["data"]]


def assert_401(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 401, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "authentication_failed"
    assert error["message"]
    return error


# --- customer sessions ---------------------------------------------------------------------


def test_a_customer_token_opens_a_one_hour_session(
    client: TestClient, tenant: TenantFixture
) -> None:
    customer_id = unique("cust")
    order = buy(client, tenant, customer_id=customer_id, email_address=email())
    before = datetime.now(UTC)
    response = open_session(client, tenant, {"customer_token": token(tenant, customer_id)})
    body = response.json()
    assert set(body) == {"session", "expires_at"}
    assert body["expires_at"].endswith("Z")
    expires_at = datetime.fromisoformat(body["expires_at"])
    assert before + timedelta(minutes=59) < expires_at <= datetime.now(UTC) + timedelta(hours=1)
    assert order_ids(client, {HEADER: body["session"]}) == [order["order_id"]]


def test_only_a_hash_of_the_session_is_stored(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    headers = customer_headers(client, tenant, unique("cust"))
    session_token = headers[HEADER]
    assert session_token.startswith(f"sfs_{tenant.id}_")
    with database.db.transaction(write=False) as session:
        rows = session.query(StorefrontSession).filter_by(tenant_id=tenant.id).all()
    assert [row.token_hash for row in rows] == [hash_token(session_token)]
    assert all(session_token not in (row.token_hash, row.email) for row in rows)


@pytest.mark.filterwarnings("ignore:The HMAC key")
@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda t: token(t, "c-1", expires_in=-3600), id="expired"),
        pytest.param(lambda t: token(t, "c-1", secret="x" * 64), id="forged"),
        pytest.param(lambda t: token(t, "c-1", expires_in=None), id="missing_exp"),
        pytest.param(lambda t: token(t, None), id="missing_sub"),
        pytest.param(lambda t: token(t, "c-1", algorithm="HS512"), id="other_algorithm"),
        pytest.param(
            lambda t: jwt.encode({"sub": "c-1", "exp": int(time.time()) + 3600}, None, "none"),
            id="alg_none",
        ),
        pytest.param(lambda t: token(t, "c-1", nbf=int(time.time()) + 3600), id="not_yet_valid"),
        pytest.param(lambda t: "not.a.jwt", id="garbage"),
    ],
)
def test_a_bad_customer_token_is_401(client: TestClient, tenant: TenantFixture, make: Any) -> None:
    response = open_session(client, tenant, {"customer_token": make(tenant)}, expect=401)
    error = assert_401(response)
    assert error["details"][0]["path"] == "customer_token"


def test_a_token_signed_with_another_tenants_secret_is_401(
    client: TestClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    forged = token(tenant, "c-1", secret=other_tenant.signing_secret)
    assert_401(open_session(client, tenant, {"customer_token": forged}, expect=401))


def test_sessions_need_an_api_key_and_accept_both_kinds(
    client: TestClient, tenant: TenantFixture
) -> None:
    body = {"customer_token": token(tenant, "c-1")}
    assert_401(client.post("/v1/storefront/sessions", json=body))
    response = client.post("/v1/storefront/sessions", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"order_id": "o-1"},
        {"email": "a@example.com"},
        {"customer_token": "x.y.z", "order_id": "o-1", "email": "a@example.com"},
        {"order_id": "o-1", "email": "not an email"},
        {"customer_token": ""},
        {"customer_token": "x.y.z", "surprise": 1},
    ],
)
def test_a_malformed_session_request_is_422(
    client: TestClient, tenant: TenantFixture, body: dict[str, Any]
) -> None:
    response = open_session(client, tenant, body, expect=422)
    assert response.json()["error"]["type"] == "validation_failed"


# --- guest sessions ------------------------------------------------------------------------


def test_a_guest_opens_a_session_with_an_order_and_its_email_in_any_case(
    client: TestClient, tenant: TenantFixture
) -> None:
    address = email()
    order = buy(client, tenant, email_address=address)
    headers = guest_headers(client, tenant, order["order_id"], address.upper())
    assert order_ids(client, headers) == [order["order_id"]]


def test_wrong_guest_pairs_get_the_same_401_whichever_half_is_wrong(
    client: TestClient, tenant: TenantFixture
) -> None:
    address = email()
    order = buy(client, tenant, email_address=address)
    no_email_order = buy(client, tenant, customer_id=unique("cust"))
    attempts = [
        {"order_id": order["order_id"], "email": email()},  # wrong email
        {"order_id": unique("o"), "email": address},  # wrong (unknown) order
        {"order_id": no_email_order["order_id"], "email": address},  # order without an email
    ]
    bodies = [open_session(client, tenant, body, expect=401).json() for body in attempts]
    assert bodies[0] == bodies[1] == bodies[2]
    assert bodies[0]["error"]["type"] == "authentication_failed"
    message = bodies[0]["error"]["message"].lower()
    assert "email" in message
    assert "order" in message


def test_repeated_wrong_guest_pairs_are_rate_limited(
    client: TestClient, tenant: TenantFixture
) -> None:
    address = email()
    order = buy(client, tenant, email_address=address)
    other_address = email()
    other = buy(client, tenant, email_address=other_address)
    wrong = {"order_id": order["order_id"], "email": email()}
    statuses = [
        client.post(
            "/v1/storefront/sessions", json=wrong, headers=tenant.publishable_headers
        ).status_code
        for _ in range(6)
    ]
    assert statuses[:5] == [401] * 5
    assert statuses[5] == 429
    # While blocked, even the right pair is refused (a guess learns nothing).
    right = {"order_id": order["order_id"], "email": address}
    response = open_session(client, tenant, right, expect=429)
    assert response.json()["error"]["type"] == "rate_limited"
    assert int(response.headers["retry-after"]) >= 1
    # Other orders stay open to their owners; successes do not count.
    for _ in range(3):
        guest_headers(client, tenant, other["order_id"], other_address)


def test_the_guest_limit_is_per_tenant(
    client: TestClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    wrong = {"order_id": "o-shared", "email": email()}
    for _ in range(5):
        open_session(client, tenant, wrong, expect=401)
    open_session(client, tenant, wrong, expect=429)
    open_session(client, other_tenant, wrong, expect=401)


def test_a_guest_session_ends_when_its_email_no_longer_has_orders(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    address = email()
    order = buy(client, tenant, email_address=address)
    headers = guest_headers(client, tenant, order["order_id"], address)
    assert order_ids(client, headers) == [order["order_id"]]
    with database.db.transaction() as session:  # what erasing the person does to the order
        session.execute(
            update(Order)
            .where(Order.tenant_id == tenant.id, Order.id == order["order_id"])
            .values(email=None)
        )
    assert_401(client.get("/v1/storefront/orders", headers=headers))


# --- the session header --------------------------------------------------------------------


def test_storefront_calls_need_a_live_session(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    headers = customer_headers(client, tenant, unique("cust"))
    live = headers[HEADER]
    for bad in (
        {},
        {HEADER: ""},
        {HEADER: "nonsense"},
        {HEADER: live[:-1] + ("0" if live[-1] != "0" else "1")},
        tenant.publishable_headers,
        tenant.headers,
    ):
        error = assert_401(client.get("/v1/storefront/orders", headers=bad))
        assert error["details"][0]["path"] == HEADER
    assert client.get("/v1/storefront/orders", headers=headers).status_code == 200
    with database.db.transaction() as session:
        session.execute(
            update(StorefrontSession)
            .where(
                StorefrontSession.tenant_id == tenant.id,
                StorefrontSession.token_hash == hash_token(live),
            )
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert_401(client.get("/v1/storefront/orders", headers=headers))
    assert_401(client.get("/v1/storefront/returns", headers=headers))


def test_expired_sessions_are_pruned_when_sessions_are_opened(
    client: TestClient,
    tenant: TenantFixture,
    database: DatabaseFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = customer_headers(client, tenant, unique("cust"))[HEADER]
    with database.db.transaction() as session:
        session.execute(
            update(StorefrontSession)
            .where(StorefrontSession.tenant_id == tenant.id)
            .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    monkeypatch.setattr(storefront_service, "PRUNE_EVERY", timedelta(0))
    new = customer_headers(client, tenant, unique("cust"))[HEADER]
    with database.db.transaction(write=False) as session:
        hashes = session.scalars(
            select(StorefrontSession.token_hash).where(StorefrontSession.tenant_id == tenant.id)
        ).all()
    assert hashes == [hash_token(new)]
    assert hash_token(old) not in hashes


def test_expired_sessions_are_pruned_once_a_minute_per_tenant() -> None:
    due = storefront_service._pruning_due
    now = datetime.now(UTC)
    tenant_id, other = unique("t"), unique("t")
    assert due(tenant_id, now)
    assert not due(tenant_id, now + timedelta(seconds=59))
    assert due(other, now + timedelta(seconds=59))
    assert due(tenant_id, now + timedelta(seconds=60))


def test_a_session_names_its_tenant_and_cannot_be_moved_to_another(
    client: TestClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    live = customer_headers(client, tenant, unique("cust"))[HEADER]
    moved = live.replace(tenant.id, other_tenant.id)
    assert_401(client.get("/v1/storefront/orders", headers={HEADER: moved}))


def test_a_guest_of_one_tenant_cannot_sign_in_at_another(
    client: TestClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    address = email()
    order = buy(client, tenant, email_address=address)
    open_session(
        client, other_tenant, {"order_id": order["order_id"], "email": address}, expect=401
    )


# --- orders --------------------------------------------------------------------------------


def test_a_customer_sees_their_orders_and_guest_orders_of_their_email_newest_first(
    client: TestClient, tenant: TenantFixture
) -> None:
    customer_id, address = unique("cust"), email()
    first = buy(client, tenant, customer_id=customer_id, email_address=address, days_ago=3)
    as_guest = buy(client, tenant, email_address=address, days_ago=2)
    by_id_only = buy(client, tenant, customer_id=customer_id, days_ago=1)
    buy(client, tenant, customer_id=unique("cust"), email_address=email())  # someone else
    headers = customer_headers(client, tenant, customer_id)
    assert order_ids(client, headers) == [
        by_id_only["order_id"],
        as_guest["order_id"],
        first["order_id"],
    ]


def test_orders_page_with_a_cursor(client: TestClient, tenant: TenantFixture) -> None:
    customer_id = unique("cust")
    orders = [buy(client, tenant, customer_id=customer_id, days_ago=d) for d in (3, 2, 1)]
    headers = customer_headers(client, tenant, customer_id)
    seen: list[str] = []
    cursor = None
    for _ in range(4):
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        body = client.get("/v1/storefront/orders", headers=headers, params=params).json()
        seen += [order["order_id"] for order in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [order["order_id"] for order in reversed(orders)]
    for params in ({"limit": 0}, {"limit": 201}, {"cursor": "!!"}):
        response = client.get("/v1/storefront/orders", headers=headers, params=params)
        assert response.status_code == 400, response.text


def test_order_lines_show_returnable_quantities_and_ineligibility_codes(
    client: TestClient, tenant: TenantFixture
) -> None:
    policy = {"rules": [{"match": {"category_prefix": "Apparel/Underwear"}, "returnable": False}]}
    assert client.put("/v1/policy", json=policy, headers=tenant.headers).status_code == 200
    customer_id = unique("cust")
    recent = buy(
        client,
        tenant,
        customer_id=customer_id,
        lines=[
            item(line_id="1", quantity=2),
            item(line_id="2", quantity=1, category="Apparel/Underwear/Socks"),
            item(line_id="3", quantity=1),
        ],
    )
    old = buy(client, tenant, customer_id=customer_id, days_ago=40)
    headers = customer_headers(client, tenant, customer_id)
    open_return(client, headers, wanted(recent, "3"))
    response = client.get("/v1/storefront/orders", headers=headers)
    assert response.status_code == 200, response.text
    orders = {order["order_id"]: order for order in response.json()["data"]}
    lines = {line["line_id"]: line for line in orders[recent["order_id"]]["lines"]}
    assert {key: line["ineligible"] for key, line in lines.items()} == {
        "1": [],
        "2": ["final_sale"],
        "3": ["quantity_exceeds_returnable"],
    }
    assert [lines[k]["returnable_quantity"] for k in ("1", "2", "3")] == [2, 1, 0]
    assert lines["3"]["claimed_quantity"] == 1
    placed = datetime.fromisoformat(orders[recent["order_id"]]["placed_at"])
    assert datetime.fromisoformat(lines["1"]["returnable_until"]) == placed + timedelta(days=30)
    (old_line,) = orders[old["order_id"]]["lines"]
    assert old_line["ineligible"] == ["outside_return_window"]
    # Every field of the staff order object is there too.
    staff = client.get(f"/v1/orders/{recent['order_id']}", headers=tenant.headers).json()
    storefront = orders[recent["order_id"]]
    assert {k: v for k, v in storefront.items() if k != "lines"} == {
        k: v for k, v in staff.items() if k != "lines"
    }
    for staff_line, line in zip(staff["lines"], storefront["lines"], strict=True):
        assert line.items() >= staff_line.items()


def test_a_guest_sees_only_the_orders_of_their_email(
    client: TestClient, tenant: TenantFixture
) -> None:
    address = email()
    mine = [buy(client, tenant, email_address=address, days_ago=d) for d in (2, 1)]
    registered = buy(client, tenant, customer_id=unique("cust"), email_address=email())
    buy(client, tenant, email_address=email())
    headers = guest_headers(client, tenant, mine[0]["order_id"], address)
    assert order_ids(client, headers) == [mine[1]["order_id"], mine[0]["order_id"]]
    assert registered["order_id"] not in order_ids(client, headers)


# --- returns -------------------------------------------------------------------------------


def test_a_guest_returns_items_of_two_of_their_orders_in_one_return(
    client: TestClient, tenant: TenantFixture
) -> None:
    address = email()
    first = buy(client, tenant, email_address=address, days_ago=3)
    second = buy(client, tenant, email_address=address, days_ago=1)
    headers = guest_headers(client, tenant, second["order_id"], address)
    ret = open_return(client, headers, wanted(first), wanted(second, quantity=2))
    assert ret["status"] == "requested"
    assert ret["source"] == "storefront"
    assert ret["customer"] == {"id": None, "email": address}
    assert [(i["order_id"], i["quantity"]) for i in ret["items"]] == [
        (first["order_id"], 1),
        (second["order_id"], 2),
    ]
    assert ret["history"][0]["actor"] == "storefront:guest"
    assert return_ids(client, headers) == [ret["id"]]
    staff = client.get(f"/v1/returns/{ret['id']}", headers=tenant.headers).json()
    assert staff["source"] == "storefront"
    assert staff["version"] == ret["version"]
    lines = client.get("/v1/storefront/orders", headers=headers).json()["data"]
    assert [line["returnable_quantity"] for order in lines for line in order["lines"]] == [0, 1]


def test_a_customer_opens_reads_and_lists_their_returns(
    client: TestClient, tenant: TenantFixture
) -> None:
    customer_id, address = unique("cust"), email()
    order = buy(client, tenant, customer_id=customer_id, email_address=address)
    headers = customer_headers(client, tenant, customer_id)
    ret = open_return(client, headers, wanted(order))
    assert ret["customer"] == {"id": customer_id, "email": address}
    assert ret["history"][0]["actor"] == f"storefront:customer:{customer_id}"
    response = client.get(f"/v1/storefront/returns/{ret['id']}", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == ret
    assert response.headers["etag"] == f'"{ret["version"]}"'
    by_number = client.get(f"/v1/storefront/returns/{ret['number']}", headers=headers)
    assert by_number.json()["id"] == ret["id"]
    assert return_ids(client, headers) == [ret["id"]]


def test_a_customer_never_sees_another_customers_orders_or_returns(
    client: TestClient, tenant: TenantFixture
) -> None:
    ann, bob = unique("cust"), unique("cust")
    anns_order = buy(client, tenant, customer_id=ann, email_address=email())
    bobs_order = buy(client, tenant, customer_id=bob, email_address=email())
    ann_headers = customer_headers(client, tenant, ann)
    bob_headers = customer_headers(client, tenant, bob)
    anns_return = open_return(client, ann_headers, wanted(anns_order))

    assert order_ids(client, bob_headers) == [bobs_order["order_id"]]
    assert return_ids(client, bob_headers) == []
    for path in (f"/v1/storefront/returns/{anns_return['id']}",):
        response = client.get(path, headers=bob_headers)
        assert response.status_code == 404, response.text
        unknown = client.get("/v1/storefront/returns/ret_unknown", headers=bob_headers)
        assert response.json()["error"]["type"] == unknown.json()["error"]["type"] == "not_found"
    by_number = client.get(f"/v1/storefront/returns/{anns_return['number']}", headers=bob_headers)
    assert by_number.status_code == 404
    response = client.post(
        f"/v1/storefront/returns/{anns_return['id']}/cancel", headers=bob_headers
    )
    assert response.status_code == 404, response.text
    # Ann's order is "not found" for Bob, exactly like an order that does not exist.
    response = client.post(
        "/v1/storefront/returns",
        json={"items": [wanted(anns_order), wanted({"order_id": "o-nonexistent"})]},
        headers=bob_headers,
    )
    assert codes(response) == {("items[0]", "order_not_found"), ("items[1]", "order_not_found")}
    preview = client.post(
        "/v1/storefront/returns/preview",
        json={"items": [wanted(anns_order)]},
        headers=bob_headers,
    ).json()
    assert [e["code"] for e in preview["items"][0]["errors"]] == ["order_not_found"]
    assert (
        client.get(f"/v1/returns/{anns_return['id']}", headers=tenant.headers).json()["status"]
        == "requested"
    )


def test_an_order_of_another_customer_with_the_same_email_is_not_yours(
    client: TestClient, tenant: TenantFixture
) -> None:
    """Two customer ids behind one email (a shared family address): each sees only their
    own orders, and the other's are `order_not_found`, in a return and in a preview."""
    shared = email()
    ann, bob = unique("cust"), unique("cust")
    anns = buy(client, tenant, customer_id=ann, email_address=shared, days_ago=2)
    bobs = buy(client, tenant, customer_id=bob, email_address=shared, days_ago=1)
    ann_headers = customer_headers(client, tenant, ann)
    assert order_ids(client, ann_headers) == [anns["order_id"]]
    response = client.post(
        "/v1/storefront/returns",
        json={"items": [wanted(anns), wanted(bobs), wanted(anns, quantity=5)]},
        headers=ann_headers,
    )
    assert codes(response) == {
        ("items[1]", "order_not_found"),
        ("items[2]", "quantity_exceeds_returnable"),
    }
    preview = client.post(
        "/v1/storefront/returns/preview",
        json={"items": [wanted(bobs), wanted(anns)]},
        headers=ann_headers,
    )
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert body["eligible"] is False
    assert [(i["index"], i["eligible"]) for i in body["items"]] == [(0, False), (1, True)]
    assert body["items"][0]["errors"][0]["code"] == "order_not_found"
    assert body["total"] == body["items"][1]["refundable"] == 1999
    assert body["currency"] == "EUR"
    # Bob's return is not Ann's either.
    bobs_return = open_return(client, customer_headers(client, tenant, bob), wanted(bobs))
    assert return_ids(client, ann_headers) == []
    response = client.get(f"/v1/storefront/returns/{bobs_return['id']}", headers=ann_headers)
    assert response.status_code == 404


def test_a_guest_cannot_return_another_emails_order(
    client: TestClient, tenant: TenantFixture
) -> None:
    address = email()
    mine = buy(client, tenant, email_address=address)
    theirs = buy(client, tenant, email_address=email())
    headers = guest_headers(client, tenant, mine["order_id"], address)
    response = client.post(
        "/v1/storefront/returns", json={"items": [wanted(mine), wanted(theirs)]}, headers=headers
    )
    assert codes(response) == {("items[1]", "order_not_found")}


def test_the_session_names_the_customer_so_the_body_may_not(
    client: TestClient, tenant: TenantFixture
) -> None:
    customer_id = unique("cust")
    order = buy(client, tenant, customer_id=customer_id)
    headers = customer_headers(client, tenant, customer_id)
    response = client.post(
        "/v1/storefront/returns",
        json={"customer": {"id": customer_id}, "items": [wanted(order)]},
        headers=headers,
    )
    assert response.status_code == 422, response.text
    assert [d["path"] for d in response.json()["error"]["details"]] == ["customer"]


def test_storefront_returns_are_checked_like_staff_returns(
    client: TestClient, tenant: TenantFixture
) -> None:
    customer_id = unique("cust")
    order = buy(client, tenant, customer_id=customer_id)
    headers = customer_headers(client, tenant, customer_id)
    response = client.post(
        "/v1/storefront/returns",
        json={
            "items": [
                wanted(order, quantity=3),
                wanted(order, reason="because"),
                wanted(order, line_id="9"),
            ]
        },
        headers=headers,
    )
    assert codes(response) == {
        ("items[0]", "quantity_exceeds_returnable"),
        ("items[1]", "quantity_exceeds_returnable"),  # the units of items[0] add up
        ("items[1]", "unknown_reason"),
        ("items[2]", "line_not_found"),
    }
    assert return_ids(client, headers) == []


def test_preview_shows_the_money_and_writes_nothing(
    client: TestClient, tenant: TenantFixture
) -> None:
    address = email()
    order = buy(client, tenant, email_address=address)
    headers = guest_headers(client, tenant, order["order_id"], address)
    response = client.post(
        "/v1/storefront/returns/preview",
        json={"items": [wanted(order, quantity=2)]},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["eligible"] is True
    assert body["total"] == 2 * 1999
    assert return_ids(client, headers) == []


def test_idempotency_keys_are_per_storefront_caller(
    client: TestClient, tenant: TenantFixture
) -> None:
    ann, bob = unique("cust"), unique("cust")
    order = buy(client, tenant, customer_id=ann)
    buy(client, tenant, customer_id=bob)
    ann_headers = customer_headers(client, tenant, ann) | {"Idempotency-Key": "k-1"}
    bob_headers = customer_headers(client, tenant, bob) | {"Idempotency-Key": "k-1"}
    body = {"items": [wanted(order)]}
    first = client.post("/v1/storefront/returns", json=body, headers=ann_headers)
    assert first.status_code == 201, first.text
    again = client.post("/v1/storefront/returns", json=body, headers=ann_headers)
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    # Ann's next session replays too; Bob's identical request is his own, and refused.
    later = customer_headers(client, tenant, ann) | {"Idempotency-Key": "k-1"}
    assert client.post("/v1/storefront/returns", json=body, headers=later).json() == first.json()
    assert codes(client.post("/v1/storefront/returns", json=body, headers=bob_headers)) == {
        ("items[0]", "order_not_found")
    }


# --- cancelling ----------------------------------------------------------------------------


def test_a_customer_cancels_their_return_and_its_units_are_returnable_again(
    client: TestClient, tenant: TenantFixture
) -> None:
    customer_id = unique("cust")
    order = buy(client, tenant, customer_id=customer_id)
    headers = customer_headers(client, tenant, customer_id)
    ret = open_return(client, headers, wanted(order, quantity=2))
    response = client.post(
        f"/v1/storefront/returns/{ret['id']}/cancel",
        json={"reason": "changed my mind"},
        headers=headers | {"If-Match": f'"{ret["version"]}"'},
    )
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["version"] == ret["version"] + 1
    assert cancelled["history"][-1]["action"] == "cancel"
    assert cancelled["history"][-1]["actor"] == f"storefront:customer:{customer_id}"
    assert cancelled["allowed_actions"] == []
    again = client.post(f"/v1/storefront/returns/{ret['id']}/cancel", headers=headers)
    assert again.status_code == 409, again.text
    assert again.json()["error"]["type"] == "invalid_transition"
    (order_view,) = client.get("/v1/storefront/orders", headers=headers).json()["data"]
    assert order_view["lines"][0]["returnable_quantity"] == 2


def test_a_stale_if_match_on_cancel_is_412(client: TestClient, tenant: TenantFixture) -> None:
    customer_id = unique("cust")
    order = buy(client, tenant, customer_id=customer_id)
    headers = customer_headers(client, tenant, customer_id)
    ret = open_return(client, headers, wanted(order))
    response = client.post(
        f"/v1/storefront/returns/{ret['id']}/cancel",
        headers=headers | {"If-Match": f'"{ret["version"] + 5}"'},
    )
    assert response.status_code == 412, response.text


def test_a_received_return_cannot_be_cancelled_from_the_storefront(
    client: TestClient, tenant: TenantFixture
) -> None:
    address = email()
    order = buy(client, tenant, email_address=address)
    headers = guest_headers(client, tenant, order["order_id"], address)
    ret = open_return(client, headers, wanted(order))
    staff = tenant.headers
    assert client.post(f"/v1/returns/{ret['id']}/approve", headers=staff).status_code == 200
    receipt = {"items": [{"order_id": order["order_id"], "line_id": "1", "quantity": 1}]}
    response = client.post(f"/v1/returns/{ret['id']}/receive", json=receipt, headers=staff)
    assert response.status_code == 200, response.text
    response = client.post(f"/v1/storefront/returns/{ret['id']}/cancel", headers=headers)
    assert response.status_code == 409, response.text
    # The 409 names the actions the customer has (none), not the staff's (refund).
    error = response.json()["error"]
    assert (error["current_status"], error["allowed_actions"]) == ("received", [])
    assert "refund" not in error["message"]


def test_the_customer_sees_staff_actions_but_not_staff_notes(
    client: TestClient, tenant: TenantFixture
) -> None:
    customer_id = unique("cust")
    order = buy(client, tenant, customer_id=customer_id)
    headers = customer_headers(client, tenant, customer_id)
    ret = open_return(client, headers, wanted(order, note="too tight"))
    assert ret["allowed_actions"] == ["cancel"]
    response = client.post(
        f"/v1/returns/{ret['id']}/approve",
        json={"note": "internal: serial returner, watch"},
        headers=tenant.headers,
    )
    assert response.status_code == 200, response.text
    view = client.get(f"/v1/storefront/returns/{ret['id']}", headers=headers).json()
    assert view["status"] == "approved"
    assert view["items"][0]["note"] == "too tight"
    approval = view["history"][-1]
    assert (approval["action"], approval["actor"], approval["note"]) == (
        "approve",
        "merchant",
        None,
    )
    assert view["allowed_actions"] == ["cancel"]
    assert "serial returner" not in str(view)
