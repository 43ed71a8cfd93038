"""Every storage test runs twice: on a real SQLite file and on a real PostgreSQL database,
both built by the Alembic migrations. Each test gets its own tenant, so tests share no data
(and every test also checks, in passing, that tenants do not see each other)."""

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import settings as hypothesis_settings

from returnstack.app import create_app
from returnstack.config import Settings
from returnstack.kit import migrate
from returnstack.kit.db import Database
from returnstack.tenants.service import create_key, create_tenant

POSTGRES_URL = os.environ.get(
    "RETURNSTACK_TEST_POSTGRES_URL", "postgresql+psycopg://127.0.0.1:5432/test"
)
BACKENDS = ["sqlite", "postgresql"]

# Under CI, property tests are derandomised (a run is reproducible and a failure is seen
# again by re-running) and print the failing example's blob for @reproduce_failure.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True, database=None)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _postgres_reachable() -> str | None:
    try:
        psycopg.connect(_libpq(POSTGRES_URL), connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        return str(exc).strip().splitlines()[0]
    return None


@dataclass
class DatabaseFixture:
    backend: str
    url: str
    settings: Settings
    db: Database


def _settings(url: str, tmp: Path) -> Settings:
    return Settings(
        database_url=url,
        data_dir=tmp / "data",
        rate_limit_per_second=0,
        log_requests=False,
        auto_migrate=False,
        db_pool_size=5,
        # Admission control stays on, with room for a loaded machine's slow thread wake-ups
        # (tests/kit/test_admission.py sets its own limit and clock).
        admission_max_wait=60,
        # Webhook tests run the dispatcher step by step (tests/webhooks/).
        webhooks_dispatcher=False,
    )


@pytest.fixture(scope="session")
def postgres_server_url(worker_id: str) -> Iterator[str]:
    """A fresh database on the PostgreSQL server for this test process, dropped afterwards."""
    problem = _postgres_reachable()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and PostgreSQL is unreachable at {POSTGRES_URL}: {problem}")
        pytest.skip(f"PostgreSQL unreachable at {POSTGRES_URL}: {problem}")
    name = f"returnstack_test_{worker_id}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_libpq(POSTGRES_URL), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = POSTGRES_URL.rpartition("/")
    yield f"{base}/{name}"
    with psycopg.connect(_libpq(POSTGRES_URL), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=BACKENDS)
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DatabaseFixture]:
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'returnstack.db'}"
    else:
        url = request.getfixturevalue("postgres_server_url")
    settings = _settings(url, tmp)
    db = Database(settings)
    migrate.upgrade(db.engine)
    yield DatabaseFixture(request.param, url, settings, db)
    db.dispose()


@pytest.fixture(scope="session")
def app(database: DatabaseFixture) -> FastAPI:
    return create_app(database.settings, database=database.db)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@dataclass
class TenantFixture:
    id: str
    name: str
    default_currency: str
    signing_secret: str
    secret_key: str
    secret_key_id: str
    publishable_key: str
    publishable_key_id: str

    @property
    def headers(self) -> dict[str, str]:
        """Secret-key headers."""
        return {"Authorization": f"Bearer {self.secret_key}"}

    @property
    def publishable_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.publishable_key}"}


def make_tenant(db: Database, *, currency: str = "EUR") -> TenantFixture:
    with db.transaction() as session:
        tenant = create_tenant(
            session, name=f"t-{uuid.uuid4().hex[:12]}", default_currency=currency
        )
        secret = create_key(session, tenant=tenant, kind="secret")
        publishable = create_key(session, tenant=tenant, kind="publishable")
    return TenantFixture(
        id=tenant.id,
        name=tenant.name,
        default_currency=tenant.default_currency,
        signing_secret=tenant.signing_secret,
        secret_key=secret.key,
        secret_key_id=secret.id,
        publishable_key=publishable.key,
        publishable_key_id=publishable.id,
    )


@pytest.fixture
def tenant(database: DatabaseFixture) -> TenantFixture:
    return make_tenant(database.db)


@pytest.fixture
def other_tenant(database: DatabaseFixture) -> TenantFixture:
    return make_tenant(database.db)
