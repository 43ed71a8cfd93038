"""The webhook dispatcher: publishes committed outbox rows, then delivers them.

Runs inside `returnstack serve` (in a child process the app starts: webhooks/process.py) or
as `returnstack worker`.

- PostgreSQL: any number of dispatchers. Each claims due attempts with
  `FOR UPDATE SKIP LOCKED` and a lease (a token and an expiry); a dispatcher that dies
  mid-delivery loses its claims when their leases run out, and another takes them. An
  outcome is recorded only by the holder of the lease. Dispatchers are woken by
  LISTEN/NOTIFY (every transaction that records events notifies), and poll as a fallback.
- SQLite: one dispatcher at a time, across processes, guarded by a lease row in the
  database; the others wait for it to lapse.

Attempts run on a thread pool; a slow receiver holds one thread, never the loop, and an
earlier pending message of a resource holds up only that resource's later messages. Nothing
a receiver or a row does can end the loop: every error is logged and the loop goes on.
"""

import functools
import http.client
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import orjson
from sqlalchemy.orm import object_session

from returnstack.config import Settings
from returnstack.kit.db import Database
from returnstack.kit.metrics import WEBHOOK_ATTEMPT_SECONDS, WEBHOOK_DELIVERIES
from returnstack.outbox.service import NOTIFY_CHANNEL
from returnstack.outbox.service import committed as wake
from returnstack.webhooks import repository, service
from returnstack.webhooks.network import ForbiddenAddress, GuardedSender
from returnstack.webhooks.signing import signature_header

log = logging.getLogger("returnstack.webhooks")

# After the failed attempt of step n, the next comes RETRY_DELAYS[n] later (±20 %).
RETRY_DELAYS = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
JITTER = 0.2
DISABLE_AFTER = timedelta(days=5)
MAX_RETRY_AFTER = timedelta(hours=24)
SNIPPET_CHARS = 1000
READ_LIMIT = 64 * 1024  # bytes of an answer read at most (the rest is not waited for)
SQLITE_LEASE = timedelta(seconds=10)  # renewed every 5 s by the dispatcher holding it
PRUNE_EVERY = timedelta(minutes=10)
PRUNE_BATCH = 5000
CLAIM_BATCHES = 4  # a claim takes up to this many times the concurrency
ANALYZE_AFTER = 500  # messages published at once


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed attempt, with what it takes to send it."""

    tenant_id: str
    delivery_id: str
    token: str
    subscription_id: str
    url: str
    secrets: list[str]
    message_id: str
    body: bytes | None  # None: the message is no longer retained
    attempt: int
    step: int
    message_seq: int
    event_type: str
    resource_key: str


@dataclass(frozen=True, slots=True)
class Outcome:
    job: Job
    attempted_at: datetime
    duration_ms: int
    response_status: int | None = None
    response_body: str | None = None
    error: str | None = None
    retry_after: timedelta | None = None
    final: bool = False  # no retry can help

    @property
    def succeeded(self) -> bool:
        return self.response_status is not None and 200 <= self.response_status < 300


def _retry_after(value: str | None, now: datetime) -> timedelta | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return timedelta(seconds=int(value))
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(moment - now, timedelta(0))


def session_of(row: Any) -> Any:
    session = object_session(row)
    assert session is not None
    return session


class Dispatcher:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = service.utcnow,
        rng: random.Random | None = None,
        server_busy: Callable[[], bool] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sender_nice: int = 0,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.rng = rng or random.Random()
        self.name = f"dispatcher-{uuid.uuid4().hex[:12]}"
        self.concurrency = settings.webhooks_concurrency
        # Claims are made in batches of up to CLAIM_BATCHES x `concurrency` (each claim and
        # each recording costs a few statements whatever its size: bigger batches spread
        # them), and up to two batches wait for the thread pool. So an attempt is sent
        # within `queued` timeouts of its claim, and its outcome recorded with a batch once
        # `batch` attempts have ended (within one more timeout): the lease covers that.
        self.batch = CLAIM_BATCHES * self.concurrency
        self.max_in_flight = 2 * self.batch
        queued = self.max_in_flight // self.concurrency
        self.lease = timedelta(seconds=(queued + 1) * settings.webhooks_timeout + 15)
        self.timeout = settings.webhooks_timeout
        # One keep-alive connection per host and thread of the pool (sized to concurrency).
        self.client = GuardedSender(
            allow_private=settings.webhooks_allow_private,
            connect_timeout=settings.webhooks_connect_timeout,
            timeout=settings.webhooks_timeout,
            read_limit=READ_LIMIT,
        )
        self._lease_until: datetime | None = None
        self._next_prune: datetime | None = None
        self._idle = True  # the last claim left nothing due
        # Yielding to a busy server (`serve`'s dispatcher; see `_yield`).
        self.server_busy = server_busy if settings.yield_interval else None
        self.monotonic = monotonic
        self._next_write = 0.0  # while yielding: no write transaction before this
        # The sending threads at `sender_nice` (Linux: niceness is a thread's own), the loop
        # that writes to the database not: a niced thread holding SQLite's write lock, or a
        # row lock, would be the last given a core back, and everyone waits for it.
        self._executor = ThreadPoolExecutor(
            self.concurrency,
            thread_name_prefix="webhook",
            initializer=functools.partial(_nice, sender_nice) if sender_nice else None,
        )

    # --- the steps ---------------------------------------------------------------------------

    def hold_lease(self) -> bool:
        """SQLite: take or renew the one dispatcher lease (PostgreSQL needs none)."""
        if not self.db.is_sqlite:
            return True
        now = self.clock()
        if self._lease_until is not None and now < self._lease_until - SQLITE_LEASE / 2:
            return True
        with self.db.transaction(write=False) as session:  # standing by costs no write lock
            if repository.lease_held_by_another(session, holder=self.name, now=now):
                self._lease_until = None
                return False
        with self.db.transaction() as session:
            held = repository.take_lease(
                session, holder=self.name, now=now, until=now + SQLITE_LEASE
            )
        self._lease_until = now + SQLITE_LEASE if held else None
        return held

    def release_lease(self) -> None:
        if self.db.is_sqlite and self._lease_until is not None:
            with self.db.transaction() as session:
                repository.release_lease(session, holder=self.name)
            self._lease_until = None

    def publish(self) -> int:
        # A read first: the write transaction (on SQLite, the write lock) only when needed.
        with self.db.transaction(write=False) as session:
            if not repository.has_unpublished(session):
                return 0
        published = 0
        while True:
            with self.db.transaction() as session:
                count = service.publish(session, now=self.clock())
            published += count
            if count < service.PUBLISH_BATCH:
                break
        if published >= ANALYZE_AFTER:  # the queue grew: let the planner know
            with self.db.transaction() as session:
                repository.analyze_queue(session)
        return published

    def claim(self, limit: int) -> list[Job]:
        if limit <= 0:
            return []
        now = self.clock()
        if self._idle:  # nothing was left last time: a read first, as for publish
            with self.db.transaction(write=False) as session:
                if not repository.claimable(session, now=now, limit=1, lock=False):
                    return []
        with self.db.transaction() as session:
            token, keys = self._claim(session, limit, now)
        return self._jobs(token, self._load(keys), now)

    def _claim(self, session: Any, limit: int, now: datetime) -> tuple[str, list[tuple[str, str]]]:
        """Lease up to `limit` due attempts; their keys. What sending them takes is read
        after the commit (`_load`): on SQLite the server's writer waits for every
        millisecond of a write transaction, and the claimed rows are ours by their lease."""
        token = uuid.uuid4().hex
        keys = repository.claimable(session, now=now, limit=limit)
        self._idle = len(keys) < limit
        if keys:
            repository.lease(session, keys, token=token, until=now + self.lease)
        return token, keys

    def _load(self, keys: list[tuple[str, str]]) -> list[repository.Claimed]:
        """The claimed attempts with their subscription and message. Those of a
        subscription disabled after they were queued (its pending attempts were failed
        then, but these were being published) end unsent."""
        if not keys:
            return []
        with self.db.transaction(write=False) as session:
            claimed = repository.load_claimed(session, keys)
        disabled = [(row.tenant_id, row.id) for row in claimed if not row.enabled]
        if disabled:
            with self.db.transaction() as session:
                repository.unsent(
                    session, disabled, reason="not sent: the subscription is disabled"
                )
        return [row for row in claimed if row.enabled]

    def step(
        self,
        outcomes: list[Outcome],
        *,
        publish: bool,
        claim: int,
        publish_limit: int = service.PUBLISH_BATCH,
        backlog: bool = True,
    ) -> tuple[int, list[Job]]:
        """Record `outcomes`, publish (when asked) up to `publish_limit` messages and claim
        up to `claim` attempts, in one transaction: on SQLite one wait for the write lock
        instead of three, which under a stream of request commits is what held a dispatcher
        inside `serve` back. With `backlog`, a full publish is followed by the rest of the
        outbox, in transactions of its own. If it fails, the outcomes are recorded on their
        own (nothing else was done)."""
        now = self.clock()
        try:
            with self.db.transaction() as session:
                labels = self._record(session, outcomes) if outcomes else []
                published = service.publish(session, now=now, limit=publish_limit) if publish else 0
                token, keys = self._claim(session, claim, now) if claim else ("", [])
        except Exception:
            log.exception("webhook.step_failed", extra={"outcomes": len(outcomes)})
            self.record(outcomes)
            return 0, []
        for label in labels:
            WEBHOOK_DELIVERIES.labels(outcome=label).inc()
        if backlog and published >= publish_limit:  # the rest in batches of its own
            published += self.publish()
        return published, self._jobs(token, self._load(keys), now)

    def _jobs(self, token: str, claimed: list[repository.Claimed], now: datetime) -> list[Job]:
        jobs = []
        for row in claimed:
            body = None
            if row.message_type is not None and row.message_created_at is not None:
                body = orjson.dumps(
                    service.message_body(
                        id=row.message_id,
                        type=row.message_type,
                        created_at=row.message_created_at,
                        data=row.data,
                        changes=row.changes,
                    )
                )
            jobs.append(
                Job(
                    tenant_id=row.tenant_id,
                    delivery_id=row.id,
                    token=token,
                    subscription_id=row.subscription_id,
                    url=row.url,
                    secrets=service.secrets_in_use(row, now=now),
                    message_id=row.message_id,
                    body=body,
                    attempt=row.attempt,
                    step=row.step,
                    message_seq=row.message_seq,
                    event_type=row.event_type,
                    resource_key=row.resource_key,
                )
            )
        return jobs

    def send(self, job: Job) -> Outcome:
        """One HTTP attempt; never raises."""
        attempted_at = self.clock()
        started = time.monotonic()

        def outcome(**values: Any) -> Outcome:
            elapsed = int((time.monotonic() - started) * 1000)
            WEBHOOK_ATTEMPT_SECONDS.observe(elapsed / 1000)
            return Outcome(job=job, attempted_at=attempted_at, duration_ms=elapsed, **values)

        if job.body is None:
            return outcome(error="the message is no longer retained", final=True)
        try:
            sent_at = datetime.now(UTC)  # the real time: receivers check it against theirs
            headers = {
                "content-type": "application/json",
                "user-agent": "returnstack-webhooks/1",
                "webhook-id": job.message_id,
                "webhook-timestamp": str(int(sent_at.timestamp())),
                "webhook-signature": signature_header(
                    secrets_in_use=job.secrets,
                    message_id=job.message_id,
                    timestamp=sent_at,
                    body=job.body,
                ),
            }
            answer = self.client.post(job.url, job.body, headers)
            status = answer.status
            snippet = answer.body.decode("utf-8", "replace")[:SNIPPET_CHARS] or None
            return outcome(
                response_status=status,
                response_body=snippet,
                error=None if 200 <= status < 300 else f"HTTP {status}",
                retry_after=_retry_after(answer.headers.get("retry-after"), attempted_at)
                if status == 429
                else None,
            )
        except ForbiddenAddress as exc:
            return outcome(error=f"refused: {exc}")
        except TimeoutError as exc:
            return outcome(error=f"timeout: {exc or type(exc).__name__}")
        except (OSError, http.client.HTTPException) as exc:
            return outcome(error=f"{type(exc).__name__}: {exc}"[:500])
        except Exception as exc:  # a bad URL or anything unforeseen: a failed attempt
            log.exception("webhook.attempt_error", extra={"delivery_id": job.delivery_id})
            return outcome(error=f"{type(exc).__name__}: {exc}"[:500])

    def record(self, outcomes: list[Outcome]) -> None:
        """Outcomes in one transaction; if that fails, each in its own, so one bad row
        costs only itself (its lease then lapses and it is tried again)."""
        if not outcomes:
            return
        try:
            with self.db.transaction() as session:
                labels = self._record(session, outcomes)
        except Exception:
            log.exception("webhook.record_failed", extra={"count": len(outcomes)})
            labels = []
            for one in outcomes:
                try:
                    with self.db.transaction() as session:
                        labels += self._record(session, [one])
                except Exception:
                    log.exception(
                        "webhook.record_failed", extra={"delivery_id": one.job.delivery_id}
                    )
        for label in labels:
            WEBHOOK_DELIVERIES.labels(outcome=label).inc()

    def _record(self, session: Any, outcomes: list[Outcome]) -> list[str]:
        # Only attempts whose lease this dispatcher still holds: another one may have
        # taken over an attempt whose lease ran out, and its outcome wins.
        held = repository.held_attempts(
            session, [(o.job.tenant_id, o.job.delivery_id, o.job.token) for o in outcomes]
        )
        outcomes = [o for o in outcomes if (o.job.tenant_id, o.job.delivery_id) in held]
        subscriptions = repository.subscriptions_for_update(
            session, {(o.job.tenant_id, o.job.subscription_id) for o in outcomes}
        )
        finished: list[dict[str, Any]] = []
        outcomes_recorded: list[Outcome] = []
        retries: list[dict[str, Any]] = []
        labels: list[str] = []
        for o in outcomes:
            job = o.job
            subscription = subscriptions.get((job.tenant_id, job.subscription_id))
            if subscription is None:
                continue
            next_at = self._next_attempt(o, subscription)
            outcomes_recorded.append(o)
            finished.append(
                {
                    "tenant_id": job.tenant_id,
                    "id": job.delivery_id,
                    "status": "succeeded" if o.succeeded else "failed",
                    "attempted_at": o.attempted_at,
                    "response_status": o.response_status,
                    "response_body": o.response_body,
                    "error": None if o.succeeded else o.error,
                    "duration_ms": o.duration_ms,
                    "next_attempt_at": next_at,
                    "lease_token": None,
                    "lease_until": None,
                }
            )
            if next_at is not None:
                retries.append(
                    repository.delivery_row(
                        tenant_id=job.tenant_id,
                        subscription_id=job.subscription_id,
                        message_id=job.message_id,
                        message_seq=job.message_seq,
                        event_type=job.event_type,
                        resource_key=job.resource_key,
                        attempt=job.attempt + 1,
                        step=job.step + 1,
                        trigger="scheduled",
                        due_at=next_at,
                    )
                )
            labels.append(
                "succeeded" if o.succeeded else ("retrying" if next_at is not None else "failed")
            )
        # A later outcome of the batch may have disabled a subscription: no retries for it.
        disabled = {key for key, row in subscriptions.items() if not row.enabled}
        if disabled:
            retries = [r for r in retries if (r["tenant_id"], r["subscription_id"]) not in disabled]
            pending = {(r["tenant_id"], r["message_id"], r["subscription_id"]) for r in retries}
            for row, o in zip(finished, outcomes_recorded, strict=True):
                key = (o.job.tenant_id, o.job.message_id, o.job.subscription_id)
                if row["next_attempt_at"] is not None and key not in pending:
                    row["next_attempt_at"] = None
        repository.finish_attempts(session, finished)
        repository.insert_deliveries(session, retries)
        session.flush()
        return labels

    def _next_attempt(self, o: Outcome, subscription: Any) -> datetime | None:
        """Apply the outcome to the subscription (the failure clock, disabling); when the
        next attempt is due, or None."""
        if o.succeeded:
            if subscription.failing_since is not None:
                subscription.failing_since = None
            return None
        if not subscription.enabled:
            return None
        if o.response_status == 410:
            service.disable(
                session_of(subscription),
                subscription,
                reason="disabled: the receiver answered 410 Gone",
                now=o.attempted_at,
            )
            return None
        if subscription.failing_since is None:
            subscription.failing_since = o.attempted_at
        elif o.attempted_at - subscription.failing_since >= DISABLE_AFTER:
            service.disable(
                session_of(subscription),
                subscription,
                reason="disabled: every delivery failed for 5 days",
                now=o.attempted_at,
            )
            return None
        if o.final or o.job.step >= len(RETRY_DELAYS):
            return None
        delay = RETRY_DELAYS[o.job.step] * self.rng.uniform(1 - JITTER, 1 + JITTER)
        if o.retry_after is not None:
            delay = max(delay, min(o.retry_after, MAX_RETRY_AFTER))
        return o.attempted_at + delay

    def prune(self) -> int:
        """Drop messages and finished attempts older than the retention."""
        now = self.clock()
        if self._next_prune is not None and now < self._next_prune:
            return 0
        self._next_prune = now + PRUNE_EVERY
        before = now - timedelta(days=self.settings.webhooks_retention_days)
        with self.db.transaction(write=False) as session:
            tenants = repository.tenant_ids(session)
        removed = 0
        for tenant_id in tenants:
            while True:
                with self.db.transaction() as session:
                    count = repository.prune(
                        session, tenant_id=tenant_id, before=before, batch=PRUNE_BATCH
                    )
                removed += count
                if count < PRUNE_BATCH:
                    break
        with self.db.transaction() as session:
            repository.analyze_queue(session)
        return removed

    # --- running -------------------------------------------------------------------------------

    def run_once(self) -> int:
        """Publish, then make every attempt due now and record it; returns the attempts
        made. For tests (with an injected clock) and for draining a backlog."""
        if not self.hold_lease():
            return 0
        self.publish()
        made = 0
        while True:
            jobs = self.claim(self.max_in_flight)
            if not jobs:
                return made
            self.record(list(self._executor.map(self.send, jobs)))
            made += len(jobs)

    def run(self, stop: threading.Event) -> None:
        """The loop: until `stop` is set, keep up to `max_in_flight` attempts claimed.

        The database is asked only when there may be news: outbox rows are looked for when
        a commit of this process or a NOTIFY woke the loop, or every poll interval (other
        SQLite processes, retries falling due); outcomes are recorded a batch at a time,
        just before the next claim (which they may free later messages of a resource for),
        so each transaction carries many deliveries."""
        listener = _Listener(self.db, stop) if not self.db.is_sqlite else None
        if listener is not None:
            listener.start()
        in_flight: dict[Future[Outcome], Job] = {}
        outcomes: list[Outcome] = []
        poll = self.settings.webhooks_poll_interval
        seen_news = -1
        next_poll = 0.0
        may_claim = True
        log.info("webhook.dispatcher_started", extra={"dispatcher": self.name})
        try:
            while not stop.is_set():
                wake.clear()
                busy = False
                try:
                    if not self.hold_lease():
                        stop.wait(poll)
                        continue
                    self.prune()
                    yielding = self._yield()
                    if yielding:  # the server is busy: no write before the time comes
                        stop.wait(yielding)
                        continue
                    look = wake.news != seen_news or time.monotonic() >= next_poll
                    if look:
                        seen_news, next_poll = wake.news, time.monotonic() + poll
                        may_claim = True
                    outcomes += self._finished(in_flight)
                    recording, claiming, publish_limit = self._limits(
                        outcomes,
                        in_flight=len(in_flight),
                        may_claim=may_claim,
                        yielding=yielding is not None,
                    )
                    if recording:
                        may_claim = True  # they may free later messages of a resource
                    if recording or self._work_waiting(publish=look, claim=claiming):
                        published, jobs = self.step(
                            recording,
                            publish=look,
                            claim=claiming,
                            publish_limit=publish_limit,
                            backlog=yielding is None,
                        )
                        if yielding is not None:
                            self._yielded()
                        outcomes = outcomes[len(recording) :]
                        busy = bool(published or recording or jobs)
                        if claiming:
                            may_claim = len(jobs) == claiming  # full: there may be more
                        for job in jobs:
                            future = self._executor.submit(self.send, job)
                            future.add_done_callback(lambda _future: wake.set())
                            in_flight[future] = job
                            busy = True
                except Exception:
                    log.exception("webhook.dispatcher_error")
                    stop.wait(1.0)
                    continue
                if not busy:
                    wake.wait(poll)
            # Shutting down: let the attempts in flight end (they are bounded by the
            # timeout) and record them; nothing new is claimed.
            if in_flight:
                wait(list(in_flight), timeout=self.timeout + 1)
            self.record(outcomes + self._finished(in_flight))
        finally:
            if listener is not None:
                listener.join(2.0)
            try:
                self.release_lease()
            except Exception:
                log.exception("webhook.release_failed")
            log.info("webhook.dispatcher_stopped", extra={"dispatcher": self.name})

    def _limits(
        self, outcomes: list[Outcome], *, in_flight: int, may_claim: bool, yielding: bool
    ) -> tuple[list[Outcome], int, int]:
        """What the next step does: the outcomes it records, the attempts it claims at most
        and the messages it publishes at most.

        At full speed, outcomes wait until a whole batch can be claimed with them (or
        nothing is left in flight), and claims are of `batch` or more: few transactions,
        each carrying many deliveries. While yielding, a step comes only every
        `yield_interval`: it records whatever has ended, claims what the pool has room for
        and publishes no more than that, so that it stays short."""
        free = self.max_in_flight - in_flight
        if yielding:
            return outcomes, free if may_claim or outcomes else 0, self.max_in_flight
        recording = outcomes if free >= self.batch or not in_flight else []
        claiming = free if (may_claim or recording) and free >= self.batch else 0
        return recording, claiming, service.PUBLISH_BATCH

    def _yielded(self) -> None:
        """A step was made while yielding: the next not before `yield_interval`."""
        self._next_write = self.monotonic() + self.settings.yield_interval

    def _yield(self) -> float | None:
        """None while the server is not busy (or there is no server to yield to): the
        dispatcher goes at full speed. While it is busy, the seconds to wait before the
        next write transaction (0: one may be made now): one every `yield_interval`,
        publishing and claiming at most `max_in_flight` each, so a burst of requests is
        not slowed by deliveries (on SQLite, by waits for the write lock behind ours; on
        both, by their CPU and the database's). Deliveries fall behind during the burst and
        catch up after it."""
        if self.server_busy is None or not self.server_busy():
            return None
        return max(0.0, self._next_write - self.monotonic())

    def _work_waiting(self, *, publish: bool, claim: int) -> bool:
        """A read (no write lock on SQLite): are there outbox rows to publish, or attempts
        to claim? Spares an idle dispatcher a write transaction every poll."""
        if not publish and not claim:
            return False
        with self.db.transaction(write=False) as session:
            return bool(
                (publish and repository.has_unpublished(session))
                or (claim and repository.claimable(session, now=self.clock(), limit=1, lock=False))
            )

    def _finished(self, in_flight: dict[Future[Outcome], Job]) -> list[Outcome]:
        """The outcomes of the attempts that ended, taken out of `in_flight`."""
        outcomes = []
        for future in [future for future in in_flight if future.done()]:
            job = in_flight.pop(future)
            try:
                outcomes.append(future.result())
            except Exception:  # send never raises; its lease lapses and it is retried
                log.exception("webhook.attempt_crashed", extra={"delivery_id": job.delivery_id})
        return outcomes

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.client.close()


def _nice(increment: int) -> None:
    """Lower the priority of the calling thread (Linux; elsewhere of the process)."""
    try:
        os.nice(increment)
    except OSError:  # pragma: no cover - not allowed here: run at the same priority
        log.warning("webhook.nice_failed", exc_info=True)


class _Listener(threading.Thread):
    """LISTEN on its own connection; each notification wakes the dispatcher."""

    def __init__(self, db: Database, stop: threading.Event) -> None:
        super().__init__(name="webhook-listener", daemon=True)
        self.url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.stop = stop

    def run(self) -> None:
        import psycopg

        while not self.stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    wake.news_arrived()  # anything committed before we listened
                    while not self.stop.is_set():
                        for _notification in conn.notifies(timeout=1.0):
                            wake.news_arrived()
            except Exception:
                log.warning("webhook.listen_failed", exc_info=True)
                self.stop.wait(2.0)


def publish_now(db: Database) -> None:
    """Publish what is committed and not yet published, so the feed is current even when
    no dispatcher runs. A failure only leaves the feed a moment behind."""
    try:
        with db.transaction(write=False) as session:
            if not repository.has_unpublished(session):
                return
        with db.transaction() as session:
            service.publish(session, now=service.utcnow())
    except Exception:
        log.warning("webhook.publish_failed", exc_info=True)
