"""The dispatcher running for real: inside the app (as `serve` runs it), several at once on
PostgreSQL, and taking over the claims of one that died."""

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select

from returnstack.app import create_app
from returnstack.config import Settings
from returnstack.models import WebhookDelivery, WebhookSubscription
from returnstack.outbox.service import DomainEvent, record
from returnstack.webhooks import repository
from returnstack.webhooks.dispatcher import Dispatcher
from returnstack.webhooks.service import utcnow
from tests.conftest import DatabaseFixture, TenantFixture
from tests.factories import batch, purchase, unique
from tests.webhooks.receiver import Receiver, running_receiver
from tests.webhooks.test_webhooks import Clock, own_attempts

WAIT = 60.0  # seconds a test waits for deliveries before it fails (not a speed assertion)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


@pytest.fixture
def settings(database: DatabaseFixture) -> Settings:
    return database.settings.model_copy(
        update={
            "webhooks_allow_private": True,
            "webhooks_timeout": 5.0,
            "webhooks_poll_interval": 0.05,
        }
    )


@pytest.fixture
def cleanup(database: DatabaseFixture, tenant: TenantFixture) -> Iterator[None]:
    yield
    with database.db.transaction() as session:
        session.execute(delete(WebhookDelivery).where(WebhookDelivery.tenant_id == tenant.id))
        session.execute(
            delete(WebhookSubscription).where(WebhookSubscription.tenant_id == tenant.id)
        )


def subscribe(client: TestClient, tenant: TenantFixture, url: str) -> dict[str, Any]:
    response = client.post(
        "/v1/webhooks", json={"url": url, "events": ["*"]}, headers=tenant.headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


def test_the_server_delivers_in_the_background_and_stops_cleanly(
    database: DatabaseFixture,
    settings: Settings,
    tenant: TenantFixture,
    receiver: Receiver,
    cleanup: None,
) -> None:
    app = create_app(
        settings.model_copy(update={"webhooks_dispatcher": True}), database=database.db
    )
    with TestClient(app) as client:
        subscribe(client, tenant, receiver.url)
        sales = [purchase() for _ in range(3)]
        response = client.post("/v1/events", json=batch(*sales), headers=tenant.headers)
        assert response.status_code == 200, response.text
        wait_for(lambda: len(receiver.received) >= 3, "three deliveries")
        order_ids = sorted(r.json["data"]["order_id"] for r in receiver.received)
        assert order_ids == sorted(s["order_id"] for s in sales)
    # The app has shut down: its dispatcher process ended cleanly (having released, on
    # SQLite, its lease).
    assert app.state.dispatcher.process.poll() == 0
    with database.db.transaction(write=False) as session:
        assert not repository.lease_held_by_another(session, holder="another", now=utcnow())


def test_a_dispatcher_process_that_dies_is_replaced_by_the_server(
    database: DatabaseFixture,
    settings: Settings,
    tenant: TenantFixture,
    receiver: Receiver,
    cleanup: None,
) -> None:
    app = create_app(
        settings.model_copy(update={"webhooks_dispatcher": True}), database=database.db
    )
    with TestClient(app) as client:
        subscribe(client, tenant, receiver.url)
        first = app.state.dispatcher.process
        first.kill()  # on SQLite it held the lease: its successor takes over when it lapses
        first.wait()
        wait_for(lambda: app.state.dispatcher.process is not first, "another dispatcher")
        sale = purchase()
        response = client.post("/v1/events", json=batch(sale), headers=tenant.headers)
        assert response.status_code == 200, response.text
        wait_for(lambda: len(receiver.received) >= 1, "the delivery")
        assert receiver.received[0].json["data"]["order_id"] == sale["order_id"]


def test_a_dispatcher_that_dies_holding_claims_loses_them_when_the_lease_ends(
    database: DatabaseFixture,
    settings: Settings,
    tenant: TenantFixture,
    receiver: Receiver,
    cleanup: None,
) -> None:
    clock = Clock()
    dead = Dispatcher(database.db, settings, clock=clock)
    alive = Dispatcher(database.db, settings, clock=clock)
    try:
        with TestClient(create_app(settings, database=database.db)) as client:
            subscribe(client, tenant, receiver.url)
        with database.db.transaction() as session:
            [message] = record(
                session,
                tenant_id=tenant.id,
                events=[DomainEvent(type="return.updated", data={"id": unique("ret")})],
            )
        assert dead.hold_lease()
        dead.publish()
        [job] = dead.claim(10)  # ... and dies before sending it
        dead._lease_until = None  # (nor does it renew its dispatcher lease)
        clock.advance(timedelta(seconds=11))
        assert own_attempts(alive, database, tenant) == 0  # the claim is still leased
        clock.advance(dead.lease)
        assert own_attempts(alive, database, tenant) == 1
        assert receiver.ids() == [message]
        # Were the dead one to come back and report, its stale outcome would be ignored.
        dead.record([dead.send(job)])
        with database.db.transaction(write=False) as session:
            rows = list(
                session.scalars(
                    select(WebhookDelivery).where(WebhookDelivery.tenant_id == tenant.id)
                )
            )
        assert [(r.attempt, r.status) for r in rows] == [(1, "succeeded")]
    finally:
        for dispatcher in (dead, alive):
            dispatcher.release_lease()
            dispatcher.close()


def test_two_dispatchers_on_postgresql_deliver_each_message_once_in_order(
    database: DatabaseFixture,
    settings: Settings,
    tenant: TenantFixture,
    receiver: Receiver,
    cleanup: None,
) -> None:
    if database.backend != "postgresql":
        pytest.skip("SQLite runs one dispatcher at a time")
    with TestClient(create_app(settings, database=database.db)) as client:
        subscribe(client, tenant, receiver.url)
    stop = threading.Event()
    dispatchers = [Dispatcher(database.db, settings) for _ in range(2)]
    threads = [threading.Thread(target=d.run, args=(stop,), daemon=True) for d in dispatchers]
    for thread in threads:
        thread.start()
    expected: dict[str, list[str]] = {}
    try:
        returns = [unique("ret") for _ in range(10)]
        for round_ in range(10):
            with database.db.transaction() as session:
                ids = record(
                    session,
                    tenant_id=tenant.id,
                    events=[
                        DomainEvent(type="return.updated", data={"id": r, "round": round_})
                        for r in returns
                    ],
                )
            for return_id, message_id in zip(returns, ids, strict=True):
                expected.setdefault(return_id, []).append(message_id)
        wait_for(lambda: len(receiver.received) >= 100, "100 deliveries")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        for dispatcher in dispatchers:
            dispatcher.close()
    counts = Counter(receiver.ids())
    assert set(counts.values()) == {1}
    assert len(counts) == 100
    arrived: dict[str, list[str]] = {}
    for request in receiver.received:
        arrived.setdefault(request.json["data"]["id"], []).append(request.id)
    assert arrived == expected
