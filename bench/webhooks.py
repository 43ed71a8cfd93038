"""Webhook delivery throughput of one dispatcher, and the delay from commit to delivery.

`python -m bench webhooks [--backend sqlite|postgresql|both] [--events N] [--rate R]`

1. Throughput: N messages are committed to the outbox (one subscription to a local receiver
   on loopback that answers 200 at once, with keep-alive), then one dispatcher drains them
   (publishing, claiming, sending, recording). Deliveries per second = N / time.
2. Delay: a dispatcher runs its loop while messages are committed at R per second (one per
   transaction, as requests commit them); the receiver notes when each arrives; the delay is
   arrival time minus commit time (p50, p99, max).

Prints one JSON object per backend.
"""

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg

from returnstack.config import Settings
from returnstack.kit import migrate
from returnstack.kit.db import Database
from returnstack.outbox.service import DomainEvent, record
from returnstack.tenants.service import create_tenant
from returnstack.webhooks import service
from returnstack.webhooks.dispatcher import Dispatcher

POSTGRES = "postgresql+psycopg://127.0.0.1:5432/test"


class Receiver:
    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    receiver.arrivals.setdefault(self.headers["webhook-id"], time.time())
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _event(i: int) -> DomainEvent:
    return DomainEvent(
        type="return.updated",
        data={"id": f"ret_{i % 500}", "status": "approved", "items": [{"quantity": 1}]},
    )


def run(backend: str, events: int, rate: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp())
    name = f"bench_webhooks_{uuid.uuid4().hex[:8]}"
    if backend == "sqlite":
        url = f"sqlite:///{tmp / 'bench.db'}"
    else:
        with psycopg.connect(POSTGRES.replace("+psycopg", ""), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        url = POSTGRES.rsplit("/", 1)[0] + f"/{name}"
    settings = Settings(database_url=url, webhooks_allow_private=True, webhooks_poll_interval=0.5)
    db = Database(settings, background_checkpoints=True)
    receiver = Receiver()
    try:
        migrate.upgrade(db.engine)
        with db.transaction() as session:
            tenant = create_tenant(session, name="bench", default_currency="EUR")
            service.create_subscription(
                session,
                tenant_id=tenant.id,
                url=receiver.url,
                events=["*"],
                description=None,
                enabled=True,
                allow_private=True,
            )
        for start in range(0, events, 500):
            with db.transaction() as session:
                record(
                    session,
                    tenant_id=tenant.id,
                    events=[_event(i) for i in range(start, min(start + 500, events))],
                )
        dispatcher = Dispatcher(db, settings)
        began = time.perf_counter()
        dispatcher.run_once()
        elapsed = time.perf_counter() - began
        assert len(receiver.arrivals) == events, len(receiver.arrivals)

        # Delay from commit to delivery at a steady rate, the dispatcher running its loop.
        stop = threading.Event()
        loop = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
        loop.start()
        committed: dict[str, float] = {}
        count = int(rate * 10)
        began_rate = time.perf_counter()
        for i in range(count):
            target = began_rate + i / rate
            pause = target - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            with db.transaction() as session:
                [message_id] = record(session, tenant_id=tenant.id, events=[_event(i)])
            committed[message_id] = time.time()
        deadline = time.time() + 60
        while time.time() < deadline and not set(committed) <= set(receiver.arrivals):
            time.sleep(0.05)
        stop.set()
        loop.join(30)
        dispatcher.close()
        delays = sorted(receiver.arrivals[m] - t for m, t in committed.items())
        return {
            "backend": backend,
            "deliveries_per_second": round(events / elapsed, 1),
            "events": events,
            "rate_per_second": rate,
            "delay_p50_ms": round(statistics.median(delays) * 1000, 1),
            "delay_p99_ms": round(delays[int(len(delays) * 0.99) - 1] * 1000, 1),
            "delay_max_ms": round(delays[-1] * 1000, 1),
        }
    finally:
        receiver.server.shutdown()
        db.dispose()
        if backend == "postgresql":
            with psycopg.connect(POSTGRES.replace("+psycopg", ""), autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench webhooks")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args(argv)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        print(json.dumps(run(backend, args.events, args.rate)))
        sys.stdout.flush()
    return 0
