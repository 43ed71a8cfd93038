"""Opening, reading and listing returns, and their lifecycle actions, take their caller from
the process's key cache and confirm the key in their own transaction (tenants/auth.py
`confirmed`): a key revoked after the process cached it is refused 401 on its very next
request, whatever else is wrong with that request, and writes nothing."""

from typing import Any

from fastapi.testclient import TestClient

from returnstack.tenants.service import create_key, find_tenant, revoke_key
from tests.conftest import DatabaseFixture, TenantFixture
from tests.returns.helpers import Api, wanted


def _key(database: DatabaseFixture, tenant: TenantFixture, kind: str) -> Any:
    with database.db.transaction() as session:
        return create_key(session, tenant=find_tenant(session, tenant.id), kind=kind)


def _revoked_after_caching(
    client: TestClient, database: DatabaseFixture, tenant: TenantFixture
) -> dict[str, str]:
    """The headers of a new secret key, put in the key cache by a request, then revoked."""
    key = _key(database, tenant, "secret")
    headers = {"Authorization": f"Bearer {key.key}"}
    cached = client.post("/v1/returns/ret_unknown/approve", json={}, headers=headers)
    assert cached.status_code == 404, cached.text
    with database.db.transaction() as session:
        revoke_key(session, key_id=key.id)
    return headers


def test_a_key_revoked_after_it_was_cached_opens_and_moves_no_return(
    client: TestClient, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    api = Api(client, tenant)
    order = api.buy()
    ret = api.act(api.open(wanted(order)), "approve")
    path = f"/v1/returns/{ret['id']}"
    receipt = {"items": [{"order_id": order["order_id"], "line_id": "1", "quantity": 1}]}
    cases: dict[str, Any] = {
        "open": lambda h: client.post("/v1/returns", json={"items": [wanted(order)]}, headers=h),
        "open, invalid body (else 422)": lambda h: client.post(
            "/v1/returns", json={"items": "none"}, headers=h
        ),
        "open, invalid Idempotency-Key (else 400)": lambda h: client.post(
            "/v1/returns",
            json={"items": [wanted(order)]},
            headers=h | {"Idempotency-Key": "k" * 300},
        ),
        "receive": lambda h: client.post(f"{path}/receive", json=receipt, headers=h),
        "receive, invalid body (else 422)": lambda h: client.post(
            f"{path}/receive", json={"items": 3}, headers=h
        ),
        "close, not allowed now (else 409)": lambda h: client.post(
            f"{path}/close", json={}, headers=h
        ),
        "approve, unknown return (else 404)": lambda h: client.post(
            "/v1/returns/ret_unknown/approve", json={}, headers=h
        ),
        "receive, stale If-Match (else 412)": lambda h: client.post(
            f"{path}/receive", json=receipt, headers=h | {"If-Match": '"1"'}
        ),
        "read": lambda h: client.get(path, headers=h),
        "read, unknown return (else 404)": lambda h: client.get(
            "/v1/returns/ret_unknown", headers=h
        ),
        "list": lambda h: client.get("/v1/returns", headers=h),
        "list, invalid limit (else 400)": lambda h: client.get("/v1/returns?limit=0", headers=h),
        "list, invalid cursor (else 400)": lambda h: client.get(
            "/v1/returns?cursor=nonsense", headers=h
        ),
    }
    for case, call in cases.items():
        response = call(_revoked_after_caching(client, database, tenant))
        assert response.status_code == 401, (case, response.text)
        assert response.json()["error"]["type"] == "authentication_failed", case
    # Nothing written: the return is as approved, and no other return was opened.
    after = api.read(ret)
    assert (after["status"], after["version"]) == ("approved", ret["version"])
    assert [r["id"] for r in api.get("/v1/returns").json()["data"]] == [ret["id"]]


def test_a_key_revoked_after_it_was_cached_gets_no_replay(
    client: TestClient, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    api = Api(client, tenant)
    ret = api.open(wanted(api.buy()))
    key = _key(database, tenant, "secret")
    headers = {"Authorization": f"Bearer {key.key}", "Idempotency-Key": "approve-once"}
    path = f"/v1/returns/{ret['id']}/approve"
    for _ in range(2):  # the second is a replay, from a cached key
        approved = client.post(path, json={}, headers=headers)
        assert approved.status_code == 200, approved.text
    with database.db.transaction() as session:
        revoke_key(session, key_id=key.id)
    replayed = client.post(path, json={}, headers=headers)
    assert replayed.status_code == 401, replayed.text


def test_a_publishable_key_may_not_open_or_move_returns(
    client: TestClient, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    api = Api(client, tenant)
    ret = api.open(wanted(api.buy()))
    public = tenant.publishable_headers
    for _ in range(2):  # refused alike before and after the key is cached
        opened = client.post("/v1/returns", json={"items": [wanted(api.buy())]}, headers=public)
        assert opened.status_code == 403, opened.text
        moved = client.post(f"/v1/returns/{ret['id']}/approve", json={}, headers=public)
        assert moved.status_code == 403, moved.text
    assert api.read(ret)["status"] == "requested"
