"""Admission control (kit/admission.py): a request that waited past
RETURNSTACK_ADMISSION_MAX_WAIT for the thread pool is answered 503 `overloaded` with
Retry-After and writes nothing; the requests admitted are answered as usual; health and
metrics answer whatever the queue.

Deterministic: the thread pool is cut to one thread and that thread held, so requests really
queue; the admission clock is the test's, moved by hand while they wait (no sleeps)."""

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from anyio import CapacityLimiter, to_thread
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response

from returnstack.app import create_app
from returnstack.kit.admission import Admission
from returnstack.kit.metrics import REGISTRY
from tests.conftest import DatabaseFixture, TenantFixture
from tests.returns.helpers import Api, line, outbox_types, person, wanted

MAX_WAIT = 1.0


class Clock:
    """The admission clock: it moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll until `condition` holds (a state of the thread pool, not a duration)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never reached: {what}"
        time.sleep(0.002)


class Requests:
    """Requests sent from threads; their answers by name."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.answers: dict[str, Response] = {}
        self.threads: list[threading.Thread] = []

    def post(self, name: str, path: str, body: Any, headers: dict[str, str] | None = None) -> None:
        def run() -> None:
            self.answers[name] = self.api.post(path, body, headers)

        thread = threading.Thread(target=run)
        thread.start()
        self.threads.append(thread)

    def join(self) -> dict[str, Response]:
        for thread in self.threads:
            thread.join(timeout=120)
        return self.answers


async def _default_limiter() -> CapacityLimiter:
    return to_thread.current_default_thread_limiter()


@contextmanager
def thread_pool_held(client: TestClient) -> Iterator[tuple[CapacityLimiter, Callable[[], None]]]:
    """The app's thread pool (AnyIO's default limiter, on the client's event loop) cut to one
    thread, and that thread held until released: every sync dependency and endpoint queues."""
    portal = client.portal
    assert portal is not None
    limiter = portal.call(_default_limiter)
    total = limiter.total_tokens
    portal.call(setattr, limiter, "total_tokens", 1)
    release = threading.Event()

    async def hold() -> None:
        await to_thread.run_sync(release.wait)

    holder = portal.start_task_soon(hold)
    try:
        wait_until(lambda: limiter.borrowed_tokens == 1, "the one thread held")
        yield limiter, release.set
    finally:
        release.set()
        holder.result(timeout=60)
        portal.call(setattr, limiter, "total_tokens", total)


def queued(limiter: CapacityLimiter, count: int) -> None:
    wait_until(lambda: limiter.statistics().tasks_waiting == count, f"{count} waiting")


def refusals() -> float:
    return REGISTRY.get_sample_value("returnstack_overloaded_total", {"kind": "admission"}) or 0.0


@pytest.fixture
def overload_app(database: DatabaseFixture) -> tuple[FastAPI, Clock]:
    settings = database.settings.model_copy(update={"admission_max_wait": MAX_WAIT})
    app = create_app(settings, database=database.db)
    clock = Clock()
    app.state.admission.clock = clock
    return app, clock


def assert_overloaded(response: Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json() == {
        "error": {
            "type": "overloaded",
            "message": "The server is overloaded; nothing was written. "
            "Retry after the delay in Retry-After.",
            "details": [],
        }
    }
    assert response.headers["retry-after"] == "1"


def test_requests_that_waited_too_long_are_refused_and_write_nothing(
    overload_app: tuple[FastAPI, Clock], database: DatabaseFixture, tenant: TenantFixture
) -> None:
    app, clock = overload_app
    with TestClient(app, raise_server_exceptions=False) as client:
        api = Api(client, tenant)
        customer = person()
        first, second, third = (api.buy(line(), customer=customer) for _ in range(3))
        waiting, timely = api.open(wanted(first)), api.open(wanted(second))
        before = refusals()
        requests = Requests(api)
        with thread_pool_held(client) as (limiter, release):
            # Arrive now, then wait for the one thread while time passes.
            requests.post("approve", f"/v1/returns/{waiting['id']}/approve", {})
            queued(limiter, 1)
            keyed = {"Idempotency-Key": "late-create"}
            requests.post("create", "/v1/returns", {"items": [wanted(third)]}, keyed)
            queued(limiter, 2)
            clock.now += MAX_WAIT + 0.5
            # Arrived after the wait began: within its limit when its turn comes.
            requests.post("timely", f"/v1/returns/{timely['id']}/approve", {})
            queued(limiter, 3)
            # Health and metrics do not queue behind the API's requests.
            assert client.get("/healthz").json() == {"status": "ok"}
            assert client.get("/readyz").json() == {"status": "ok"}
            assert client.get("/metrics").status_code == 200
            release()
            answers = requests.join()

        assert_overloaded(answers["approve"])
        assert_overloaded(answers["create"])
        assert answers["timely"].status_code == 200, answers["timely"].text
        assert answers["timely"].json()["status"] == "approved"
        assert refusals() == before + 2
        metrics = client.get("/metrics").text
        assert 'returnstack_overloaded_total{kind="admission"}' in metrics

        # Nothing written: the return unchanged, no message, no return for the third order.
        assert api.read(waiting) == waiting
        assert outbox_types(database, tenant.id, waiting["id"]) == ["return.requested"]
        assert api.returnable(third) == 1
        # The Idempotency-Key was not used up: the retry creates the return.
        retried = api.post("/v1/returns", {"items": [wanted(third)]}, keyed)
        assert retried.status_code == 201, retried.text
        assert api.act(waiting, "approve", {})["status"] == "approved"


def test_the_endpoint_refuses_a_request_that_waited_after_its_key_was_checked(
    overload_app: tuple[FastAPI, Clock], tenant: TenantFixture
) -> None:
    """The wait is checked again where the endpoint starts: a request can queue for its
    endpoint's thread after its key was checked in another (a route whose caller is read
    on a thread of its own: editing a return; the actions take theirs from the key cache)."""
    app, clock = overload_app
    admission: Admission = app.state.admission
    with TestClient(app, raise_server_exceptions=False) as client:
        api = Api(client, tenant)
        ret = api.open(wanted(api.buy(line())))
        calls = 0

        def later_at_the_endpoint() -> float:
            # Called at arrival, at the end of its body, at the key's check, then at the
            # endpoint's start.
            nonlocal calls
            calls += 1
            return clock.now + (MAX_WAIT + 0.5 if calls >= 4 else 0.0)

        admission.clock = later_at_the_endpoint
        refused = api.patch(f"/v1/returns/{ret['id']}", {"note": "edited"})
        admission.clock = clock
        assert calls == 4
        assert_overloaded(refused)
        assert api.read(ret) == ret


def test_zero_admits_every_request_however_long_it_waited(
    database: DatabaseFixture, tenant: TenantFixture
) -> None:
    settings = database.settings.model_copy(update={"admission_max_wait": 0})
    app = create_app(settings, database=database.db)
    clock = Clock()
    app.state.admission.clock = clock
    with TestClient(app, raise_server_exceptions=False) as client:
        api = Api(client, tenant)
        ret = api.open(wanted(api.buy(line())))
        requests = Requests(api)
        with thread_pool_held(client) as (limiter, release):
            requests.post("approve", f"/v1/returns/{ret['id']}/approve", {})
            queued(limiter, 1)
            clock.now += 3600
            release()
            answers = requests.join()
    assert answers["approve"].status_code == 200, answers["approve"].text
    assert answers["approve"].json()["status"] == "approved"


def test_a_slow_upload_waits_for_its_client_not_for_the_server(
    overload_app: tuple[FastAPI, Clock], tenant: TenantFixture
) -> None:
    """The wait starts again once the body is in: an attachment that took longer than the
    limit to arrive (a slow link) is admitted, as the server was free all along."""
    app, clock = overload_app
    with TestClient(app, raise_server_exceptions=False) as client:
        api = Api(client, tenant)
        ret = api.open(wanted(api.buy(line())))
        photo = b"\x89PNG\r\n\x1a\n" + bytes(64 * 1024)
        upload = client.build_request(
            "POST", "/", files={"file": ("damage.png", photo, "image/png")}
        )
        body = upload.read()

        def slowly() -> Iterator[bytes]:
            # Read by the server after the request arrived: its chunks take longer than the
            # limit to come in.
            for start in range(0, len(body), 16 * 1024):
                clock.now += MAX_WAIT / 2
                yield body[start : start + 16 * 1024]

        before = refusals()
        response = client.post(
            f"/v1/returns/{ret['id']}/attachments",
            content=slowly(),
            headers=tenant.headers | {"content-type": upload.headers["content-type"]},
        )
        assert response.status_code == 201, response.text
        assert response.json()["size"] == len(photo)
        assert refusals() == before
        assert [a["id"] for a in api.read(ret)["attachments"]] == [response.json()["id"]]
