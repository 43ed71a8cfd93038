"""Group commit: one writer thread per process runs the work of every pending request in one
transaction, commits once, and only then answers each request with its own result.

A request's answer still means committed: its future is resolved after the COMMIT. Each
piece of work runs inside a SAVEPOINT of the group's transaction, so a request refused for a
reason of its own (an ApiError: a revoked key, an Idempotency-Key conflict) is rolled back
alone and its neighbours are committed (where there are no neighbours, a group of one or a
group combined whole, the transaction itself is rolled back instead: no savepoint is needed,
and none is paid for). Work that fails otherwise (a database error, a bug)
may have left the transaction unusable: the whole group is rolled back and each piece of work
is run again in a transaction of its own, so it fails alone (and a transient error such as a
PostgreSQL deadlock between two processes' groups gets its retry).

Admission is bounded: past `queue_limit` waiting requests, or once a request has waited
`max_wait` seconds without its work being taken, it is refused with 503 `overloaded` and
nothing of it is written.
"""

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from anyio import to_thread
from sqlalchemy.orm import Session

from returnstack.kit.db import Database
from returnstack.kit.errors import ApiError, Overloaded
from returnstack.kit.metrics import GROUP_COMMIT_REQUESTS, OVERLOADED

log = logging.getLogger("returnstack.groupcommit")

T = TypeVar("T")

# A group is bounded so that one commit does not wait behind a huge amount of work (and a
# PostgreSQL transaction stays well under its 64 cached subtransactions).
MAX_GROUP_JOBS = 48
MAX_GROUP_UNITS = 2_000  # events, roughly: two large batches fill a group


# Runs several pieces of work at once (set-based: one statement for all of them where the
# work allows); answers one outcome per piece, a value or the ApiError refusing that piece.
Combine = Callable[[Session, list[Any]], list[Any]]


BESIDE_THE_GROUP = 50  # events; see GroupCommitter.alone


@dataclass(eq=False)
class _Job(Generic[T]):
    work: Callable[[Session], T]
    units: int
    combine: Combine | None = None
    # Where the answer goes: an asyncio future of the event loop that awaits it (`run`),
    # else a thread-safe future (`submit`, `run_sync`).
    waiter: "asyncio.Future[T] | None" = None
    loop: asyncio.AbstractEventLoop | None = None
    future: Future[T] = field(init=False)
    taken: bool = False

    def __post_init__(self) -> None:
        if self.waiter is None:
            self.future = Future()


def _settle(answers: list[tuple["asyncio.Future[Any]", bool, Any]]) -> None:
    """On the event loop: the answers of a group's requests (one wake-up of the loop for the
    whole group). A request whose task was cancelled (its client gone) has no one to tell."""
    for waiter, ok, value in answers:
        if waiter.done():
            continue
        if ok:
            waiter.set_result(value)
        else:
            waiter.set_exception(value)


class GroupCommitter:
    """The process's writer. Start it lazily: the first submit starts the thread."""

    def __init__(
        self, db: Database, *, max_wait: float, queue_limit: int, name: str = "group-commit"
    ) -> None:
        self.db = db
        self.max_wait = max_wait
        self.queue_limit = queue_limit
        self.name = name
        self._pending: deque[_Job[Any]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stopped = False
        # Observable state (tests and metrics): groups committed, and whether a group is
        # being written right now.
        self.groups = 0
        self.busy = False

    # --- callers -----------------------------------------------------------------------

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def submit(
        self,
        work: Callable[[Session], T],
        *,
        units: int = 1,
        combine: Combine | None = None,
        waiter: "asyncio.Future[T] | None" = None,
    ) -> "_Job[T]":
        """Queue `work` (run in the group's transaction, inside a savepoint of its own);
        refused at once with Overloaded when the queue is full. Pieces of work of one group
        that share a `combine` are first tried together, in one savepoint, by it; if that
        fails, each runs alone. The answer goes to `waiter` (an asyncio future, settled on
        its loop) if given, else to the job's `future`."""
        job: _Job[T] = _Job(
            work,
            max(1, units),
            combine,
            waiter=waiter,
            loop=None if waiter is None else waiter.get_loop(),
        )
        with self._lock:
            if len(self._pending) >= self.queue_limit:
                raise self._overloaded()
            self._pending.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._wake.notify()
        return job

    async def run(
        self, work: Callable[[Session], T], *, units: int = 1, combine: Combine | None = None
    ) -> T:
        """Submit and await the committed result (or the work's own error). Past `max_wait`
        without the writer taking the work: Overloaded, and the work is withdrawn unwritten.
        Once taken, the answer waits for the commit, whatever happens to the request."""
        # An asyncio future settled by the writer through the loop (one wake-up a group),
        # and a timer: no thread-safe future, no wrap_future chain, no wait() or shield().
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()
        job = self.submit(work, units=units, combine=combine, waiter=waiter)
        timer = loop.call_later(self.max_wait, self._expire, job)
        try:
            return await waiter
        except asyncio.CancelledError:
            self._withdraw(job)  # the client is gone; a job already taken still commits
            raise
        finally:
            timer.cancel()

    def _expire(self, job: "_Job[Any]") -> None:
        """On the loop, `max_wait` after the submit: still not taken, the work is withdrawn
        unwritten and refused; taken, its answer waits for the commit."""
        assert job.waiter is not None
        if not job.waiter.done() and self._withdraw(job):
            job.waiter.set_exception(self._overloaded())

    async def run_beside(self, work: Callable[[Session], T]) -> T:
        """Run the work in its own transaction on a worker thread, beside the writer: for a
        large batch on PostgreSQL, where a group would only queue it behind the others while
        the server could write several transactions at once."""
        return await to_thread.run_sync(self._transaction, work)

    def alone(self, units: int) -> bool:
        """Whether work of this many events is better written beside the group: a batch of
        BESIDE_THE_GROUP events or more gains nothing from a group on PostgreSQL (one commit
        is a small part of its cost) and would wait for the writer, so it gets a transaction
        of its own and several batches are written at once (bench/README.md, "Group
        commit"). SQLite writes one transaction at a time whatever happens, so there every
        request goes through the writer."""
        return units >= BESIDE_THE_GROUP and not self.db.is_sqlite

    def _transaction(self, work: Callable[[Session], T]) -> T:
        with self.db.transaction() as session:
            return work(session)

    def run_sync(self, work: Callable[[Session], T], *, units: int = 1) -> T:
        """The same from a thread (sync endpoints, the vendor adapters); a large batch on
        PostgreSQL in a transaction of its own (see `alone`)."""
        if self.alone(units):
            return self._transaction(work)
        job = self.submit(work, units=units)
        try:
            return job.future.result(timeout=self.max_wait)
        except TimeoutError:
            if self._withdraw(job):
                raise self._overloaded() from None
        return job.future.result()

    def _withdraw(self, job: "_Job[Any]") -> bool:
        with self._lock:
            if job.taken:
                return False
            self._pending.remove(job)
            return True

    def _overloaded(self) -> Overloaded:
        OVERLOADED.labels("writer").inc()
        return Overloaded(headers={"Retry-After": str(max(1, round(self.max_wait)))})

    def stop(self) -> None:
        """Write what is pending, then end the thread (a later submit starts another)."""
        with self._lock:
            thread = self._thread
            if thread is None:
                return
            self._stopped = True
            self._wake.notify()
        thread.join(timeout=30)

    # --- the writer thread -------------------------------------------------------------

    def _take(self) -> list["_Job[Any]"]:
        with self._lock:
            while not self._pending and not self._stopped:
                self._wake.wait()
            if not self._pending:
                # Stopped, everything written: a later submit starts another thread.
                self._thread = None
                self._stopped = False
                return []
            group: list[_Job[Any]] = []
            units = 0
            while self._pending and len(group) < MAX_GROUP_JOBS:
                job = self._pending[0]
                if group and units + job.units > MAX_GROUP_UNITS:
                    break
                self._pending.popleft()
                job.taken = True
                group.append(job)
                units += job.units
            self.busy = bool(group)
            return group

    def _run(self) -> None:
        while True:
            group = self._take()
            if not group:
                return  # stopped, nothing left
            GROUP_COMMIT_REQUESTS.observe(len(group))
            try:
                self._write(group)
            except BaseException as exc:  # never leave a caller waiting
                log.exception("groupcommit.failed")
                self._answer([(job, False, exc) for job in group])
            finally:
                with self._lock:
                    self.busy = False
                    self.groups += 1

    def _combined(self, session: Session, group: list["_Job[Any]"]) -> dict[Any, tuple[bool, Any]]:
        """Outcomes of the jobs that could run together (by their combine)."""
        together: dict[Combine, list[_Job[Any]]] = {}
        for job in group:
            if job.combine is not None:
                together.setdefault(job.combine, []).append(job)
        outcomes: dict[_Job[Any], tuple[bool, Any]] = {}
        for combine, jobs in together.items():
            if len(jobs) < 2:
                continue
            # The whole group in one combine (the usual case): nothing else is in the
            # transaction yet, so a failure rolls the transaction back instead of a
            # savepoint (two statements and SQLAlchemy's bookkeeping saved per group).
            whole = len(jobs) == len(group)
            savepoint = None if whole else session.begin_nested()
            try:
                results = combine(session, [job.work for job in jobs])
            except Exception:
                # Each runs alone, and only the culprit fails.
                if savepoint is None:
                    session.rollback()
                else:
                    savepoint.rollback()
                log.info("groupcommit.combine_failed", exc_info=True)
                continue
            if savepoint is not None:
                savepoint.commit()
            for job, result in zip(jobs, results, strict=True):
                outcomes[job] = (not isinstance(result, ApiError), result)
        return outcomes

    def _write(self, group: list["_Job[Any]"]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        retry_alone = False
        with self.db.session(write=True) as session:
            try:
                combined = self._combined(session, group)
                for job in group:
                    if job in combined:
                        outcomes.append(combined[job])
                        continue
                    # A group of one needs no savepoint: its refusal rolls back the
                    # transaction, which holds nothing else.
                    savepoint = None if len(group) == 1 else session.begin_nested()
                    try:
                        outcome = job.work(session)
                    except ApiError as exc:
                        if savepoint is None:
                            session.rollback()
                        else:
                            savepoint.rollback()
                        outcomes.append((False, exc))
                        continue
                    except Exception:
                        # The transaction may be unusable (PostgreSQL aborts it on an error,
                        # a deadlock rolls back more than the savepoint): start again.
                        log.warning("groupcommit.retry_alone", exc_info=True)
                        retry_alone = True
                        break
                    if savepoint is not None:
                        savepoint.commit()
                    outcomes.append((True, outcome))
                if retry_alone:
                    session.rollback()
                else:
                    session.commit()
            except BaseException:
                session.rollback()
                raise
        if retry_alone:
            self._answer([self._write_alone(job) for job in group])
            return
        self._answer([(job, ok, value) for job, (ok, value) in zip(group, outcomes, strict=True)])

    def _write_alone(self, job: "_Job[Any]") -> tuple["_Job[Any]", bool, Any]:
        try:
            with self.db.transaction() as session:
                outcome = job.work(session)
        except BaseException as exc:
            return job, False, exc
        return job, True, outcome

    def _answer(self, answers: list[tuple["_Job[Any]", bool, Any]]) -> None:
        """Answer each job (after the commit): thread-safe futures at once, the waiters of
        an event loop with one call onto that loop for all of them."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for job, ok, value in answers:
            if job.waiter is None:
                if job.future.done():
                    continue
                if ok:
                    job.future.set_result(value)
                else:
                    job.future.set_exception(value)
            else:
                assert job.loop is not None
                by_loop.setdefault(job.loop, []).append((job.waiter, ok, value))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:  # the loop is closed: no one is waiting any more
                log.warning("groupcommit.loop_closed")
