"""Authorization: Bearer keys, secret vs publishable, revocation at once (API.md 2)."""

import secrets
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from returnstack.models import Order
from returnstack.tenants.service import revoke_key
from tests.conftest import DatabaseFixture, TenantFixture
from tests.factories import batch, purchase


def assert_refused(response: Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == kind
    assert error["message"]
    assert isinstance(error["details"], list)
    return error


def assert_unauthenticated(response: Response) -> None:
    assert_refused(response, 401, "authentication_failed")
    assert response.headers["www-authenticate"].lower().startswith("bearer")


def order_exists(client: TestClient, tenant: TenantFixture, order_id: str) -> bool:
    response = client.get(f"/v1/orders/{order_id}", headers=tenant.headers)
    assert response.status_code in (200, 404), response.text
    return response.status_code == 200


def bad_headers(tenant: TenantFixture) -> dict[str, dict[str, str]]:
    return {
        "no_header": {},
        "empty": {"Authorization": ""},
        "scheme_only": {"Authorization": "Bearer"},
        "scheme_and_space": {"Authorization": "Bearer   "},
        "no_scheme": {"Authorization": tenant.secret_key},
        "basic_scheme": {"Authorization": f"Basic {tenant.secret_key}"},
        "token_scheme": {"Authorization": f"Token {tenant.secret_key}"},
        "key_in_other_header": {"X-Api-Key": tenant.secret_key},
        "unknown_key": {"Authorization": f"Bearer sk_{secrets.token_urlsafe(24)}"},
        "truncated_key": {"Authorization": f"Bearer {tenant.secret_key[:-1]}"},
        "key_with_suffix": {"Authorization": f"Bearer {tenant.secret_key}x"},
        "key_of_another_case": {"Authorization": f"Bearer {tenant.secret_key.upper()}"},
    }


BAD_HEADER_CASES = [
    "no_header",
    "empty",
    "scheme_only",
    "scheme_and_space",
    "no_scheme",
    "basic_scheme",
    "token_scheme",
    "key_in_other_header",
    "unknown_key",
    "truncated_key",
    "key_with_suffix",
    "key_of_another_case",
]


@pytest.mark.parametrize("case", BAD_HEADER_CASES)
def test_requests_without_a_valid_key_are_401_and_write_nothing(
    client: TestClient, tenant: TenantFixture, case: str
) -> None:
    headers = bad_headers(tenant)[case]
    event = purchase()
    assert_unauthenticated(client.post("/v1/events", json=batch(event), headers=headers))
    assert_unauthenticated(client.get(f"/v1/orders/{event['order_id']}", headers=headers))
    assert not order_exists(client, tenant, event["order_id"])


def test_authentication_comes_before_validation(client: TestClient, tenant: TenantFixture) -> None:
    """A caller without a key learns nothing about the body (401, not 400 or 422)."""
    response = client.post(
        "/v1/events", content=b"not json", headers={"Content-Type": "application/json"}
    )
    assert_unauthenticated(response)
    response = client.post("/v1/events", json={"events": []})
    assert_unauthenticated(response)


def test_the_scheme_is_case_insensitive(client: TestClient, tenant: TenantFixture) -> None:
    event = purchase()
    response = client.post(
        "/v1/events", json=batch(event), headers={"Authorization": f"bearer {tenant.secret_key}"}
    )
    assert response.status_code == 200, response.text


def test_secret_key_may_send_events_and_read_orders(
    client: TestClient, tenant: TenantFixture
) -> None:
    event = purchase()
    response = client.post("/v1/events", json=batch(event), headers=tenant.headers)
    assert response.status_code == 200, response.text
    assert order_exists(client, tenant, event["order_id"])


def test_publishable_key_may_send_events_but_not_read_orders(
    client: TestClient, tenant: TenantFixture
) -> None:
    event = purchase()
    response = client.post("/v1/events", json=batch(event), headers=tenant.publishable_headers)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1
    # Reported, not a fact (API.md 2): no order is made; tests/events/test_trust.py has the rest.
    assert not order_exists(client, tenant, event["order_id"])

    known = client.get(f"/v1/orders/{event['order_id']}", headers=tenant.publishable_headers)
    assert_refused(known, 403, "forbidden")
    # Not even whether an order exists: unknown orders are 403 too.
    unknown = client.get("/v1/orders/never-seen", headers=tenant.publishable_headers)
    assert_refused(unknown, 403, "forbidden")


def test_a_revoked_key_is_refused_at_once(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    event = purchase()
    first = client.post("/v1/events", json=batch(event), headers=tenant.headers)
    assert first.status_code == 200, first.text
    assert client.get(f"/v1/orders/{event['order_id']}", headers=tenant.headers).status_code == 200

    with database.db.transaction() as session:
        revoke_key(session, key_id=tenant.secret_key_id)

    later = purchase()
    assert_unauthenticated(client.post("/v1/events", json=batch(later), headers=tenant.headers))
    assert_unauthenticated(client.get(f"/v1/orders/{event['order_id']}", headers=tenant.headers))

    # Only that key: the tenant's publishable key still works, and nothing from the refused
    # request was written.
    ok = client.post("/v1/events", json=batch(purchase()), headers=tenant.publishable_headers)
    assert ok.status_code == 200, ok.text
    with database.db.transaction(write=False) as session:
        assert session.get(Order, (tenant.id, later["order_id"])) is None
        assert session.get(Order, (tenant.id, event["order_id"])) is not None


def test_a_revoked_publishable_key_is_refused(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    with database.db.transaction() as session:
        revoke_key(session, key_id=tenant.publishable_key_id)
    response = client.post("/v1/events", json=batch(purchase()), headers=tenant.publishable_headers)
    assert_unauthenticated(response)
    still = client.post("/v1/events", json=batch(purchase()), headers=tenant.headers)
    assert still.status_code == 200, still.text


def test_revoking_twice_keeps_the_key_revoked(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    with database.db.transaction() as session:
        first = revoke_key(session, key_id=tenant.secret_key_id).revoked_at
    with database.db.transaction() as session:
        second = revoke_key(session, key_id=tenant.secret_key_id).revoked_at
    assert first is not None
    assert second == first
    assert_unauthenticated(
        client.post("/v1/events", json=batch(purchase()), headers=tenant.headers)
    )


def test_health_endpoints_need_no_key(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
