"""Webhooks from a real `returnstack serve --workers 2`: each message delivered once while
it runs, and every message delivered after the server is SIGKILLed mid-delivery and
restarted (at least once: the receiver de-duplicates by webhook-id)."""

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import DatabaseFixture, TenantFixture
from tests.e2e import Server, admitted
from tests.factories import batch, purchase
from tests.webhooks.receiver import Received, Receiver, running_receiver

pytestmark = pytest.mark.e2e

WAIT = 90.0  # seconds to wait for deliveries before failing (not a speed assertion)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


def start(database: DatabaseFixture, workdir: Path) -> Server:
    return Server(
        database.url,
        workdir,
        args=["--workers", "2"],
        RETURNSTACK_WEBHOOKS_ALLOW_PRIVATE="true",
        RETURNSTACK_WEBHOOKS_POLL_INTERVAL="0.1",
        RETURNSTACK_WEBHOOKS_TIMEOUT="2",
    ).start()


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def send_purchases(http: httpx.Client, count: int) -> list[str]:
    sales = [purchase() for _ in range(count)]
    response = http.post("/v1/events", json=batch(*sales))
    assert response.status_code == 200, response.text
    return [sale["order_id"] for sale in sales]


def delivered_orders(receiver: Receiver) -> set[str]:
    with receiver.lock:
        return {r.json["data"]["order_id"] for r in receiver.received}


def succeeded(http: httpx.Client) -> float:
    name = 'returnstack_webhook_deliveries_total{outcome="succeeded"}'
    lines = http.get("/metrics").text.splitlines()
    return sum(float(line.rpartition(" ")[2]) for line in lines if line.startswith(name + " "))


def test_delivered_once_each_then_everything_after_a_crash_mid_delivery(
    database: DatabaseFixture, tenant: TenantFixture, receiver: Receiver, tmp_path: Path
) -> None:
    server = start(database, tmp_path / "server")
    try:
        with httpx.Client(base_url=server.url, headers=tenant.headers, timeout=30) as http:
            created = http.post("/v1/webhooks", json={"url": receiver.url, "events": ["*"]})
            assert created.status_code == 201, created.text
            secret = created.json()["secret"]

            # Running: two worker processes, each with its dispatcher; each message once.
            first = send_purchases(http, 20)
            wait_for(lambda: set(first) <= delivered_orders(receiver), "the first 20")
            time.sleep(0.5)  # a duplicate, were there one, would arrive now
            assert set(Counter(receiver.ids()).values()) == {1}
            # Counted in the dispatcher processes, summed by whichever worker answers.
            wait_for(lambda: succeeded(http) == len(receiver.received), "deliveries in /metrics")

            # The receiver stalls; the server dies while attempts are in flight and before
            # the rest are sent.
            release = threading.Event()

            def stall(request: Received) -> tuple[int, dict[str, str], bytes]:
                release.wait(10)
                return 200, {}, b"ok"

            receiver.answer = stall
            second = send_purchases(http, 20)
            wait_for(lambda: len(receiver.received) > 20, "an attempt in flight")
        server.kill()
        release.set()
        receiver.answer = lambda _request: (200, {}, b"ok")

        server = start(database, tmp_path / "server")
        wait_for(lambda: set(second) <= delivered_orders(receiver), "every message after restart")
        with httpx.Client(base_url=server.url, headers=tenant.headers, timeout=30) as http:
            # A server just restarted under load may answer 503 `overloaded` (admission
            # control) while its dispatcher catches up: a client backs off and asks again.
            answer = admitted(lambda: http.get("/v1/messages", params={"limit": 200}))
        assert answer.status_code == 200, answer.text
        feed = answer.json()["data"]
        assert len(feed) == 40
        assert {m["id"] for m in feed} <= set(receiver.ids())
        for request in receiver.received:
            Webhook(secret).verify(request.body, request.headers)
    finally:
        server.stop()
