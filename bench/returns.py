"""The returns-lifecycle benchmark (`python -m bench returns`): returns of 2 items from 2 orders
opened and taken through approve -> receive -> refund -> close at a fixed request rate, against
a real server, on a database holding N orders (1,000,000 by default).

Per backend, on a fresh database:
1. `returnstack tenants create` / `keys create` (the CLI; this also builds the schema).
2. N orders loaded with the service's own bulk path: `record_events` in-process, 5,000
   events a transaction (`Database(settings).transaction()`), as `returnstack import` does.
   PostgreSQL then gets `VACUUM ANALYZE` (what autovacuum would do on its own, at a moment
   of its choosing, likely during the measured run).
3. `returnstack serve` on a free port; an open-loop load (bench/openloop.py): R/5 pipelines
   a second, each POST /v1/returns then approve, receive, refund and close, so R requests a
   second in all; a warm-up, then the measured pipelines.
4. Per action: requests, achieved req/s, latency p50/p90/p99/max from the due time, errors;
   the server's CPU and peak RSS; the returns in the database counted by status.
"""

import argparse
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from rich.table import Table

from bench import harness, openloop, profile, workload
from bench.harness import console
from bench.server import Target, fresh_database, kept, returnstack_server

ACTIONS = ("create", "approve", "receive", "refund", "close")
P99_TARGET_MS = 20.0
RATE_TARGET = 200.0
WINDOW_DAYS = 20  # orders are spread over the last 20 days: inside the default 30-day window
LOAD_BATCH = 5_000
BULK_BATCH = 20_000  # orders a transaction of the bulk load
REASONS = ("size_too_small", "size_too_large", "color", "defective", "unwanted", "style")


@dataclass
class Options(harness.Options):
    orders: int
    rates: list[float]
    duration: float
    warmup: float
    step_gap: float
    workers: int
    server_workers: int
    variant: str  # in the results file's name: "" for one server process, "-workers2" for two
    load: str
    dataset: str | None
    dataset_dir: Path


def options(args: Any, argv: list[str]) -> Options:
    return Options(
        **harness.common(BENCH, args, argv),
        orders=args.orders or (20_000 if args.quick else 1_000_000),
        rates=args.rate,
        duration=args.duration or (20.0 if args.quick else 120.0),
        warmup=args.warmup if args.warmup is not None else (5.0 if args.quick else 15.0),
        step_gap=args.step_gap,
        workers=args.workers,
        server_workers=args.server_workers,
        variant="" if args.server_workers == 1 else f"-workers{args.server_workers}",
        load=args.load,
        **harness.dataset_options(args),
    )


# --- the dataset --------------------------------------------------------------------------


def customer_of(order: int) -> int:
    """Orders 2c and 2c+1 are customer c's: every customer has two orders."""
    return order // 2


def order_id(order: int) -> str:
    return f"ro-{order:09d}"


def customer_id(customer: int) -> str:
    return f"rc-{customer:09d}"


def order_event(order: int, rng: random.Random, now: datetime) -> dict[str, Any]:
    """A purchase of 2 or 3 lines (line ids "1", "2"[, "3"]), by a customer with an id and an
    email, at a moment of the last 20 days; 30% in one of 40 stores (bench/workload.py)."""
    event = workload.purchase("r", order, rng, now, lines=2 + (rng.random() < 0.5))
    customer = customer_id(customer_of(order))
    event["customer"] = {"id": customer, "email": f"{customer}@example.com"}
    moment = now - timedelta(seconds=rng.randrange(60, WINDOW_DAYS * 86400))
    event["timestamp"] = moment.isoformat(timespec="seconds").replace("+00:00", "Z")
    return event


def load_orders(
    target: Target,
    tenant_id: str,
    orders: int,
    rng: random.Random | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Record `orders` purchases with the service's bulk path: record_events in-process,
    LOAD_BATCH events a transaction. Events are built and validated (check_event, as
    `returnstack import` does) outside the timed transactions, and that time is kept too."""
    from returnstack.config import Settings
    from returnstack.events.schemas import Trust
    from returnstack.events.service import record_events
    from returnstack.events.validation import check_event
    from returnstack.kit.db import Database

    settings = Settings(database_url=target.url, _env_file=None)
    db = Database(settings)
    rng = rng or random.Random("returns:1")
    now = now or datetime.now(UTC)
    build_s = write_s = 0.0
    accepted = 0
    started = time.perf_counter()
    last_report = started
    try:
        for first in range(0, orders, LOAD_BATCH):
            t_build = time.perf_counter()
            events = []
            for number in range(first, min(orders, first + LOAD_BATCH)):
                checked = check_event(order_event(number, rng, now))
                if isinstance(checked, list):
                    raise RuntimeError(f"invalid generated purchase {number}: {checked}")
                events.append(checked)
            t_write = time.perf_counter()
            with db.transaction() as session:
                result = record_events(
                    session,
                    tenant_id=tenant_id,
                    default_currency="EUR",
                    events=events,
                    source="import",
                    actor="bench:returns",
                    trust=Trust.verified,
                )
            t_done = time.perf_counter()
            build_s += t_write - t_build
            write_s += t_done - t_write
            accepted += result.accepted
            if t_done - last_report > 15 or first + LOAD_BATCH >= orders:
                last_report = t_done
                console.print(
                    f"    {accepted:,} orders in {t_done - started:.0f}s "
                    f"({accepted / (t_done - started):,.0f} orders/s; "
                    f"record_events {accepted / max(write_s, 1e-9):,.0f} orders/s)"
                )
    finally:
        db.dispose()
    seconds = time.perf_counter() - started
    if accepted != orders:
        raise RuntimeError(f"loaded {accepted} of {orders} orders")
    return {
        "method": "record_events",
        "orders": orders,
        "seconds": round(seconds, 1),
        "orders_per_s": round(orders / seconds, 1),
        "build_and_validate_s": round(build_s, 1),
        "record_events_s": round(write_s, 1),
        "record_events_orders_per_s": round(orders / write_s, 1),
        "batch": LOAD_BATCH,
    }


def order_rows(
    tenant_id: str, event: dict[str, Any], now: datetime, seq: int
) -> dict[str, list[dict[str, Any]]]:
    """The rows record_events writes for one new purchase of a new customer's first order,
    or of its second (customer c's orders are 2c and 2c+1: the first makes the customer),
    as orders/service.py, customers/service.py and outbox/service.py build them; its
    outbox message already published (numbered `seq`), as the dispatcher leaves it."""
    from returnstack.kit.ids import new_id
    from returnstack.kit.timefmt import rfc3339
    from returnstack.orders.service import LINE_FIELDS
    from returnstack.outbox.service import resource_key

    placed = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    server_id = new_id("evt")
    customer = event["customer"]
    store = event.get("store")
    lines = [
        {
            "tenant_id": tenant_id,
            "order_id": event["order_id"],
            "line_id": item["line_id"],
            "position": position,
            "product_id": item["product_id"],
            "variant_id": item["variant_id"],
            "name": item["name"],
            "category": item["category"],
            "url": None,
            "quantity": item["quantity"],
            "unit_price": item["unit_price"],
            # The order's, copied onto its lines (the reports' units sold).
            "placed_at": placed,
            "currency": event["currency"],
            "channel": event["channel"],
            "store_id": None if store is None else store["id"],
        }
        for position, item in enumerate(event["items"], start=1)
    ]
    data = {
        "event_id": server_id,
        "order_id": event["order_id"],
        "customer": {"id": customer["id"], "email": customer["email"]},
        "channel": event["channel"],
        "store": None
        if store is None
        else {key: store.get(key) for key in ("id", "name", "city", "country")},
        "currency": event["currency"],
        "placed_at": rfc3339(placed),
        "lines": [{key: line[key] for key in LINE_FIELDS} for line in lines],
    }
    rows: dict[str, list[dict[str, Any]]] = {
        "events": [
            {
                "tenant_id": tenant_id,
                "id": server_id,
                "client_id": event["id"],
                "type": "purchase",
                "order_id": event["order_id"],
                "occurred_at": placed,
                "received_at": now,
                "source": "import",
            }
        ],
        "orders": [
            {
                "tenant_id": tenant_id,
                "id": event["order_id"],
                "customer_id": customer["id"],
                "email": customer["email"],
                "channel": event["channel"],
                "store_id": None if store is None else store["id"],
                "currency": event["currency"],
                "placed_at": placed,
                "event_id": server_id,
                "created_at": now,
            }
        ],
        "order_lines": lines,
        "outbox": [
            {
                "tenant_id": tenant_id,
                "id": new_id("msg"),
                "type": "purchase.recorded",
                "data": data,
                "changes": None,
                "created_at": now,
                "dispatched_at": now,
                "seq": seq,
                "resource_key": resource_key("purchase.recorded", data),
            }
        ],
        "customers": [],
        "customer_emails": [],
    }
    if int(event["order_id"].rpartition("-")[2]) % 2 == 0:  # the customer's first order
        rows["customers"].append(
            {
                "tenant_id": tenant_id,
                "id": customer["id"],
                "email": customer["email"],
                "name": None,
                "created_at": now,
                "updated_at": now,
                "server_id": new_id("cus"),
            }
        )
        rows["customer_emails"].append(
            {
                "tenant_id": tenant_id,
                "email": customer["email"],
                "customer_id": customer["id"],
                "created_at": now,
                "server_id": None,
            }
        )
    return rows


# A database of that many orders has had returns all along: the customers of the last 5 %
# (so 5 % of the orders) returned line 1 of both their orders before the run. The return
# tables are then not empty when their statistics are taken, as in production; the run's
# returns are opened by the other customers.
RETURNED_SHARE = 0.05


def returned_customers(orders: int) -> range:
    customers = orders // 2
    return range(customers - int(customers * RETURNED_SHARE), customers)


def load_returned(target: Target, tenant_id: str, customers: range) -> dict[str, Any]:
    """Recorded returns of line 1 (quantity 1, refunded its price) of both orders of each of
    `customers`: return events through record_events, LOAD_BATCH a transaction, as
    `returnstack import` records them; their messages published as the dispatcher does."""
    from sqlalchemy import text

    from returnstack.config import Settings
    from returnstack.events.schemas import Trust
    from returnstack.events.service import record_events
    from returnstack.events.validation import check_event
    from returnstack.kit.db import Database
    from returnstack.webhooks.service import PUBLISH_BATCH, publish

    if not customers:
        return {"returns": 0, "seconds": 0.0}
    settings = Settings(database_url=target.url, _env_file=None)
    db = Database(settings)
    rng = random.Random("returns:returned")
    now = datetime.now(UTC)
    started = time.perf_counter()
    recorded = 0
    try:
        with db.transaction(write=False) as session:
            rows = session.execute(
                text(
                    "SELECT o.id, o.channel, o.store_id, o.placed_at, l.product_id, "
                    "l.unit_price FROM orders o JOIN order_lines l ON l.tenant_id = o.tenant_id "
                    "AND l.order_id = o.id WHERE o.tenant_id = :tenant AND l.line_id = '1' "
                    "AND o.id BETWEEN :first AND :last ORDER BY o.id"
                ),
                {
                    "tenant": tenant_id,
                    "first": order_id(2 * customers[0]),
                    "last": order_id(2 * customers[-1] + 1),
                },
            ).all()
        events = []
        for order, channel, store, placed_at, product, unit_price in rows:
            if isinstance(placed_at, str):  # SQLite gives the stored text
                placed_at = datetime.fromisoformat(placed_at).replace(tzinfo=UTC)
            moment = placed_at + (now - placed_at) / 2
            customer = customer_id(customer_of(int(order.removeprefix("ro-"))))
            event: dict[str, Any] = {
                "type": "return",
                "id": f"rr-{order}",
                "timestamp": moment.isoformat(timespec="seconds").replace("+00:00", "Z"),
                "channel": channel,
                "order_id": order,
                "currency": "EUR",
                "customer": {"id": customer, "email": f"{customer}@example.com"},
                "items": [
                    {
                        "line_id": "1",
                        "product_id": product,
                        "quantity": 1,
                        "reason": rng.choice(REASONS),
                    }
                ],
                "refund": {"amount": unit_price},
            }
            if store is not None:
                event["store"] = {"id": store}
            checked = check_event(event)
            if isinstance(checked, list):
                raise RuntimeError(f"invalid generated return of {order}: {checked}")
            events.append(checked)
        for first in range(0, len(events), LOAD_BATCH):
            with db.transaction() as session:
                result = record_events(
                    session,
                    tenant_id=tenant_id,
                    default_currency="EUR",
                    events=events[first : first + LOAD_BATCH],
                    source="import",
                    actor="bench:returns",
                    trust=Trust.verified,
                )
            recorded += result.accepted
        while True:  # their messages, published as the dispatcher does
            with db.transaction() as session:
                if publish(session, now=datetime.now(UTC)) < PUBLISH_BATCH:
                    break
    finally:
        db.dispose()
    if recorded != 2 * len(customers):
        raise RuntimeError(f"recorded {recorded} returns of {2 * len(customers)}")
    seconds = round(time.perf_counter() - started, 1)
    console.print(
        f"    {recorded:,} earlier returns recorded in {seconds:.0f}s "
        f"(the last {RETURNED_SHARE:.0%} of the customers, both orders each)"
    )
    return {"returns": recorded, "customers": len(customers), "seconds": seconds}


BULK_TABLES = ("customers", "customer_emails", "events", "orders", "order_lines", "outbox")


def load_orders_bulk(
    target: Target,
    tenant_id: str,
    orders: int,
    service_orders: int = LOAD_BATCH,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The same orders as `load_orders`, written faster: the first `service_orders` through
    record_events (so the stores, and every table it writes, are the service's own), their
    messages published as the dispatcher publishes them; the rest written with
    `kit.bulk.insert_rows` (orders, lines, customers and their emails, the event ledger,
    the outbox messages, published), BULK_BATCH orders a transaction; then the derived
    tables (customer profiles, product signals) rebuilt from those facts, as `returnstack
    profiles rebuild` does. tests/test_bench_returns_load.py checks that the rows equal
    those of record_events."""
    from sqlalchemy import select, update

    from returnstack.config import Settings
    from returnstack.customers.profiles import rebuild
    from returnstack.events.schemas import StoreRef
    from returnstack.kit.bulk import insert_rows
    from returnstack.kit.db import Database
    from returnstack.models import (
        Customer,
        CustomerEmail,
        Event,
        Order,
        OrderLine,
        OutboxEvent,
        Store,
        WebhookState,
    )
    from returnstack.orders.service import remember_stores
    from returnstack.products.rebuild import rebuild as rebuild_products
    from returnstack.webhooks.repository import FEED_SEQUENCE
    from returnstack.webhooks.service import PUBLISH_BATCH, publish

    models = {
        "customers": Customer,
        "customer_emails": CustomerEmail,
        "events": Event,
        "orders": Order,
        "order_lines": OrderLine,
        "outbox": OutboxEvent,
    }
    rng = random.Random("returns:1")
    now = now or datetime.now(UTC)
    started = time.perf_counter()
    prefix = min(orders, service_orders)
    first = load_orders(target, tenant_id, prefix, rng, now)
    settings = Settings(database_url=target.url, _env_file=None)
    db = Database(settings)
    build_s = write_s = 0.0
    try:
        seq = 0
        while True:  # the prefix's messages, published as the dispatcher does
            with db.transaction() as session:
                count = publish(session, now=datetime.now(UTC))
            seq += count
            if count < PUBLISH_BATCH:
                break
        with db.transaction(write=False) as session:
            stores_known = set(
                session.scalars(select(Store.id).where(Store.tenant_id == tenant_id))
            )
        last_report = time.perf_counter()
        for chunk in range(prefix, orders, BULK_BATCH):
            t_build = time.perf_counter()
            rows: dict[str, list[dict[str, Any]]] = {name: [] for name in BULK_TABLES}
            moment = datetime.now(UTC)
            named_stores = []
            for number in range(chunk, min(orders, chunk + BULK_BATCH)):
                seq += 1
                event = order_event(number, rng, now)
                if "store" in event:
                    named_stores.append(event)
                for name, part in order_rows(tenant_id, event, moment, seq).items():
                    rows[name].extend(part)
            t_write = time.perf_counter()
            with db.transaction() as session:
                # The stores first named in this chunk, as remember_stores writes them.
                remember_stores(
                    session,
                    tenant_id=tenant_id,
                    stores=[
                        StoreRef(**order["store"])
                        for order in named_stores
                        if order["store"]["id"] not in stores_known
                    ],
                )
                stores_known.update(order["store"]["id"] for order in named_stores)
                for name in BULK_TABLES:
                    insert_rows(session, models[name], rows[name])
                session.execute(
                    update(WebhookState).where(WebhookState.name == FEED_SEQUENCE).values(value=seq)
                )
            t_done = time.perf_counter()
            build_s += t_write - t_build
            write_s += t_done - t_write
            if t_done - last_report > 15 or chunk + BULK_BATCH >= orders:
                last_report = t_done
                done = min(orders, chunk + BULK_BATCH)
                console.print(
                    f"    {done:,} orders in {t_done - started:.0f}s "
                    f"({done / (t_done - started):,.0f} orders/s)"
                )
        t_rebuild = time.perf_counter()
        with db.transaction() as session:
            profiles = rebuild(session, tenant_id=tenant_id, write=True)
            products = rebuild_products(session, tenant_id=tenant_id, write=True)
        rebuild_s = time.perf_counter() - t_rebuild
        console.print(
            f"    profiles and product signals rebuilt in {rebuild_s:.0f}s "
            f"({profiles.profiles:,} profiles, {products.products:,} products)"
        )
    finally:
        db.dispose()
    seconds = time.perf_counter() - started
    return {
        "method": "bulk",
        "orders": orders,
        "seconds": round(seconds, 1),
        "orders_per_s": round(orders / seconds, 1),
        "record_events": first,
        "bulk_orders": orders - prefix,
        "bulk_batch": BULK_BATCH,
        "bulk_build_s": round(build_s, 1),
        "bulk_write_s": round(write_s, 1),
        "rebuild_s": round(rebuild_s, 1),
        # what the renderer shows (written before the bulk path: record_events alone)
        "record_events_orders_per_s": first["record_events_orders_per_s"],
    }


def table_counts(target: Target) -> dict[str, int]:
    names = ("orders", "order_lines", "customers", "events", "returns", "return_items")
    return {name: int(harness.sql(target, f"SELECT count(*) FROM {name}")[0][0]) for name in names}


# --- the returns --------------------------------------------------------------------------


def pipelines(customers: list[int], rng: random.Random) -> list[openloop.Pipeline]:
    """Per customer: a return of line "1" of each of its two orders (quantity 1, so every
    order line is claimed once), then approve, receive both, refund, close."""
    result = []
    for customer in customers:
        orders = (order_id(2 * customer), order_id(2 * customer + 1))
        items = [
            {
                "order_id": order,
                "line_id": "1",
                "quantity": 1,
                "reason": rng.choice(REASONS),
                "resolution": "refund",
            }
            for order in orders
        ]
        create = {"customer": {"id": customer_id(customer)}, "channel": "online", "items": items}
        receive = {
            "items": [{"order_id": order, "line_id": "1", "quantity": 1} for order in orders]
        }
        result.append(
            openloop.Pipeline(
                (
                    openloop.Step(
                        "create", "POST", "/v1/returns", orjson.dumps(create), "requested"
                    ),
                    openloop.Step(
                        "approve", "POST", "/v1/returns/{id}/approve", b"{}", "approved"
                    ),
                    openloop.Step(
                        "receive", "POST", "/v1/returns/{id}/receive", orjson.dumps(receive),
                        "received",
                    ),
                    openloop.Step(
                        "refund", "POST", "/v1/returns/{id}/refund",
                        b'{"method":"original_payment"}', "refunded",
                    ),
                    openloop.Step("close", "POST", "/v1/returns/{id}/close", b"{}", "closed"),
                )
            )
        )  # fmt: skip
    return result


def step_gap(rate: float, nominal_s: float) -> float:
    """The gap between the steps of a pipeline: about `nominal_s`, but offset by one request
    interval from a multiple of the pipeline interval, so the requests of all pipelines come
    evenly spaced (one every 1/rate s) instead of five at a time."""
    per_pipeline = len(ACTIONS) / rate
    return round(nominal_s / per_pipeline) * per_pipeline + 1 / rate


def figures(run: openloop.Run, measured_from: int, pipelines_measured: int) -> dict[str, Any]:
    """Per action (and all together): the measured pipelines' requests and latencies."""
    samples = [s for s in run.samples if s.pipeline >= measured_from]
    result: dict[str, Any] = {}
    for action in (*ACTIONS, "all"):
        chosen = [s for s in samples if action in ("all", s.action)]
        expected = pipelines_measured * (len(ACTIONS) if action == "all" else 1)
        from_due = sorted(1000 * (s.done - s.due) for s in chosen)
        from_send = sorted(1000 * (s.done - s.sent) for s in chosen)
        send_delay = sorted(1000 * (s.sent - s.due) for s in chosen)
        failed = [s for s in chosen if not s.ok]
        span = (max(s.done for s in chosen) - min(s.due for s in chosen)) if chosen else 0.0
        late = sum(1 for s in chosen if s.sent - s.due > 0.001)
        result[action] = {
            "requests": len(chosen),
            "expected": expected,
            "errors": len(failed) + (expected - len(chosen)),
            "not_sent": expected - len(chosen),
            "first_error": failed[0].error if failed else "",
            # successful answers a second; for "all", see below
            "requests_per_s": round((len(chosen) - len(failed)) / span, 1) if span else 0.0,
            "p50_ms": round(openloop.percentile(from_due, 0.50), 2),
            "p90_ms": round(openloop.percentile(from_due, 0.90), 2),
            "p99_ms": round(openloop.percentile(from_due, 0.99), 2),
            "max_ms": round(from_due[-1], 2) if from_due else 0.0,
            "service_p50_ms": round(openloop.percentile(from_send, 0.50), 2),
            "service_p99_ms": round(openloop.percentile(from_send, 0.99), 2),
            "sent_late_share": round(late / len(chosen), 4) if chosen else 0.0,
            "send_delay_p99_ms": round(openloop.percentile(send_delay, 0.99), 2),
        }
    # All actions together: the sum of their rates (a span from the first due time to the
    # last answer would also hold the length of a pipeline, some 2 s, and read low).
    result["all"]["requests_per_s"] = round(sum(result[a]["requests_per_s"] for a in ACTIONS), 1)
    return result


def measure(
    target: Target, auth: str, rate: float, customers: list[int], opts: Options
) -> dict[str, Any]:
    """One run at `rate` requests a second, on a server of its own."""
    per_second = rate / len(ACTIONS)
    warm_count = round(opts.warmup * per_second)
    measured_count = len(customers) - warm_count
    work = pipelines(customers, random.Random(f"returns:reasons:{rate}"))
    gap = step_gap(rate, opts.step_gap)
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    closed_before = _closed(target)
    busy = harness.wait_idle(opts.wait_idle) if opts.wait_idle else harness.cpu_busy()
    source = harness.source_state()  # what the server runs: src/ is installed editable
    server = returnstack_server(target, opts.server_workers)
    name = f"returns{opts.variant}-{target.backend}-{rate:g}"
    with server, harness.Autovacuum(target) as autovacuum:
        console.print(
            f"  {rate:g} req/s = {per_second:g} returns/s x {len(ACTIONS)} requests, steps "
            f"{gap * 1000:.0f} ms apart; warm-up {opts.warmup:g}s, measured {opts.duration:g}s "
            f"(returnstack serve: pid {server.pid}) …"
        )
        t0 = time.monotonic() + 3.0
        window = harness.CpuWindow(server, t0 + opts.warmup, t0 + opts.warmup + opts.duration)
        raw = opts.profile_dir / f"{name}.txt" if opts.profile_dir else None
        with profile.profiling(server.pid, raw):
            run = openloop.run(
                "127.0.0.1",
                server.port,
                headers,
                work,
                per_second=per_second,
                step_gap=gap,
                workers=opts.workers,
                t0=t0,
            )
        cpu: dict[str, Any] = {**window.result()}
        memory_end = server.memory()
    cpu["load_average_1_5_15"] = [round(value, 2) for value in os.getloadavg()]
    log_errors = harness.keep_log(server, name)
    actions = figures(run, warm_count, measured_count)
    cpu["server_cpu_us_per_request"] = round(
        1e6 * cpu["server_cpu_s"] / max(1, actions["all"]["requests"])
    )
    # The load generator's CPU is known for its whole run only: spread evenly over it.
    sending_s = max(s.done for s in run.samples) - run.t0 if run.samples else 1.0
    cpu["load_generator_cores"] = round(run.worker_cpu_s / max(sending_s, 1e-9), 2)
    cpu["rest_cores"] = round(
        max(0.0, cpu["machine_cores"] - cpu["server_cores"] - cpu["load_generator_cores"]), 2
    )
    targets = {
        action: {
            "target_p99_ms": P99_TARGET_MS,
            "p99_ms": actions[action]["p99_ms"],
            "errors": actions[action]["errors"],
            "met": actions[action]["p99_ms"] < P99_TARGET_MS and not actions[action]["errors"],
        }
        for action in ACTIONS
    }
    ok_steps = Counter(sample.pipeline for sample in run.samples if sample.ok)
    completed = sum(1 for count in ok_steps.values() if count == len(ACTIONS))
    result: dict[str, Any] = {
        "rate_req_per_s": rate,
        "source": source,
        "cpu_busy_before_start": round(busy, 3),
        "returns_per_s": per_second,
        "step_gap_ms": round(gap * 1000, 1),
        "warmup_s": opts.warmup,
        "duration_s": opts.duration,
        "warmup_returns": warm_count,
        "measured_returns": measured_count,
        "load_generator_workers": opts.workers,
        "server_workers": opts.server_workers,
        "load_generator_cpu_us_per_request": round(
            1e6 * run.worker_cpu_s / max(1, len(run.samples))
        ),
        "actions": actions,
        "server": {
            "measured_window": cpu,
            "peak_rss_mb": round(server.final_hwm_kb / 1024, 1),
            "sampled_peak_rss_mb": round(server.sampled_peak_kb / 1024, 1),
            "rss_at_end_mb": round(memory_end["VmRSS"] / 1024, 1),
            "log_errors": log_errors,
        },
        "returns_closed": _closed(target) - closed_before,
        "returns_completed_by_client": completed,
        "autovacuum": autovacuum.report(),
        "targets": targets,
        "target_met": all(t["met"] for t in targets.values()),
    }
    if raw is not None:
        result["profile"] = {
            "raw": str(raw),
            "all": profile.summarize(raw, top=25),
            **{
                focus: profile.summarize(raw, top=25, focus=focus)
                for focus in ("create_return", "_action")
            },
        }
    return result


def _closed(target: Target) -> int:
    return int(harness.sql(target, "SELECT count(*) FROM returns WHERE status = 'closed'")[0][0])


def run_backend(backend: str, opts: Options) -> dict[str, Any]:
    started = harness.started_at()
    source = harness.source_state()
    busy = harness.wait_idle(opts.wait_idle)
    counts = [round((opts.warmup + opts.duration) * rate / len(ACTIONS)) for rate in opts.rates]
    customers_available = returned_customers(opts.orders).start  # the others returned before
    if sum(counts) > customers_available:
        raise SystemExit(
            f"{sum(counts)} returns need as many customers; "
            f"{opts.orders} orders make only {customers_available}"
        )
    keep = kept(backend, opts.dataset, opts.dataset_dir, opts.postgres_url)
    wanted = {"kind": "returns", "orders": opts.orders, "returned_share": RETURNED_SHARE}
    described = keep.meta() if keep is not None else None
    if described is not None and {key: described.get(key) for key in wanted} != wanted:
        raise SystemExit(
            f"the kept dataset {keep.where if keep else ''} holds {described.get('kind')} "
            f"with {described.get('orders')} orders, not {opts.orders}: another --dataset name"
        )
    if described is not None:
        console.print(f"  copying the kept dataset {keep.where if keep else ''} …")
    t_copy = time.perf_counter()
    with fresh_database(
        backend, opts.postgres_url, copy_of=keep if described is not None else None
    ) as target:
        if described is not None and keep is not None:
            tenant_id, auth = described["tenant_id"], described["auth"]
            load = dict(described["load"])
            load["kept"] = {
                "where": keep.where,
                "copy_s": round(time.perf_counter() - t_copy, 1),
                "built_at": described["built_at"],
                "built_by": described["source"],
            }
            console.print(
                f"    copied in {load['kept']['copy_s']:.0f}s (built {described['built_at']}, "
                f"source {described['source']['commit']})"
            )
        else:
            tenant_id, auth = harness.bench_tenant(target, "EUR")
            if opts.load == "bulk":
                console.print(
                    f"  loading {opts.orders:,} orders (record_events for the first "
                    f"{LOAD_BATCH:,}, then insert_rows, {BULK_BATCH:,} a transaction) …"
                )
                load = load_orders_bulk(target, tenant_id, opts.orders)
            else:
                console.print(
                    f"  loading {opts.orders:,} orders (record_events, {LOAD_BATCH:,} a batch) …"
                )
                load = load_orders(target, tenant_id, opts.orders)
            load["returned"] = load_returned(target, tenant_id, returned_customers(opts.orders))
            if backend == "postgresql":
                load["vacuum_analyze_s"] = harness.vacuum_analyze_loaded(target)
                console.print(
                    f"    VACUUM ANALYZE of the loaded tables in {load['vacuum_analyze_s']:.0f}s"
                )
            else:
                # The statistics `returnstack import` gathers after a load. Without them the
                # server gathers them itself soon after it starts (StatisticsKeeper), every
                # row of the million-order tables, holding the write lock table by table for
                # seconds: a backlog that lasted into the measured window.
                from bench.profiles import sqlite_statistics

                load["analyze_s"] = sqlite_statistics(target)
                console.print(f"    ANALYZE in {load['analyze_s']:.0f}s")
            load["flush_s"] = harness.flush_load(target)
            console.print(f"    checkpoint and sync in {load['flush_s']:.0f}s")
            load["tables"] = table_counts(target)
            load["database_mb"] = harness.database_size_mb(target)
            if keep is not None:
                meta = {
                    **wanted,
                    "tenant_id": tenant_id,
                    "auth": auth,
                    "load": load,
                    "built_at": harness.started_at(),
                    "source": source,
                }
                console.print(f"  keeping the dataset as {keep.where} …")
                load["kept"] = {"where": keep.where, "keep_s": keep.keep(target, meta)}
                console.print(f"    kept in {load['kept']['keep_s']:.0f}s")
        console.print(f"    rows: {load['tables']}; database {load['database_mb']:,.0f} MB")

        # Customers drawn at random among all, each used once (so each order line once).
        chosen = random.Random("returns:customers").sample(range(customers_available), sum(counts))
        runs = []
        for rate, count in zip(opts.rates, counts, strict=True):
            runs.append(measure(target, auth, rate, chosen[:count], opts))
            chosen = chosen[count:]
            print_run(backend, opts.orders, runs[-1])
        statuses = dict(harness.sql(target, "SELECT status, count(*) FROM returns GROUP BY status"))
        machine = harness.machine(target)
    return {
        "backend": backend,
        "started_at": started,
        "command": opts.command,
        "quick": opts.quick,
        "profiled": opts.profile_dir is not None,
        "server_workers": opts.server_workers,
        "cpu_busy_before_start": round(busy, 3),
        "source": source,
        "machine": machine,
        "dataset": {
            "orders": opts.orders,
            "customers": opts.orders // 2,
            "customers_opening_returns": customers_available,
            "orders_per_customer": 2,
            "lines_per_order": "2 or 3",
            "order_age_days": f"0-{WINDOW_DAYS}",
            "load": load,
        },
        "load_generator": "open loop (bench/openloop.py); latency from the due time",
        "runs": runs,
        "returns_by_status": statuses,
    }


# --- output -------------------------------------------------------------------------------


def autovacuum_done(run: dict[str, Any]) -> str:
    """What the bench's autovacuum did during a run: tables, with how many times each."""

    def listed(counts: dict[str, int]) -> str:
        return ", ".join(f"{table} x{n}" if n > 1 else table for table, n in counts.items())

    done = run.get("autovacuum", {})
    return (
        f"analyzed {listed(done.get('analyzed', {})) or 'nothing'}; "
        f"vacuumed {listed(done.get('vacuumed', {})) or 'nothing'}"
    )


def print_run(backend: str, orders: int, run: dict[str, Any]) -> None:
    table = Table(
        title=f"returns lifecycle, {backend}, {orders:,} orders, {run['rate_req_per_s']:g} req/s"
    )
    for column in ("action", "requests", "ok/s", "p50", "p90", "p99", "max", "p99 send", "errors"):
        table.add_column(column, justify="left" if column == "action" else "right")
    for action, f in run["actions"].items():
        table.add_row(
            action,
            f"{f['requests']:,}",
            f"{f['requests_per_s']:,.1f}",
            f"{f['p50_ms']:.1f}",
            f"{f['p90_ms']:.1f}",
            f"{f['p99_ms']:.1f}",
            f"{f['max_ms']:.0f}",
            f"{f['service_p99_ms']:.1f}",
            str(f["errors"]),
        )
    console.print(table)
    window = run["server"]["measured_window"]
    console.print(
        f"  server CPU {window['server_cores']:.2f} cores ({window['server_cpu_us_per_request']} "
        f"µs/request), machine {window['machine_cores']:.2f} cores busy (load average "
        f"{window.get('load_average_1_5_15')}; rest "
        f"{window['rest_cores']:.2f}); load generator "
        f"{run['load_generator_cpu_us_per_request']} µs/request; peak RSS "
        f"{run['server']['peak_rss_mb']:.0f} MB; returns closed {run['returns_closed']:,} "
        f"(client saw {run['returns_completed_by_client']:,} complete)"
    )
    if run["autovacuum"]["emulated"]:
        console.print(f"  autovacuum (off on the server; the bench's): {autovacuum_done(run)}")
    if run["server"]["log_errors"]:
        console.print(f"  server log errors: {run['server']['log_errors']}")
    verdict = "[green]met[/green]" if run["target_met"] else "[red]NOT met[/red]"
    console.print(f"  target p99 < {P99_TARGET_MS:g} ms for every action, no errors: {verdict}")
    harness.print_profile(run.get("profile", {}))


def _render_run(run: dict[str, Any], cpus: int) -> list[str]:
    window = run["server"]["measured_window"]
    lines = [
        f"**{run['rate_req_per_s']:g} req/s** ({run['returns_per_s']:g} returns a second, steps "
        f"{run['step_gap_ms']:.0f} ms apart; {run['warmup_s']:g} s warm-up, then "
        f"{run['measured_returns']:,} returns measured over {run['duration_s']:g} s; server "
        f"source {run['source']['commit']}"
        f"{harness.dirty(run['source'])}; other "
        f"processes kept {run['cpu_busy_before_start']:.0%} of the cores busy just before):",
        "",
        "| action | requests | ok/s | p50 | p90 | p99 | max | errors | p99 < 20 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for action, f in run["actions"].items():
        target = run["targets"].get(action)
        verdict = "" if target is None else ("**met**" if target["met"] else "**not met**")
        lines.append(
            f"| {action} | {f['requests']:,} | {f['requests_per_s']:,.1f} | "
            f"{f['p50_ms']:,.1f} ms | {f['p90_ms']:,.1f} ms | {f['p99_ms']:,.1f} ms | "
            f"{f['max_ms']:,.0f} ms | {f['errors']:,} | {verdict} |"
        )
    service = ", ".join(
        f"{action} {run['actions'][action]['service_p99_ms']:,.1f}" for action in ACTIONS
    )
    errors = "; ".join(f"{count} x `{text}`" for text, count in run["server"]["log_errors"].items())
    lines += [
        "",
        f"p99 from the actual send (ms): {service}. Server {window['server_cores']:.2f} cores, "
        f"{window['server_cpu_us_per_request']:,} µs of CPU a request. Cores busy: "
        f"{window['machine_cores']:.2f} of {cpus} (server {window['server_cores']:.2f}, load "
        f"generator {window['load_generator_cores']:.2f} = "
        f"{run['load_generator_cpu_us_per_request']} µs a request, rest "
        f"{window['rest_cores']:.2f}: PostgreSQL where it is the backend, and any other "
        "process). Peak RSS of the server "
        f"{run['server']['peak_rss_mb']:.0f} MB. Returns closed: "
        f"{run['returns_closed']:,} of {run['warmup_returns'] + run['measured_returns']:,}."
        + (f" Server errors logged: {errors}." if errors else "")
        + (
            " Autovacuum, off on this machine's PostgreSQL, done by the bench every naptime "
            f"(bench/harness.py `Autovacuum`): {autovacuum_done(run)}."
            if run.get("autovacuum", {}).get("emulated")
            else ""
        ),
        "",
    ]
    return lines


def _loaded(load: dict[str, Any]) -> str:
    if load.get("method") == "bulk":
        text = (
            f"loaded in {load['seconds']:,.0f} s ({load['orders_per_s']:,.0f} orders/s: the "
            f"first {load['record_events']['orders']:,} with `record_events` at "
            f"{load['record_events_orders_per_s']:,.0f} orders/s inside the transactions, the "
            f"rest with `insert_rows`, then profiles and product signals rebuilt in "
            f"{load['rebuild_s']:,.0f} s)"
        )
    else:
        text = (
            f"loaded with `record_events` in {load['seconds']:,.0f} s "
            f"({load['orders_per_s']:,.0f} orders/s; "
            f"{load['record_events_orders_per_s']:,.0f} orders/s inside the transactions)"
        )
    kept = load.get("kept")
    if kept and "copy_s" in kept:
        text += f" on {kept['built_at']} and kept; this run used a copy ({kept['copy_s']:,.0f} s)"
    return text


def _processes(workers: int) -> str:
    return "" if workers == 1 else f", {workers} server processes (`serve --workers {workers}`)"


def render_one(result: dict[str, Any]) -> str:
    machine, data = result["machine"], result["dataset"]
    load = data["load"]
    lines = [
        f"#### {harness.NAMES[result['backend']]}{_processes(result.get('server_workers', 1))}",
        "",
        f"Run of {result['started_at']}: `{result['command']}` ({machine['cpus']} cores, "
        f"{machine['cpu_model'] or 'unknown CPU'}, shared by the server, the database and the "
        f"load generator; {harness.engine(machine)}; Python {machine['python']}; source at the "
        f"start {result['source']['commit']}"
        f"{harness.dirty(result['source'])}; other "
        f"processes kept {result['cpu_busy_before_start']:.0%} of the cores busy just before "
        "the run).",
        "",
        f"Dataset: {data['orders']:,} orders ({data['customers']:,} customers with 2 orders "
        f"each; {load['tables']['order_lines']:,} lines; orders 0-{WINDOW_DAYS} days old), "
        + _loaded(load)
        + (
            f", then {load['returned']['returns']:,} earlier returns recorded (return events "
            f"through `record_events`, {load['returned']['seconds']:,.0f} s: line 1 of both "
            f"orders of the last {load['returned']['customers']:,} customers, so the return "
            "tables hold data when their statistics are taken; the run's returns are opened "
            "by the other customers)"
            if load.get("returned", {}).get("returns")
            else ""
        )
        + (
            f", then `VACUUM ANALYZE` ({load['vacuum_analyze_s']:,.0f} s)"
            if "vacuum_analyze_s" in load
            else ""
        )
        + (
            f", then `ANALYZE` as `returnstack import` does ({load['analyze_s']:,.0f} s)"
            if "analyze_s" in load
            else ""
        )
        + (
            f", then a checkpoint and `sync` ({load['flush_s']:,.0f} s)"
            if "flush_s" in load
            else ""
        )
        + f"; database {load['database_mb']:,.0f} MB.",
        "",
    ]
    for run in result["runs"]:
        run.setdefault("source", result["source"])  # results written before runs had theirs
        lines += _render_run(run, machine["cpus"])
    at_target = next(
        (r for r in result["runs"] if r["rate_req_per_s"] == RATE_TARGET), result["runs"][0]
    )
    lines += [
        f"Target (p99 < {P99_TARGET_MS:g} ms at {RATE_TARGET:g} req/s for create and each "
        f"action, no errors), at {at_target['rate_req_per_s']:g} req/s: "
        f"**{'met' if at_target['target_met'] else 'not met'}**.",
        "",
    ]
    return "\n".join(lines)


BENCH = harness.Benchmark("returns", "returns", "Returns lifecycle", render_one)


def _rates(text: str) -> list[float]:
    rates = [float(part) for part in text.split(",") if part.strip()]
    if not rates or any(rate <= 0 for rate in rates):
        raise argparse.ArgumentTypeError("one or more positive rates, comma-separated")
    return rates


def cli(argv: list[str]) -> int:
    parser = harness.parser(
        BENCH,
        __doc__.splitlines()[0],
        quick="20,000 orders, 20 s measured; results not recorded",
        profile="py-spy the server during each run (raw stacks into DIR); figures not recorded",
    )
    parser.add_argument("--orders", type=int, help="orders in the database (default 1000000)")
    parser.add_argument(
        "--rate",
        type=_rates,
        default=[RATE_TARGET],
        help="requests a second, all actions together (default 200); several, comma-separated "
        "(200,50), measure one after the other on the same database, each on a fresh server",
    )
    parser.add_argument("--duration", type=float, help="measured seconds (default 120)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds (default 15)")
    parser.add_argument(
        "--step-gap",
        type=float,
        default=0.5,
        help="seconds between the steps of one return (default about 0.5)",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="load generator processes (default 2)"
    )
    parser.add_argument(
        "--server-workers",
        type=int,
        default=1,
        help="processes of the server (`returnstack serve --workers N`, default 1); N > 1 is "
        "recorded apart (returns-workersN-<backend>.json)",
    )
    parser.add_argument(
        "--load",
        choices=["bulk", "record_events"],
        default="bulk",
        help="how the orders are written: record_events for the first 5,000, then the same "
        "rows with insert_rows and the derived tables rebuilt (bulk, default), or all "
        "through record_events (slow: hundreds of orders a second)",
    )
    harness.add_dataset_options(parser)
    args = parser.parse_args(argv)
    if args.workers < 1 or args.server_workers < 1:
        parser.error("--workers and --server-workers must be positive")
    opts = options(args, argv)
    return harness.run(BENCH, opts, lambda backend: run_backend(backend, opts))


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
