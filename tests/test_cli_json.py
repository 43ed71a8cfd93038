"""`--json` on every admin command (API.md 10): on success and on failure, exactly one JSON
object on stdout, and the exit code says which."""

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer

from returnstack.cli import app as cli_app
from tests.conftest import DatabaseFixture, TenantFixture
from tests.e2e import CliResult, run_cli
from tests.factories import purchase

# Commands that serve or run until stopped, and so print no JSON object.
LONG_RUNNING = {"serve", "worker", "demo"}

Args = Callable[[TenantFixture, Path], list[str]]


def _events_file(tmp: Path) -> str:
    path = tmp / "events.jsonl"
    path.write_text(json.dumps(purchase()) + "\n")
    return str(path)


# command -> (arguments that succeed, arguments that fail for a reason the user can fix)
CASES: dict[str, tuple[Args, Args]] = {
    "db upgrade": (lambda t, tmp: [], lambda t, tmp: []),  # failure: see UNREACHABLE
    "tenants create": (
        lambda t, tmp: [f"acme-{uuid.uuid4().hex[:10]}", "--currency", "EUR"],
        lambda t, tmp: [f"acme-{uuid.uuid4().hex[:10]}", "--currency", "EURO"],
    ),
    "tenants list": (lambda t, tmp: [], lambda t, tmp: []),  # failure: see UNREACHABLE
    "tenants rotate-secret": (
        lambda t, tmp: [t.id],
        lambda t, tmp: ["no-such-tenant"],
    ),
    "keys create": (
        lambda t, tmp: ["--tenant", t.id, "--kind", "secret"],
        lambda t, tmp: ["--tenant", "no-such-tenant", "--kind", "secret"],
    ),
    "keys list": (
        lambda t, tmp: ["--tenant", t.name],
        lambda t, tmp: ["--tenant", "no-such-tenant"],
    ),
    "keys revoke": (
        lambda t, tmp: [t.publishable_key_id],
        lambda t, tmp: ["key_no_such_key"],
    ),
    "profiles rebuild": (
        lambda t, tmp: ["--tenant", t.id],
        lambda t, tmp: ["--tenant", "no-such-tenant"],
    ),
    "users create": (
        lambda t, tmp: [
            "--tenant",
            t.id,
            "--email",
            f"{uuid.uuid4().hex[:10]}@staff.example",
            "--role",
            "agent",
        ],
        lambda t, tmp: ["--tenant", t.id, "--email", "not-an-email", "--role", "agent"],
    ),
    "users list": (
        lambda t, tmp: ["--tenant", t.name],
        lambda t, tmp: ["--tenant", "no-such-tenant"],
    ),
    "import": (
        lambda t, tmp: [_events_file(tmp), "--tenant", t.id],
        lambda t, tmp: [_events_file(tmp), "--tenant", "no-such-tenant"],
    ),
}
# Commands whose only failure is an unusable database.
UNREACHABLE = {"db upgrade", "tenants list"}
# A PostgreSQL URL on a port nothing listens on.
UNREACHABLE_URL = "postgresql+psycopg://127.0.0.1:9/nowhere?connect_timeout=2"


def admin_commands() -> set[str]:
    """Every command of the console script, as 'group command' paths."""
    found: set[str] = set()

    def walk(command: Any, prefix: str) -> None:
        if hasattr(command, "commands"):  # a group (Typer ships its own click)
            for name, sub in command.commands.items():
                walk(sub, f"{prefix} {name}".strip())
        else:
            found.add(prefix)

    walk(typer.main.get_command(cli_app), "")
    return found - LONG_RUNNING


def test_every_admin_command_is_covered_and_takes_json() -> None:
    assert admin_commands() == set(CASES)
    root: Any = typer.main.get_command(cli_app)
    for path in CASES:
        command = root
        for part in path.split():
            command = command.commands[part]
        assert "--json" in [opt for param in command.params for opt in param.opts], path


def one_object(result: CliResult) -> dict[str, object]:
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, str(result)
    payload = json.loads(lines[0])
    assert isinstance(payload, dict), str(result)
    return payload


@pytest.mark.parametrize("command", sorted(CASES))
def test_success_prints_one_json_object(
    command: str, database: DatabaseFixture, tenant: TenantFixture, tmp_path: Path
) -> None:
    succeed, _ = CASES[command]
    args = [*command.split(), *succeed(tenant, tmp_path), "--json"]

    result = run_cli(*args, database_url=database.url, cwd=tmp_path)

    assert result.returncode == 0, str(result)
    assert "error" not in one_object(result)


@pytest.mark.parametrize("command", sorted(set(CASES) - UNREACHABLE))
def test_failure_prints_one_json_error(
    command: str, database: DatabaseFixture, tenant: TenantFixture, tmp_path: Path
) -> None:
    _, fail = CASES[command]
    args = [*command.split(), *fail(tenant, tmp_path), "--json"]

    result = run_cli(*args, database_url=database.url, cwd=tmp_path)

    assert result.returncode != 0, str(result)
    error = one_object(result)["error"]
    assert isinstance(error, dict)
    assert error["type"] in {"not_found", "validation_failed"}, str(result)


@pytest.mark.parametrize("command", sorted(UNREACHABLE))
def test_unreachable_database_prints_one_json_error(command: str, tmp_path: Path) -> None:
    args = [*command.split(), "--json"]

    result = run_cli(*args, database_url=UNREACHABLE_URL, cwd=tmp_path, timeout=60)

    assert result.returncode != 0, str(result)
    error = one_object(result)["error"]
    assert isinstance(error, dict)
    assert error["type"] == "unavailable", str(result)
    assert "127.0.0.1" not in result.stdout  # the URL is for the log, not the output
