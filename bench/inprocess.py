"""CPU per request of the service's ASGI app called in-process: no sockets, no HTTP parsing,
no load generator, so the figures hold on a loaded machine (CPU time of this process, not
wall-clock rates), and under callgrind (`valgrind --tool=callgrind`) they are instruction
counts that repeat from run to run.

    python -m bench.inprocess requests [--requests N] [--clients C] [--cases a,b]
    python -m bench.inprocess compat [--purchases N] [--rounds R]

`requests`: µs of CPU a request for one-event `POST /v1/events` (`events`), the same with the
writer's transaction replaced by a canned answer (`events-nowrite`: the request path without
the write), a lean read `GET /v1/customers/{id}` (`profile`), and bare FastAPI's one-event
endpoint (`bare`, bench/bare_app.py). `compat`: µs of CPU a purchase for `POST /v1/events`
(100 purchases a request) and Optimove batches (1,000 item events a request) alternated on
one growing SQLite database, and their ratio (what `python -m bench compat` measures as
throughput, on a server bound by its CPU).
"""

import argparse
import asyncio
import base64
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from bench import compat, workload

Request = tuple[str, str, bytes, list[tuple[bytes, bytes]], bytes]  # method, path, query, ...


async def call(app: Any, request: Request) -> tuple[int, bytes]:
    """One HTTP request through the ASGI app, as uvicorn would make it."""
    method, path, query, headers, body = request
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": method,
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": headers,
        "state": {},
    }
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


def drive(app: Any, requests: Iterator[Request], count: int, clients: int) -> float:
    """Send `count` requests from `clients` concurrent tasks; the process's CPU seconds.
    Every answer must be 2xx."""

    async def main() -> float:
        bounded = iter(list(_take(requests, count)))  # made before the clock starts
        _callgrind("on")
        started = time.process_time()
        await asyncio.gather(*(_client(app, bounded) for _ in range(clients)))
        seconds = time.process_time() - started
        _callgrind("off")
        return seconds

    return asyncio.run(main())


def _callgrind(state: str) -> None:
    """Under `valgrind --tool=callgrind --instr-atstart=no` with BENCH_CALLGRIND=1, count the
    instructions of the measured requests only (not the start-up, nor the warm-up)."""
    if os.environ.get("BENCH_CALLGRIND") and os.environ.get("BENCH_MEASURED"):
        subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True)


def _take(requests: Iterator[Request], count: int) -> Iterator[Request]:
    for _ in range(count):
        yield next(requests)


async def _client(app: Any, requests: Iterator[Request]) -> None:
    for request in requests:
        status, body = await call(app, request)
        if not 200 <= status < 300:
            raise RuntimeError(f"{request[0]} {request[1]}: {status} {body[:300]!r}")


# --- the service -------------------------------------------------------------------------


class Service:
    """The app on a fresh SQLite file (or `url`), with a tenant and its keys."""

    def __init__(self, url: str | None = None) -> None:
        from returnstack.app import serve_app
        from returnstack.config import Settings
        from returnstack.kit import migrate
        from returnstack.kit.db import Database
        from returnstack.tenants.service import create_key, create_tenant

        self.workdir = Path(tempfile.mkdtemp(prefix="returnstack-inprocess-"))
        self.url = url or f"sqlite:///{self.workdir / 'bench.db'}"
        settings = Settings(
            database_url=self.url,
            data_dir=self.workdir / "data",
            log_requests=True,  # as served: one access-log line a request
            auto_migrate=False,
            webhooks_dispatcher=False,
            sqlite_analyze_interval=0,
        )
        self.db = Database(settings, background_checkpoints=True)
        migrate.upgrade(self.db.engine)
        with self.db.transaction() as session:
            tenant = create_tenant(session, name="bench", default_currency="EUR")
            secret = create_key(session, tenant=tenant, kind="secret")
            publishable = create_key(session, tenant=tenant, kind="publishable")
        self.tenant_id = tenant.id
        self.secret = secret.key
        self.publishable = publishable.key
        self.app = serve_app(settings, database=self.db)

    def auth(self) -> list[tuple[bytes, bytes]]:
        return [(b"authorization", f"Bearer {self.secret}".encode())]

    def close(self) -> None:
        self.app.state.ingest.stop()
        self.db.dispose()


def _json_headers(auth: list[tuple[bytes, bytes]], body: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"host", b"127.0.0.1:8000"),
        *auth,
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]


def one_event_requests(auth: list[tuple[bytes, bytes]], phase: str) -> Iterator[Request]:
    """One-event POST /v1/events requests, each a new purchase (1-3 lines)."""
    for body in workload.bodies(phase, events=10**9, per_request=1, lines=None):
        yield ("POST", "/v1/events", b"", _json_headers(auth, body), body)


def _stub_writer(app: Any) -> Callable[[], None]:
    """Replace the writer's transaction by a canned answer (what one accepted event answers);
    returns the undo."""
    writer = app.state.ingest
    saved = writer.run, writer.alone
    payload = orjson.dumps({"accepted": 1, "duplicates": 0, "rejected": [], "ids": ["evt_x"]})

    async def run(work: Any, *, units: int = 1, combine: Any = None) -> Any:
        return payload, 1

    writer.run, writer.alone = run, lambda units: False

    def undo() -> None:
        writer.run, writer.alone = saved

    return undo


def _customers(service: Service, count: int) -> list[str]:
    """Customers with a profile (written through the app)."""
    requests = one_event_requests(service.auth(), "pc")
    drive(service.app, requests, count, 4)
    return [f"pcc-{number:09d}" for number in range(count)]


def measure_requests(cases: list[str], count: int, clients: int, rounds: int, warmup: int) -> None:
    service = Service()
    try:
        results: dict[str, list[float]] = {case: [] for case in cases}
        customers = _customers(service, 200) if "profile" in cases else []
        bare = None
        if "bare" in cases:
            os.environ["BENCH_BARE_MODE"] = "async"
            from bench.bare_app import create_app as bare_app

            bare = bare_app()
        streams = {
            "events": one_event_requests(service.auth(), "pe"),
            "events-nowrite": one_event_requests(service.auth(), "pn"),
            "bare": one_event_requests([], "pb"),
            "profile": _profile_requests(service, customers),
        }
        for case in cases:
            _run_case(service, bare, case, streams[case], warmup, clients)
        os.environ["BENCH_MEASURED"] = "1"
        for _ in range(rounds):
            for case in cases:
                seconds = _run_case(service, bare, case, streams[case], count, clients)
                results[case].append(seconds / count * 1e6)
        del os.environ["BENCH_MEASURED"]
        for case in cases:
            figures = ", ".join(f"{value:,.0f}" for value in results[case])
            print(f"{case:<16} µs CPU a request: {figures}  (min {min(results[case]):,.0f})")
    finally:
        service.close()


def _profile_requests(service: Service, customers: list[str]) -> Iterator[Request]:
    headers = [(b"host", b"127.0.0.1:8000"), *service.auth()]
    while True:
        for customer in customers:
            yield ("GET", f"/v1/customers/{customer}", b"", headers, b"")


def _run_case(
    service: Service, bare: Any, case: str, requests: Iterator[Request], count: int, clients: int
) -> float:
    if case == "bare":
        return drive(bare, requests, count, clients)
    if case == "events-nowrite":
        undo = _stub_writer(service.app)
        try:
            return drive(service.app, requests, count, clients)
        finally:
            undo()
    return drive(service.app, requests, count, clients)


def _writer_clock(app: Any) -> list[float]:
    """The CPU seconds the writer thread spends writing groups, kept up to date in [0]."""
    writer = app.state.ingest
    spent = [0.0]
    write = writer._write

    def timed(group: Any) -> None:
        started = time.thread_time()
        try:
            write(group)
        finally:
            spent[0] += time.thread_time() - started

    writer._write = timed
    return spent


# --- vendor adapters ---------------------------------------------------------------------


def measure_compat(
    names: list[str], purchases: int, rounds: int, clients: int, analyze_after: int
) -> None:
    if os.environ.get("BENCH_SWITCH_INTERVAL"):
        sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))
    service = Service()
    try:
        auth = service.auth()
        known: dict[str, tuple[str, Callable[[list[dict[str, Any]]], list[bytes]]]] = {
            "native": ("/v1/events", compat._native),
            "optimove": ("/optimove/events/batch", compat._optimove),
            "constructor": ("/v1/offline_behavioral_actions", compat._constructor),
        }
        formats = {name: known[name] for name in names}
        basic = [(b"authorization", b"Basic " + base64.b64encode(f"{service.secret}:".encode()))]
        cpu: dict[str, list[float]] = {name: [] for name in formats}
        writer_cpu: dict[str, list[float]] = {name: [] for name in formats}
        rates: dict[str, list[float]] = {name: [] for name in formats}
        spent = _writer_clock(service.app)
        for round_ in range(rounds + 1):
            for name, (path, make) in formats.items():
                bodies = make(compat._purchases(f"{name[0]}{round_}", purchases))
                headers = basic if name == "constructor" else auth
                query = f"key={service.publishable}".encode() if name == "constructor" else b""
                requests = iter(
                    [("POST", path, query, _json_headers(headers, body), body) for body in bodies]
                )
                written = spent[0]
                if round_:
                    os.environ["BENCH_MEASURED"] = "1"
                wall = time.perf_counter()
                seconds = drive(service.app, requests, len(bodies), clients)
                wall = time.perf_counter() - wall
                os.environ.pop("BENCH_MEASURED", None)
                if round_ == 0 and name == names[0] and analyze_after:
                    # As `serve` does soon after it starts (StatisticsKeeper): the statistics
                    # of the tables written so far, gathered while they are small.
                    print("analyzed:", service.db.optimize(missing_only=True))
                if round_:  # the first round warms up
                    cpu[name].append(seconds / purchases * 1e6)
                    writer_cpu[name].append((spent[0] - written) / purchases * 1e6)
                    rates[name].append(purchases / wall)
        for name, values in cpu.items():
            figures = ", ".join(f"{value:,.0f}" for value in values)
            baseline = cpu.get("native", values)
            ratios = ", ".join(
                f"{native / value:.2f}" for native, value in zip(baseline, values, strict=True)
            )
            print(f"{name:<12} µs CPU a purchase: {figures}; ratio to native: {ratios}")
            figures = ", ".join(f"{value:,.0f}" for value in writer_cpu[name])
            print(f"{'':<12} of which the writer thread's: {figures}")
            figures = ", ".join(
                f"{value:,.0f} ({value / native:.2f})"
                for value, native in zip(rates[name], rates.get("native", rates[name]), strict=True)
            )
            print(f"{'':<12} purchases/s (wall clock; ratio to native): {figures}")
    finally:
        service.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    requests = sub.add_parser("requests")
    requests.add_argument("--requests", type=int, default=2000)
    requests.add_argument("--clients", type=int, default=4)
    requests.add_argument("--rounds", type=int, default=3)
    requests.add_argument("--cases", default="bare,events-nowrite,events,profile")
    requests.add_argument("--warmup", type=int, default=300, help="requests first, per case")
    adapters = sub.add_parser("compat")
    adapters.add_argument("--purchases", type=int, default=3000)
    adapters.add_argument("--rounds", type=int, default=3)
    adapters.add_argument("--clients", type=int, default=4)
    adapters.add_argument("--formats", default="native,optimove,constructor")
    adapters.add_argument(
        "--analyze-after",
        type=int,
        default=1,
        help="1: gather SQLite's statistics after the first native phase, as `serve` does "
        "soon after it starts; 0: never",
    )
    args = parser.parse_args(argv)
    if args.what == "requests":
        measure_requests(
            args.cases.split(","), args.requests, args.clients, args.rounds, args.warmup
        )
    else:
        measure_compat(
            args.formats.split(","), args.purchases, args.rounds, args.clients, args.analyze_after
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
