"""`returnstack users create` (API.md sections 10 and 12) as a real process on SQLite and
PostgreSQL; the users it makes sign in to the dashboard of the same database."""

import subprocess
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import DatabaseFixture, TenantFixture
from tests.dashboard.helpers import sign_in
from tests.e2e import RETURNSTACK, process_env, run_cli
from tests.factories import unique


def signs_in(app: FastAPI, email: str, password: str) -> bool:
    with TestClient(app, follow_redirects=False) as client:
        return sign_in(client, email, password).status_code == 303


def test_users_create_generates_a_password_shown_once(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, tmp_path: Path
) -> None:
    email = f"{unique('lead')}@Staff.Example"
    result = run_cli(
        "users",
        "create",
        "--tenant",
        tenant.name,
        "--email",
        email,
        "--role",
        "admin",
        "--json",
        database_url=database.url,
        cwd=tmp_path,
    )
    assert result.returncode == 0, str(result)
    created = result.json()
    assert set(created) == {"id", "email", "role", "tenant_id", "password"}
    assert created["email"] == email.lower()
    assert created["role"] == "admin"
    assert created["tenant_id"] == tenant.id
    assert len(created["password"]) >= 16
    assert signs_in(app, email, created["password"])
    # Only the argon2 hash is stored, and the list never shows a password.
    listed = run_cli(
        "users", "list", "--tenant", tenant.id, "--json", database_url=database.url, cwd=tmp_path
    ).json()
    assert [row["email"] for row in listed["data"]] == [email.lower()]
    assert created["password"] not in str(listed)
    # The same email again (in any tenant) is refused.
    again = run_cli(
        "users",
        "create",
        "--tenant",
        tenant.id,
        "--email",
        email,
        "--role",
        "agent",
        "--json",
        database_url=database.url,
        cwd=tmp_path,
    )
    assert again.returncode == 1
    assert again.json()["error"]["type"] == "conflict"


def test_users_create_reads_the_password_from_stdin(
    app: FastAPI, database: DatabaseFixture, tenant: TenantFixture, tmp_path: Path
) -> None:
    email = f"{unique('agent')}@staff.example"
    completed = subprocess.run(
        [
            str(RETURNSTACK),
            "users",
            "create",
            "--tenant",
            tenant.id,
            "--email",
            email,
            "--role",
            "agent",
            "--password-stdin",
            "--json",
        ],
        input="a long enough passphrase\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
        env=process_env(database.url),
    )
    assert completed.returncode == 0, completed.stderr
    assert "password" not in completed.stdout  # chosen, so not printed
    assert signs_in(app, email, "a long enough passphrase")
    short = subprocess.run(
        [
            str(RETURNSTACK),
            "users",
            "create",
            "--tenant",
            tenant.id,
            "--email",
            f"x{email}",
            "--role",
            "agent",
            "--password-stdin",
        ],
        input="short\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
        env=process_env(database.url),
    )
    assert short.returncode == 1
    assert "password" in short.stderr


def test_users_create_refuses_a_bad_role_or_email(
    database: DatabaseFixture, tenant: TenantFixture, tmp_path: Path
) -> None:
    bad_role = run_cli(
        "users",
        "create",
        "--tenant",
        tenant.id,
        "--email",
        "a@b.example",
        "--role",
        "owner",
        database_url=database.url,
        cwd=tmp_path,
    )
    assert bad_role.returncode != 0
    bad_email = run_cli(
        "users",
        "create",
        "--tenant",
        tenant.id,
        "--email",
        "not-an-email",
        "--role",
        "agent",
        "--json",
        database_url=database.url,
        cwd=tmp_path,
    )
    assert bad_email.returncode == 1
    assert bad_email.json()["error"]["details"][0]["path"] == "email"
