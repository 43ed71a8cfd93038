"""`serve`'s dispatcher yielding to a busy server: it writes only once per
RETURNSTACK_WEBHOOKS_YIELD_INTERVAL, in small steps, while the server process is busy, and
goes at full speed again once it is not; its sending threads run niced, its database work
not. Time is injected (a fake monotonic clock, a fake CPU meter): nothing here sleeps."""

import os
import random
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select

from returnstack.app import create_app
from returnstack.config import Settings
from returnstack.models import OutboxEvent, WebhookDelivery, WebhookSubscription
from returnstack.webhooks import service
from returnstack.webhooks.dispatcher import Dispatcher, Job, Outcome
from returnstack.webhooks.process import ServerLoad, machine_cpu_ticks, process_cpu_seconds
from tests.conftest import DatabaseFixture, TenantFixture
from tests.factories import unique
from tests.webhooks.receiver import Receiver, running_receiver
from tests.webhooks.test_webhooks import Clock, emit, return_event, subscribe

WAIT = 60.0  # seconds a test waits for deliveries before it fails (not a speed assertion)


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Busy:
    """The server's load as the test sets it."""

    def __init__(self) -> None:
        self.busy = False

    def __call__(self) -> bool:
        return self.busy


@pytest.fixture
def settings(database: DatabaseFixture) -> Settings:
    return database.settings.model_copy(
        update={
            "webhooks_allow_private": True,
            "webhooks_timeout": 5.0,
            "webhooks_poll_interval": 0.05,
            "webhooks_concurrency": 4,  # batch 16, at most 32 in flight
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


def make(database: DatabaseFixture, settings: Settings, **kwargs: Any) -> Dispatcher:
    return Dispatcher(database.db, settings, clock=Clock(), rng=random.Random(3), **kwargs)


def outcome(number: int) -> Outcome:
    job = Job(
        tenant_id="ten",
        delivery_id=f"del_{number}",
        token="t",
        subscription_id="sub",
        url="http://127.0.0.1:1/",
        secrets=["s"],
        message_id=f"msg_{number}",
        body=b"{}",
        attempt=1,
        step=0,
        message_seq=number,
        event_type="return.updated",
        resource_key="r",
    )
    return Outcome(job=job, attempted_at=service.utcnow(), duration_ms=1, response_status=200)


# --- the server's load ----------------------------------------------------------------------


def test_the_server_is_busy_when_it_used_more_than_half_a_core_over_the_window() -> None:
    ticks = Ticks()
    cpu = [10.0]
    load = ServerLoad(lambda: cpu[0], share=0.5, window=0.25, hold=0.0, clock=ticks)
    assert not load()  # nothing measured yet
    ticks.now += 0.25
    cpu[0] += 0.2  # 0.8 of a core
    assert load()
    ticks.now += 0.1  # within the window: the last answer stands
    assert load()
    ticks.now += 0.15
    cpu[0] += 0.1  # 0.4 of a core over the last 0.25 s
    assert not load()
    ticks.now += 2.0  # asked rarely: measured over the whole time since
    cpu[0] += 1.2  # 0.6 of a core
    assert load()


def test_a_server_working_on_saturated_cores_is_busy_with_less() -> None:
    """On cores other programs keep busy, a saturated server gets less than half a core:
    whatever the dispatcher uses is then taken from it all the same."""
    ticks = Ticks()
    cpu = [10.0]
    machine = [(1000, 2000)]
    load = ServerLoad(lambda: cpu[0], lambda: machine[0], hold=0.0, clock=ticks)
    ticks.now += 0.5
    cpu[0] += 0.1  # 0.2 of a core, the machine 95 % busy
    machine[0] = (1000 + 95, 2000 + 100)
    assert load()
    ticks.now += 0.5
    cpu[0] += 0.1  # the same, the machine 50 % busy: the dispatcher takes only idle time
    machine[0] = (machine[0][0] + 50, machine[0][1] + 100)
    assert not load()
    ticks.now += 0.5
    cpu[0] += 0.02  # the server nearly idle on busy cores: others' load, not its own
    machine[0] = (machine[0][0] + 100, machine[0][1] + 100)
    assert not load()
    ticks.now += 0.5
    cpu[0] += 0.1
    load.machine = lambda: None  # unreadable: only the server's own share counts
    assert not load()


def test_a_server_found_busy_stays_busy_for_a_while() -> None:
    """A window of less CPU in a burst (the server waiting for the write lock, or for its
    clients) does not send the dispatcher back to full speed at once."""
    ticks = Ticks()
    cpu = [10.0]
    load = ServerLoad(lambda: cpu[0], window=0.25, hold=1.0, clock=ticks)
    ticks.now += 0.25
    cpu[0] += 0.25  # a whole core
    assert load()
    for _ in range(3):  # idle windows, within the second
        ticks.now += 0.25
        assert load()
    ticks.now += 0.25  # a second of quiet since it was last found busy
    assert not load()


def test_a_server_whose_cpu_time_cannot_be_read_is_never_busy() -> None:
    ticks = Ticks()
    load = ServerLoad(lambda: None, clock=ticks)
    ticks.now += 1.0
    assert not load()
    assert process_cpu_seconds(2**22 + 12345) is None  # no such process
    if sys.platform == "linux":
        own = process_cpu_seconds(os.getpid())
        assert own is not None
        assert own > 0
        ticks_ = machine_cpu_ticks()
        assert ticks_ is not None
        assert 0 < ticks_[0] < ticks_[1]


# --- the pace of the steps ---------------------------------------------------------------------


def test_while_the_server_is_busy_a_write_comes_once_per_interval(
    database: DatabaseFixture, settings: Settings
) -> None:
    busy, ticks = Busy(), Ticks()
    dispatcher = make(database, settings, server_busy=busy, monotonic=ticks)
    interval = settings.yield_interval  # the default of the database (1 s SQLite, 0.5 s PG)
    try:
        assert dispatcher._yield() is None  # not busy: full speed
        busy.busy = True
        assert dispatcher._yield() == 0  # busy, nothing written yet: one step now
        dispatcher._yielded()
        assert dispatcher._yield() == pytest.approx(interval)
        ticks.now += 0.3
        assert dispatcher._yield() == pytest.approx(interval - 0.3)
        ticks.now += interval - 0.3
        assert dispatcher._yield() == 0
        dispatcher._yielded()
        busy.busy = False  # the burst is over: at once, whatever the last step
        assert dispatcher._yield() is None
    finally:
        dispatcher.close()


def test_no_yielding_without_a_server_or_with_an_interval_of_zero(
    database: DatabaseFixture, settings: Settings
) -> None:
    alone = make(database, settings)  # `returnstack worker`, tests: no server to watch
    off = make(
        database,
        settings.model_copy(update={"webhooks_yield_interval": 0.0}),
        server_busy=lambda: True,
    )
    try:
        assert alone._yield() is None
        assert off._yield() is None
    finally:
        alone.close()
        off.close()


def test_the_limits_of_a_step_at_full_speed_and_while_yielding(
    database: DatabaseFixture, settings: Settings
) -> None:
    dispatcher = make(database, settings)
    try:
        assert (dispatcher.batch, dispatcher.max_in_flight) == (16, 32)
        ended = [outcome(n) for n in range(5)]
        limits = dispatcher._limits
        # Full speed: outcomes wait until a whole batch can be claimed with them...
        assert limits(ended, in_flight=17, may_claim=True, yielding=False) == ([], 0, 1000)
        assert limits(ended, in_flight=16, may_claim=True, yielding=False) == (ended, 16, 1000)
        # ... or until nothing is left in flight; claims are of a batch or more.
        assert limits(ended, in_flight=0, may_claim=False, yielding=False) == (ended, 32, 1000)
        assert limits([], in_flight=0, may_claim=False, yielding=False) == ([], 0, 1000)
        # Yielding: whatever ended, whatever room there is, a small publish.
        assert limits(ended, in_flight=31, may_claim=False, yielding=True) == (ended, 1, 32)
        assert limits([], in_flight=31, may_claim=True, yielding=True) == ([], 1, 32)
        assert limits([], in_flight=10, may_claim=False, yielding=True) == ([], 0, 32)
        assert limits(ended, in_flight=32, may_claim=True, yielding=True) == (ended, 0, 32)
    finally:
        dispatcher.close()


def unpublished(database: DatabaseFixture, tenant: TenantFixture) -> int:
    with database.db.transaction(write=False) as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(OutboxEvent)
                .where(OutboxEvent.tenant_id == tenant.id, OutboxEvent.dispatched_at.is_(None))
            )
            or 0
        )


def test_a_yielding_step_publishes_no_more_than_its_limit_and_leaves_the_rest(
    database: DatabaseFixture, settings: Settings, tenant: TenantFixture, cleanup: None
) -> None:
    dispatcher = make(database, settings)
    try:
        dispatcher.publish()  # what other tests left
        emit(database, tenant, *[return_event(unique("ret")) for _ in range(10)])
        published, jobs = dispatcher.step([], publish=True, claim=0, publish_limit=3, backlog=False)
        assert (published, jobs) == (3, [])
        assert unpublished(database, tenant) == 7
        # At full speed a full publish goes on with the rest.
        published, _ = dispatcher.step([], publish=True, claim=0, publish_limit=3)
        assert published == 7
        assert unpublished(database, tenant) == 0
    finally:
        dispatcher.close()


# --- running ----------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


def test_a_dispatcher_yielding_all_along_still_delivers_everything_once_in_order(
    database: DatabaseFixture,
    settings: Settings,
    tenant: TenantFixture,
    receiver: Receiver,
    cleanup: None,
) -> None:
    """The server busy throughout: small steps, at the interval (short here), keep every
    guarantee (each message once, in order per resource)."""
    fast = settings.model_copy(update={"webhooks_yield_interval": 0.01})
    with TestClient(create_app(fast, database=database.db)) as client:
        subscribe(client, tenant, receiver.url)
    returns = [unique("ret") for _ in range(5)]
    expected: dict[str, list[str]] = {}
    for round_ in range(20):
        ids = emit(database, tenant, *[return_event(r, round_=round_) for r in returns])
        for return_id, message_id in zip(returns, ids, strict=True):
            expected.setdefault(return_id, []).append(message_id)
    steps: list[int] = []
    dispatcher = make(database, fast, server_busy=lambda: True)
    original = dispatcher._yielded

    def counted() -> None:
        steps.append(1)
        original()

    dispatcher._yielded = counted  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + WAIT
        while len(receiver.received) < 100 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(30)
        dispatcher.close()
    assert len(receiver.received) == 100
    assert len(set(receiver.ids())) == 100
    arrived: dict[str, list[str]] = {}
    for request in receiver.received:
        arrived.setdefault(request.json["data"]["id"], []).append(request.id)
    assert arrived == expected
    # 100 messages in steps of at most 32 (the pool's room): at least 4 of them.
    assert len(steps) >= 4


@pytest.mark.skipif(sys.platform != "linux", reason="niceness is a thread's own on Linux")
def test_the_sending_threads_are_niced_and_the_loop_is_not(
    database: DatabaseFixture, settings: Settings
) -> None:
    dispatcher = make(database, settings, sender_nice=3)
    try:
        own = os.getpriority(os.PRIO_PROCESS, 0)
        sender = dispatcher._executor.submit(os.getpriority, os.PRIO_PROCESS, 0).result(10)
        assert sender == min(19, own + 3)
        assert os.getpriority(os.PRIO_PROCESS, 0) == own
    finally:
        dispatcher.close()


def test_the_yield_interval_defaults_to_a_second_on_sqlite_and_half_on_postgresql() -> None:
    """On SQLite each dispatcher write transaction holds the server's writes back (one
    write lock), so it yields longer; on PostgreSQL its transactions do not block the
    server's. A value set wins on both."""
    sqlite = Settings(database_url="sqlite:///./returnstack.db")
    postgresql = Settings(database_url="postgresql+psycopg://127.0.0.1:5432/test")
    assert (sqlite.yield_interval, postgresql.yield_interval) == (1.0, 0.5)
    for settings in (sqlite, postgresql):
        for value in (0.0, 0.25, 2.0):
            chosen = settings.model_copy(update={"webhooks_yield_interval": value})
            assert chosen.yield_interval == value
