"""End to end: `returnstack serve` as a real process on the test database (SQLite file or
PostgreSQL), driven over HTTP. Crash safety, concurrent duplicate ingestion, JSON logs."""

import json
import random
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DatabaseFixture, TenantFixture
from tests.e2e import Server
from tests.factories import batch, item, purchase

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(database: DatabaseFixture, tmp_path: Path) -> Iterator[Server]:
    with Server(database.url, tmp_path / "server") as running:
        yield running


def http_client(server: Server, tenant: TenantFixture) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=tenant.headers, timeout=60)


def test_acknowledged_events_survive_a_crash(
    database: DatabaseFixture, tmp_path: Path, tenant: TenantFixture
) -> None:
    per_batch = 20
    batches = [
        [purchase(items=[item(line_id="1", quantity=n % 3 + 1)]) for n in range(per_batch)]
        for _ in range(5)
    ]
    acknowledged: list[dict[str, Any]] = []
    first = Server(database.url, tmp_path / "first").start()
    try:
        with http_client(first, tenant) as http:
            for events in batches:
                response = http.post("/v1/events", json=batch(*events))
                if response.status_code == 200:  # checked below, after the kill
                    acknowledged.append(response.json())
                else:
                    break
            status = first.kill()  # SIGKILL right after the last acknowledgement
    finally:
        first.stop()
    assert status == -9, "the server was still running and died by SIGKILL"
    assert len(acknowledged) == len(batches), first.stderr()[-3000:]
    assert all(reply["accepted"] == per_batch for reply in acknowledged), acknowledged

    with Server(database.url, tmp_path / "second") as second, http_client(second, tenant) as http:
        for events in batches:
            for event in events:
                response = http.get(f"/v1/orders/{event['order_id']}")
                assert response.status_code == 200, (event["order_id"], response.text)
                lines = response.json()["lines"]
                assert [(ln["line_id"], ln["quantity"]) for ln in lines] == [
                    ("1", event["items"][0]["quantity"])
                ]
        for events, reply in zip(batches, acknowledged, strict=True):
            again = http.post("/v1/events", json=batch(*events))
            assert again.status_code == 200, again.text
            body = again.json()
            assert (body["accepted"], body["duplicates"]) == (0, per_batch)
            assert body["ids"] == reply["ids"]  # the same events, recorded once


def test_concurrent_overlapping_batches_record_each_event_once(
    server: Server, tenant: TenantFixture
) -> None:
    events = [purchase() for _ in range(120)]
    threads, per_request = 6, 20
    barrier = threading.Barrier(threads)
    replies: list[tuple[list[str], int, dict[str, Any] | str]] = []
    lock = threading.Lock()

    def post_all(seed: int) -> None:
        # Every thread sends every event, in its own order and grouping: each id travels in
        # several concurrent requests.
        mine = events[:]
        random.Random(seed).shuffle(mine)
        chunks = [mine[i : i + per_request] for i in range(0, len(mine), per_request)]
        with http_client(server, tenant) as http:
            barrier.wait(timeout=60)
            for chunk in chunks:
                response = http.post("/v1/events", json=batch(*chunk))
                try:
                    body: dict[str, Any] | str = response.json()
                except ValueError:
                    body = response.text
                with lock:
                    replies.append(([e["id"] for e in chunk], response.status_code, body))

    workers = [threading.Thread(target=post_all, args=(seed,)) for seed in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not any(worker.is_alive() for worker in workers)

    statuses = Counter(status for _, status, _ in replies)
    failures = [(status, body) for _, status, body in replies if status != 200]
    assert statuses == {200: threads * len(events) // per_request}, (failures[:2], server.errors())
    assert sum(body["accepted"] for _, _, body in replies if isinstance(body, dict)) == len(events)
    assert sum(body["duplicates"] for _, _, body in replies if isinstance(body, dict)) == (
        threads - 1
    ) * len(events)
    # Every request names the same server id for the same event.
    server_ids: defaultdict[str, set[str]] = defaultdict(set)
    for client_ids, _, body in replies:
        assert isinstance(body, dict)
        for client_id, server_id in zip(client_ids, body["ids"], strict=True):
            server_ids[client_id].add(server_id)
    assert {len(ids) for ids in server_ids.values()} == {1}
    assert len({next(iter(ids)) for ids in server_ids.values()}) == len(events)

    with http_client(server, tenant) as http:
        for event in events:
            response = http.get(f"/v1/orders/{event['order_id']}")
            assert response.status_code == 200, response.text
            lines = response.json()["lines"]
            assert [line["quantity"] for line in lines] == [event["items"][0]["quantity"]]


def test_the_server_logs_json_lines_with_the_request_id(
    server: Server, tenant: TenantFixture
) -> None:
    chosen = f"e2e-{uuid.uuid4().hex}"
    with http_client(server, tenant) as http:
        named = http.get("/v1/orders/no-such-order", headers={"X-Request-Id": chosen})
        assert named.status_code == 404
        assert named.headers["x-request-id"] == chosen
        posted = http.post("/v1/events", json=batch(purchase()))
        assert posted.status_code == 200
        generated = posted.headers["x-request-id"]
        assert generated
        assert generated != chosen
    server.stop()  # flushes and closes the log

    lines = [line for line in server.stderr().splitlines() if line.strip()]
    assert lines, "the server wrote nothing to stderr"
    entries = []
    for line in lines:  # every line is one JSON object
        try:
            entry = json.loads(line)
        except ValueError:
            pytest.fail(f"a log line that is not JSON: {line!r}")
        assert isinstance(entry, dict), line
        entries.append(entry)
    by_request = {entry.get("request_id"): entry for entry in entries}
    assert chosen in by_request, lines[-10:]
    assert by_request[chosen].get("status") == 404
    assert by_request[chosen].get("method") == "GET"
    # The route's template, not the path: a path may name a person (/v1/customers/{id}).
    assert by_request[chosen].get("route") == "/v1/orders/{order_id}"
    assert "no-such-order" not in json.dumps(by_request[chosen])
    assert generated in by_request, lines[-10:]
    assert by_request[generated].get("status") == 200
    assert by_request[generated].get("method") == "POST"
