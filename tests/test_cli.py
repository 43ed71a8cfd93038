"""The installed `returnstack` console script, run as a real process on SQLite and PostgreSQL.

Each command runs with RETURNSTACK_DATABASE_URL pointing at the session's migrated test
database (`database` fixture), in a temporary working directory. What the CLI creates is
checked through the in-process app (`client`), which shares that database.
"""

import uuid
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect

from returnstack import demo as demo_data
from returnstack.app import create_app
from returnstack.config import Settings
from returnstack.kit import migrate
from returnstack.kit.db import Database
from returnstack.kit.errors import NotFound
from returnstack.tenants.service import find_tenant
from tests.conftest import DatabaseFixture, TenantFixture
from tests.e2e import CliResult, run_cli
from tests.factories import batch, purchase


def cli(database: DatabaseFixture, cwd: Path, *args: str) -> CliResult:
    return run_cli(*args, database_url=database.url, cwd=cwd)


def ok(result: CliResult) -> CliResult:
    assert result.returncode == 0, str(result)
    return result


def unique_name(prefix: str = "acme") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def is_rfc3339_utc(value: str) -> bool:
    return value.endswith("Z") and datetime.fromisoformat(value).utcoffset() is not None


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- tenants ------------------------------------------------------------------------------


def test_tenants_create_prints_the_tenant_as_json(
    database: DatabaseFixture, tmp_path: Path
) -> None:
    name = unique_name()
    payload = ok(cli(database, tmp_path, "tenants", "create", name, "--currency", "EUR", "--json"))
    created = payload.json()

    assert set(created) == {"id", "name", "default_currency", "signing_secret"}
    assert created["name"] == name
    assert created["default_currency"] == "EUR"
    assert isinstance(created["signing_secret"], str)
    assert len(created["signing_secret"]) >= 32
    with database.db.transaction(write=False) as session:
        stored = find_tenant(session, name)
        assert stored.id == created["id"]
        assert stored.default_currency == "EUR"
        assert stored.signing_secret == created["signing_secret"]

    listed = ok(cli(database, tmp_path, "tenants", "list", "--json")).json()["data"]
    mine = [row for row in listed if row["id"] == created["id"]]
    assert len(mine) == 1
    assert mine[0]["name"] == name
    assert mine[0]["default_currency"] == "EUR"
    assert is_rfc3339_utc(mine[0]["created_at"])
    assert all("signing_secret" not in row for row in listed)  # shown once, at creation


def test_a_duplicate_tenant_name_fails_clearly(database: DatabaseFixture, tmp_path: Path) -> None:
    name = unique_name()
    first = ok(cli(database, tmp_path, "tenants", "create", name))  # human output
    with database.db.transaction(write=False) as session:
        stored = find_tenant(session, name)
        assert stored.default_currency == "USD"  # the documented default
        first_id = stored.id
        assert first_id in first.stdout
        assert stored.signing_secret in first.stdout

    human = cli(database, tmp_path, "tenants", "create", name, "--currency", "EUR")
    assert human.returncode != 0, str(human)
    assert name in human.stderr, str(human)
    assert "exists" in human.stderr.lower(), str(human)
    assert "Traceback" not in human.stderr, str(human)

    as_json = cli(database, tmp_path, "tenants", "create", name, "--json")
    assert as_json.returncode != 0, str(as_json)
    error = as_json.json()["error"]
    assert error["type"] == "conflict"
    assert name in error["message"]

    with database.db.transaction(write=False) as session:
        stored = find_tenant(session, name)
        assert (stored.id, stored.default_currency) == (first_id, "USD")  # unchanged


def test_an_unknown_currency_fails_and_creates_nothing(
    database: DatabaseFixture, tmp_path: Path
) -> None:
    name = unique_name()
    human = cli(database, tmp_path, "tenants", "create", name, "--currency", "ZZZ")
    assert human.returncode != 0, str(human)
    assert "ZZZ" in human.stderr, str(human)
    assert "currency" in human.stderr.lower(), str(human)
    assert "Traceback" not in human.stderr, str(human)

    as_json = cli(database, tmp_path, "tenants", "create", name, "--currency", "EURO", "--json")
    assert as_json.returncode != 0, str(as_json)
    error = as_json.json()["error"]
    assert error["type"] == "validation_failed"
    assert any("currency" in detail["path"] for detail in error["details"]), error

    with database.db.transaction(write=False) as session, pytest.raises(NotFound):
        find_tenant(session, name)


# --- keys ---------------------------------------------------------------------------------

KEYS_CREATE = ("keys", "create", "--json", "--tenant")


def test_keys_create_prints_working_keys(
    database: DatabaseFixture, tmp_path: Path, tenant: TenantFixture, client: TestClient
) -> None:
    # --tenant takes the id or the name.
    secret = ok(cli(database, tmp_path, *KEYS_CREATE, tenant.id, "--kind", "secret")).json()
    publishable = ok(
        cli(database, tmp_path, *KEYS_CREATE, tenant.name, "--kind", "publishable")
    ).json()

    assert set(secret) == {"id", "kind", "key"}
    assert secret["kind"] == "secret"
    assert secret["key"].startswith("sk_")
    assert set(publishable) == {"id", "kind", "key"}
    assert publishable["kind"] == "publishable"
    assert publishable["key"].startswith("pk_")
    assert len({secret["id"], publishable["id"], tenant.secret_key_id}) == 3
    assert secret["key"] != tenant.secret_key

    # The keys are real and belong to this tenant: what the new secret key sends, the
    # tenant's older key reads. The publishable key may send events (reported: they make no
    # order, API.md 2) but not read orders.
    event = purchase()
    sent = client.post("/v1/events", json=batch(event), headers=auth(secret["key"]))
    assert sent.status_code == 200, sent.text
    assert sent.json()["accepted"] == 1
    for key in (secret["key"], tenant.secret_key):
        order = client.get(f"/v1/orders/{event['order_id']}", headers=auth(key))
        assert order.status_code == 200, order.text
    reported = client.post("/v1/events", json=batch(purchase()), headers=auth(publishable["key"]))
    assert reported.status_code == 200, reported.text
    assert reported.json()["accepted"] == 1
    forbidden = client.get(f"/v1/orders/{event['order_id']}", headers=auth(publishable["key"]))
    assert forbidden.status_code == 403


def test_keys_create_for_an_unknown_tenant_fails(database: DatabaseFixture, tmp_path: Path) -> None:
    missing = unique_name("nobody")
    result = cli(database, tmp_path, "keys", "create", "--tenant", missing, "--kind", "secret")
    assert result.returncode != 0, str(result)
    assert missing in result.stderr, str(result)
    assert "Traceback" not in result.stderr, str(result)
    assert "sk_" not in result.stdout


def test_keys_list_shows_prefixes_never_keys(
    database: DatabaseFixture, tmp_path: Path, tenant: TenantFixture
) -> None:
    full_keys = {
        tenant.secret_key_id: tenant.secret_key,
        tenant.publishable_key_id: tenant.publishable_key,
    }
    result = ok(cli(database, tmp_path, "keys", "list", "--tenant", tenant.name, "--json"))
    rows = result.json()["data"]
    by_id = {row["id"]: row for row in rows}
    assert set(by_id) == set(full_keys)
    for key_id, row in by_id.items():
        assert set(row) == {"id", "kind", "prefix", "created_at", "revoked_at"}
        assert full_keys[key_id].startswith(row["prefix"])
        assert len(row["prefix"]) < len(full_keys[key_id])
        assert is_rfc3339_utc(row["created_at"]), row
        assert row["revoked_at"] is None
    assert by_id[tenant.secret_key_id]["kind"] == "secret"
    assert by_id[tenant.secret_key_id]["prefix"].startswith("sk_")
    assert by_id[tenant.publishable_key_id]["kind"] == "publishable"
    assert by_id[tenant.publishable_key_id]["prefix"].startswith("pk_")

    human = ok(cli(database, tmp_path, "keys", "list", "--tenant", tenant.id))
    assert tenant.secret_key_id in human.stdout
    assert tenant.publishable_key_id in human.stdout
    for key in full_keys.values():
        assert key not in result.stdout
        assert key not in human.stdout + human.stderr


def test_keys_revoke_refuses_the_key_at_once(
    database: DatabaseFixture, tmp_path: Path, tenant: TenantFixture, client: TestClient
) -> None:
    missing_order = "/v1/orders/no-such-order"
    assert client.get(missing_order, headers=tenant.headers).status_code == 404  # key accepted

    revoked = ok(cli(database, tmp_path, "keys", "revoke", tenant.secret_key_id, "--json")).json()
    assert revoked["id"] == tenant.secret_key_id
    assert is_rfc3339_utc(revoked["revoked_at"]), revoked

    refused = client.get(missing_order, headers=tenant.headers)
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"]["type"] == "authentication_failed"
    refused_post = client.post("/v1/events", json=batch(purchase()), headers=tenant.headers)
    assert refused_post.status_code == 401
    # Only that key: the tenant's publishable key still works.
    still = client.post("/v1/events", json=batch(purchase()), headers=tenant.publishable_headers)
    assert still.status_code == 200, still.text

    rows = ok(cli(database, tmp_path, "keys", "list", "--tenant", tenant.id, "--json")).json()
    by_id = {row["id"]: row for row in rows["data"]}
    assert by_id[tenant.secret_key_id]["revoked_at"] == revoked["revoked_at"]
    assert by_id[tenant.publishable_key_id]["revoked_at"] is None


def test_keys_revoke_of_an_unknown_key_fails(database: DatabaseFixture, tmp_path: Path) -> None:
    result = cli(database, tmp_path, "keys", "revoke", "key_doesnotexist")
    assert result.returncode != 0, str(result)
    assert "key_doesnotexist" in result.stderr, str(result)
    assert "Traceback" not in result.stderr, str(result)


# --- database -----------------------------------------------------------------------------


def test_db_upgrade_on_a_migrated_database_is_a_no_op(
    database: DatabaseFixture, tmp_path: Path, tenant: TenantFixture, client: TestClient
) -> None:
    ok(cli(database, tmp_path, "db", "upgrade"))
    assert migrate.is_current(database.db.engine)
    # Nothing was dropped or rebuilt: existing data and keys still work.
    assert client.get("/v1/orders/nothing", headers=tenant.headers).status_code == 404


def test_db_upgrade_builds_a_fresh_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "nested dir" / "fresh.db"
    path.parent.mkdir()
    url = f"sqlite:///{path}"
    result = run_cli(
        "db", "upgrade", database_url=url, cwd=tmp_path, env={"RETURNSTACK_AUTO_MIGRATE": "false"}
    )
    assert result.returncode == 0, str(result)
    assert path.exists()
    db = Database(Settings(database_url=url))
    try:
        assert migrate.is_current(db.engine)
        tables = set(inspect(db.engine).get_table_names())
        assert {"tenants", "api_keys", "events", "orders", "order_lines"} <= tables
    finally:
        db.dispose()


# --- demo ---------------------------------------------------------------------------------


def test_demo_sets_up_a_working_database_in_the_current_directory(tmp_path: Path) -> None:
    orders = 200
    expected_events = list(demo_data.generate(orders=orders))
    first_order = next(e["order_id"] for e in expected_events if e["type"] == "purchase")

    first = run_cli(
        "demo",
        "--no-serve",
        "--json",
        "--orders",
        str(orders),
        database_url=None,
        cwd=tmp_path,
        timeout=120,
    )
    assert first.returncode == 0, str(first)
    loaded = first.json()
    db_file = tmp_path / "returnstack.db"
    assert db_file.exists(), "the default database is ./returnstack.db in the working directory"
    assert loaded["events_loaded"] == len(expected_events)
    # A storefront pixel's events are loaded too, as reported (product signals only).
    pixel = list(demo_data.generate_reported(count=orders // 20))
    assert loaded["reported_events_loaded"] == len(pixel)
    assert loaded["secret_key"].startswith("sk_")
    assert loaded["publishable_key"].startswith("pk_")
    # The catalogue's ranking demotes the most-returned products: the three at the bottom
    # are among the five with the highest return rates (of products sold 20 times or more).
    ranking = loaded["ranking"]
    assert len(ranking) == len(demo_data.CATALOG)
    assert [row["score"] for row in ranking] == sorted(
        (row["score"] for row in ranking), reverse=True
    )
    sold = [row for row in ranking if row["units_sold"] >= 20]
    worst = sorted(sold, key=lambda row: row["return_rate"], reverse=True)[:5]
    assert {row["product_id"] for row in ranking[-3:]} <= {row["product_id"] for row in worst}

    second = run_cli(
        "demo",
        "--no-serve",
        "--json",
        "--orders",
        str(orders),
        database_url=None,
        cwd=tmp_path,
        timeout=120,
    )
    assert second.returncode == 0, str(second)
    again = second.json()
    assert again["events_loaded"] == 0
    assert again["reported_events_loaded"] == 0
    assert again["tenant_id"] == loaded["tenant_id"]

    settings = Settings(
        database_url=f"sqlite:///{db_file}",
        data_dir=tmp_path / "data",
        rate_limit_per_second=0,
        log_requests=False,
        auto_migrate=False,
    )
    db = Database(settings)
    try:
        with TestClient(create_app(settings, database=db)) as client:
            for run in (loaded, again):  # the keys of both runs work
                order = client.get(f"/v1/orders/{first_order}", headers=auth(run["secret_key"]))
                assert order.status_code == 200, order.text
                assert order.json()["order_id"] == first_order
                sent = client.post(
                    "/v1/events", json=batch(purchase()), headers=auth(run["publishable_key"])
                )
                assert sent.status_code == 200, sent.text
            # The pixel's orders are not orders.
            reported_order = pixel[0]["order_id"]
            refused = client.get(f"/v1/orders/{reported_order}", headers=auth(loaded["secret_key"]))
            assert refused.status_code == 404, refused.text
            # The demo data is there exactly once: every purchase's lines, never doubled.
            purchase_event = next(e for e in expected_events if e["order_id"] == first_order)
            lines = client.get(
                f"/v1/orders/{first_order}", headers=auth(loaded["secret_key"])
            ).json()["lines"]
            assert sorted((line["line_id"], line["quantity"]) for line in lines) == sorted(
                (item["line_id"], item["quantity"]) for item in purchase_event["items"]
            )
    finally:
        db.dispose()
