"""Sailthru's Purchase and Return APIs (COMPAT.md "Sailthru") through the app on both
backends: signed forms as Sailthru's clients send them, the documented 100-cent return,
dedup by extid, adjustments spread exactly, dates with zone names, error shape and
rate-limit headers, trust and tenant isolation."""

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select, update

from returnstack.compat.sailthru import parse_date, signature, spread
from returnstack.kit.ratelimit import TokenBuckets
from returnstack.models import Cart, Event, Order, ReportedEvent, Tenant
from tests.conftest import DatabaseFixture, TenantFixture
from tests.factories import unique


def signed_form(
    tenant: TenantFixture, data: dict[str, Any], secret: str | None = None
) -> dict[str, str]:
    """What sailthru-client's _prepare_json_payload posts."""
    payload = {"api_key": tenant.publishable_key, "format": "json", "json": json.dumps(data)}
    values = sorted(str(value) for value in payload.values())
    text = (secret if secret is not None else tenant.signing_secret) + "".join(values)
    payload["sig"] = hashlib.md5(text.encode()).hexdigest()
    return payload


def post(client: TestClient, path: str, form: dict[str, str]) -> Response:
    return client.post(path, data=form)


def count(database: DatabaseFixture, model: Any, tenant_id: str) -> int:
    with database.db.transaction(write=False) as session:
        return int(
            session.scalar(
                select(func.count()).select_from(model).where(model.tenant_id == tenant_id)
            )
            or 0
        )


def purchase_body(email: str, extid: str, **extra: Any) -> dict[str, Any]:
    return {
        "email": email,
        "items": [
            {"qty": 1, "title": "Mug", "price": 3499, "id": "A1", "url": "https://example.com/a1"},
            {"qty": 2, "title": "Tee", "price": 1799, "id": "B2", "url": "https://example.com/b2"},
        ],
        "purchase_keys": {"extid": extid},
        "date": "2026-02-14 09:30:00 America/New_York",
    } | extra


def test_signature_matches_a_hand_computed_vector() -> None:
    # md5("s3cret" + "json" + "pk_test" + '{"email":"user@example.com"}'), values sorted.
    values = ["pk_test", "json", '{"email":"user@example.com"}']
    assert signature(values, "s3cret") == "27a673577fbdad21e1c3340ae8d01844"


def test_a_signed_purchase_and_the_documented_return(
    client: TestClient, tenant: TenantFixture
) -> None:
    email, extid = f"{unique('u')}@example.com", unique("56789")
    response = post(client, "/purchase", signed_form(tenant, purchase_body(email, extid)))
    assert response.status_code == 200, response.text
    assert response.json()["ok"] is True
    assert response.json()["purchase"]["price"] == 3499 + 2 * 1799
    for header in ("X-Rate-Limit-Limit", "X-Rate-Limit-Remaining", "X-Rate-Limit-Reset"):
        assert response.headers[header].isdigit()

    order = client.get(f"/v1/orders/{extid}", headers=tenant.headers).json()
    assert order["placed_at"] == "2026-02-14T14:30:00Z"  # 09:30 in New York
    assert order["customer"]["email"] == email
    assert [
        (line["product_id"], line["quantity"], line["unit_price"]) for line in order["lines"]
    ] == [
        ("A1", 1, 3499),
        ("B2", 2, 1799),
    ]

    # Seed 002's example: one item at 100 cents, ids as numbers.
    ret = {
        "email": email,
        "items": [
            {
                "qty": 1,
                "price": 100,
                "id": 1234,
                "url": "https://example.com/1234/item_1234",
                "order_id": 56789,
            }
        ],
    }
    response = post(client, "/return", signed_form(tenant, ret))
    assert response.status_code == 200, response.text
    (recorded,) = client.get(
        "/v1/returns", params={"order_id": "56789", "email": email}, headers=tenant.headers
    ).json()["data"]
    assert (recorded["status"], recorded["source"]) == ("closed", "event")
    assert recorded["refund"]["amount"] == 100
    assert recorded["items"][0]["product_id"] == "1234"

    totals = client.get(
        "/v1/customers/lookup", params={"email": email}, headers=tenant.headers
    ).json()["totals"]["EUR"]
    assert totals["gross_revenue"] == 3499 + 2 * 1799  # a return does not change the gross
    assert totals["refunded"] == 100
    assert totals["net_revenue"] == 3499 + 2 * 1799 - 100


def test_purchases_dedup_by_extid(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    email, extid = f"{unique('u')}@example.com", unique("x")
    assert (
        post(client, "/purchase", signed_form(tenant, purchase_body(email, extid))).status_code
        == 200
    )
    again = post(client, "/purchase", signed_form(tenant, purchase_body(email, extid)))
    assert again.status_code == 200
    assert again.json()["purchase"]["duplicate"] is True
    top_level = purchase_body(email, extid)
    del top_level["purchase_keys"]
    top_level["extid"] = extid  # as the Python client sends it
    assert post(client, "/purchase", signed_form(tenant, top_level)).json()["purchase"]["duplicate"]
    assert count(database, Event, tenant.id) == 1
    totals = client.get(
        "/v1/customers/lookup", params={"email": email}, headers=tenant.headers
    ).json()["totals"]["EUR"]
    assert totals["orders"] == 1


def test_adjustments_are_spread_over_the_lines_without_losing_a_cent(
    client: TestClient, tenant: TenantFixture
) -> None:
    email, extid = f"{unique('u')}@example.com", unique("adj")
    body = purchase_body(
        email,
        extid,
        adjustments=[{"title": "Promo", "price": -1000}, {"title": "Ship", "price": 1}],
    )
    assert post(client, "/purchase", signed_form(tenant, body)).status_code == 200
    order = client.get(f"/v1/orders/{extid}", headers=tenant.headers).json()
    total = sum(line["quantity"] * line["unit_price"] for line in order["lines"])
    assert total == 3499 + 2 * 1799 - 999
    # 999 off 7097: the mug takes 999*3499/7097 = 492.5..., each tee 999*1799/7097 = 253.2...
    assert [(line["line_id"], line["quantity"], line["unit_price"]) for line in order["lines"]] == [
        ("1", 1, 3499 - 493),
        ("2", 2, 1799 - 253),
    ]


def test_spread_by_largest_remainder() -> None:
    # Ties go to the earlier line; units of one line differ by at most one cent.
    assert spread([(1, 100), (1, 100), (1, 100)], -100) == [[(1, 66)], [(1, 67)], [(1, 67)]]
    assert spread([(3, 1000)], -1000) == [[(2, 667), (1, 666)]]
    assert spread([(2, 0), (1, 0)], 300) == [[(2, 100)], [(1, 100)]]
    parts = spread([(3, 333), (7, 101), (1, 1)], -517)
    assert sum(q * p for line in parts for q, p in line) == 3 * 333 + 7 * 101 + 1 - 517


def test_dates_in_sailthrus_forms() -> None:
    assert (
        parse_date("2026-02-14 9:30:00 America/New_York").isoformat() == "2026-02-14T14:30:00+00:00"
    )
    assert parse_date("2026-02-14T09:30:00+01:00").isoformat() == "2026-02-14T08:30:00+00:00"
    assert parse_date("2026-02-14 09:30 UTC").isoformat() == "2026-02-14T09:30:00+00:00"
    assert parse_date("2026-02-14").isoformat() == "2026-02-14T00:00:00+00:00"
    assert parse_date(1771061400).isoformat() == "2026-02-14T09:30:00+00:00"


def carts(database: DatabaseFixture, tenant_id: str) -> list[Cart]:
    with database.db.transaction(write=False) as session:
        rows = session.scalars(select(Cart).where(Cart.tenant_id == tenant_id)).all()
        session.expunge_all()
        return list(rows)


def test_an_incomplete_cart_is_stored_and_never_revenue(
    client: TestClient,
    tenant: TenantFixture,
    other_tenant: TenantFixture,
    database: DatabaseFixture,
) -> None:
    email, extid = f"{unique('u')}@example.com", unique("cart")
    response = post(
        client, "/purchase", signed_form(tenant, purchase_body(email, extid, incomplete=1))
    )
    assert response.status_code == 200, response.text
    answer = response.json()["purchase"]
    assert (answer["incomplete"], answer["recorded"], answer["stored"]) == (1, False, True)
    (cart,) = carts(database, tenant.id)
    assert (cart.email, cart.extid, cart.currency, cart.value) == (email, extid, "EUR", 7097)
    assert [(item["id"], item["title"], item["qty"], item["price"]) for item in cart.items] == [
        ("A1", "Mug", 1, 3499),
        ("B2", "Tee", 2, 1799),
    ]
    assert cart.carted_at == datetime(2026, 2, 14, 14, 30, tzinfo=UTC)
    # Never revenue: no order, no event, no customer, no product signal.
    assert count(database, Order, tenant.id) == 0
    assert count(database, Event, tenant.id) == 0
    assert client.get(f"/v1/orders/{extid}", headers=tenant.headers).status_code == 404
    lookup = client.get("/v1/customers/lookup", params={"email": email}, headers=tenant.headers)
    assert lookup.status_code == 404
    assert client.get("/v1/products/A1/stats", headers=tenant.headers).status_code == 404

    # A newer cart replaces it (one per person, as Sailthru keeps it).
    smaller = purchase_body(email, extid, incomplete="1")
    smaller["items"] = smaller["items"][1:]
    assert post(client, "/purchase", signed_form(tenant, smaller)).status_code == 200
    (cart,) = carts(database, tenant.id)
    assert [(item["id"], item["qty"]) for item in cart.items] == [("B2", 2)]
    assert cart.value == 2 * 1799
    assert carts(database, other_tenant.id) == []

    # The purchase completed: the order counts once, and the cart is gone.
    done = post(client, "/purchase", signed_form(tenant, purchase_body(email, extid)))
    assert done.status_code == 200, done.text
    assert carts(database, tenant.id) == []
    totals = client.get(
        "/v1/customers/lookup", params={"email": email}, headers=tenant.headers
    ).json()["totals"]["EUR"]
    assert (totals["orders"], totals["gross_revenue"]) == (1, 3499 + 2 * 1799)
    stats = client.get("/v1/products/B2/stats", headers=tenant.headers).json()
    assert stats["units_sold"] == 2

    # Another cart of the same person, then a purchase of other goods without an extid:
    # checked out, the cart goes too.
    assert post(client, "/purchase", signed_form(tenant, smaller)).status_code == 200
    assert len(carts(database, tenant.id)) == 1
    other = purchase_body(email, unique("x"))
    del other["purchase_keys"]
    assert post(client, "/purchase", signed_form(tenant, other)).status_code == 200
    assert carts(database, tenant.id) == []


def test_a_publishable_keys_cart_is_not_stored(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    """A publishable key is public: what it sends names no person (API.md section 2)."""
    email = f"{unique('u')}@example.com"
    response = client.post(
        "/purchase",
        json=purchase_body(email, unique("cart"), incomplete=1),
        headers=tenant.publishable_headers,
    )
    assert response.status_code == 200, response.text
    assert (response.json()["purchase"]["recorded"], response.json()["purchase"]["stored"]) == (
        False,
        False,
    )
    assert carts(database, tenant.id) == []
    # A secret bearer key is verified: its cart is kept.
    response = client.post(
        "/purchase", json=purchase_body(email, unique("cart"), incomplete=1), headers=tenant.headers
    )
    assert response.json()["purchase"]["stored"] is True
    assert [cart.email for cart in carts(database, tenant.id)] == [email]


def test_bad_signatures_are_401_in_sailthrus_shape(
    client: TestClient,
    tenant: TenantFixture,
    other_tenant: TenantFixture,
    database: DatabaseFixture,
) -> None:
    email = f"{unique('u')}@example.com"
    good = signed_form(tenant, purchase_body(email, unique("x")))
    tampered = good | {"json": good["json"].replace("3499", "1")}
    other_secret = signed_form(
        tenant, purchase_body(email, unique("x")), other_tenant.signing_secret
    )
    # A signature lifted from one body and replayed with another.
    replayed = signed_form(tenant, purchase_body(email, unique("y"))) | {"sig": good["sig"]}
    unsigned = {key: value for key, value in good.items() if key != "sig"}
    unknown_key = good | {"api_key": "pk_nobody"}
    for form in (tampered, other_secret, replayed, unsigned, unknown_key):
        response = post(client, "/purchase", form)
        assert response.status_code == 401, response.text
        body = response.json()
        assert set(body) == {"error", "errormsg"}
        assert isinstance(body["error"], int)
        assert "X-Rate-Limit-Remaining" in response.headers
    assert count(database, Event, tenant.id) == 0


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"email": "not-an-email"}, "email", 11),
        ({"email": None}, "email", 99),
        ({"date": "next tuesday"}, "date", 18),
        ({"date": "2026-02-14 09:30:00 Mars/Olympus"}, "date", 18),
        ({"date": "2026-02-14 09:30:00 +99:99"}, "date", 18),  # no such offset (was a 500)
        ({"date": "2026-02-14 09:30:00 +05:75"}, "date", 18),
        (
            {"items": [{"qty": 1, "title": "x", "price": 100, "id": True, "url": "u"}]},
            "items[0].id",  # a boolean is neither a string nor a number (was read as "1")
            99,
        ),
        ({"items": []}, "items", 99),
        (
            {"items": [{"qty": 1, "title": "x", "price": 1.5, "id": "A", "url": "u"}]},
            "items[0].price",
            99,
        ),
        ({"items": [{"qty": 1, "title": "x", "price": 100, "id": "A"}]}, "items[0].url", 2),
        ({"adjustments": [{"title": "all", "price": -99999}]}, "adjustments", 99),
        ({"incomplete": 7}, "incomplete", 99),
    ],
)
def test_bad_purchases_are_400_naming_the_field(
    client: TestClient,
    tenant: TenantFixture,
    database: DatabaseFixture,
    change: dict[str, Any],
    field: str,
    code: int,
) -> None:
    body = purchase_body(f"{unique('u')}@example.com", unique("x")) | change
    if change.get("email", "") is None:
        del body["email"]
        code = 2
    response = post(client, "/purchase", signed_form(tenant, body))
    assert response.status_code == 400, response.text
    assert response.json()["errormsg"].startswith(field)
    assert response.json()["error"] == code
    assert count(database, Event, tenant.id) == 0


def test_plain_json_with_a_bearer_key(client: TestClient, tenant: TenantFixture) -> None:
    email, extid = f"{unique('u')}@example.com", unique("bearer")
    response = client.post("/purchase", json=purchase_body(email, extid), headers=tenant.headers)
    assert response.status_code == 200, response.text
    assert client.get(f"/v1/orders/{extid}", headers=tenant.headers).status_code == 200
    assert (
        client.post(
            "/purchase", json=purchase_body(email, extid), headers={"Authorization": "Bearer sk_x"}
        ).status_code
        == 401
    )


def test_a_return_without_currency_takes_its_orders(
    client: TestClient, tenant: TenantFixture
) -> None:
    email, extid = f"{unique('u')}@example.com", unique("o")
    body = purchase_body(email, extid, currency="USD")
    assert post(client, "/purchase", signed_form(tenant, body)).status_code == 200
    returned = {"qty": 1, "price": 3499, "id": "A1", "url": "https://e.x/a1", "order_id": extid}
    ret = {"email": email, "items": [returned]}
    response = post(client, "/return", signed_form(tenant, ret))
    assert response.status_code == 200, response.text
    (recorded,) = client.get(
        "/v1/returns", params={"order_id": extid}, headers=tenant.headers
    ).json()["data"]
    assert recorded["currency"] == "USD"


def test_returns_of_several_orders_and_tenant_isolation(
    client: TestClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    email = f"{unique('u')}@example.com"
    first, second = unique("o"), unique("o")
    ret = {
        "email": email,
        "items": [
            {"qty": 1, "price": 100, "id": "A", "url": "https://e.x/a", "order_id": first},
            {"qty": 2, "price": 250, "id": "B", "url": "https://e.x/b", "order_id": second},
            {"qty": 1, "price": 5, "url": "https://e.x/c"},
        ],
    }
    response = post(client, "/return", signed_form(tenant, ret))
    assert response.status_code == 200, response.text
    assert response.json()["return"]["price"] == 100 + 500 + 5
    returns = client.get("/v1/returns", params={"email": email}, headers=tenant.headers).json()[
        "data"
    ]
    assert sorted(r["refund"]["amount"] for r in returns) == [5, 100, 500]
    assert {r["items"][0]["order_id"] for r in returns} == {first, second, "unknown"}
    assert (
        client.get("/v1/returns", params={"email": email}, headers=other_tenant.headers).json()[
            "data"
        ]
        == []
    )
    # A form signed with the other tenant's key and secret lands there only.
    assert post(client, "/return", signed_form(other_tenant, ret)).status_code == 200
    assert (
        len(
            client.get("/v1/returns", params={"email": email}, headers=tenant.headers).json()[
                "data"
            ]
        )
        == 3
    )


def test_a_publishable_bearer_key_reports_and_a_signature_verifies(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    email, extid = f"{unique('u')}@example.com", unique("pk")
    response = client.post(
        "/purchase", json=purchase_body(email, extid), headers=tenant.publishable_headers
    )
    assert response.status_code == 200, response.text
    assert count(database, ReportedEvent, tenant.id) == 1
    assert client.get(f"/v1/orders/{extid}", headers=tenant.headers).status_code == 404
    # The publishable key with a valid signature proves the secret: a verified fact.
    assert (
        post(client, "/purchase", signed_form(tenant, purchase_body(email, extid))).status_code
        == 200
    )
    assert client.get(f"/v1/orders/{extid}", headers=tenant.headers).status_code == 200


def test_rate_limit_headers_count_down_and_429_in_sailthrus_shape(
    app: FastAPI, client: TestClient, tenant: TenantFixture
) -> None:
    saved = app.state.rate_limiter
    app.state.rate_limiter = TokenBuckets(0.001, 3)
    try:
        email = f"{unique('u')}@example.com"
        remaining = []
        for _ in range(3):
            form = signed_form(tenant, purchase_body(email, unique("rl")))
            response = post(client, "/purchase", form)
            assert response.status_code == 200, response.text
            assert response.headers["X-Rate-Limit-Limit"] == "3"
            remaining.append(int(response.headers["X-Rate-Limit-Remaining"]))
        assert remaining == [2, 1, 0]
        response = post(
            client, "/purchase", signed_form(tenant, purchase_body(email, unique("rl")))
        )
        assert response.status_code == 429
        assert response.json()["error"] == 99  # Sailthru documents no number for 429
        assert int(response.headers["Retry-After"]) >= 1
        assert int(response.headers["X-Rate-Limit-Reset"]) > 0
    finally:
        app.state.rate_limiter = saved


def test_the_replaced_secret_signs_for_24_hours(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    """After `tenants rotate-secret` the old secret stays valid 24 h (API.md section 10)."""
    old, new = tenant.signing_secret, "a-new-signing-secret"

    def rotate(expires_in: timedelta) -> None:
        with database.db.transaction() as session:
            session.execute(
                update(Tenant)
                .where(Tenant.id == tenant.id)
                .values(
                    signing_secret=new,
                    previous_signing_secret=old,
                    previous_secret_expires_at=datetime.now(UTC) + expires_in,
                )
            )

    email = f"{unique('u')}@example.com"
    rotate(timedelta(hours=24))
    for secret in (old, new):
        form = signed_form(tenant, purchase_body(email, unique("rot")), secret)
        assert post(client, "/purchase", form).status_code == 200
    rotate(timedelta(seconds=-1))
    form = signed_form(tenant, purchase_body(email, unique("rot")), old)
    assert post(client, "/purchase", form).status_code == 401
    form = signed_form(tenant, purchase_body(email, unique("rot")), new)
    assert post(client, "/purchase", form).status_code == 200


def test_errors_before_the_route_are_in_sailthrus_shape_too(
    client: TestClient, tenant: TenantFixture
) -> None:
    """A method the path does not take, a body over the limit: Sailthru's error shape and
    rate-limit headers on every answer."""
    too_big = b"json=" + b"x" * (6 * 1024 * 1024)
    for response in (
        client.get("/purchase"),
        client.put("/return"),
        client.post(
            "/purchase",
            content=too_big,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
    ):
        assert response.status_code in (405, 413)
        assert set(response.json()) == {"error", "errormsg"}
        assert isinstance(response.json()["error"], int)
        for header in ("X-Rate-Limit-Limit", "X-Rate-Limit-Remaining", "X-Rate-Limit-Reset"):
            assert response.headers[header].isdigit()
