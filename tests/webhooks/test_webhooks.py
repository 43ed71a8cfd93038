"""Webhooks (API.md 7 and 11): subscriptions, signed deliveries to a real receiver on
loopback, retries on an injected clock, ordering per resource, disabling, rotation,
recovery, the SSRF guard and the message feed. Every test runs on SQLite and PostgreSQL."""

import random
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select, update
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from returnstack.app import create_app
from returnstack.config import Settings
from returnstack.models import OutboxEvent, WebhookDelivery, WebhookSubscription
from returnstack.outbox.service import DomainEvent, record
from returnstack.webhooks.dispatcher import RETRY_DELAYS, Dispatcher
from returnstack.webhooks.network import check_url
from returnstack.webhooks.service import publish
from tests.conftest import DatabaseFixture, TenantFixture
from tests.factories import batch, purchase, unique
from tests.webhooks.receiver import Receiver, running_receiver


class Clock:
    """The dispatcher's time: the real time, moved ahead by the test; or, once frozen, a
    time that moves only when the test moves it (so a check a fraction of a delay before a
    due time holds however slow the machine is)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)
        self.frozen: datetime | None = None

    @property
    def now(self) -> datetime:
        return (datetime.now(UTC) if self.frozen is None else self.frozen) + self.offset

    def freeze(self) -> None:
        self.frozen = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.offset += delta


@pytest.fixture(scope="module")
def private_settings(database: DatabaseFixture) -> Settings:
    return database.settings.model_copy(update={"webhooks_allow_private": True})


@pytest.fixture(scope="module")
def private_app(database: DatabaseFixture, private_settings: Settings) -> FastAPI:
    """The app with RETURNSTACK_WEBHOOKS_ALLOW_PRIVATE=true, to subscribe loopback URLs."""
    return create_app(private_settings, database=database.db)


@pytest.fixture
def api(private_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(private_app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def dispatcher(
    database: DatabaseFixture, private_settings: Settings, clock: Clock, tenant: TenantFixture
) -> Iterator[Dispatcher]:
    settings = private_settings.model_copy(update={"webhooks_timeout": 5.0})
    running = Dispatcher(database.db, settings, clock=clock, rng=random.Random(7))
    yield running
    running.release_lease()
    running.close()
    with database.db.transaction() as session:  # leave nothing queued for later tests
        session.execute(delete(WebhookDelivery).where(WebhookDelivery.tenant_id == tenant.id))
        session.execute(
            delete(WebhookSubscription).where(WebhookSubscription.tenant_id == tenant.id)
        )


def subscribe(
    api: TestClient, tenant: TenantFixture, url: str, events: list[str] | None = None
) -> dict[str, Any]:
    response = api.post(
        "/v1/webhooks", json={"url": url, "events": events or ["*"]}, headers=tenant.headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def buy(api: TestClient, tenant: TenantFixture, **fields: Any) -> dict[str, Any]:
    sale = purchase(**fields)
    response = api.post("/v1/events", json=batch(sale), headers=tenant.headers)
    assert response.status_code == 200, response.text
    return sale


def emit(database: DatabaseFixture, tenant: TenantFixture, *events: DomainEvent) -> list[str]:
    with database.db.transaction() as session:
        return record(session, tenant_id=tenant.id, events=events)


def return_event(return_id: str, kind: str = "return.updated", **data: Any) -> DomainEvent:
    return DomainEvent(type=kind, data={"id": return_id, **data})


def own_attempts(dispatcher: Dispatcher, database: DatabaseFixture, tenant: TenantFixture) -> int:
    """Run the dispatcher once; how many attempts it made for this test's tenant. The
    database is shared by every test of the process, so the same run may make the due
    attempts of other tests' tenants too: those are not counted."""

    def attempted() -> int:
        with database.db.transaction(write=False) as session:
            count = session.scalar(
                select(func.count())
                .select_from(WebhookDelivery)
                .where(
                    WebhookDelivery.tenant_id == tenant.id,
                    WebhookDelivery.attempted_at.is_not(None),
                )
            )
        return int(count or 0)

    before = attempted()
    dispatcher.run_once()
    return attempted() - before


def deliveries(api: TestClient, tenant: TenantFixture, webhook_id: str) -> list[dict[str, Any]]:
    response = api.get(
        f"/v1/webhooks/{webhook_id}/deliveries", params={"limit": 200}, headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["data"]
    return rows


# --- subscriptions ---------------------------------------------------------------------------


def test_the_secret_is_shown_once_and_the_subscription_can_be_read_changed_and_deleted(
    api: TestClient, tenant: TenantFixture
) -> None:
    created = api.post(
        "/v1/webhooks",
        json={
            "url": "https://hooks.example.com/returns",
            "events": ["return.approved", "return.refunded", "return.approved"],
            "description": "ERP",
        },
        headers=tenant.headers,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["id"].startswith("whk_")
    assert body["secret"].startswith("whsec_")
    assert body["events"] == ["return.approved", "return.refunded"]
    assert body["enabled"] is True
    assert body["disabled_reason"] is None

    read = api.get(f"/v1/webhooks/{body['id']}", headers=tenant.headers)
    assert read.status_code == 200
    assert "secret" not in read.json()
    assert read.json()["url"] == "https://hooks.example.com/returns"

    listed = api.get("/v1/webhooks", headers=tenant.headers).json()
    assert [w["id"] for w in listed["data"]] == [body["id"]]
    assert "secret" not in listed["data"][0]

    patched = api.patch(
        f"/v1/webhooks/{body['id']}",
        json={"events": ["*"], "enabled": False},
        headers=tenant.headers,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["events"] == ["*"]
    assert patched.json()["enabled"] is False
    assert patched.json()["disabled_reason"] == "disabled by request"
    enabled = api.patch(
        f"/v1/webhooks/{body['id']}", json={"enabled": True}, headers=tenant.headers
    )
    assert enabled.json()["enabled"] is True
    assert enabled.json()["disabled_reason"] is None

    deleted = api.delete(f"/v1/webhooks/{body['id']}", headers=tenant.headers)
    assert deleted.status_code == 204
    assert api.get(f"/v1/webhooks/{body['id']}", headers=tenant.headers).status_code == 404


def test_lists_of_webhooks_and_deliveries_page_without_an_empty_last_page(
    api: TestClient, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    hooks = [subscribe(api, tenant, f"https://hooks.example.com/{n}")["id"] for n in range(4)]
    pages = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = api.get("/v1/webhooks", params=params, headers=tenant.headers).json()
        pages.append([hook["id"] for hook in page["data"]])
        if not (cursor := page["next_cursor"]):
            break
    assert pages == [hooks[::-1][:2], hooks[::-1][2:]]

    emit(database, tenant, *(return_event(unique("ret")) for _ in range(2)))
    with database.db.transaction() as session:
        publish(session, now=datetime.now(UTC))
    url = f"/v1/webhooks/{hooks[0]}/deliveries"
    full = api.get(url, params={"limit": 2}, headers=tenant.headers).json()
    assert len(full["data"]) == 2
    assert full["next_cursor"] is None
    first = api.get(url, params={"limit": 1}, headers=tenant.headers).json()
    rest = api.get(
        url, params={"limit": 1, "cursor": first["next_cursor"]}, headers=tenant.headers
    ).json()
    assert [d["id"] for d in first["data"] + rest["data"]] == [d["id"] for d in full["data"]]
    assert rest["next_cursor"] is None


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ({"url": "ftp://hooks.example.com/x", "events": ["*"]}, "url"),
        ({"url": "https://", "events": ["*"]}, "url"),
        ({"url": "https://example.com/" + "a" * 2000, "events": ["*"]}, "url"),
        ({"url": "https://example.com/x", "events": ["return.approved", "nope"]}, "events[1]"),
        ({"url": "https://example.com/x", "events": []}, "events"),
        ({"url": "https://example.com/x"}, "events"),
        ({"url": "https://example.com/x", "events": ["*"], "colour": "red"}, "colour"),
    ],
)
def test_bad_subscriptions_are_refused_naming_the_field(
    api: TestClient, tenant: TenantFixture, payload: dict[str, Any], path: str
) -> None:
    response = api.post("/v1/webhooks", json=payload, headers=tenant.headers)
    assert response.status_code == 422, response.text
    assert path in [d["path"] for d in response.json()["error"]["details"]]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:192.168.0.1]/hook",
    ],
)
def test_private_addresses_are_refused_without_the_setting(
    client: TestClient, tenant: TenantFixture, url: str
) -> None:
    response = client.post(
        "/v1/webhooks", json={"url": url, "events": ["*"]}, headers=tenant.headers
    )
    assert response.status_code == 422, response.text
    [detail] = response.json()["error"]["details"]
    assert detail["path"] == "url"
    assert "private" in detail["message"]


def test_a_publishable_key_may_not_use_webhooks_or_the_feed(
    api: TestClient, tenant: TenantFixture
) -> None:
    headers = tenant.publishable_headers
    assert (
        api.post(
            "/v1/webhooks", json={"url": "https://example.com/x", "events": ["*"]}, headers=headers
        ).status_code
        == 403
    )
    assert api.get("/v1/webhooks", headers=headers).status_code == 403
    assert api.get("/v1/messages", headers=headers).status_code == 403
    assert api.get("/v1/messages").status_code == 401


def test_another_tenants_subscription_is_not_found(
    api: TestClient, tenant: TenantFixture, other_tenant: TenantFixture, receiver: Receiver
) -> None:
    webhook = subscribe(api, tenant, receiver.url)
    other = other_tenant.headers
    base = f"/v1/webhooks/{webhook['id']}"
    assert api.get(base, headers=other).status_code == 404
    assert api.patch(base, json={"enabled": False}, headers=other).status_code == 404
    assert api.post(f"{base}/rotate-secret", headers=other).status_code == 404
    assert api.get(f"{base}/deliveries", headers=other).status_code == 404
    assert (
        api.post(
            f"{base}/recover", json={"since": "2026-01-01T00:00:00Z"}, headers=other
        ).status_code
        == 404
    )
    assert api.delete(base, headers=other).status_code == 404
    assert api.get("/v1/webhooks", headers=other).json()["data"] == []
    assert api.get(base, headers=tenant.headers).json()["enabled"] is True


# --- delivery --------------------------------------------------------------------------------


def test_a_committed_event_is_delivered_signed_with_the_event_id(
    api: TestClient,
    database: DatabaseFixture,
    tenant: TenantFixture,
    receiver: Receiver,
    dispatcher: Dispatcher,
) -> None:
    webhook = subscribe(api, tenant, receiver.url, ["purchase.recorded"])
    sale = buy(api, tenant)
    assert own_attempts(dispatcher, database, tenant) >= 1

    [request] = receiver.received
    payload = Webhook(webhook["secret"]).verify(request.body, request.headers)
    assert payload["id"] == request.headers["webhook-id"]
    assert payload["id"].startswith("msg_")
    assert payload["type"] == "purchase.recorded"
    assert payload["data"]["order_id"] == sale["order_id"]
    assert set(payload) == {"id", "type", "timestamp", "data", "changes"}
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43).verify(request.body, request.headers)

    [row] = deliveries(api, tenant, webhook["id"])
    assert row["status"] == "succeeded"
    assert row["event_id"] == payload["id"]
    assert row["event_type"] == "purchase.recorded"
    assert row["attempt"] == 1
    assert row["response_status"] == 200
    assert row["response_body"] == "ok"
    assert row["attempted_at"] is not None
    assert row["duration_ms"] >= 0

    # Nothing is sent twice, and other event types are not sent to this subscription.
    emit(database, tenant, return_event(unique("ret"), "return.approved"))
    dispatcher.run_once()
    assert len(receiver.received) == 1


def test_a_rolled_back_change_sends_nothing(
    api: TestClient,
    database: DatabaseFixture,
    tenant: TenantFixture,
    receiver: Receiver,
    dispatcher: Dispatcher,
) -> None:
    subscribe(api, tenant, receiver.url)

    class Boom(Exception):
        pass

    def record_then_fail() -> None:
        with database.db.transaction() as session:
            record(session, tenant_id=tenant.id, events=[return_event(unique("ret"))])
            session.flush()
            raise Boom

    with pytest.raises(Boom):
        record_then_fail()
    dispatcher.run_once()
    assert receiver.received == []


def test_failed_attempts_follow_the_retry_schedule_then_fail(
    api: TestClient,
    database: DatabaseFixture,
    tenant: TenantFixture,
    receiver: Receiver,
    dispatcher: Dispatcher,
    clock: Clock,
) -> None:
    webhook = subscribe(api, tenant, receiver.url)
    receiver.answer_with(500)
    buy(api, tenant)
    clock.freeze()  # after the purchase: its message is in the dispatcher's past
    assert own_attempts(dispatcher, database, tenant) == 1

    for step, delay in enumerate(RETRY_DELAYS):
        rows = deliveries(api, tenant, webhook["id"])
        assert len(rows) == step + 2  # the failed attempts and the pending next one
        pending, failed = rows[0], rows[1]
        assert pending["status"] == "pending"
        assert pending["attempt"] == step + 2
        assert failed["status"] == "failed"
        assert failed["response_status"] == 500
        assert failed["response_body"] == "answer 500"
        assert failed["next_attempt_at"] == pending["next_attempt_at"]
        waited = datetime.fromisoformat(pending["next_attempt_at"]) - datetime.fromisoformat(
            failed["attempted_at"]
        )
        assert delay * 0.8 <= waited <= delay * 1.2  # the schedule, with jitter
        # Not before it is due ...
        clock.advance(delay * 0.7)
        assert own_attempts(dispatcher, database, tenant) == 0
        # ... and then.
        clock.advance(delay * 0.55)
        assert own_attempts(dispatcher, database, tenant) == 1

    rows = deliveries(api, tenant, webhook["id"])
    assert len(rows) == 8
    assert {row["status"] for row in rows} == {"failed"}
    assert rows[0]["next_attempt_at"] is None
    assert len(set(receiver.ids())) == 1  # every attempt carried the same webhook-id
    clock.advance(timedelta(days=2))
    assert own_attempts(dispatcher, database, tenant) == 0


def test_retry_after_of_a_429_is_honoured(
    api: TestClient,
    database: DatabaseFixture,
    tenant: TenantFixture,
    receiver: Receiver,
    dispatcher: Dispatcher,
    clock: Clock,
) -> None:
    webhook = subscribe(api, tenant, receiver.url)
    receiver.answer_with(429, {"Retry-After": "3600"})
    buy(api, tenant)
    dispatcher.run_once()
    pending = deliveries(api, tenant, webhook["id"])[0]
    assert datetime.fromisoformat(pending["next_attempt_at"]) >= clock.now + timedelta(minutes=59)
    clock.advance(timedelta(minutes=10))
    assert own_attempts(dispatcher, database, tenant) == 0
    receiver.answer_with(200)
    clock.advance(timedelta(minutes=51))
    assert own_attempts(dispatcher, database, tenant) == 1
    assert deliveries(api, tenant, webhook["id"])[0]["status"] == "succeeded"


def test_a_410_disables_the_subscription_at_once(
    api: TestClient, tenant: TenantFixture, receiver: Receiver, dispatcher: Dispatcher, clock: Clock
) -> None:
    webhook = subscribe(api, tenant, receiver.url)
    receiver.answer_with(410)
    buy(api, tenant)
    dispatcher.run_once()
    read = api.get(f"/v1/webhooks/{webhook['id']}", headers=tenant.headers).json()
    assert read["enabled"] is False
    assert "410" in read["disabled_reason"]
    [row] = deliveries(api, tenant, webhook["id"])
    assert row["status"] == "failed"
    assert row["next_attempt_at"] is None

    buy(api, tenant)
    clock.advance(timedelta(hours=1))
    dispatcher.run_once()
    assert len(receiver.received) == 1


def test_five_days_of_failures_disable_the_subscription(
    api: TestClient,
    database: DatabaseFixture,
    tenant: TenantFixture,
    receiver: Receiver,
    dispatcher: Dispatcher,
    clock: Clock,
) -> None:
    webhook = subscribe(api, tenant, receiver.url)
    receiver.answer_with(503)
    for day in range(6):
        emit(database, tenant, return_event(unique("ret")))
        dispatcher.run_once()
        read = api.get(f"/v1/webhooks/{webhook['id']}", headers=tenant.headers).json()
        if day < 5:
            assert read["enabled"] is True, day
        clock.advance(timedelta(days=1))
    assert read["enabled"] is False
    assert "5 days" in read["disabled_reason"]
    statuses = {row["status"] for row in deliveries(api, tenant, webhook["id"])}
    assert statuses == {"failed"}  # the queued retries ended with it


def test_a_success_resets_the_failure_clock(
    api: TestClient,
    database: DatabaseFixture,
    tenant: TenantFixture,
    receiver: Receiver,
    dispatcher: Dispatcher,
    clock: Clock,
) -> None:
    webhook = subscribe(api, tenant, receiver.url)
    for day in range(8):
        receiver.answer_with(200 if day == 3 else 503)
        emit(database, tenant, return_event(unique("ret")))
        dispatcher.run_once()
        clock.advance(timedelta(days=1))
    read = api.get(f"/v1/webhooks/{webhook['id']}", headers=tenant.headers).json()
    assert read["enabled"] is True


def test_events_of_one_resource_arrive_in_order_others_are_not_held_up(
    api: TestClient,
    database: DatabaseFixture,
    tenant: TenantFixture,
    receiver: Receiver,
    dispatcher: Dispatcher,
    clock: Clock,
) -> None:
    subscribe(api, tenant, receiver.url)
    slow, other = unique("ret"), unique("ret")
    [first] = emit(database, tenant, return_event(slow, "return.requested"))
    [second] = emit(database, tenant, return_event(slow, "return.approved"))
    [third] = emit(database, tenant, return_event(other, "return.requested"))
    [fourth] = emit(database, tenant, return_event(slow, "return.received"))
    refused = {first}

    def answer(request: Any) -> tuple[int, dict[str, str], bytes]:
        return (500, {}, b"down") if request.id in refused else (200, {}, b"ok")

    receiver.answer = answer
    dispatcher.run_once()
    # The first event of `slow` failed: its later events wait; `other` went through.
    assert sorted(receiver.ids()) == sorted([first, third])  # sent at the same time
    refused.clear()
    clock.advance(timedelta(seconds=7))
    dispatcher.run_once()
    assert receiver.ids()[2:] == [first, second, fourth]


def test_rotation_signs_with_both_secrets_for_24_hours(
    api: TestClient,
    database: DatabaseFixture,
    tenant: TenantFixture,
    receiver: Receiver,
    dispatcher: Dispatcher,
    clock: Clock,
) -> None:
    webhook = subscribe(api, tenant, receiver.url)
    rotated = api.post(f"/v1/webhooks/{webhook['id']}/rotate-secret", headers=tenant.headers)
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret != webhook["secret"]
    assert rotated.json()["previous_secret_expires_at"] is not None

    emit(database, tenant, return_event(unique("ret")))
    dispatcher.run_once()
    [request] = receiver.received
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert request.headers["webhook-signature"].startswith(
        Webhook(new_secret)
        .sign(
            request.headers["webhook-id"],
            datetime.fromtimestamp(int(request.headers["webhook-timestamp"]), UTC),
            request.body,
        )
        .split(" ")[0]
    )
    Webhook(new_secret).verify(request.body, request.headers)
    Webhook(webhook["secret"]).verify(request.body, request.headers)

    # 24 h later only the new secret signs.
    clock.advance(timedelta(hours=24, seconds=1))
    with database.db.transaction() as session:
        row = session.scalar(
            select(WebhookSubscription).where(WebhookSubscription.id == webhook["id"])
        )
        assert row is not None
        row.previous_secret_expires_at = datetime.now(UTC) - timedelta(seconds=1)
    emit(database, tenant, return_event(unique("ret")))
    dispatcher.run_once()
    latest = receiver.received[-1]
    assert len(latest.headers["webhook-signature"].split(" ")) == 1
    Webhook(new_secret).verify(latest.body, latest.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(webhook["secret"]).verify(latest.body, latest.headers)


def test_idempotency_keys_replay_rotation_and_recover(
    api: TestClient, tenant: TenantFixture
) -> None:
    """API.md 1: `Idempotency-Key` on any POST. A retried rotation (its answer lost on the
    way) must show the secret it made, not rotate again and lose it."""
    webhook = subscribe(api, tenant, "https://example.com/hooks")
    path = f"/v1/webhooks/{webhook['id']}"
    headers = tenant.headers | {"Idempotency-Key": unique("rotate")}
    first = api.post(f"{path}/rotate-secret", headers=headers)
    again = api.post(f"{path}/rotate-secret", headers=headers)
    assert first.status_code == again.status_code == 200, again.text
    assert again.json()["secret"] == first.json()["secret"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert api.post(f"{path}/rotate-secret", headers=tenant.headers).json()["secret"] not in (
        first.json()["secret"],
        webhook["secret"],
    )

    since = {"since": (datetime.now(UTC) - timedelta(minutes=1)).isoformat()}
    headers = tenant.headers | {"Idempotency-Key": unique("recover")}
    first = api.post(f"{path}/recover", json=since, headers=headers)
    again = api.post(f"{path}/recover", json=since, headers=headers)
    assert first.status_code == again.status_code == 202, again.text
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    other = api.post(f"{path}/recover", json={"since": since["since"][:-6] + "Z"}, headers=headers)
    assert other.status_code == 409, other.text


def test_attempts_queued_before_their_subscription_was_disabled_end_unsent(
    api: TestClient,
    database: DatabaseFixture,
    tenant: TenantFixture,
    receiver: Receiver,
    dispatcher: Dispatcher,
    clock: Clock,
) -> None:
    # A disable that committed while these were being published (it failed the pending
    # attempts it saw, not these): the dispatcher finds the subscription disabled once it
    # has claimed them, and ends them unsent.
    webhook = subscribe(api, tenant, receiver.url)
    emit(database, tenant, return_event(unique("ret")), return_event(unique("ret")))
    with database.db.transaction() as session:
        publish(session, now=clock.now)
    with database.db.transaction() as session:
        session.execute(
            update(WebhookSubscription)
            .where(
                WebhookSubscription.tenant_id == tenant.id,
                WebhookSubscription.id == webhook["id"],
            )
            .values(enabled=False)
        )
    assert own_attempts(dispatcher, database, tenant) == 0
    rows = deliveries(api, tenant, webhook["id"])
    assert len(rows) == 2
    for row in rows:
        assert row["status"] == "failed"
        assert row["error"] == "not sent: the subscription is disabled"
        assert row["next_attempt_at"] is None
    assert receiver.ids() == []
    assert own_attempts(dispatcher, database, tenant) == 0  # nothing left to claim


def test_manual_retry_and_recover_send_again(
    api: TestClient,
    database: DatabaseFixture,
    tenant: TenantFixture,
    receiver: Receiver,
    dispatcher: Dispatcher,
    clock: Clock,
) -> None:
    webhook = subscribe(api, tenant, receiver.url)
    since = datetime.now(UTC) - timedelta(minutes=1)
    receiver.answer_with(410)  # the receiver goes away: the subscription is disabled
    ids = emit(database, tenant, return_event(unique("ret")), return_event(unique("ret")))
    dispatcher.run_once()
    assert (
        api.get(f"/v1/webhooks/{webhook['id']}", headers=tenant.headers).json()["enabled"] is False
    )
    recover_body = {"since": since.isoformat()}
    refused = api.post(
        f"/v1/webhooks/{webhook['id']}/recover", json=recover_body, headers=tenant.headers
    )
    assert refused.status_code == 409

    # It comes back; re-enabled, recover sends what it missed, oldest first.
    receiver.answer_with(200)
    api.patch(f"/v1/webhooks/{webhook['id']}", json={"enabled": True}, headers=tenant.headers)
    recovered = api.post(
        f"/v1/webhooks/{webhook['id']}/recover", json=recover_body, headers=tenant.headers
    )
    assert recovered.status_code == 202, recovered.text
    assert recovered.json() == {"queued": 2}
    assert own_attempts(dispatcher, database, tenant) == 2
    assert sorted(receiver.ids()[-2:]) == sorted(ids)
    # Everything succeeded now: recovering again queues nothing.
    again = api.post(
        f"/v1/webhooks/{webhook['id']}/recover", json=recover_body, headers=tenant.headers
    )
    assert again.json() == {"queued": 0}

    # A manual retry sends one message once more, as a new attempt.
    delivered = next(
        r for r in deliveries(api, tenant, webhook["id"]) if r["status"] == "succeeded"
    )
    retried = api.post(
        f"/v1/webhooks/{webhook['id']}/deliveries/{delivered['id']}/retry", headers=tenant.headers
    )
    assert retried.status_code == 202, retried.text
    assert retried.json()["status"] == "pending"
    assert retried.json()["event_id"] == delivered["event_id"]
    assert retried.json()["attempt"] == delivered["attempt"] + 1
    dispatcher.run_once()
    assert receiver.ids()[-1] == delivered["event_id"]

    bad = api.post(
        f"/v1/webhooks/{webhook['id']}/recover",
        json={"since": "2020-01-01T00:00:00Z"},
        headers=tenant.headers,
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0]["path"] == "since"
    missing = api.post(
        f"/v1/webhooks/{webhook['id']}/deliveries/del_nope/retry", headers=tenant.headers
    )
    assert missing.status_code == 404


def test_the_address_is_checked_again_when_delivering(
    api: TestClient,
    database: DatabaseFixture,
    tenant: TenantFixture,
    receiver: Receiver,
    clock: Clock,
) -> None:
    """Subscribed while private addresses were allowed; a dispatcher that does not allow
    them refuses to connect (the check is on the address it would connect to)."""
    port = receiver.url.split(":")[2].split("/")[0]
    webhook = subscribe(api, tenant, f"http://localhost:{port}/hook")
    strict = Dispatcher(database.db, database.settings, clock=clock)
    try:
        emit(database, tenant, return_event(unique("ret")))
        strict.run_once()
    finally:
        strict.release_lease()
        strict.close()
    assert receiver.received == []
    [failed, _pending] = sorted(
        deliveries(api, tenant, webhook["id"]), key=lambda row: row["attempt"]
    )
    assert failed["status"] == "failed"
    assert "private" in failed["error"]
    with database.db.transaction() as session:
        session.execute(delete(WebhookDelivery).where(WebhookDelivery.tenant_id == tenant.id))
        session.execute(
            delete(WebhookSubscription).where(WebhookSubscription.tenant_id == tenant.id)
        )


def test_a_name_rebound_to_a_private_address_is_refused_when_delivering(
    api: TestClient,
    database: DatabaseFixture,
    tenant: TenantFixture,
    receiver: Receiver,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS rebinding: a name that resolved to a public address when it was subscribed
    resolves to loopback when a delivery is made. The dispatcher connects only to an
    address it has just checked, so it refuses, and nothing reaches the receiver."""
    port = int(receiver.url.split(":")[2].split("/")[0])
    answers = {"rebound.example": "93.184.216.34"}
    system_resolver = socket.getaddrinfo

    def resolver(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]
        return system_resolver(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    url = f"http://rebound.example:{port}/hook"
    assert check_url(url, allow_private=False) is None  # public when subscribed
    webhook = subscribe(api, tenant, url)
    answers["rebound.example"] = "127.0.0.1"  # ... and loopback by the time of delivery
    strict = Dispatcher(database.db, database.settings, clock=clock)
    try:
        emit(database, tenant, return_event(unique("ret")))
        strict.run_once()
    finally:
        strict.release_lease()
        strict.close()
    assert receiver.received == []
    failed = min(deliveries(api, tenant, webhook["id"]), key=lambda row: row["attempt"])
    assert failed["status"] == "failed"
    assert "private" in failed["error"]
    with database.db.transaction() as session:
        session.execute(delete(WebhookDelivery).where(WebhookDelivery.tenant_id == tenant.id))
        session.execute(
            delete(WebhookSubscription).where(WebhookSubscription.tenant_id == tenant.id)
        )


def test_a_broken_receiver_does_not_stop_the_others(
    api: TestClient, tenant: TenantFixture, receiver: Receiver, dispatcher: Dispatcher
) -> None:
    closed = Receiver()  # never started: connections are refused
    closed.server.server_close()
    broken = subscribe(api, tenant, closed.url)
    working = subscribe(api, tenant, receiver.url)
    buy(api, tenant)
    dispatcher.run_once()
    assert len(receiver.received) == 1
    [failed, pending] = sorted(
        deliveries(api, tenant, broken["id"]), key=lambda row: row["attempt"]
    )
    assert failed["status"] == "failed"
    assert failed["response_status"] is None
    assert failed["error"]
    assert pending["status"] == "pending"
    assert deliveries(api, tenant, working["id"])[0]["status"] == "succeeded"


def test_only_one_dispatcher_runs_on_sqlite(
    database: DatabaseFixture,
    private_settings: Settings,
    api: TestClient,
    tenant: TenantFixture,
    receiver: Receiver,
    dispatcher: Dispatcher,
    clock: Clock,
) -> None:
    if database.backend != "sqlite":
        pytest.skip("PostgreSQL runs any number of dispatchers")
    subscribe(api, tenant, receiver.url)
    assert dispatcher.hold_lease()
    second = Dispatcher(database.db, private_settings, clock=clock)
    try:
        buy(api, tenant)
        assert own_attempts(second, database, tenant) == 0
        assert receiver.received == []
        # The first one dies without releasing: its lease lapses, then the second runs.
        clock.advance(timedelta(seconds=11))
        assert own_attempts(second, database, tenant) == 1
        assert len(receiver.received) == 1
        assert not dispatcher.hold_lease()
    finally:
        second.release_lease()
        second.close()


# --- the message feed ------------------------------------------------------------------------


def test_the_feed_lists_messages_in_order_and_resumes_after_an_id(
    api: TestClient, database: DatabaseFixture, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    ids = []
    for _ in range(5):
        ids += emit(database, tenant, return_event(unique("ret"), "return.approved"))
    emit(database, other_tenant, return_event(unique("ret")))
    buy(api, tenant)

    page = api.get("/v1/messages", params={"limit": 3}, headers=tenant.headers)
    assert page.status_code == 200, page.text
    first = page.json()
    assert [m["id"] for m in first["data"]] == ids[:3]
    assert first["next_cursor"] == ids[2]
    message = first["data"][0]
    assert set(message) == {"id", "type", "timestamp", "data", "changes"}
    assert message["type"] == "return.approved"

    rest = api.get("/v1/messages", params={"after": ids[2]}, headers=tenant.headers).json()
    assert [m["id"] for m in rest["data"]][:2] == ids[3:]
    assert [m["type"] for m in rest["data"]] == ["return.approved"] * 2 + ["purchase.recorded"]
    assert rest["next_cursor"] is None

    typed = api.get(
        "/v1/messages", params={"type": "purchase.recorded"}, headers=tenant.headers
    ).json()
    assert [m["type"] for m in typed["data"]] == ["purchase.recorded"]
    # Several types: comma separated, or the parameter repeated (as `status` on returns).
    for params in (
        {"type": "return.approved,purchase.recorded"},
        [("type", "return.approved"), ("type", "purchase.recorded")],
    ):
        both = api.get("/v1/messages", params=params, headers=tenant.headers).json()
        assert len(both["data"]) == 6, params

    # Another tenant sees none of these, and may not resume from them.
    theirs = api.get("/v1/messages", headers=other_tenant.headers).json()["data"]
    assert len(theirs) == 1
    assert theirs[0]["id"] not in ids
    refused = api.get("/v1/messages", params={"after": ids[0]}, headers=other_tenant.headers)
    assert refused.status_code == 400
    assert refused.json()["error"]["details"][0]["path"] == "after"
    bad_type = api.get("/v1/messages", params={"type": "nope"}, headers=tenant.headers)
    assert bad_type.status_code == 400
    assert api.get("/v1/messages", params={"limit": 0}, headers=tenant.headers).status_code == 400


def test_the_feed_never_skips_a_transaction_that_commits_late(
    api: TestClient, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    """Two transactions: the first to begin (and to write its event) commits last. A
    reader polling all along sees both, once each."""
    if database.backend != "postgresql":
        pytest.skip("SQLite runs one writer at a time: transactions cannot interleave")
    seen: list[str] = []

    def poll() -> None:
        after = seen[-1] if seen else None
        params = {"after": after} if after else {}
        page = api.get("/v1/messages", params=params, headers=tenant.headers)
        assert page.status_code == 200, page.text
        seen.extend(m["id"] for m in page.json()["data"])

    slow = database.db.session(write=True)
    try:
        [late] = record(slow, tenant_id=tenant.id, events=[return_event(unique("ret"))])
        slow.flush()  # written (earlier created_at and id), not committed
        [early] = emit(database, tenant, return_event(unique("ret")))
        poll()
        assert seen == [early]
        slow.commit()
    finally:
        slow.close()
    poll()
    poll()
    assert seen == [early, late]


def test_messages_older_than_the_retention_are_pruned(
    database: DatabaseFixture,
    private_settings: Settings,
    tenant: TenantFixture,
    clock: Clock,
    api: TestClient,
) -> None:
    [old] = emit(database, tenant, return_event(unique("ret")))
    pruner = Dispatcher(database.db, private_settings, clock=clock)
    try:
        pruner.run_once()
        pruner.prune()
        with database.db.transaction(write=False) as session:
            assert session.get(OutboxEvent, (tenant.id, old)) is not None
        clock.advance(timedelta(days=31))
        pruner._next_prune = None
        pruner.prune()
    finally:
        pruner.release_lease()
        pruner.close()
    with database.db.transaction(write=False) as session:
        assert session.get(OutboxEvent, (tenant.id, old)) is None


def test_an_erased_customers_data_never_goes_out_afterwards(
    api: TestClient,
    database: DatabaseFixture,
    tenant: TenantFixture,
    receiver: Receiver,
    dispatcher: Dispatcher,
    clock: Clock,
) -> None:
    """Attempts read the body from the outbox when they are made: a retry after the
    customer's erasure sends the scrubbed event."""
    subscribe(api, tenant, receiver.url, ["purchase.recorded"])
    customer_id, email = unique("cust"), f"{unique('ann')}@example.com"
    receiver.answer_with(503)
    buy(api, tenant, customer={"id": customer_id, "email": email})
    dispatcher.run_once()
    assert customer_id.encode() in receiver.received[0].body

    erased = api.delete(f"/v1/customers/{customer_id}", headers=tenant.headers)
    assert erased.status_code == 204, erased.text
    receiver.answer_with(200)
    clock.advance(timedelta(seconds=7))
    assert own_attempts(dispatcher, database, tenant) == 1
    retry = receiver.received[-1]
    assert retry.id == receiver.received[0].id
    assert customer_id.encode() not in retry.body
    assert email.encode() not in retry.body
    feed = api.get("/v1/messages", headers=tenant.headers).json()["data"]
    assert customer_id not in str(feed)


def test_erasure_drops_a_receivers_answer_that_echoed_the_person(
    api: TestClient, tenant: TenantFixture, receiver: Receiver, dispatcher: Dispatcher
) -> None:
    """Each attempt keeps a snippet of the answer; a receiver that echoes the body back
    would keep the person there, so erasure drops such snippets."""
    hook = subscribe(api, tenant, receiver.url, ["purchase.recorded"])
    customer_id, email = unique("cust"), f"{unique('ann')}@example.com"
    receiver.answer = lambda request: (400, {}, request.body)
    buy(api, tenant, customer={"id": customer_id, "email": email})
    dispatcher.run_once()
    deliveries = api.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=tenant.headers)
    assert email in deliveries.text  # the echo was kept

    erased = api.delete(f"/v1/customers/{customer_id}", headers=tenant.headers)

    assert erased.status_code == 204, erased.text
    deliveries = api.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=tenant.headers)
    assert deliveries.status_code == 200, deliveries.text
    assert email not in deliveries.text
    assert customer_id not in deliveries.text


def test_the_feed_lists_concurrent_commits_once_each_whatever_their_commit_order(
    api: TestClient, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    """Writers whose transactions record an event and then hold it open for a while, so
    they commit in another order than they wrote; a reader polls the feed all along. Its
    final list is the set of committed events, each once (and no rolled-back one)."""
    committed: list[str] = []
    lock = threading.Lock()
    rng = random.Random(11)
    holds = [rng.uniform(0, 0.05) for _ in range(24)]

    def writer(number: int) -> None:
        with database.db.transaction() as session:
            [message] = record(session, tenant_id=tenant.id, events=[return_event(unique("ret"))])
            session.flush()
            time.sleep(holds[number])  # commits later than writers that began after it
            if number % 6 == 5:
                session.rollback()  # never committed: never listed
                return
        with lock:
            committed.append(message)

    seen: list[str] = []
    writers_done = threading.Event()

    def poll() -> None:
        after = seen[-1] if seen else None
        page = api.get(
            "/v1/messages", params={"after": after} if after else {}, headers=tenant.headers
        )
        assert page.status_code == 200, page.text
        seen.extend(m["id"] for m in page.json()["data"])

    def reader() -> None:
        while not writers_done.is_set():
            poll()

    reading = threading.Thread(target=reader)
    reading.start()
    writers = [threading.Thread(target=writer, args=(n,)) for n in range(len(holds))]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    writers_done.set()
    reading.join()
    poll()
    poll()
    assert len(seen) == len(set(seen))
    assert set(seen) == set(committed)
    assert len(committed) == 20


def test_metrics_show_the_backlog_the_outcomes_and_the_attempt_latency(
    api: TestClient,
    database: DatabaseFixture,
    tenant: TenantFixture,
    receiver: Receiver,
    dispatcher: Dispatcher,
    clock: Clock,
) -> None:
    def metric(text: str, name: str, *, required: bool = True) -> float:
        """The sum of a metric's samples (a labelled counter not yet counted has none)."""
        values = [
            float(line.rpartition(" ")[2])
            for line in text.splitlines()
            if line.startswith(name + " ") or line.startswith(name + "{")
        ]
        assert values or not required, f"{name} is not exported"
        return sum(values)

    subscribe(api, tenant, receiver.url)
    receiver.answer_with(503)
    emit(database, tenant, return_event(unique("ret")))
    before = api.get("/metrics").text
    assert metric(before, "returnstack_outbox_backlog") >= 1  # committed, not yet published
    assert metric(before, "returnstack_webhook_oldest_undelivered_age_seconds") >= 0
    failed_before = metric(
        before, 'returnstack_webhook_deliveries_total{outcome="retrying"}', required=False
    )
    attempts_before = metric(
        before, "returnstack_webhook_attempt_duration_seconds_count", required=False
    )

    assert own_attempts(dispatcher, database, tenant) == 1
    after = api.get("/metrics").text
    assert metric(after, "returnstack_webhook_backlog") >= 1  # the retry, queued
    assert metric(after, 'returnstack_webhook_deliveries_total{outcome="retrying"}') == (
        failed_before + 1
    )
    assert metric(after, "returnstack_webhook_attempt_duration_seconds_count") >= (
        attempts_before + 1
    )

    receiver.answer_with(200)
    clock.advance(timedelta(seconds=7))
    succeeded_before = metric(
        after, 'returnstack_webhook_deliveries_total{outcome="succeeded"}', required=False
    )
    assert own_attempts(dispatcher, database, tenant) == 1
    last = api.get("/metrics").text
    assert metric(last, 'returnstack_webhook_deliveries_total{outcome="succeeded"}') >= (
        succeeded_before + 1
    )
