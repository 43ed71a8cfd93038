"""The customer-profiles benchmark (`python -m bench profiles`): profile lookups, a segment
count and a CSV export, against a real server, on a database of 1,000,000 customers and
10,000,000 purchase lines.

Per backend, on a fresh database:
1. `returnstack tenants create` / `keys create` (the CLI; this also builds the schema).
2. The dataset, generated deterministically (seeded) and written with the service's bulk
   path, `returnstack.kit.bulk.insert_rows`, straight into customers, customer_emails,
   orders, order_lines and recorded returns (returns, return_items, return_history), in large
   transactions. PostgreSQL then gets `VACUUM ANALYZE`; SQLite `ANALYZE` (what `returnstack
   import` runs after a load).
3. Profiles built from those facts by `returnstack.customers.profiles.rebuild` (the code of
   `returnstack profiles rebuild`), in one transaction; PostgreSQL then gets
   `VACUUM ANALYZE customer_profiles` (what autovacuum would do after such a write).
4. `returnstack serve` on a free port: GET /healthz (the floor of the HTTP stack), then
   GET /v1/customers/{id} and /v1/customers/lookup?email= for random people, at a fixed
   rate (open loop, bench/openloop.py): p50/p90/p99/max from the due time.
5. A second, fresh server (so its memory is the exports' alone): a saved segment of three
   conditions, GET /v1/segments/{id} (its customer_count) against the bare SQL count on a
   plain driver connection, repeated; then CSV exports (Accept: text/csv) of about 10,000
   and 100,000 rows: rows/s against the driver reading the same rows (with the export's
   planner settings), and the server's RSS before, during and after each (flat memory:
   streaming).
"""

import contextlib
import math
import random
import statistics
import sys
import threading
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from bench import harness, openloop, profile, workload
from bench.harness import console
from bench.server import (
    ServerProcess,
    Target,
    fresh_database,
    kept,
    proc_status,
    returnstack_server,
)

# Targets
LOOKUP_P99_TARGET_MS = 5.0
RATE = 200.0  # lookups a second: the rate of issue 14's target (p99 < 5 ms at 200/s)
SEGMENT_COUNT_TARGET_S = {"postgresql": 1.0}  # GET /v1/segments/{id}, every run
EXPORT_ROWS_PER_S_TARGET = 50_000
EXPORT_FLAT_MARGIN_MB = 10.0  # RSS growth of the large export at most that of the small + this
# The driver's baseline read plans its cursor to read every row (PostgreSQL), as the
# export's `COPY (query) TO STDOUT` plans its query (customers.repository.export_csv_rows).
EXPORT_SETTINGS: dict[str, dict[str, float]] = {"postgresql": {"cursor_tuple_fraction": 1.0}}

# The segment counted (three conditions) and the shape of the dataset.
SEGMENT_WHERE = 'net_revenue >= 100000 and return_rate_value < 0.25 and currency = "EUR"'
ANCHOR = datetime(2026, 11, 1, tzinfo=UTC)  # the newest timestamp: fixed, so data are too
SPAN_S = 730 * 86400  # orders over the two years before ANCHOR
EUR_SHARE = 0.75  # a person's home currency: EUR, else USD
SECOND_CURRENCY_SHARE = 0.08  # customers who also buy in the other currency ...
SECOND_CURRENCY_ORDERS = 0.3  # ... in this share of their orders
_LINE_COPIES = ("placed_at", "currency", "channel", "store_id")  # an order line copies these
EMAIL_ONLY_SHARE = 0.02  # customers' later orders carrying the email alone (linked to them)
GUEST_SHARE = 0.05  # guest emails (never linked to a customer), per customer
MEAN_ORDERS = 4.0  # orders per customer: geometric, mean 4
MEAN_GUEST_ORDERS = 1.5
MAX_ORDERS = 200
MAX_LINES = 12  # lines per order: geometric, its mean set by --lines / orders
RETURN_CLASSES = ((0.80, 0.06), (0.15, 0.25), (0.05, 0.60))  # (share of people, P(return))
LINE_RETURNED = 0.6  # each line of a returned order is in the return with this probability
REFUNDED = 0.95  # returns with a refund (the rest: none recorded)
REASONS = ("size_too_small", "size_too_large", "color", "defective", "unwanted", "style")
GEN_CHUNK = 10_000  # people per generated chunk (one seeded generator each: deterministic)
TRANSACTION_PEOPLE = 20_000  # people per load transaction (about 200,000 lines)
DATASET_KIND = "profiles-bench"  # a kept dataset's kind (with its customers and lines)


@dataclass
class Options(harness.Options):
    customers: int
    lines: int
    lookups: int
    lookup_warmup: int
    healthz: int
    rate: float
    email_share: float
    workers: int
    load_workers: int
    segment_runs: int
    export_rows: int
    dataset: str | None
    dataset_dir: Path


def options(args: Any, argv: list[str]) -> Options:
    customers = args.customers or (20_000 if args.quick else 1_000_000)
    lookups = args.lookups or (2_000 if args.quick else 20_000)
    return Options(
        **harness.common(BENCH, args, argv),
        customers=customers,
        lines=args.lines or customers * 10,
        lookups=lookups,
        lookup_warmup=max(200, lookups // 20),
        healthz=args.healthz or max(1_000, lookups // 10),
        rate=args.rate,
        email_share=args.email_share,
        workers=args.workers,
        load_workers=args.load_workers,
        segment_runs=args.segment_runs,
        export_rows=args.export_rows or max(1_000, customers // 10),
        **harness.dataset_options(args),
    )


# --- the dataset --------------------------------------------------------------------------


def customer_id(person: int) -> str:
    return f"cus-{person:07d}"


def customer_email(person: int) -> str:
    return f"c{person:07d}@example.com"


def guest_email(guest: int) -> str:
    return f"guest-{guest:07d}@example.net"


def _geometric(rng: random.Random, p: float) -> int:
    """1, 2, 3, ... with P(n) = p (1-p)^(n-1): mean 1/p."""
    if p >= 1.0:
        return 1
    return 1 + int(math.log(1.0 - rng.random()) / math.log(1.0 - p))


@dataclass
class Plan:
    """Drawn first, for everyone: how many orders each person has, how many lines each
    order, and which orders get a return. So the total of lines can be made exact, and every
    chunk of people knows where its orders and returns start (chunks load in parallel)."""

    customers: int
    guests: int
    orders_per_person: "array[int]"
    lines_per_order: "array[int]"
    returned: bytearray  # per order: 1 when it has a recorded return

    @property
    def people(self) -> int:
        return self.customers + self.guests


def _return_probability(draw: float) -> float:
    for share, probability in RETURN_CLASSES:
        if draw < share:
            return probability
        draw -= share
    return RETURN_CLASSES[-1][1]


def make_plan(customers: int, lines: int) -> Plan:
    rng = random.Random("profiles:plan")
    guests = round(customers * GUEST_SHARE)
    per_person = array("H")
    returned = bytearray()
    for person in range(customers + guests):
        mean = MEAN_ORDERS if person < customers else MEAN_GUEST_ORDERS
        count = min(MAX_ORDERS, _geometric(rng, 1 / mean))
        per_person.append(count)
        probability = _return_probability(rng.random())  # the person's propensity
        returned.extend(rng.random() < probability for _ in range(count))
    orders = len(returned)
    if lines < orders or lines > orders * MAX_LINES:
        raise SystemExit(f"{lines} lines cannot make {orders} orders of 1 to {MAX_LINES} lines")
    p = orders / lines
    per_order = array("B", (min(MAX_LINES, _geometric(rng, p)) for _ in range(orders)))
    missing = lines - sum(per_order)
    while missing:  # a few thousand single-line corrections, at random orders
        index = rng.randrange(orders)
        if missing > 0 and per_order[index] < MAX_LINES:
            per_order[index] += 1
            missing -= 1
        elif missing < 0 and per_order[index] > 1:
            per_order[index] -= 1
            missing += 1
    return Plan(customers, guests, per_person, per_order, returned)


def chunks(plan: Plan, size: int) -> list[tuple[int, int, int, int]]:
    """(first person, people, first order number, returns before it) of each load chunk."""
    result = []
    order = returns = 0
    for start in range(0, plan.people, size):
        people = min(size, plan.people - start)
        result.append((start, people, order, returns))
        orders = sum(plan.orders_per_person[start : start + people])
        returns += sum(plan.returned[order : order + orders])
        order += orders
    return result


_PRODUCTS = [
    (
        f"SKU-{product:05d}",
        [f"SKU-{product:05d}-{size}" for size in "SMLX"],
        f"Product {product}",
        workload.CATEGORIES[product % len(workload.CATEGORIES)],
    )
    for product in range(workload.PRODUCTS)
]
_STORES = [f"store-{number:03d}" for number in range(workload.STORES)]
TABLE_ORDER = (
    "customers",
    "customer_emails",
    "orders",
    "order_lines",
    "returns",
    "return_items",
    "return_history",
)


@dataclass
class Cursor:
    """Where the next chunk starts: people, orders and returns are numbered in order."""

    person: int = 0
    order: int = 0
    returns: int = 0


def generate(plan: Plan, tenant_id: str, start: Cursor, people: int) -> dict[str, list[Any]]:
    """The rows of `people` people from `start` (a multiple of GEN_CHUNK), per table; the
    cursor is moved past them. Seeded by the chunk's first person: deterministic, whatever
    the order chunks are made in."""
    rng = random.Random(f"profiles:people:{start.person}")
    rows: dict[str, list[Any]] = {name: [] for name in TABLE_ORDER}
    customers, emails, orders, lines = (
        rows["customers"],
        rows["customer_emails"],
        rows["orders"],
        rows["order_lines"],
    )
    returns, items, history = rows["returns"], rows["return_items"], rows["return_history"]
    random_ = rng.random
    randrange = rng.randrange
    for person in range(start.person, start.person + people):
        is_customer = person < plan.customers
        cid = customer_id(person) if is_customer else None
        email = customer_email(person) if is_customer else guest_email(person - plan.customers)
        home = "EUR" if random_() < EUR_SHARE else "USD"
        other = None
        if is_customer and random_() < SECOND_CURRENCY_SHARE:
            other = "USD" if home == "EUR" else "EUR"
        count = plan.orders_per_person[person]
        moments = sorted(ANCHOR - timedelta(seconds=randrange(SPAN_S)) for _ in range(count))
        for index, placed in enumerate(moments):
            number = start.order
            start.order += 1
            oid = f"ord-{number:08d}"
            offline = random_() < workload.OFFLINE_SHARE
            channel = "offline" if offline else "online"
            currency = other if other is not None and random_() < SECOND_CURRENCY_ORDERS else home
            email_only = index > 0 and is_customer and random_() < EMAIL_ONLY_SHARE
            order_customer = None if email_only else cid
            orders.append(
                {
                    "tenant_id": tenant_id,
                    "id": oid,
                    "customer_id": order_customer,
                    "email": email,
                    "channel": channel,
                    "store_id": _STORES[randrange(len(_STORES))] if offline else None,
                    "currency": currency,
                    "placed_at": placed,
                    "event_id": f"evt_bench{number:017d}",
                    "created_at": placed,
                }
            )
            order_lines: list[dict[str, Any]] = []
            for position in range(1, plan.lines_per_order[number] + 1):
                product_id, variants, name, category = _PRODUCTS[randrange(len(_PRODUCTS))]
                draw = random_()
                quantity = 1 if draw < 0.75 else 2 if draw < 0.93 else 3
                line: dict[str, Any] = {
                    "tenant_id": tenant_id,
                    "order_id": oid,
                    "line_id": str(position),
                    "position": position,
                    "product_id": product_id,
                    "variant_id": variants[randrange(4)],
                    "name": name,
                    "category": category,
                    "url": None,
                    "quantity": quantity,
                    "unit_price": randrange(500, 20000),
                    # its order's, as orders.service.record_purchases copies them
                    **{name: orders[-1][name] for name in _LINE_COPIES},
                }
                order_lines.append(line)
            lines.extend(order_lines)
            if not plan.returned[number]:
                continue
            # A recorded return (as record_returns stores one): closed, received whole.
            start.returns += 1
            rid = f"ret_bench{start.returns:017d}"
            created = min(ANCHOR, placed + timedelta(seconds=randrange(2 * 86400, 40 * 86400)))
            chosen = [line for line in order_lines if random_() < LINE_RETURNED]
            chosen = chosen or [order_lines[randrange(len(order_lines))]]
            value = 0
            for position, line in enumerate(chosen, start=1):
                quantity = line["quantity"]
                if quantity > 1 and random_() >= 0.8:
                    quantity = 1 + randrange(quantity)
                value += quantity * line["unit_price"]
                items.append(
                    {
                        "tenant_id": tenant_id,
                        "return_id": rid,
                        "position": position,
                        "order_id": oid,
                        "line_id": line["line_id"],
                        "product_id": line["product_id"],
                        "variant_id": line["variant_id"],
                        "quantity": quantity,
                        "received_quantity": quantity,
                        "good_quantity": quantity,
                        "damaged_quantity": 0,
                        "reason": REASONS[randrange(len(REASONS))],
                        "note": None,
                        "resolution": "refund",
                        "unit_price": line["unit_price"],
                        "fee_basis_points": 0,
                        "outcome": "received",
                        "disposition": None,
                    }
                )
            refund = value if random_() < REFUNDED else None
            returns.append(
                {
                    "tenant_id": tenant_id,
                    "id": rid,
                    "number": start.returns,
                    "external_id": None,
                    "status": "closed",
                    "source": "event",
                    "channel": channel,
                    "store_id": None,
                    "customer_id": order_customer,
                    "email": email,
                    "currency": currency,
                    "refund_amount": refund,
                    "refund_method": "original_payment" if refund is not None else None,
                    "refunded_at": created if refund is not None else None,
                    "fee_restocking": 0,
                    "fee_shipping": 0,
                    "note": None,
                    "metadata": {},
                    "event_id": f"evt_benchr{start.returns:016d}",
                    "created_at": created,
                    "updated_at": created,
                    "closed_at": created,
                    "version": 1,
                    "claiming": True,
                }
            )
            history.append(
                {
                    "tenant_id": tenant_id,
                    "return_id": rid,
                    "seq": 1,
                    "at": created,
                    "from_status": None,
                    "to_status": "closed",
                    "action": "record",
                    "actor": "bench:profiles",
                    "note": None,
                }
            )
        if cid is not None:
            customers.append(
                {
                    "tenant_id": tenant_id,
                    "id": cid,
                    "server_id": f"cus_C{person:025d}",
                    "email": email,
                    "name": f"Customer {person}",
                    "created_at": moments[0],
                    "updated_at": moments[-1],
                }
            )
        emails.append(
            {
                "tenant_id": tenant_id,
                "email": email,
                "customer_id": cid,
                "server_id": None if cid is not None else f"cus_G{person:025d}",
                "created_at": moments[0],
            }
        )
    start.person += people
    return rows


_LOADER: dict[str, Any] = {}  # in each load worker process: its plan, database, lock


def _models() -> dict[str, Any]:
    from returnstack.models import (
        Customer,
        CustomerEmail,
        Order,
        OrderLine,
        Return,
        ReturnHistory,
        ReturnItem,
    )

    return {
        "customers": Customer,
        "customer_emails": CustomerEmail,
        "orders": Order,
        "order_lines": OrderLine,
        "returns": Return,
        "return_items": ReturnItem,
        "return_history": ReturnHistory,
    }


def _loader_init(url: str, tenant_id: str, plan: Plan, lock: Any) -> None:
    from returnstack.config import Settings
    from returnstack.kit.db import Database

    _LOADER.update(
        plan=plan,
        tenant_id=tenant_id,
        lock=lock,
        db=Database(Settings(database_url=url, _env_file=None)),
        models=_models(),
    )


def _load_chunk(chunk: tuple[int, int, int, int]) -> dict[str, Any]:
    """In a load worker: generate a chunk of people (outside any transaction), then write
    them with insert_rows in one transaction. On SQLite the workers take turns (one writes
    while the other generates); on PostgreSQL they write at the same time."""
    from returnstack.kit.bulk import insert_rows

    first, people, first_order, first_return = chunk
    plan, tenant_id = _LOADER["plan"], _LOADER["tenant_id"]
    started = time.perf_counter()
    cursor = Cursor(first, first_order, first_return)
    rows: dict[str, list[Any]] = {name: [] for name in TABLE_ORDER}
    while cursor.person < first + people:
        part = generate(plan, tenant_id, cursor, min(GEN_CHUNK, first + people - cursor.person))
        for name in TABLE_ORDER:
            rows[name].extend(part[name])
    generated = time.perf_counter()
    lock = _LOADER["lock"]
    with lock if lock is not None else contextlib.nullcontext():
        began = time.perf_counter()
        with _LOADER["db"].transaction() as session:
            for name in TABLE_ORDER:
                insert_rows(session, _LOADER["models"][name], rows[name])
        done = time.perf_counter()
    return {
        "people": people,
        "rows": {name: len(rows[name]) for name in TABLE_ORDER},
        "generate_s": generated - started,
        "write_s": done - began,
    }


def load_dataset(target: Target, tenant_id: str, plan: Plan, workers: int) -> dict[str, Any]:
    """Everyone's rows, TRANSACTION_PEOPLE people a transaction, by `workers` processes."""
    import multiprocessing

    from sqlalchemy import update

    from returnstack.config import Settings
    from returnstack.kit.bulk import insert_rows
    from returnstack.kit.db import Database
    from returnstack.models import Store, TenantCounter

    started = time.perf_counter()
    db = Database(Settings(database_url=target.url, _env_file=None))
    try:
        with db.transaction() as session:
            stores = [
                {
                    "tenant_id": tenant_id,
                    "id": store,
                    "name": f"Store {number}",
                    "city": None,
                    "region": None,
                    "country": None,
                    "postal_code": None,
                    "updated_at": ANCHOR,
                }
                for number, store in enumerate(_STORES)
            ]
            insert_rows(session, Store, stores)
    finally:
        db.dispose()
    work = chunks(plan, TRANSACTION_PEOPLE)
    context = multiprocessing.get_context("spawn")
    lock = context.Lock() if target.backend == "sqlite" else None
    counts = dict.fromkeys(TABLE_ORDER, 0)
    generate_s = write_s = 0.0
    people = 0
    last_report = time.perf_counter()
    with context.Pool(
        workers, initializer=_loader_init, initargs=(target.url, tenant_id, plan, lock)
    ) as pool:
        for done in pool.imap_unordered(_load_chunk, work):
            people += done["people"]
            generate_s += done["generate_s"]
            write_s += done["write_s"]
            for name, count in done["rows"].items():
                counts[name] += count
            now = time.perf_counter()
            if now - last_report > 15 or people == plan.people:
                last_report = now
                console.print(
                    f"    {people:,} people, {counts['order_lines']:,} lines in "
                    f"{now - started:.0f}s ({counts['order_lines'] / (now - started):,.0f} "
                    "lines/s)"
                )
    db = Database(Settings(database_url=target.url, _env_file=None))
    try:
        with db.transaction() as session:  # where record_returns would have left it
            session.execute(
                update(TenantCounter)
                .where(TenantCounter.tenant_id == tenant_id, TenantCounter.name == "return_number")
                .values(value=counts["returns"])
            )
    finally:
        db.dispose()
    seconds = time.perf_counter() - started
    if counts["order_lines"] != sum(plan.lines_per_order):
        raise RuntimeError(f"wrote {counts['order_lines']:,} lines, planned otherwise")
    if counts["returns"] != sum(plan.returned):
        raise RuntimeError(f"wrote {counts['returns']:,} returns, planned otherwise")
    rows_total = sum(counts.values())
    return {
        "seconds": round(seconds, 1),
        "rows": counts,
        "rows_total": rows_total,
        "rows_per_s": round(rows_total / seconds),
        "lines_per_s": round(counts["order_lines"] / seconds),
        "workers": workers,
        "people_per_transaction": TRANSACTION_PEOPLE,
        "transactions": len(work),
        # Summed over the workers (they overlap): what the time went to.
        "generate_s": round(generate_s, 1),
        "write_s": round(write_s, 1),
        "write_rows_per_s": round(rows_total / max(write_s, 1e-9)),
    }


def add_ledger(target: Target, tenant_id: str) -> dict[str, Any]:
    """The event ledger (`events`) the service would hold for these facts: a purchase event
    per order, a return event per recorded return (named by their `event_id`), as
    record_events writes it (client ids `p:<order>` / `r:<return>`); one statement each."""
    purchases = (
        "INSERT INTO events (tenant_id, client_id, id, type, order_id, occurred_at, "
        "received_at, source) SELECT tenant_id, 'p:' || id, event_id, 'purchase', id, "
        f"placed_at, created_at, 'import' FROM orders WHERE tenant_id = '{tenant_id}'"
    )
    returned = (
        "INSERT INTO events (tenant_id, client_id, id, type, order_id, occurred_at, "
        "received_at, source) SELECT r.tenant_id, 'r:' || r.id, r.event_id, 'return', "
        "(SELECT i.order_id FROM return_items i WHERE i.tenant_id = r.tenant_id AND "
        "i.return_id = r.id ORDER BY i.position LIMIT 1), r.created_at, r.created_at, "
        "'import' FROM returns r "
        f"WHERE r.tenant_id = '{tenant_id}' AND r.event_id IS NOT NULL"
    )
    started = time.perf_counter()
    harness.sql(target, purchases)
    harness.sql(target, returned)
    rows = int(harness.sql(target, "SELECT count(*) FROM events")[0][0])
    return {"seconds": round(time.perf_counter() - started, 1), "rows": rows}


def rebuild_products(target: Target, tenant_id: str) -> dict[str, Any]:
    """Product signals from the facts, as `returnstack profiles rebuild` builds them."""
    from returnstack.config import Settings
    from returnstack.kit.db import Database
    from returnstack.products.rebuild import rebuild

    db = Database(Settings(database_url=target.url, _env_file=None))
    try:
        started = time.perf_counter()
        with db.transaction() as session:
            report = rebuild(session, tenant_id=tenant_id, write=True)
        return {"seconds": round(time.perf_counter() - started, 1), "products": report.products}
    finally:
        db.dispose()


def preload(
    target: Target,
    tenant_id: str,
    customers: int,
    lines: int,
    workers: int = 2,
    products: bool = False,
) -> dict[str, Any]:
    """This benchmark's dataset (customers, orders, lines, recorded returns, written with
    insert_rows), with what the service would hold beside those facts: the event ledger and
    customer profiles (rebuilt from the facts); with `products`, product signals too
    (rebuilt: slow, about 45 s for 200,000 lines on a loaded 2-core machine, so left out by
    default); then PostgreSQL's VACUUM ANALYZE, or SQLite's checkpoint. For benchmarks that
    measure the service on a grown database (`python -m bench ingest --preload-lines`)."""
    started = time.perf_counter()
    console.print(f"  planning {customers:,} customers, {lines:,} lines …")
    plan = make_plan(customers, lines)
    console.print(
        f"  loading {plan.customers:,} customers + {plan.guests:,} guests, "
        f"{len(plan.lines_per_order):,} orders, {lines:,} lines (insert_rows) …"
    )
    load = load_dataset(target, tenant_id, plan, workers)
    load["ledger"] = add_ledger(target, tenant_id)
    console.print(
        f"    event ledger: {load['ledger']['rows']:,} rows in {load['ledger']['seconds']}s"
    )
    load["profiles"] = rebuild_profiles(target, tenant_id)
    console.print(f"    profiles rebuilt in {load['profiles']['seconds']}s")
    if products:
        load["products"] = rebuild_products(target, tenant_id)
        console.print(f"    product signals rebuilt in {load['products']['seconds']}s")
    if target.backend == "postgresql":
        load["vacuum_analyze_s"] = harness.timed_sql(target, "VACUUM ANALYZE")
    else:
        load["checkpoint_s"] = harness.timed_sql(target, "PRAGMA wal_checkpoint(TRUNCATE)")
    load["database_mb"] = harness.database_size_mb(target)
    load["total_s"] = round(time.perf_counter() - started, 1)
    load["customers"] = customers
    load["lines"] = lines
    console.print(
        f"    dataset ready in {load['total_s']:.0f}s; database {load['database_mb']:,.0f} MB"
    )
    return load


# --- the database, read directly ----------------------------------------------------------


def query(conn: Any, backend: str, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Rows of `sql` (? placeholders), in a transaction of its own (ended at once)."""
    cursor = conn.cursor()
    try:
        cursor.execute(sql if backend == "sqlite" else sql.replace("?", "%s"), params)
        return list(cursor.fetchall()) if cursor.description else []
    finally:
        cursor.close()
        conn.rollback()


def rebuild_profiles(target: Target, tenant_id: str) -> dict[str, Any]:
    """`rebuild` in one transaction, as `returnstack profiles rebuild --tenant` runs it."""
    from returnstack.config import Settings
    from returnstack.customers.profiles import rebuild
    from returnstack.kit.db import Database

    db = Database(Settings(database_url=target.url, _env_file=None))
    try:
        started = time.perf_counter()
        with db.transaction() as session:
            report = rebuild(session, tenant_id=tenant_id, write=True)
        seconds = time.perf_counter() - started
    finally:
        db.dispose()
    # A fresh table holds no kept rows: every rebuilt row is a difference, and is written.
    if not report.written or report.differences != report.profiles:
        raise RuntimeError(f"unexpected rebuild report: {report}")
    return {"seconds": round(seconds, 1), "profiles": report.profiles}


def profile_stats(conn: Any, backend: str) -> dict[str, Any]:
    total, guests, flagged, returned, eur, owners = query(
        conn,
        backend,
        "SELECT count(*), sum(CASE WHEN customer_id IS NULL THEN 1 ELSE 0 END), "
        "sum(CASE WHEN serial_returner THEN 1 ELSE 0 END), "
        "sum(CASE WHEN returns > 0 THEN 1 ELSE 0 END), "
        "sum(CASE WHEN currency = 'EUR' THEN 1 ELSE 0 END), count(DISTINCT owner) "
        "FROM customer_profiles",
    )[0]
    return {
        "rows": int(total),
        "guest_rows": int(guests),
        "serial_returner_rows": int(flagged),
        "rows_with_returns": int(returned),
        "eur_rows": int(eur),
        "owners": int(owners),
    }


# --- measurements on the server -----------------------------------------------------------


def latency(samples: list[openloop.Sample]) -> dict[str, Any]:
    from_due = sorted(1000 * (s.done - s.due) for s in samples)
    from_send = sorted(1000 * (s.done - s.sent) for s in samples)
    failed = [s for s in samples if not s.ok]
    span = (max(s.done for s in samples) - min(s.due for s in samples)) if samples else 0.0
    return {
        "requests": len(samples),
        "errors": len(failed),
        "first_error": failed[0].error if failed else "",
        "ok_per_s": round((len(samples) - len(failed)) / span, 1) if span else 0.0,
        "p50_ms": round(openloop.percentile(from_due, 0.50), 2),
        "p90_ms": round(openloop.percentile(from_due, 0.90), 2),
        "p99_ms": round(openloop.percentile(from_due, 0.99), 2),
        "max_ms": round(from_due[-1], 2) if from_due else 0.0,
        "service_p99_ms": round(openloop.percentile(from_send, 0.99), 2),
    }


def open_loop(
    server: ServerProcess, auth: str, steps: list[openloop.Step], opts: Options
) -> dict[str, Any]:
    """Every step a pipeline of its own, `opts.rate` a second (bench/openloop.py); latency
    per action and together, the server's CPU over the sending window."""
    work = [openloop.Pipeline((step,)) for step in steps]
    t0 = time.monotonic() + 3.0
    window = harness.CpuWindow(server, t0, t0 + len(work) / opts.rate)
    run = openloop.run(
        "127.0.0.1",
        server.port,
        {"Authorization": auth},
        work,
        per_second=opts.rate,
        step_gap=0.0,
        workers=opts.workers,
        t0=t0,
    )
    cpu = window.result()
    result: dict[str, Any] = {
        action: latency([s for s in run.samples if s.action == action])
        for action in sorted({step.action for step in steps})
    }
    result["all"] = latency(run.samples)
    cpu["server_cpu_us_per_request"] = round(1e6 * cpu["server_cpu_s"] / max(1, len(work)))
    cpu["load_generator_cpu_us_per_request"] = round(1e6 * run.worker_cpu_s / max(1, len(work)))
    return {"latency": result, "cpu": cpu}


def lookup_steps(plan: Plan, count: int, email_share: float, rng: random.Random) -> list[Any]:
    """GET /v1/customers/{id} for random customers; a share by email (lookup) for random
    people, customers (whose email is linked) and guests alike."""
    steps = []
    for _ in range(count):
        if rng.random() < email_share:
            person = rng.randrange(plan.people)
            email = (
                customer_email(person)
                if person < plan.customers
                else guest_email(person - plan.customers)
            )
            path = f"/v1/customers/lookup?email={quote(email, safe='')}"
            steps.append(openloop.Step("by_email", "GET", path, b""))
        else:
            path = f"/v1/customers/{customer_id(rng.randrange(plan.customers))}"
            steps.append(openloop.Step("by_id", "GET", path, b""))
    return steps


def check_profiles(client: httpx.Client, conn: Any, backend: str, plan: Plan) -> None:
    """A few profiles read through the API agree with the rebuilt rows."""
    rng = random.Random("profiles:check")
    for person in [rng.randrange(plan.customers) for _ in range(3)]:
        answer = client.get(f"/v1/customers/{customer_id(person)}")
        answer.raise_for_status()
        totals = answer.json()["totals"]
        rows = query(
            conn,
            backend,
            "SELECT currency, orders, net_revenue FROM customer_profiles WHERE owner = ?",
            (f"c:{customer_id(person)}",),
        )
        expected = {currency: (orders, net) for currency, orders, net in rows}
        got = {c: (t["orders"], t["net_revenue"]) for c, t in totals.items()}
        if got != expected:
            raise RuntimeError(f"profile of {customer_id(person)}: API {got}, table {expected}")
    if plan.guests:
        answer = client.get("/v1/customers/lookup", params={"email": guest_email(0)})
        answer.raise_for_status()
        if answer.json()["customer"]["id"] is not None:
            raise RuntimeError(f"guest lookup answered a customer: {answer.text[:300]}")


# The segment of SEGMENT_WHERE, as the plainest SQL count (it must select the same rows).
BARE_COUNT = (
    "SELECT count(*) FROM customer_profiles WHERE tenant_id = ? AND net_revenue >= 100000 "
    "AND return_rate_value < 0.25 AND currency = 'EUR'"
)


def segment_count(
    client: httpx.Client, conn: Any, backend: str, tenant_id: str, runs: int
) -> dict[str, Any]:
    """POST /v1/segments, then `runs` times GET /v1/segments/{id} (its customer_count) and
    the bare SQL count, alternately; wall-clock seconds of each."""
    created = client.post(
        "/v1/segments", json={"name": "bench: high value, few returns, EUR", "where": SEGMENT_WHERE}
    )
    if created.status_code != 201:
        raise RuntimeError(f"POST /v1/segments: {created.status_code} {created.text[:300]}")
    segment = created.json()["id"]
    http_s, sql_s, counts = [], [], set()
    for _ in range(runs):
        started = time.perf_counter()
        answer = client.get(f"/v1/segments/{segment}")
        http_s.append(time.perf_counter() - started)
        if answer.status_code != 200:
            raise RuntimeError(f"GET /v1/segments/{segment}: {answer.status_code} {answer.text}")
        counts.add(answer.json()["customer_count"])
        started = time.perf_counter()
        counts.add(query(conn, backend, BARE_COUNT, (tenant_id,))[0][0])
        sql_s.append(time.perf_counter() - started)
    if len(counts) != 1:
        raise RuntimeError(f"customer_count and the SQL count disagree: {counts}")
    return {
        "where": SEGMENT_WHERE,
        "bare_sql": BARE_COUNT,
        "segment_id": segment,
        "customer_count": counts.pop(),
        "runs": runs,
        "http_s": [round(s, 4) for s in http_s],
        "sql_s": [round(s, 4) for s in sql_s],
        "http_median_s": round(statistics.median(http_s), 4),
        "http_max_s": round(max(http_s), 4),
        "sql_median_s": round(statistics.median(sql_s), 4),
        "sql_max_s": round(max(sql_s), 4),
    }


class RssSampler:
    """The server's VmRSS every 10 ms while a block runs: its peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self._running = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while self._running.is_set():
            with contextlib.suppress(OSError, KeyError):
                self.peak_kb = max(self.peak_kb, proc_status(self.pid)["VmRSS"])
            time.sleep(0.01)

    def __enter__(self) -> "RssSampler":
        self._running.set()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._running.clear()
        self._thread.join()


def export_threshold(conn: Any, backend: str, tenant_id: str, rows: int) -> tuple[str, int]:
    """A `where` (net_revenue >= T) that selects about `rows` rows, and how many exactly."""
    found = query(
        conn,
        backend,
        "SELECT net_revenue FROM customer_profiles WHERE tenant_id = ? "
        "ORDER BY net_revenue DESC LIMIT 1 OFFSET ?",
        (tenant_id, max(0, rows - 1)),
    )
    threshold = int(found[0][0]) if found else 0
    count = query(
        conn,
        backend,
        "SELECT count(*) FROM customer_profiles WHERE tenant_id = ? AND net_revenue >= ?",
        (tenant_id, threshold),
    )[0][0]
    return f"net_revenue >= {threshold}", int(count)


def export_csv(
    server: ServerProcess, client: httpx.Client, where: str, expected: int
) -> dict[str, Any]:
    """GET /v1/customers?where= with Accept: text/csv, read to the end; rows/s and the
    server's memory before, during and after."""
    before = server.memory()
    first_byte = 0.0
    size = newlines = 0
    with RssSampler(server.pid) as sampler:
        started = time.perf_counter()
        with client.stream(
            "GET", "/v1/customers", params={"where": where}, headers={"Accept": "text/csv"}
        ) as answer:
            if answer.status_code != 200:
                raise RuntimeError(f"CSV export: {answer.status_code} {answer.read()[:300]!r}")
            for chunk in answer.iter_bytes(65536):
                if not size:
                    first_byte = time.perf_counter() - started
                size += len(chunk)
                newlines += chunk.count(b"\n")
        seconds = time.perf_counter() - started
    after = server.memory()
    rows = newlines - 1  # the header
    if rows != expected:
        raise RuntimeError(f"CSV export of `{where}`: {rows} rows, expected {expected}")
    peak = max(sampler.peak_kb, after["VmRSS"])
    return {
        "where": where,
        "rows": rows,
        "mb": round(size / 2**20, 1),
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds),
        "first_byte_s": round(first_byte, 3),
        "rss_before_mb": round(before["VmRSS"] / 1024, 1),
        "rss_peak_during_mb": round(peak / 1024, 1),
        "rss_growth_mb": round((peak - before["VmRSS"]) / 1024, 1),
        "rss_after_mb": round(after["VmRSS"] / 1024, 1),
        "hwm_before_mb": round(before["VmHWM"] / 1024, 1),
        "hwm_after_mb": round(after["VmHWM"] / 1024, 1),
    }


def driver_read(target: Target, conn: Any, tenant_id: str, where: str) -> dict[str, Any]:
    """The baseline of an export: the service's own query for the same rows (compiled with
    its values inlined), read by the driver alone, 1000 rows a fetch (on PostgreSQL through
    a server-side cursor, as the service streams)."""
    from sqlalchemy.dialects import postgresql, sqlite

    from returnstack.customers import repository, segments
    from returnstack.customers.expressions import compile_where

    statement = repository.sorted_segment_rows(
        tenant_id, compile_where(where), segments.parse_sort(None)
    )
    dialect = sqlite.dialect() if target.backend == "sqlite" else postgresql.dialect()
    sql = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    # Planned as the export's COPY plans its query: for every row.
    settings = EXPORT_SETTINGS.get(target.backend, {})
    rows = 0
    cursor = conn.cursor() if target.backend == "sqlite" else conn.cursor(name="bench_export")
    try:
        for name, value in settings.items():
            conn.execute(f"SET LOCAL {name} = {value}")
        started = time.perf_counter()
        cursor.execute(sql)
        while batch := cursor.fetchmany(1000):
            rows += len(batch)
        seconds = time.perf_counter() - started
    finally:
        cursor.close()
        conn.rollback()
    return {
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds),
        "settings": settings,
    }


def _client(server: ServerProcess, auth: str) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"Authorization": auth}, timeout=120)


@contextlib.contextmanager
def _serving(
    target: Target, backend: str, phase: str, figures: dict[str, Any]
) -> Iterator[ServerProcess]:
    """`returnstack serve` for one phase; afterwards (also after a failure) its whole log is
    kept (git-ignored), and its peak RSS and logged errors go into `figures[phase]`."""
    server = returnstack_server(target)
    try:
        with server:
            console.print(f"  returnstack serve: pid {server.pid}, port {server.port}")
            yield server
    finally:
        figures[phase] = {
            "peak_rss_mb": round(server.final_hwm_kb / 1024, 1),
            "log_errors": harness.keep_log(server, f"profiles-{backend}-{phase}"),
        }


def measure_lookups(
    server: ServerProcess, backend: str, auth: str, plan: Plan, opts: Options
) -> tuple[dict[str, Any], dict[str, Any]]:
    """/healthz (warm-up, measured), then lookups (warm-up, measured), all at opts.rate."""
    healthz = [openloop.Step("healthz", "GET", "/healthz", b"")]
    console.print(f"  /healthz: {opts.healthz:,} requests at {opts.rate:g}/s …")
    open_loop(server, auth, healthz * max(100, opts.healthz // 10), opts)
    floor = open_loop(server, auth, healthz * opts.healthz, opts)
    console.print(f"    {_brief(floor['latency']['all'])}")
    console.print(
        f"  lookups: {opts.lookup_warmup:,} warm-up, then {opts.lookups:,} at "
        f"{opts.rate:g}/s ({opts.email_share:.0%} by email) …"
    )
    rng = random.Random("profiles:lookups")
    open_loop(server, auth, lookup_steps(plan, opts.lookup_warmup, opts.email_share, rng), opts)
    steps = lookup_steps(plan, opts.lookups, opts.email_share, rng)
    if opts.profile_dir is None:
        lookups = open_loop(server, auth, steps, opts)
    else:
        raw = opts.profile_dir / f"profiles-{backend}-lookups.txt"
        with profile.Profiler(server.pid, raw):
            lookups = open_loop(server, auth, steps, opts)
        lookups["profile"] = {
            "raw": str(raw),
            **{
                focus or "all": profile.summarize(raw, top=25, focus=focus)
                for focus in (None, "read_customer", "lookup_customer")
            },
        }
        harness.print_profile(lookups["profile"])
    for action, figures in lookups["latency"].items():
        console.print(f"    {action}: {_brief(figures)}")
    return floor, lookups


def sqlite_statistics(target: Target) -> float:
    """SQLite: the planner statistics that `returnstack import` and `profiles rebuild`
    gather after a bulk load (`Database.optimize()`: tables never analyzed or grown
    tenfold, every row read); the seconds it took."""
    from returnstack.config import Settings
    from returnstack.kit.db import Database

    started = time.perf_counter()
    db = Database(Settings(database_url=target.url, _env_file=None))
    try:
        db.optimize()
    finally:
        db.dispose()
    return round(time.perf_counter() - started, 1)


@dataclass
class Prepared:
    """A database holding the dataset with its profiles rebuilt: built in this run, or a
    copy of a kept one."""

    target: Target
    tenant_id: str
    auth: str
    load: dict[str, Any]
    rebuilt: dict[str, Any]


def _build(target: Target, plan: Plan, lines: int, load_workers: int, plan_s: float) -> Prepared:
    backend = target.backend
    tenant_id, auth = harness.bench_tenant(target, "EUR")
    console.print(
        f"  loading {plan.customers:,} customers + {plan.guests:,} guests, "
        f"{len(plan.lines_per_order):,} orders, {lines:,} lines (insert_rows) …"
    )
    load = load_dataset(target, tenant_id, plan, load_workers)
    load["plan_s"] = plan_s  # drawn before, not in `seconds`
    if backend == "postgresql":
        load["vacuum_analyze_s"] = harness.timed_sql(target, "VACUUM ANALYZE")
        console.print(f"    VACUUM ANALYZE in {load['vacuum_analyze_s']:.1f}s")
    else:
        load["analyze_s"] = sqlite_statistics(target)
        console.print(f"    ANALYZE in {load['analyze_s']:.1f}s")
    load["database_mb"] = harness.database_size_mb(target)
    console.print(
        f"    {load['rows_total']:,} rows in {load['seconds']:.1f}s ({load['rows_per_s']:,} "
        f"rows/s; the workers spent {load['generate_s']:.1f}s generating, "
        f"{load['write_s']:.1f}s writing); database "
        f"{load['database_mb']:,.0f} MB"
    )
    console.print("  rebuilding profiles (customers.profiles.rebuild) …")
    rebuilt = rebuild_profiles(target, tenant_id)
    if backend == "postgresql":
        rebuilt["vacuum_analyze_s"] = harness.timed_sql(target, "VACUUM ANALYZE customer_profiles")
    else:
        rebuilt["analyze_s"] = sqlite_statistics(target)
        # the WAL back into the database now, not by the server's checkpointer later
        rebuilt["checkpoint_s"] = harness.timed_sql(target, "PRAGMA wal_checkpoint(TRUNCATE)")
    rebuilt["database_mb"] = harness.database_size_mb(target)
    with harness.driver_connection(target) as conn:
        rebuilt["stats"] = profile_stats(conn, backend)
    console.print(
        f"    {rebuilt['profiles']:,} profile rows in {rebuilt['seconds']:.1f}s; "
        f"{rebuilt['stats']}; database {rebuilt['database_mb']:,.0f} MB"
    )
    return Prepared(target, tenant_id, auth, load, rebuilt)


@contextlib.contextmanager
def prepared(
    backend: str,
    plan: Plan,
    lines: int,
    *,
    load_workers: int,
    postgres_url: str,
    dataset: str | None,
    dataset_dir: Path,
    plan_s: float = 0.0,
) -> Iterator[Prepared]:
    """A fresh database with this benchmark's dataset and profiles (`_build`). With a
    `dataset` name: when it is kept, a copy of it (built once, by any benchmark that uses
    this loader: bench/profiles.py, bench/products_scale.py); else built, then kept."""
    keep = kept(backend, dataset, dataset_dir, postgres_url)
    wanted = {"kind": DATASET_KIND, "customers": plan.customers, "lines": lines}
    described = keep.meta() if keep is not None else None
    if described is not None and {key: described.get(key) for key in wanted} != wanted:
        raise SystemExit(
            f"the kept dataset {keep.where if keep else ''} holds "
            f"{ {key: described.get(key) for key in wanted} }, not {wanted}: another --dataset "
            "name"
        )
    if described is not None and keep is not None:
        console.print(f"  copying the kept dataset {keep.where} …")
    t_copy = time.perf_counter()
    with fresh_database(
        backend, postgres_url, copy_of=keep if described is not None else None
    ) as target:
        if described is not None and keep is not None:
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
            yield Prepared(
                target, described["tenant_id"], described["auth"], load, described["rebuilt"]
            )
            return
        ready = _build(target, plan, lines, load_workers, plan_s)
        if keep is not None:
            meta = {
                **wanted,
                "tenant_id": ready.tenant_id,
                "auth": ready.auth,
                "load": ready.load,
                "rebuilt": ready.rebuilt,
                "built_at": harness.started_at(),
                "source": harness.source_state(),
            }
            console.print(f"  keeping the dataset as {keep.where} …")
            ready.load["kept"] = {"where": keep.where, "keep_s": keep.keep(target, meta)}
            console.print(f"    kept in {ready.load['kept']['keep_s']:.0f}s")
        yield ready


def run_backend(backend: str, opts: Options) -> dict[str, Any]:
    started = harness.started_at()
    source = harness.source_state()
    console.print(f"  planning {opts.customers:,} customers, {opts.lines:,} lines …")
    planned = time.perf_counter()
    plan = make_plan(opts.customers, opts.lines)
    plan_s = round(time.perf_counter() - planned, 1)
    with prepared(
        backend,
        plan,
        opts.lines,
        load_workers=opts.load_workers,
        postgres_url=opts.postgres_url,
        dataset=opts.dataset,
        dataset_dir=opts.dataset_dir,
        plan_s=plan_s,
    ) as ready:
        target, tenant_id, auth = ready.target, ready.tenant_id, ready.auth
        load, rebuilt = ready.load, ready.rebuilt
        with harness.driver_connection(target) as conn:
            exports_where = {
                size: export_threshold(conn, backend, tenant_id, rows)
                for size, rows in (("small", opts.export_rows // 10), ("large", opts.export_rows))
            }
            busy = harness.wait_idle(opts.wait_idle) if opts.wait_idle else harness.cpu_busy()
            server_source = harness.source_state()  # what the server runs (editable install)
            # Two servers, one after the other: lookups; then the segment and the exports
            # (whose memory is then measured on a server that has done nothing else).
            servers: dict[str, Any] = {}
            with _serving(target, backend, "lookups", servers) as server:
                with _client(server, auth) as client:
                    check_profiles(client, conn, backend, plan)
                floor, lookups = measure_lookups(server, backend, auth, plan, opts)
            with (
                _serving(target, backend, "queries", servers) as server,
                _client(server, auth) as client,
            ):
                console.print(f"  segment count `{SEGMENT_WHERE}` x {opts.segment_runs} …")
                segment = segment_count(client, conn, backend, tenant_id, opts.segment_runs)
                console.print(
                    f"    {segment['customer_count']:,} rows; GET /v1/segments/{{id}} median "
                    f"{segment['http_median_s']:.3f}s, max {segment['http_max_s']:.3f}s; bare "
                    f"SQL median {segment['sql_median_s']:.3f}s, max {segment['sql_max_s']:.3f}s"
                )
                exports: dict[str, Any] = {}
                where, count = exports_where["small"]
                export_csv(server, client, where, count)  # warm-up
                for size in ("small", "large"):
                    where, count = exports_where[size]
                    exports[size] = export_csv(server, client, where, count)
                    e = exports[size]
                    console.print(
                        f"  CSV export `{where}`: {e['rows']:,} rows, {e['mb']} MB in "
                        f"{e['seconds']:.2f}s = {e['rows_per_s']:,} rows/s; RSS "
                        f"{e['rss_before_mb']} -> peak {e['rss_peak_during_mb']} MB "
                        f"(+{e['rss_growth_mb']}); VmHWM {e['hwm_before_mb']} -> "
                        f"{e['hwm_after_mb']} MB"
                    )
                exports["large_driver_read"] = driver_read(
                    target, conn, tenant_id, exports_where["large"][0]
                )
        machine = harness.machine(target)
    targets = _targets(backend, lookups, segment, exports)
    return {
        "backend": backend,
        "started_at": started,
        "command": opts.command,
        "quick": opts.quick,
        "profiled": opts.profile_dir is not None,
        "cpu_busy_before_start": round(busy, 3),
        "source": source,
        "server_source": server_source,
        "machine": machine,
        "dataset": {
            "customers": plan.customers,
            "guests": plan.guests,
            "orders": len(plan.lines_per_order),
            "lines": opts.lines,
            "shape": {
                "orders_per_customer": f"geometric, mean {MEAN_ORDERS:g} (guests "
                f"{MEAN_GUEST_ORDERS:g}), at most {MAX_ORDERS}",
                "lines_per_order": f"geometric, 1-{MAX_LINES}, mean "
                f"{opts.lines / len(plan.lines_per_order):.2f}",
                "currencies": f"home EUR {EUR_SHARE:.0%} / USD; {SECOND_CURRENCY_SHARE:.0%} "
                "of customers buy in both",
                "offline_share": workload.OFFLINE_SHARE,
                "span": f"{SPAN_S // 86400} days before {ANCHOR.date()}",
                "return_classes": RETURN_CLASSES,
            },
            "load": load,
            "rebuild": rebuilt,
        },
        "load_generator": f"open loop (bench/openloop.py), {opts.workers} processes; "
        "latency from the due time",
        "rate_req_per_s": opts.rate,
        "email_share": opts.email_share,
        "healthz": floor,
        "lookups": lookups,
        "lookup_warmup": opts.lookup_warmup,
        "segment": segment,
        "exports": exports,
        "servers": servers,
        "targets": targets,
    }


def _brief(figures: dict[str, Any]) -> str:
    return (
        f"{figures['requests']:,} requests, {figures['ok_per_s']:,.1f} ok/s, p50 "
        f"{figures['p50_ms']:.2f} / p90 {figures['p90_ms']:.2f} / p99 {figures['p99_ms']:.2f} / "
        f"max {figures['max_ms']:.1f} ms, {figures['errors']} errors"
        + (f" (first: {figures['first_error'][:200]})" if figures["errors"] else "")
    )


def _targets(
    backend: str, lookups: dict[str, Any], segment: dict[str, Any], exports: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    every = lookups["latency"]["all"]
    large, small = exports["large"], exports["small"]
    targets: dict[str, dict[str, Any]] = {
        "lookup_p99_ms": {
            "target": LOOKUP_P99_TARGET_MS,
            "value": every["p99_ms"],
            "met": every["p99_ms"] < LOOKUP_P99_TARGET_MS and not every["errors"],
        },
        "export_rows_per_s": {
            "target": EXPORT_ROWS_PER_S_TARGET,
            "value": large["rows_per_s"],
            "met": large["rows_per_s"] > EXPORT_ROWS_PER_S_TARGET,
        },
        "export_flat_memory": {
            "target": f"growth <= small export's + {EXPORT_FLAT_MARGIN_MB:g} MB",
            "value": [large["rss_growth_mb"], small["rss_growth_mb"]],
            "met": large["rss_growth_mb"] <= small["rss_growth_mb"] + EXPORT_FLAT_MARGIN_MB,
        },
    }
    if backend in SEGMENT_COUNT_TARGET_S:
        targets["segment_count_s"] = {
            "target": SEGMENT_COUNT_TARGET_S[backend],
            "value": segment["http_max_s"],  # every run under the target
            "met": segment["http_max_s"] < SEGMENT_COUNT_TARGET_S[backend],
        }
    return targets


# --- output -------------------------------------------------------------------------------


def _baseline(backend: str, export: dict[str, Any], read: dict[str, Any]) -> str:
    """The baseline and ratio cells of the export: only for a driver read made with the
    export's own planner settings (results before they were recorded read otherwise)."""
    if read.get("settings", {}) != EXPORT_SETTINGS.get(backend, {}):
        return "not comparable (driver read without the export's planner settings) | -"
    return (
        f"driver reads the same rows at {read['rows_per_s']:,} rows/s | "
        f"{export['rows_per_s'] / max(read['rows_per_s'], 1):.0%}"
    )


def render_one(result: dict[str, Any]) -> str:
    machine, data = result["machine"], result["dataset"]
    load, rebuilt = data["load"], data["rebuild"]
    stats, rows = rebuilt["stats"], load["rows"]
    targets = result["targets"]
    every = result["lookups"]["latency"]["all"]
    floor = result["healthz"]["latency"]["all"]
    segment, exports = result["segment"], result["exports"]
    large, small, bare_read = exports["large"], exports["small"], exports["large_driver_read"]
    count_target = targets.get("segment_count_s")
    lines = [
        f"#### {harness.NAMES[result['backend']]}",
        "",
        f"Run of {result['started_at']}: `{result['command']}` ({machine['cpus']} cores, "
        f"{machine['cpu_model'] or 'unknown CPU'}, shared by the server, the database and the "
        f"load generator; {harness.engine(machine)}; Python {machine['python']}; source "
        f"{result['source']['commit']}{harness.dirty(result['source'])}; other processes kept "
        f"{result['cpu_busy_before_start']:.0%} of the cores busy just before the measurements).",
        "",
        f"Dataset: {data['customers']:,} customers and {data['guests']:,} guest emails; "
        f"{rows['orders']:,} orders, {rows['order_lines']:,} lines, {rows['returns']:,} recorded "
        f"returns ({rows['returns'] / max(1, rows['orders']):.1%} of the orders; "
        f"{rows['return_items']:,} items). Written with `insert_rows` in {load['seconds']:,.0f} s "
        f"({load['rows_total']:,} rows, {load['rows_per_s']:,} rows/s; {load['transactions']} "
        f"transactions of {load['people_per_transaction']:,} people, by {load['workers']} "
        "processes that generate a transaction's rows, then write them)"
        + (
            f", then `VACUUM ANALYZE` ({load['vacuum_analyze_s']:,.0f} s)"
            if "vacuum_analyze_s" in load
            else f", then `ANALYZE` ({load['analyze_s']:,.0f} s)"
            if "analyze_s" in load
            else ""
        )
        + f"; database {load['database_mb']:,.0f} MB. Profiles built by `rebuild` in "
        f"{rebuilt['seconds']:,.0f} s: {stats['rows']:,} rows ({stats['guest_rows']:,} of guests; "
        f"{stats['rows_with_returns']:,} with returns; {stats['serial_returner_rows']:,} flagged "
        "serial returners)"
        + (
            f", then `VACUUM ANALYZE customer_profiles` ({rebuilt['vacuum_analyze_s']:,.0f} s)"
            if "vacuum_analyze_s" in rebuilt
            else f", then `ANALYZE` of the tables never analyzed ({rebuilt['analyze_s']:,.0f} s) "
            f"and `PRAGMA wal_checkpoint(TRUNCATE)` ({rebuilt['checkpoint_s']:,.0f} s)"
            if "analyze_s" in rebuilt
            else f", then `PRAGMA wal_checkpoint(TRUNCATE)` ({rebuilt['checkpoint_s']:,.0f} s)"
            if "checkpoint_s" in rebuilt
            else ""
        )
        + f"; database {rebuilt['database_mb']:,.0f} MB.",
        "",
        "| measure | value | baseline (same run) | ratio | target | |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
        f"| profile lookup p99 ({result['email_share']:.0%} by email) | "
        f"**{every['p99_ms']:,.2f} ms** | `/healthz` p99 {floor['p99_ms']:,.2f} ms | "
        f"{every['p99_ms'] / max(floor['p99_ms'], 1e-9):,.1f}x | < {LOOKUP_P99_TARGET_MS:g} ms | "
        f"{harness.verdict(targets['lookup_p99_ms'])} |",
        f"| segment count, GET /v1/segments/{{id}}: median / max of {segment['runs']} | "
        f"**{segment['http_median_s']:,.3f} / {segment['http_max_s']:,.3f} s** | bare SQL count "
        f"{segment['sql_median_s']:,.3f} / {segment['sql_max_s']:,.3f} s | "
        f"{segment['http_median_s'] / max(segment['sql_median_s'], 1e-9):,.1f}x | "
        + (f"< {count_target['target']:g} s | " if count_target else "- | ")
        + f"{harness.verdict(count_target)} |",
        f"| CSV export of {large['rows']:,} rows | **{large['rows_per_s']:,} rows/s** | "
        + _baseline(result["backend"], large, bare_read)
        + f" | > {EXPORT_ROWS_PER_S_TARGET:,} rows/s | "
        f"{harness.verdict(targets['export_rows_per_s'])} |",
        f"| server RSS growth during the export of {large['rows']:,} rows | "
        f"**+{large['rss_growth_mb']:g} MB** | +{small['rss_growth_mb']:g} MB for "
        f"{small['rows']:,} rows | - | ≤ +{EXPORT_FLAT_MARGIN_MB:g} MB more | "
        f"{harness.verdict(targets['export_flat_memory'])} |",
        "",
        f"Requests at {result['rate_req_per_s']:g} a second, open loop (latency from the due "
        f"time; {result['lookup_warmup']:,} lookups of warm-up first, not counted):",
        "",
        "| requests | count | ok/s | p50 | p90 | p99 | max | errors | server CPU/request |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    phases = [("`GET /healthz`", floor, result["healthz"]["cpu"])]
    labels = {
        "by_id": "`GET /v1/customers/{id}`",
        "by_email": "`GET /v1/customers/lookup?email=`",
        "all": "all lookups",
    }
    for action, label in labels.items():
        figures = result["lookups"]["latency"].get(action)
        if figures is not None:
            phases.append((label, figures, result["lookups"]["cpu"] if action == "all" else None))
    for label, f, cpu in phases:
        per_request = f"{cpu['server_cpu_us_per_request']:,} µs" if cpu else ""
        lines.append(
            f"| {label} | {f['requests']:,} | {f['ok_per_s']:,.1f} | {f['p50_ms']:,.2f} ms | "
            f"{f['p90_ms']:,.2f} ms | {f['p99_ms']:,.2f} ms | {f['max_ms']:,.1f} ms | "
            f"{f['errors']:,} | {per_request} |"
        )
    cpu = result["lookups"]["cpu"]
    lines += [
        "",
        f"During the lookups: server {cpu['server_cores']:.2f} cores, all processes "
        f"{cpu['machine_cores']:.2f} of {machine['cpus']} (PostgreSQL where it is the backend, "
        "the load generator, anything else).",
        "",
        f"Segment `{segment['where']}`: {segment['customer_count']:,} rows "
        f"({segment['customer_count'] / max(1, stats['rows']):.0%} of the profile rows). Runs "
        f"(s), HTTP: {', '.join(f'{s:.3f}' for s in segment['http_s'])}; bare SQL: "
        f"{', '.join(f'{s:.3f}' for s in segment['sql_s'])}.",
        "",
        "| CSV export | rows | MB | time | rows/s | first byte | RSS before → peak during | "
        "VmHWM before → after |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in (small, large):
        lines.append(
            f"| `{e['where']}` | {e['rows']:,} | {e['mb']:g} | {e['seconds']:,.2f} s | "
            f"{e['rows_per_s']:,} | {e['first_byte_s'] * 1000:,.0f} ms | {e['rss_before_mb']:g} → "
            f"{e['rss_peak_during_mb']:g} MB | {e['hwm_before_mb']:g} → {e['hwm_after_mb']:g} MB |"
        )
    servers = result["servers"]
    errors = "; ".join(
        f"{phase}: " + ", ".join(f"{count} x `{text}`" for text, count in s["log_errors"].items())
        for phase, s in servers.items()
        if s["log_errors"]
    )
    lines += [
        "",
        f"Peak RSS of the servers over their lives: {servers['lookups']['peak_rss_mb']:,.0f} MB "
        f"(lookups), {servers['queries']['peak_rss_mb']:,.0f} MB (segment and exports)."
        + (f" Server errors logged: {errors}." if errors else ""),
        "",
    ]
    return "\n".join(lines)


BENCH = harness.Benchmark("profiles", "profiles", "Customer profiles", render_one)


def show(result: dict[str, Any]) -> None:
    console.print(render_one(result))


def cli(argv: list[str]) -> int:
    parser = harness.parser(
        BENCH,
        __doc__.splitlines()[0],
        quick="20,000 customers, 200,000 lines, 2,000 lookups; results not recorded",
        profile="py-spy the server during the measured lookups (--gil; raw stacks into DIR); "
        "figures then not recorded",
    )
    parser.add_argument("--customers", type=int, help="customers (default 1000000; --quick 20000)")
    parser.add_argument("--lines", type=int, help="purchase lines (default 10 per customer)")
    parser.add_argument(
        "--lookups", type=int, help="measured profile lookups (default 20000; --quick 2000)"
    )
    parser.add_argument(
        "--healthz", type=int, help="measured /healthz requests (default a tenth of --lookups)"
    )
    parser.add_argument(
        "--rate", type=float, default=RATE, help=f"requests a second (default {RATE:g})"
    )
    parser.add_argument(
        "--email-share",
        type=float,
        default=0.2,
        help="share of the lookups by email (default 0.2)",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="load generator processes (default 2)"
    )
    parser.add_argument(
        "--load-workers",
        type=int,
        default=2,
        help="processes generating and writing the dataset (default 2)",
    )
    parser.add_argument(
        "--segment-runs", type=int, default=5, help="segment counts measured (default 5)"
    )
    parser.add_argument(
        "--export-rows",
        type=int,
        help="rows of the large CSV export (default 100000 = customers / 10; the small one "
        "a tenth of it)",
    )
    harness.add_dataset_options(parser)
    args = parser.parse_args(argv)
    if args.rate <= 0 or min(args.workers, args.load_workers, args.segment_runs) < 1:
        parser.error("--rate, --workers, --load-workers and --segment-runs must be positive")
    if not 0 <= args.email_share <= 1:
        parser.error("--email-share is a share, 0 to 1")
    opts = options(args, argv)
    return harness.run(BENCH, opts, lambda backend: run_backend(backend, opts), show)


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
