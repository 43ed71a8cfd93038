"""The app `returnstack serve` runs (app.serve_app): the same app, its start-up objects out of
the garbage collector's reach."""

import gc

from fastapi.testclient import TestClient

from returnstack.app import serve_app
from tests.conftest import DatabaseFixture, TenantFixture
from tests.factories import batch, purchase


def test_the_served_app_freezes_its_start_up_objects_and_serves(
    database: DatabaseFixture, tenant: TenantFixture
) -> None:
    gc.unfreeze()
    try:
        app = serve_app(database.settings, database=database.db)
        assert gc.get_freeze_count() > 10_000  # modules, routes, models: all frozen
        with TestClient(app) as client:
            answer = client.post("/v1/events", json=batch(purchase()), headers=tenant.headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["accepted"] == 1
    finally:
        gc.unfreeze()
