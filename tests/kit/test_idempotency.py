"""Idempotency-Key on POST /v1/events (API.md 1; docs/api.md "Idempotency-Key")."""

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select, update

from returnstack.models import Event, IdempotencyKey, OutboxEvent, Return
from tests.conftest import DatabaseFixture, TenantFixture
from tests.factories import batch, item, purchase, return_event, unique


def post(
    client: TestClient,
    tenant: TenantFixture,
    body: dict[str, Any],
    key: str | None,
    params: dict[str, str] | None = None,
) -> Response:
    headers = dict(tenant.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post(
        "/v1/events",
        content=orjson.dumps(body),
        headers={**headers, "Content-Type": "application/json"},
        params=params,
    )


def counts(database: DatabaseFixture, tenant_id: str) -> tuple[int, int, int]:
    """(events, returns, outbox rows) of the tenant."""
    with database.db.transaction(write=False) as session:
        return tuple(  # type: ignore[return-value]
            int(
                session.scalar(
                    select(func.count()).select_from(model).where(model.tenant_id == tenant_id)
                )
                or 0
            )
            for model in (Event, Return, OutboxEvent)
        )


def test_same_key_and_body_replays_the_first_response_without_writing_again(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    sale = purchase()
    body = batch(sale, return_event(order_id=sale["order_id"]))
    key = unique("idem")
    first = post(client, tenant, body, key)
    assert first.status_code == 200, first.text
    assert first.json()["accepted"] == 2
    after_first = counts(database, tenant.id)
    assert after_first == (2, 1, 2)

    for _ in range(2):
        again = post(client, tenant, body, key)
        assert again.status_code == first.status_code
        assert again.content == first.content  # byte for byte, still "accepted": 2
        assert counts(database, tenant.id) == after_first

    # Without the key, the same body is a plain retry: all duplicates, nothing written.
    plain = post(client, tenant, body, None)
    assert plain.json()["duplicates"] == 2
    assert counts(database, tenant.id) == after_first


def test_replay_is_the_first_response_even_after_later_changes(
    client: TestClient, tenant: TenantFixture
) -> None:
    sale = purchase(items=[item(line_id="1", quantity=2)])
    key = unique("idem")
    first = post(client, tenant, batch(sale), key)
    assert first.status_code == 200, first.text
    # The event is sent again without the key: a duplicate. The keyed replay still says
    # what the first attempt did.
    assert post(client, tenant, batch(sale), None).json()["duplicates"] == 1
    replay = post(client, tenant, batch(sale), key)
    assert replay.content == first.content
    assert replay.json()["accepted"] == 1


def test_same_key_with_a_different_body_is_409(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    key = unique("idem")
    first = post(client, tenant, batch(purchase()), key)
    assert first.status_code == 200, first.text
    before = counts(database, tenant.id)

    other = purchase()
    response = post(client, tenant, batch(other), key)
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["type"] == "conflict"
    assert error["message"]
    assert counts(database, tenant.id) == before
    assert client.get(f"/v1/orders/{other['order_id']}", headers=tenant.headers).status_code == 404

    # The same body with other query parameters is another request too.
    response = post(client, tenant, batch(purchase()), key, params={"partial": "true"})
    assert response.status_code == 409, response.text

    # The key still replays the first response.
    assert post(client, tenant, batch(purchase()), key).status_code == 409


def test_keys_are_per_tenant(
    client: TestClient,
    tenant: TenantFixture,
    other_tenant: TenantFixture,
    database: DatabaseFixture,
) -> None:
    key = unique("idem")
    body = batch(purchase())
    first = post(client, tenant, body, key)
    assert first.status_code == 200, first.text
    # The other tenant's first request with that key does its own work (no replay of ours).
    second = post(client, other_tenant, body, key)
    assert second.status_code == 200, second.text
    assert second.json()["accepted"] == 1
    assert second.json()["ids"] != first.json()["ids"]
    assert counts(database, other_tenant.id)[0] == 1
    # From then on the key is theirs too: a different body is a conflict for them ...
    assert post(client, other_tenant, batch(purchase()), key).status_code == 409
    # ... and each tenant's replay is its own first response.
    assert post(client, tenant, body, key).content == first.content
    assert post(client, other_tenant, body, key).content == second.content


def test_a_rejected_request_does_not_use_up_the_key(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    key = unique("idem")
    bad = batch(purchase(items=[item(quantity=0)]))
    rejected = post(client, tenant, bad, key)
    assert rejected.status_code == 422, rejected.text
    # Retrying the bad request re-validates and answers the same way.
    assert post(client, tenant, bad, key).status_code == 422

    fixed = batch(purchase())
    response = post(client, tenant, fixed, key)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1
    assert counts(database, tenant.id)[0] == 1
    assert post(client, tenant, fixed, key).content == response.content


def test_a_request_refused_for_its_key_does_not_use_up_the_idempotency_key(
    client: TestClient, tenant: TenantFixture
) -> None:
    key = unique("idem")
    body = batch(purchase())
    refused = client.post(
        "/v1/events",
        content=orjson.dumps(body),
        headers={"Authorization": "Bearer sk_nope", "Idempotency-Key": key},
    )
    assert refused.status_code == 401
    response = post(client, tenant, body, key)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1


def test_an_overlong_key_is_400_and_writes_nothing(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    response = post(client, tenant, batch(purchase()), "k" * 256)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    assert [d["path"] for d in error["details"]] == ["Idempotency-Key"]
    assert counts(database, tenant.id) == (0, 0, 0)
    assert post(client, tenant, batch(purchase()), "k" * 255).status_code == 200


def test_concurrent_requests_with_one_key_do_the_work_once(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    body = batch(*[purchase() for _ in range(20)])
    key = unique("idem")
    responses: list[Response] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def send() -> None:
        start.wait()
        response = post(client, tenant, body, key)
        with lock:
            responses.append(response)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 409}, [r.text for r in responses]
    # A concurrent twin either replays or is told to retry; the work happened once.
    assert counts(database, tenant.id)[0] == 20
    final = post(client, tenant, body, key)
    assert final.status_code == 200
    assert final.json()["accepted"] == 20
    for response in responses:
        if response.status_code == 200:
            assert response.content == final.content
        else:
            assert response.json()["error"]["type"] == "conflict"


def test_a_key_expires_after_24_hours(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    key = unique("idem")
    first = post(client, tenant, batch(purchase()), key)
    assert first.status_code == 200, first.text
    # Age the stored response past its 24 h life.
    with database.db.transaction() as session:
        session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.tenant_id == tenant.id, IdempotencyKey.key == key)
            .values(created_at=datetime.now(UTC) - timedelta(hours=24, seconds=1))
        )

    # The key is free again: another body is not a conflict but new work, and is remembered.
    second_body = batch(purchase())
    second = post(client, tenant, second_body, key)
    assert second.status_code == 200, second.text
    assert second.json()["accepted"] == 1
    assert "Idempotent-Replayed" not in second.headers
    replay = post(client, tenant, second_body, key)
    assert replay.content == second.content
    assert replay.headers["Idempotent-Replayed"] == "true"


def test_a_key_just_under_24_hours_still_replays(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    key = unique("idem")
    body = batch(purchase())
    first = post(client, tenant, body, key)
    with database.db.transaction() as session:
        session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.tenant_id == tenant.id, IdempotencyKey.key == key)
            .values(created_at=datetime.now(UTC) - timedelta(hours=23, minutes=59))
        )

    again = post(client, tenant, body, key)
    other = post(client, tenant, batch(purchase()), key)

    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 409, other.text
