"""`returnstack tenants rotate-secret T` (API.md 10, 2): a new signing secret, printed once;
the secret it replaces stays valid for 24 hours (storefront customer tokens, Sailthru
signatures), then only the new one is."""

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from fastapi.testclient import TestClient
from sqlalchemy import update

from returnstack.models import Tenant
from returnstack.tenants.service import find_tenant, valid_signing_secrets
from tests.conftest import DatabaseFixture, TenantFixture
from tests.e2e import CliResult, run_cli
from tests.factories import unique


def rotate(database: DatabaseFixture, cwd: Path, tenant: str, *flags: str) -> CliResult:
    return run_cli("tenants", "rotate-secret", tenant, *flags, database_url=database.url, cwd=cwd)


def token(secret: str, sub: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + 600}, secret, algorithm="HS256")


def sign_in(client: TestClient, tenant: TenantFixture, secret: str) -> int:
    response = client.post(
        "/v1/storefront/sessions",
        json={"customer_token": token(secret, unique("cust"))},
        headers=tenant.publishable_headers,
    )
    return response.status_code


def test_rotation_prints_one_json_object_and_keeps_the_old_secret_for_a_day(
    database: DatabaseFixture, tenant: TenantFixture, client: TestClient, tmp_path: Path
) -> None:
    old = tenant.signing_secret
    started = datetime.now(UTC)
    result = rotate(database, tmp_path, tenant.name, "--json")
    assert result.returncode == 0, str(result)
    assert len(result.stdout.strip().splitlines()) == 1, str(result)
    rotated: dict[str, Any] = json.loads(result.stdout)
    assert set(rotated) == {"id", "name", "signing_secret", "previous_secret_expires_at"}
    assert (rotated["id"], rotated["name"]) == (tenant.id, tenant.name)
    new = rotated["signing_secret"]
    assert isinstance(new, str)
    assert len(new) >= 32
    assert new != old
    expires = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    assert rotated["previous_secret_expires_at"].endswith("Z")
    assert started + timedelta(hours=24) <= expires <= datetime.now(UTC) + timedelta(hours=24)

    with database.db.transaction(write=False) as session:
        assert valid_signing_secrets(session, tenant_id=tenant.id) == [new, old]
    assert sign_in(client, tenant, new) == 201
    assert sign_in(client, tenant, old) == 201  # within the 24 h
    assert sign_in(client, tenant, "not-the-secret") == 401

    # Once the 24 h are over, only the new secret is accepted.
    with database.db.transaction() as session:
        session.execute(
            update(Tenant)
            .where(Tenant.id == tenant.id)
            .values(previous_secret_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    with database.db.transaction(write=False) as session:
        assert valid_signing_secrets(session, tenant_id=tenant.id) == [new]
    assert sign_in(client, tenant, old) == 401
    assert sign_in(client, tenant, new) == 201


def test_rotating_twice_keeps_only_the_secret_just_replaced(
    database: DatabaseFixture, tenant: TenantFixture, client: TestClient, tmp_path: Path
) -> None:
    first = rotate(database, tmp_path, tenant.id, "--json")
    assert first.returncode == 0, str(first)
    second = rotate(database, tmp_path, tenant.id, "--json")
    assert second.returncode == 0, str(second)
    middle, newest = first.json()["signing_secret"], second.json()["signing_secret"]

    assert sign_in(client, tenant, tenant.signing_secret) == 401  # two rotations ago
    assert sign_in(client, tenant, middle) == 201
    assert sign_in(client, tenant, newest) == 201
    with database.db.transaction(write=False) as session:
        assert find_tenant(session, tenant.id).signing_secret == newest


def test_rotation_without_json_prints_the_secret_once(
    database: DatabaseFixture, tenant: TenantFixture, tmp_path: Path
) -> None:
    result = rotate(database, tmp_path, tenant.name)
    assert result.returncode == 0, str(result)
    with database.db.transaction(write=False) as session:
        secret = find_tenant(session, tenant.id).signing_secret
    assert result.stdout.count(secret) == 1
    assert tenant.signing_secret not in result.stdout + result.stderr


def test_rotating_an_unknown_tenant_fails_clearly(
    database: DatabaseFixture, tmp_path: Path
) -> None:
    result = rotate(database, tmp_path, unique("nobody"), "--json")
    assert result.returncode == 1
    assert result.json()["error"]["type"] == "not_found"
