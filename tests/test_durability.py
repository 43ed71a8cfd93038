"""End to end, under load: a 2xx means committed even when the server dies mid-load, and
`serve --workers N` runs N worker processes over one database."""

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DatabaseFixture, TenantFixture
from tests.e2e import Server, run_cli
from tests.factories import batch, item, purchase, unique

pytestmark = pytest.mark.e2e

CLIENTS = 4


def client(server: Server, tenant: TenantFixture) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=tenant.headers, timeout=30)


class Acknowledged:
    """What the server acknowledged (a 2xx), recorded by the client threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.orders: list[dict[str, Any]] = []  # purchase events
        self.returns: dict[str, str] = {}  # return id -> last acknowledged status

    def order(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.orders.append(event)

    def status(self, return_id: str, status: str) -> None:
        with self.lock:
            self.returns[return_id] = status


def keep_writing(
    server: Server, tenant: TenantFixture, seed: list[dict[str, Any]], acked: Acknowledged
) -> Callable[[], None]:
    """A client that posts purchases and works returns through their lifecycle until the
    server goes away."""

    def run() -> None:
        with client(server, tenant) as http:
            try:
                for order in seed:
                    events = [purchase(items=[item(line_id="1", quantity=2)]) for _ in range(5)]
                    if http.post("/v1/events", json=batch(*events)).status_code != 200:
                        return
                    for event in events:
                        acked.order(event)
                    opened = http.post(
                        "/v1/returns",
                        json={
                            "customer": {"id": order["customer"]["id"]},
                            "items": [
                                {"order_id": order["order_id"], "line_id": "1", "quantity": 1}
                                | {"reason": "unwanted"}
                            ],
                        },
                    )
                    if opened.status_code != 201:
                        return
                    ret = opened.json()
                    acked.status(ret["id"], ret["status"])
                    for action in ("approve", "cancel"):
                        done = http.post(f"/v1/returns/{ret['id']}/{action}", json={})
                        if done.status_code != 200:
                            return
                        acked.status(ret["id"], done.json()["status"])
            except httpx.TransportError:
                return  # the server died: what was acknowledged is checked afterwards

    return run


def test_acknowledged_writes_survive_a_crash_under_load(
    database: DatabaseFixture, tmp_path: Path, tenant: TenantFixture
) -> None:
    acked = Acknowledged()
    first = Server(database.url, tmp_path / "first").start()
    try:
        # Orders for the returns, acknowledged before the load starts.
        seed = [purchase(items=[item(line_id="1", quantity=50)]) for _ in range(CLIENTS)]
        with client(first, tenant) as http:
            assert http.post("/v1/events", json=batch(*seed)).status_code == 200
        # Each client returns units of its own order, over and over.
        threads = [
            threading.Thread(target=keep_writing(first, tenant, [seed[n]] * 200, acked))
            for n in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        # Kill once every client has had several writes acknowledged.
        for _ in range(600):
            with acked.lock:
                if len(acked.returns) >= 3 * CLIENTS:
                    break
            threading.Event().wait(0.05)
        status = first.kill()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        first.stop()
    assert status == -9, "the server was still running and died by SIGKILL"
    assert len(acked.returns) >= 3 * CLIENTS, first.stderr()[-3000:]

    with Server(database.url, tmp_path / "second") as second, client(second, tenant) as http:
        for event in acked.orders:
            response = http.get(f"/v1/orders/{event['order_id']}")
            assert response.status_code == 200, (event["order_id"], response.text)
        progress = {"requested": 0, "approved": 1, "cancelled": 2}
        for return_id, acked_status in acked.returns.items():
            response = http.get(f"/v1/returns/{return_id}")
            assert response.status_code == 200, (return_id, response.text)
            # At least as far as acknowledged (a later action may have committed unanswered).
            assert progress[response.json()["status"]] >= progress[acked_status], return_id
        # Claims agree with the returns that survived: cancelled returns claim nothing.
        for order in seed:
            line = http.get(f"/v1/orders/{order['order_id']}").json()["lines"][0]
            open_returns = http.get(
                "/v1/returns", params={"order_id": order["order_id"], "limit": 200}
            ).json()["data"]
            claiming = sum(1 for ret in open_returns if ret["status"] != "cancelled")
            assert line["claimed_quantity"] == claiming, order["order_id"]


def test_serve_with_two_workers(
    database: DatabaseFixture, tmp_path: Path, tenant: TenantFixture
) -> None:
    events = [purchase(id=unique("w")) for _ in range(40)]
    replies: list[httpx.Response] = []
    lock = threading.Lock()

    with Server(database.url, tmp_path / "server", args=["--workers", "2"]) as server:
        # The server process and its two workers (uvicorn's supervisor may add one more).
        assert len(server.processes()) >= 3, server.processes()

        def send(chunk: list[dict[str, Any]]) -> None:
            with client(server, tenant) as http:
                for event in chunk:
                    response = http.post("/v1/events", json=batch(event))
                    with lock:
                        replies.append(response)

        threads = [threading.Thread(target=send, args=(events[n::8],)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert [r.status_code for r in replies] == [200] * len(events)
        with client(server, tenant) as http:
            for event in events:
                assert http.get(f"/v1/orders/{event['order_id']}").status_code == 200
            again = http.post("/v1/events", json=batch(*events)).json()
            assert (again["accepted"], again["duplicates"]) == (0, len(events))
        # Metrics are the sums over the workers, whichever answers (a new connection each).
        for _ in range(4):
            with client(server, tenant) as http:
                scraped = http.get("/metrics").text
            assert f"returnstack_events_ingested_total {float(len(events))}" in scraped
            assert _sample(scraped, 'route="/v1/events"', 'method="POST"', 'status="200"') >= 41
        # Both workers cached the key (each answered some of the 40): revoked, it is
        # refused on the next request, whichever worker takes it.
        revoked = run_cli(
            "keys", "revoke", tenant.secret_key_id, database_url=database.url, cwd=tmp_path
        )
        assert revoked.returncode == 0, revoked
        for _ in range(8):
            with client(server, tenant) as http:
                assert http.post("/v1/events", json=batch(purchase())).status_code == 401
        assert server.stop() == 0  # a graceful stop of the whole group


def _sample(scraped: str, *labels: str) -> float:
    """The value of the request counter's sample with `labels`."""
    for line in scraped.splitlines():
        if line.startswith("returnstack_http_requests_total{") and all(
            label in line for label in labels
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
