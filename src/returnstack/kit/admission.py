"""Admission control: a request that waited too long before its work could start is answered
503 `overloaded` at once, with Retry-After, and nothing of it is written.

Sync endpoints and dependencies run on AnyIO's thread pool (40 threads), which queues the
rest without bound: past capacity every request waits behind all the others, and clients
time out after seconds while the server works through requests nobody awaits any more. So the
request middleware notes when each request arrived, and again when its body has been read
(a context variable, which AnyIO copies into the worker thread), and the thread that starts
the request's work checks how long it waited: past `max_wait`
(RETURNSTACK_ADMISSION_MAX_WAIT), it is refused before it begins a transaction. The queue
then drains at the speed of refusals (microseconds each), so the requests that are admitted
keep their latency, and clients back off.

The checks (`admit`) stand where a request's work starts in a thread: the endpoint of every
route (kit/routing.py), the authentication of a key (tenants/auth.py) and the lean reads
(kit/deps.py read_json). POST /v1/events is bounded by its writer instead (kit/groupcommit.py,
RETURNSTACK_INGEST_MAX_WAIT). /healthz, /readyz and /metrics are async and use threads of
their own, so they answer whatever the queue (kit/health.py).
"""

import time
from collections.abc import Callable
from contextvars import ContextVar, Token

from returnstack.kit.errors import Overloaded
from returnstack.kit.metrics import OVERLOADED


class Admission:
    """One app's limit: `max_wait` seconds (0: no limit) from arrival to the work's start,
    read on `clock` (injectable: tests move time instead of sleeping)."""

    def __init__(self, max_wait: float, clock: Callable[[], float] = time.perf_counter) -> None:
        self.max_wait = max_wait
        self.clock = clock
        self.retry_after = str(max(1, round(max_wait)))

    def arrived(self) -> "Token[Arrival | None] | None":
        """In the middleware, as the request arrives: start its clock (nothing when off)."""
        if self.max_wait <= 0:
            return None
        return _ARRIVAL.set(Arrival(self, self.clock()))

    def refuse(self) -> Overloaded:
        OVERLOADED.labels("admission").inc()
        return Overloaded(headers={"Retry-After": self.retry_after})


class Arrival:
    """A request's admission and the time its wait began: its arrival, then the end of its
    body. (Mutable: the context variable holds this one object, so the middleware's receive
    restarts the wait that a copy of the context in a worker thread checks.)"""

    __slots__ = ("admission", "at")

    def __init__(self, admission: Admission, at: float) -> None:
        self.admission = admission
        self.at = at

    def body_received(self) -> None:
        """The request's body has been read: its wait for the server starts now. (A slow
        upload waits for its client, not for the server: a 10 MB attachment on a slow link
        must not be refused for the time it took to arrive.)"""
        self.at = self.admission.clock()


# The request's arrival; None outside a request, or with no limit.
_ARRIVAL: ContextVar[Arrival | None] = ContextVar("returnstack_arrival", default=None)


def admit() -> None:
    """In the thread where a request's work starts, before it begins a transaction: refuse it
    with Overloaded if it has waited past its limit since it arrived. (Only ever called before
    the endpoint's work: a refusal rolls back whatever the request began, and it has
    committed nothing yet.)"""
    arrival = _ARRIVAL.get()
    if arrival is None:
        return
    admission = arrival.admission
    if admission.clock() - arrival.at > admission.max_wait:
        raise admission.refuse()


def body_received() -> None:
    """In the middleware's receive, once the body's last chunk is in (see Arrival)."""
    arrival = _ARRIVAL.get()
    if arrival is not None:
        arrival.body_received()


def left(token: "Token[Arrival | None] | None") -> None:
    """In the middleware, once the request is answered."""
    if token is not None:
        _ARRIVAL.reset(token)
