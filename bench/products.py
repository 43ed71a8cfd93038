"""Product signals: what keeping them in the transaction of the facts costs ingestion, and
what it saves reads, against the alternative of deriving them by queries from the facts.

In-process (the service functions, no HTTP), on a fresh database per backend:

1. Ingestion: batches of 1,000 events (purchases of 1-4 lines, 15 % recorded returns)
   through `events.service.record_events`, one transaction each, alternating rounds with the
   upkeep on and off (the hooks made no-ops). Figure: events/s with / events/s without, and
   the same per CPU-second (this process, plus its PostgreSQL backend, from /proc).
2. Reads, on the data set that leaves (signals rebuilt, so both paths see the same facts):
   one product's stats and a ranking of 1,000 ids from the kept tables (the service), and
   the same figures derived by queries from the facts (units of the products asked for
   from order lines and return items, and the category rollups their smoothing needs from
   every line of those categories). Figure: derived p50 / kept p50, and each p99. Also the
   stats of a product one unit short of `upkeep.KEEP_SALES_FROM` (499 one-unit lines over
   4 variants, online and 40 stores), whose units sold per variant, channel and store its
   stats read from its lines. The statistics are refreshed first, as a server has them.
3. Reports: 90 days grouped by category and by day (derived from the facts: units sold
   from the order lines, which carry their order's time and currency, returns from returns).

`python -m bench products [--backend sqlite|postgresql|both] [--batches N] [--quick]`
writes bench/results/products-<backend>.json and the Product signals section of
bench/README.md (unless --quick or --no-readme).
"""

import argparse
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from bench import harness
from returnstack.config import Settings
from returnstack.events.schemas import Event, Trust
from returnstack.events.service import record_events
from returnstack.kit import migrate
from returnstack.kit.db import Database
from returnstack.models import Order, OrderLine, ProductSignal, Return, ReturnItem
from returnstack.products import service, upkeep
from returnstack.products.rebuild import rebuild
from returnstack.tenants.service import create_tenant

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 1000
PRODUCTS = 20_000
CATEGORIES = [f"Dept{d}/Group{g}" for d in range(8) for g in range(6)]
REASONS = ["defective", "unwanted", "size_too_small", "too_large", "not_as_described"]
EVENTS = TypeAdapter(list[Event])


def _product(rng: random.Random) -> int:
    # A few products sell a lot (as in any catalogue): a popular head, then the long tail.
    if rng.random() < 0.3:
        return (int(rng.paretovariate(1.0)) - 1) % 200
    return rng.randrange(PRODUCTS)


def make_batch(rng: random.Random, batch: int, start: datetime) -> list[Any]:
    events: list[dict[str, Any]] = []
    for index in range(BATCH):
        number = batch * BATCH + index
        when = start - timedelta(seconds=rng.randrange(200 * 86400))
        order_id = f"o{number}"
        if index % 7 == 6 and number > BATCH:  # a recorded return of an earlier order
            earlier = rng.randrange(number - BATCH)
            product = _product(random.Random(earlier))
            events.append(
                {
                    "type": "return",
                    "id": f"r{number}",
                    "timestamp": when.isoformat(),
                    "channel": "online",
                    "customer": {"id": f"c{earlier % 50_000}"},
                    "order_id": f"o{earlier}",
                    "currency": "EUR",
                    "items": [
                        {
                            "product_id": f"P{product}",
                            "quantity": 1,
                            "reason": rng.choice(REASONS),
                        }
                    ],
                    "refund": {"amount": rng.choice([999, 1999, 4999])},
                }
            )
            continue
        line_rng = random.Random(number)  # the first product is found again by returns
        offline = rng.random() < 0.3
        items = []
        for line in range(1 + rng.randrange(4)):
            product = _product(line_rng) if line == 0 else _product(rng)
            items.append(
                {
                    "line_id": str(line + 1),
                    "product_id": f"P{product}",
                    "variant_id": f"P{product}-{rng.choice('SML')}",
                    "quantity": 1 + rng.randrange(2),
                    "unit_price": rng.choice([999, 1999, 4999]),
                    "category": CATEGORIES[product % len(CATEGORIES)],
                }
            )
        event = {
            "type": "purchase",
            "id": f"p{number}",
            "timestamp": when.isoformat(),
            "channel": "offline" if offline else "online",
            "customer": {"id": f"c{number % 50_000}"},
            "order_id": order_id,
            "currency": "EUR",
            "items": items,
        }
        if offline:
            event["store"] = {"id": f"s{rng.randrange(40)}"}
        events.append(event)
    return EVENTS.validate_python(events)


@contextmanager
def upkeep_off() -> Iterator[None]:
    """The hooks made no-ops: ingestion as it would be without product signals."""
    names = ("count_new_order_lines", "count_recorded_returns", "count_reported")
    saved = {name: getattr(upkeep, name) for name in names}
    for name in names:
        setattr(upkeep, name, lambda *args, **kwargs: None)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(upkeep, name, function)


def _backend_pid(session: Session) -> int | None:
    """The pid of the session's PostgreSQL backend; None on SQLite (its work is in this
    process)."""
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return None
    return int(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def _cpu_s(pid: int) -> float:
    """CPU seconds a process on this machine has used (0 if /proc cannot tell)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ingest(db: Database, tenant_id: str, batches: list[list[Any]]) -> tuple[float, float]:
    """Events per second over these batches, one transaction each, and events per CPU
    second (this process's, plus its PostgreSQL backend's): on a machine shared with other
    work, the CPU a batch costs varies much less than the time it waits for a core."""
    began, cpu_began = time.perf_counter(), time.process_time()
    backend_cpu = 0.0
    for events in batches:
        with db.transaction() as session:
            pid = _backend_pid(session)
            before = _cpu_s(pid) if pid is not None else 0.0
            record_events(
                session,
                tenant_id=tenant_id,
                default_currency="EUR",
                events=events,
                source="bench",
                actor="bench",
                trust=Trust.verified,
            )
            session.commit()  # the upkeep writes before the commit: counted here
            if pid is not None:
                backend_cpu += _cpu_s(pid) - before
    count = sum(len(events) for events in batches)
    cpu = time.process_time() - cpu_began + backend_cpu
    return count / (time.perf_counter() - began), count / cpu


# --- the alternative: signals derived by queries ---------------------------------------------


def derived_units(session: Session, tenant_id: str, product_ids: list[str]) -> dict[str, Any]:
    """Units sold and back per product, and the category of each, from the facts."""
    sold = dict(
        session.execute(
            select(OrderLine.product_id, func.sum(OrderLine.quantity))
            .where(OrderLine.tenant_id == tenant_id, OrderLine.product_id.in_(product_ids))
            .group_by(OrderLine.product_id)
        ).all()
    )
    back = dict(
        session.execute(
            select(ReturnItem.product_id, func.sum(ReturnItem.received_quantity))
            .where(ReturnItem.tenant_id == tenant_id, ReturnItem.product_id.in_(product_ids))
            .group_by(ReturnItem.product_id)
        ).all()
    )
    categories = dict(
        session.execute(
            select(OrderLine.product_id, func.max(OrderLine.category))
            .where(OrderLine.tenant_id == tenant_id, OrderLine.product_id.in_(product_ids))
            .group_by(OrderLine.product_id)
        ).all()
    )
    return {"sold": sold, "back": back, "categories": categories}


def derived_rollups(session: Session, tenant_id: str, paths: set[str]) -> dict[str, Any]:
    """Units sold and back under each category path and the tenant's: every line of the
    tenant grouped by category (and every returned item by its line's category), folded
    into the paths asked for. Two scans of the tenant's facts per call."""
    sold_by = session.execute(
        select(OrderLine.category, func.sum(OrderLine.quantity))
        .where(OrderLine.tenant_id == tenant_id)
        .group_by(OrderLine.category)
    ).all()
    back_by = session.execute(
        select(OrderLine.category, func.sum(ReturnItem.received_quantity))
        .join(
            OrderLine,
            and_(
                OrderLine.tenant_id == ReturnItem.tenant_id,
                OrderLine.order_id == ReturnItem.order_id,
                OrderLine.product_id == ReturnItem.product_id,
            ),
        )
        .where(ReturnItem.tenant_id == tenant_id)
        .group_by(OrderLine.category)
    ).all()
    rollups: dict[str, list[int]] = {path: [0, 0] for path in paths}
    for index, grouped in ((0, sold_by), (1, back_by)):
        for category, units in grouped:
            for path in upkeep.category_paths(category):
                if path in rollups:
                    rollups[path][index] += int(units or 0)
    return {path: (sold, back) for path, (sold, back) in rollups.items()}


def derived_rank(session: Session, tenant_id: str, product_ids: list[str]) -> list[Any]:
    units = derived_units(session, tenant_id, product_ids)
    paths = {
        path
        for category in units["categories"].values()
        for path in upkeep.category_paths(category)
    }
    rollups = derived_rollups(session, tenant_id, paths)
    smoothing = service.Smoothing(strength=20.0, min_units=100)
    scores = []
    for product_id in product_ids:
        prior = service.choose_prior(units["categories"].get(product_id), rollups, smoothing)
        sold, back = units["sold"].get(product_id, 0), units["back"].get(product_id, 0)
        scores.append((1 - service.smoothed_rate(back, sold, prior, 20.0), product_id))
    return sorted(scores, reverse=True)


def _product_below_the_threshold(db: Database, tenant_id: str, now: datetime) -> str:
    """A product one unit short of `upkeep.KEEP_SALES_FROM`, on as many lines (one unit
    each, over 4 variants, online and 40 stores): the most its stats read from its lines."""
    rng = random.Random(5)
    events = []
    for number in range(upkeep.KEEP_SALES_FROM - 1):
        store = rng.randrange(41)
        event: dict[str, Any] = {
            "type": "purchase",
            "id": f"below-{number}",
            "timestamp": (now - timedelta(minutes=number)).isoformat(),
            "channel": "online" if store == 40 else "offline",
            "customer": {"id": f"c{number}"},
            "order_id": f"below-{number}",
            "currency": "EUR",
            "items": [
                {
                    "line_id": "1",
                    "product_id": "BELOW",
                    "variant_id": f"BELOW-{rng.choice('SMLX')}",
                    "quantity": 1,
                    "unit_price": 1999,
                    "category": CATEGORIES[0],
                }
            ],
        }
        if store != 40:
            event["store"] = {"id": f"s{store}"}
        events.append(event)
    with db.transaction() as session:
        record_events(
            session,
            tenant_id=tenant_id,
            default_currency="EUR",
            events=EVENTS.validate_python(events),
            source="bench",
            actor="bench",
            trust=Trust.verified,
        )
        session.commit()
    return "BELOW"


# --- timing ------------------------------------------------------------------------------------


def timed(samples: int, call: Callable[[], Any]) -> dict[str, float]:
    call()  # warm
    durations = []
    for _ in range(samples):
        began = time.perf_counter()
        call()
        durations.append((time.perf_counter() - began) * 1000)
    durations.sort()
    return {
        "p50_ms": round(statistics.median(durations), 3),
        "p99_ms": round(durations[min(len(durations) - 1, int(len(durations) * 0.99))], 3),
        "samples": samples,
    }


def run_backend(backend: str, url: str, batches: int, samples: int) -> dict[str, Any]:
    settings = Settings(database_url=url, auto_migrate=False, log_requests=False)
    db = Database(settings)
    migrate.upgrade(db.engine)
    with db.transaction() as session:
        tenant = create_tenant(session, name="bench-products", default_currency="EUR")
        tenant_id = tenant.id
    rng = random.Random(7)
    start = datetime.now(UTC) - timedelta(minutes=10)
    print(f"[{backend}] generating {batches} batches of {BATCH} events")
    plan = [make_batch(rng, number, start) for number in range(batches)]
    # The batches are made up front (their making is not measured), ~10 objects per event
    # kept alive for the whole run: a server holds one request's. Frozen, the collector's
    # full collections no longer walk them: those took ~0.4 s of CPU every dozen batches,
    # and fell on the rounds that allocate more (the upkeep's): in per-batch A/B runs the
    # mean ratio dropped to 0.54-0.66 while the median stayed at 0.74-0.77.
    gc.collect()
    gc.freeze()
    # Warm-up (not measured), then rounds alternating with and without the upkeep.
    ingest(db, tenant_id, plan[:2])
    rounds = plan[2:]
    size = max(1, len(rounds) // 8)
    with_upkeep: list[float] = []
    without: list[float] = []
    cpu_with: list[float] = []
    cpu_without: list[float] = []
    for number, start_at in enumerate(range(0, len(rounds), size)):
        chunk = rounds[start_at : start_at + size]
        if number % 2 == 0:
            speed, per_cpu = ingest(db, tenant_id, chunk)
            with_upkeep.append(speed)
            cpu_with.append(per_cpu)
        else:
            with upkeep_off():
                speed, per_cpu = ingest(db, tenant_id, chunk)
            without.append(speed)
            cpu_without.append(per_cpu)
        print(f"[{backend}] round {number}: {'with' if number % 2 == 0 else 'without'}")
    with db.transaction() as session:
        began = time.perf_counter()
        report = rebuild(session, tenant_id=tenant_id)
        rebuild_s = time.perf_counter() - began
    # Statistics for the reads, as a server has them after such a load: SQLite's from the
    # start-up ANALYZE (`Database.optimize`), PostgreSQL's from autovacuum. Without them
    # PostgreSQL planned the derived design's join of returned items to lines as a nested
    # loop over every line of each item's product (~45 s a query).
    db.optimize()
    if backend == "postgresql":
        with db.engine.connect() as connection:
            connection.exec_driver_sql("ANALYZE")
            connection.commit()
    with db.transaction(write=False) as session:
        lines = session.scalar(
            select(func.count()).select_from(OrderLine).where(OrderLine.tenant_id == tenant_id)
        )
        products = session.scalar(
            select(func.count())
            .select_from(ProductSignal)
            .where(ProductSignal.tenant_id == tenant_id)
        )
        orders = session.scalar(
            select(func.count()).select_from(Order).where(Order.tenant_id == tenant_id)
        )
        returns = session.scalar(
            select(func.count()).select_from(Return).where(Return.tenant_id == tenant_id)
        )
    below = _product_below_the_threshold(db, tenant_id, start)
    smoothing = service.Smoothing(strength=20.0, min_units=100)
    pick = random.Random(11)
    ranked = [f"P{n}" for n in pick.sample(range(PRODUCTS), 1000)]
    popular = "P0"
    figures: dict[str, Any] = {}
    with db.transaction(write=False) as session:
        figures["stats_kept"] = timed(
            samples,
            lambda: service.product_stats(
                session, tenant_id=tenant_id, product_id=popular, smoothing=smoothing
            ),
        )
        figures["stats_below_threshold"] = timed(
            samples,
            lambda: service.product_stats(
                session, tenant_id=tenant_id, product_id=below, smoothing=smoothing
            ),
        )
        # (seconds each on PostgreSQL: a few samples tell the ratio)
        figures["stats_derived"] = timed(3, lambda: derived_rank(session, tenant_id, [popular]))
        figures["rank_kept"] = timed(
            samples,
            lambda: service.rank(
                session,
                tenant_id=tenant_id,
                product_ids=ranked,
                scores=None,
                return_weight=1.0,
                smoothing=smoothing,
            ),
        )
        figures["rank_derived"] = timed(3, lambda: derived_rank(session, tenant_id, ranked))
        end = datetime.now(UTC)
        for group_by in ("category", "day"):
            report_call = partial(
                service.returns_report,
                session,
                tenant_id=tenant_id,
                group_by=group_by,
                start=end - timedelta(days=90),
                end=end,
                currency="EUR",
            )
            figures[f"report_90d_{group_by}"] = timed(5, report_call)
    db.dispose()
    gc.unfreeze()
    ingest_ratio = statistics.median(with_upkeep) / statistics.median(without)
    return {
        "backend": backend,
        "data": {
            "orders": orders,
            "lines": lines,
            "returns": returns,
            "products": products,
            "events": batches * BATCH,
        },
        "ingest": {
            "events_per_s_with": round(statistics.median(with_upkeep)),
            "events_per_s_without": round(statistics.median(without)),
            "rounds_with": [round(x) for x in with_upkeep],
            "rounds_without": [round(x) for x in without],
            "ratio": round(ingest_ratio, 3),
            "events_per_cpu_s_with": round(statistics.median(cpu_with)),
            "events_per_cpu_s_without": round(statistics.median(cpu_without)),
            "cpu_ratio": round(statistics.median(cpu_with) / statistics.median(cpu_without), 3),
        },
        "reads": figures,
        "rebuild": {"seconds": round(rebuild_s, 2), "differences_fixed": report.differences},
    }


def _machine() -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {"python": platform.python_version(), "machine": platform.machine(), "commit": commit}


def _row(name: str, result: dict[str, Any]) -> str:
    reads = result["reads"]
    kept, derived = reads[f"{name}_kept"], reads[f"{name}_derived"]
    return (
        f"| {name} | {kept['p50_ms']} / {kept['p99_ms']} | {derived['p50_ms']} / "
        f"{derived['p99_ms']} | {derived['p50_ms'] / kept['p50_ms']:.1f}x |"
    )


def _below(result: dict[str, Any]) -> str:
    figures = result["reads"].get("stats_below_threshold")
    return f"{figures['p50_ms']} / {figures['p99_ms']}" if figures else "(not measured)"


def render_one(result: dict[str, Any]) -> str:
    """One backend's figures, as README.md shows them."""
    data, ingest_figures = result["data"], result["ingest"]
    out = [
        f"#### {result['backend']} (commit {result['machine']['commit']}, {result['when'][:10]})",
        "",
        f"Data: {data['orders']:,} orders, {data['lines']:,} lines, "
        f"{data['returns']:,} recorded returns, {data['products']:,} products.",
        "",
        "| ingestion (batches of 1,000, in-process) | events/s |",
        "|---|---|",
        f"| with the upkeep | {ingest_figures['events_per_s_with']:,} |",
        f"| without (baseline: hooks made no-ops) | {ingest_figures['events_per_s_without']:,} |",
        f"| **ratio** (target >= 0.85) | **{ingest_figures['ratio']}** |",
        "",
        "| the same rounds, per CPU-second (this process + its PostgreSQL backend) | events |",
        "|---|---|",
        f"| with the upkeep | {ingest_figures.get('events_per_cpu_s_with', 0):,} |",
        f"| without | {ingest_figures.get('events_per_cpu_s_without', 0):,} |",
        f"| **ratio** | **{ingest_figures.get('cpu_ratio', '(not measured)')}** |",
        "",
        "| read (ms, p50 / p99) | kept tables | derived by queries | derived / kept (p50) |",
        "|---|---|---|---|",
        _row("stats", result),
        _row("rank", result),
        "",
        f"A product whose sales are not kept yet, one unit short of the threshold "
        f"({upkeep.KEEP_SALES_FROM - 1:,} lines, read from its lines): stats p50 / p99 "
        f"{_below(result)} ms (the stats row above is the most sold product, whose sales are "
        "kept).",
        "",
        "| report, 90 days (derived by queries) | p50 / p99 ms |",
        "|---|---|",
    ]
    for group_by in ("category", "day"):
        figures = result["reads"][f"report_90d_{group_by}"]
        out.append(f"| by {group_by} | {figures['p50_ms']} / {figures['p99_ms']} |")
    out += ["", f"Rebuild of the signals: {result['rebuild']['seconds']} s.", ""]
    return "\n".join(out)


BENCH = harness.Benchmark("products", "products", "Product signals", render_one)


def cli(argv: list[str]) -> int:
    if any(arg == "--lines" or arg.startswith("--lines=") for arg in argv):
        from bench import products_scale  # the reads on the large data set

        return products_scale.cli(argv)
    parser = argparse.ArgumentParser(prog="python -m bench products")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--batches", type=int, default=120, help="batches of 1,000 events")
    parser.add_argument("--samples", type=int, default=400, help="timed reads per figure")
    parser.add_argument("--quick", action="store_true", help="20 batches; recorded nowhere")
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument(
        "--postgres-url", default="postgresql+psycopg://127.0.0.1:5432/test", help="server"
    )
    args = parser.parse_args(argv)
    batches = 20 if args.quick else args.batches
    samples = 60 if args.quick else args.samples
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    results = []
    for backend in backends:
        with tempfile.TemporaryDirectory() as tmp:
            if backend == "sqlite":
                result = run_backend(backend, f"sqlite:///{tmp}/bench.db", batches, samples)
            else:
                with scratch_postgres(args.postgres_url) as url:
                    result = run_backend(backend, url, batches, samples)
        result["machine"] = _machine()
        result["when"] = datetime.now(UTC).isoformat()
        print(json.dumps(result, indent=2))
        results.append(result)
        if not args.quick:
            RESULTS.mkdir(exist_ok=True)
            (RESULTS / f"products-{backend}.json").write_text(json.dumps(result, indent=2) + "\n")
    if not args.quick and not args.no_readme:
        BENCH.update_readme()
    return 0


@contextmanager
def scratch_postgres(server_url: str) -> Iterator[str]:
    import psycopg

    name = f"bench_products_{random.randrange(10**9)}"
    admin = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield server_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
