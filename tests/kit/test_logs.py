"""Logs never carry personal data (API.md 5): database errors quote their bound parameters
and the offending values, other errors their input, so errors are logged by type, frames,
the kind of statement and the database's error code, never by message."""

import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import DataError, IntegrityError

from returnstack.kit.errors import install_error_handlers
from returnstack.kit.logs import JsonFormatter, error_fields, statement_kind
from returnstack.kit.middleware import RequestMiddleware
from returnstack.models import Customer
from tests.conftest import DatabaseFixture, TenantFixture
from tests.factories import unique


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def duplicate_customer(database: DatabaseFixture, tenant: TenantFixture, email: str) -> Exception:
    """A real constraint violation whose parameters (and, on PostgreSQL, DETAIL) hold an email."""
    now = datetime.now(UTC)

    def row() -> Customer:
        return Customer(
            tenant_id=tenant.id,
            id=email,
            server_id=unique("cus"),
            email=email,
            name=email,
            created_at=now,
            updated_at=now,
        )

    with database.db.transaction() as session:
        session.add(row())
    try:
        with database.db.transaction() as session:
            session.add(row())
    except IntegrityError as exc:
        return exc
    raise AssertionError("the duplicate was stored")


def test_a_database_error_is_described_without_its_values(
    database: DatabaseFixture, tenant: TenantFixture, lines: Lines
) -> None:
    email = f"{unique('Dee')}@example.com"
    error = duplicate_customer(database, tenant, email)

    fields = error_fields(error)
    assert email.lower() not in orjson.dumps(fields).decode().lower()
    assert fields["error_type"] == "sqlalchemy.exc.IntegrityError"
    assert fields["statement"] == "INSERT INTO customers"
    assert fields["db_error_code"] in ("23505", "SQLITE_CONSTRAINT_PRIMARYKEY")
    assert "duplicate_customer" in fields["traceback"]  # where it happened is kept

    try:
        raise error
    except IntegrityError:
        logging.getLogger("returnstack.test").exception("something.failed")
    assert len(lines.lines) == 1
    assert email.lower() not in lines.lines[0].lower()
    assert "sqlalchemy.exc.IntegrityError" in lines.lines[0]


def app_failing_with(error: Exception) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(RequestMiddleware, max_body_bytes=1024, log_requests=True)

    @app.get("/v1/customers/{customer_id}")
    def fail(customer_id: str) -> None:
        raise error

    return app


def test_a_failed_request_is_logged_without_the_message_or_the_path(lines: Lines) -> None:
    email = f"{unique('eve')}@example.com"
    app = app_failing_with(RuntimeError(f"could not handle {email}"))
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get(f"/v1/customers/{email}")
    assert response.status_code == 500
    assert email not in response.text
    server = [line for line in lines.lines if '"logger":"returnstack.' in line]
    assert [orjson.loads(line)["event"] for line in server] == ["request.failed", "http.request"]
    failed, access = (orjson.loads(line) for line in server)
    assert failed["error_type"] == "RuntimeError"
    assert "fail" in failed["traceback"]
    assert access["route"] == "/v1/customers/{customer_id}"
    assert all(email not in line for line in server)


def test_a_value_the_database_refuses_is_logged_without_it(lines: Lines) -> None:
    email = f"{unique('fay')}@example.com"
    refused = DataError(
        "INSERT INTO customers (tenant_id, id, email) VALUES (%(t)s, %(i)s, %(e)s)",
        {"t": "ten_1", "i": "c1", "e": email},
        Exception(f'value too long for type character varying(254): "{email}"'),
    )
    with TestClient(app_failing_with(refused), raise_server_exceptions=False) as client:
        response = client.get("/v1/customers/c1")
    assert response.status_code == 400
    warning = [orjson.loads(line) for line in lines.lines if "request.data_error" in line]
    assert len(warning) == 1
    assert warning[0]["statement"] == "INSERT INTO customers"
    assert all(email not in line for line in lines.lines)


@pytest.mark.parametrize(
    ("statement", "kind"),
    [
        ("INSERT INTO orders (a) VALUES (?)", "INSERT INTO orders"),
        ("UPDATE returns SET note=? WHERE id = ?", "UPDATE returns"),
        ("DELETE FROM customers WHERE id = 'x@y.z'", "DELETE FROM customers"),
        ("SELECT customers.id FROM customers WHERE email = 'x@y.z'", "SELECT FROM customers"),
        ("\n  select 1", "SELECT"),
        ("BEGIN IMMEDIATE", "BEGIN"),
        ("", None),
    ],
)
def test_statement_kinds_name_no_values(statement: str, kind: str | None) -> None:
    assert statement_kind(statement) == kind
