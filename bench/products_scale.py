"""Product signals at scale: the reads of issue 11 on the data set of `bench profiles`.

`python -m bench products_scale [--lines N] [--customers N] [--backend ...]` (also
`python -m bench products --lines N`): a fresh database per backend loaded by the bulk
loader of bench/profiles.py (by default 10 M order lines of 1 M customers, 5,000 products in
10 categories, 40 stores, two years of orders ending 2026-11-01, recorded returns with
refunds), then the product signals rebuilt from those facts (`products.rebuild`, as
`returnstack profiles rebuild` runs it), then through HTTP (`returnstack serve`, one client,
requests one after the other):

- `POST /v1/rankings` of 1,000 ids (drawn from the catalogue, with base scores): p50 / p99;
- `GET /v1/products/{id}/stats` of random products: p50 / p99;
- `GET /v1/reports/returns` over the last 90 days of the data, grouped by category, and (to
  compare) by day and by product: each run `--report-runs` times, median and max.

Targets (issue 11, on 10 M lines): ranking p99 < 20 ms, stats p99 < 5 ms, the 90-day report
by category < 1 s on PostgreSQL. At fewer lines the figures are shown against the same
targets, with the data size beside them, to see how they scale.
"""

import contextlib
import json
import random
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from bench import harness, profiles
from bench.server import Target, fresh_database, returnstack_server

RANK_P99_MS = 20.0
STATS_P99_MS = 5.0
REPORT_S = {"postgresql": 1.0}
REPORT_DAYS = 90
PRODUCT_IDS = [product[0] for product in profiles._PRODUCTS]


@dataclass
class Options(harness.Options):
    lines: int
    customers: int
    load_workers: int
    samples: int
    report_runs: int
    dataset: str | None
    dataset_dir: Path


def _timed(
    make: Callable[[], Any],
    send: Callable[[Any], httpx.Response],
    check: Callable[[httpx.Response], object],
    samples: int,
) -> dict[str, Any]:
    """Milliseconds of `samples` requests after a few unmeasured ones. The clock covers
    `send` alone, from the request to the last byte of its answer: the request's body is
    made before (`make`) and the answer checked after (`check`: it must succeed), so the
    client's own JSON work (a ranking's answer is ~150 KB to parse) is not counted."""
    for _ in range(max(3, samples // 20)):
        check(send(make()))
    durations = []
    for _ in range(samples):
        request = make()
        began = time.perf_counter()
        response = send(request)
        durations.append((time.perf_counter() - began) * 1000)
        check(response)
    durations.sort()
    return {
        "samples": samples,
        "p50_ms": round(statistics.median(durations), 2),
        "p99_ms": round(durations[min(samples - 1, int(samples * 0.99))], 2),
        "max_ms": round(durations[-1], 2),
    }


def _ok(response: httpx.Response) -> httpx.Response:
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")
    return response


def rebuild_signals(target: Target, tenant_id: str) -> dict[str, Any]:
    """`products.rebuild` in one transaction, as `returnstack profiles rebuild` runs it."""
    from returnstack.config import Settings
    from returnstack.kit.db import Database
    from returnstack.products.rebuild import rebuild

    db = Database(Settings(database_url=target.url, _env_file=None))
    try:
        started = time.perf_counter()
        with db.transaction() as session:
            report = rebuild(session, tenant_id=tenant_id, write=True)
        seconds = time.perf_counter() - started
        # As the CLI does after it (SQLite: the statistics of the tables it rewrote; else the
        # server's start-up ANALYZE of them ran during the measured reads).
        started = time.perf_counter()
        db.optimize()
        optimize_s = time.perf_counter() - started
    finally:
        db.dispose()
    return {
        "seconds": round(seconds, 1),
        "optimize_s": round(optimize_s, 1),
        "products": report.products,
    }


def signal_rows(target: Target) -> dict[str, int]:
    return {
        table: int(harness.sql(target, f"SELECT count(*) FROM {table}")[0][0])
        for table in ("product_signals", "product_breakdowns", "category_signals")
    }


def measure(client: httpx.Client, opts: Options) -> dict[str, Any]:
    rng = random.Random("products:scale")
    end = profiles.ANCHOR + timedelta(seconds=1)  # the newest order is at ANCHOR
    start = end - timedelta(days=REPORT_DAYS)
    figures: dict[str, Any] = {}

    def ranking_body() -> bytes:
        ids = rng.sample(PRODUCT_IDS, 1000)
        scores = {product_id: round(rng.random(), 4) for product_id in ids}
        return json.dumps({"product_ids": ids, "scores": scores, "return_weight": 1.0}).encode()

    def rank(body: bytes) -> httpx.Response:
        return client.post(
            "/v1/rankings", content=body, headers={"content-type": "application/json"}
        )

    def ranked(response: httpx.Response) -> None:
        assert len(_ok(response).json()["ranking"]) == 1000

    def stats(product_id: str) -> httpx.Response:
        return client.get(f"/v1/products/{product_id}/stats")

    harness.console.print(f"  POST /v1/rankings (1,000 ids) x {opts.samples} …")
    figures["rank"] = _timed(ranking_body, rank, ranked, opts.samples)
    harness.console.print(f"    {figures['rank']}")
    harness.console.print(f"  GET /v1/products/{{id}}/stats x {opts.samples} …")
    figures["stats"] = _timed(lambda: rng.choice(PRODUCT_IDS), stats, _ok, opts.samples)
    harness.console.print(f"    {figures['stats']}")
    for group_by in ("category", "day", "product"):
        params = {
            "group_by": group_by,
            "from": start.isoformat(),
            "to": end.isoformat(),
            "currency": "EUR",
        }
        seconds = []
        rows = 0
        for _ in range(opts.report_runs + 1):  # the first warms the caches, unmeasured
            began = time.perf_counter()
            rows = len(_ok(client.get("/v1/reports/returns", params=params)).json()["data"])
            seconds.append(time.perf_counter() - began)
        figures[f"report_{group_by}"] = {
            "runs": opts.report_runs,
            "rows": rows,
            "median_s": round(statistics.median(seconds[1:]), 3),
            "max_s": round(max(seconds[1:]), 3),
        }
        harness.console.print(f"  report by {group_by}: {figures[f'report_{group_by}']}")
    return figures


def _targets(backend: str, reads: dict[str, Any]) -> dict[str, Any]:
    targets = {
        "rank_p99_ms": {
            "target": RANK_P99_MS,
            "measured": reads["rank"]["p99_ms"],
            "met": reads["rank"]["p99_ms"] < RANK_P99_MS,
        },
        "stats_p99_ms": {
            "target": STATS_P99_MS,
            "measured": reads["stats"]["p99_ms"],
            "met": reads["stats"]["p99_ms"] < STATS_P99_MS,
        },
    }
    if backend in REPORT_S:
        measured = reads["report_category"]["max_s"]
        targets["report_category_s"] = {
            "target": REPORT_S[backend],
            "measured": measured,
            "met": measured < REPORT_S[backend],
        }
    return targets


@contextlib.contextmanager
def _dataset(
    backend: str, plan: profiles.Plan, opts: Options
) -> Iterator[tuple[Target, str, str, dict[str, Any]]]:
    """A database with the facts (its target, tenant, key and load figures): loaded now
    by bench/profiles.py's loader; or with `--dataset`, a copy of bench/profiles.py's kept
    dataset of that name (built and kept first when there is none: loaded, analyzed, its
    profiles rebuilt). The product signals are rebuilt on it either way."""
    if opts.dataset is not None:
        with profiles.prepared(
            backend,
            plan,
            opts.lines,
            load_workers=opts.load_workers,
            postgres_url=opts.postgres_url,
            dataset=opts.dataset,
            dataset_dir=opts.dataset_dir,
        ) as ready:
            yield ready.target, ready.tenant_id, ready.auth, ready.load
        return
    with fresh_database(backend, opts.postgres_url) as target:
        tenant_id, auth = harness.bench_tenant(target, "EUR")
        harness.console.print(
            f"  loading {opts.customers:,} customers, {len(plan.lines_per_order):,} orders, "
            f"{opts.lines:,} lines (bench/profiles.py loader) …"
        )
        load = profiles.load_dataset(target, tenant_id, plan, opts.load_workers)
        if backend == "postgresql":
            load["vacuum_analyze_s"] = harness.timed_sql(target, "VACUUM ANALYZE")
        harness.console.print(f"    {load['rows_total']:,} rows in {load['seconds']:.1f}s")
        yield target, tenant_id, auth, load


def run_backend(backend: str, opts: Options) -> dict[str, Any]:
    started = harness.started_at()
    source = harness.source_state()
    plan = profiles.make_plan(opts.customers, opts.lines)
    with _dataset(backend, plan, opts) as (target, tenant_id, auth, load):
        harness.console.print("  rebuilding product signals (products.rebuild) …")
        rebuilt = rebuild_signals(target, tenant_id)
        if backend == "postgresql":
            rebuilt["vacuum_analyze_s"] = harness.timed_sql(
                target,
                "VACUUM ANALYZE product_signals, product_breakdowns, product_reasons, "
                "category_signals",
            )
        else:
            rebuilt["checkpoint_s"] = harness.timed_sql(target, "PRAGMA wal_checkpoint(TRUNCATE)")
        rebuilt["rows"] = signal_rows(target)
        rebuilt["database_mb"] = harness.database_size_mb(target)
        harness.console.print(f"    {rebuilt}")
        busy = harness.wait_idle(opts.wait_idle) if opts.wait_idle else harness.cpu_busy()
        with (
            returnstack_server(target) as server,
            httpx.Client(
                base_url=server.base_url, headers={"Authorization": auth}, timeout=300
            ) as client,
        ):
            reads = measure(client, opts)
        machine = harness.machine(target)
    return {
        "backend": backend,
        "started_at": started,
        "command": opts.command,
        "quick": opts.quick,
        "cpu_busy_before_start": round(busy, 3),
        "load_average": [round(x, 2) for x in _loadavg()],
        "source": source,
        "machine": machine,
        "dataset": {
            "customers": opts.customers,
            "orders": len(plan.lines_per_order),
            "lines": opts.lines,
            "products": len(PRODUCT_IDS),
            "load": load,
            "rebuild": rebuilt,
        },
        "reads": reads,
        "targets": _targets(backend, reads),
    }


def _loadavg() -> tuple[float, float, float]:
    with open("/proc/loadavg") as file:
        one, five, fifteen = file.read().split()[:3]
    return float(one), float(five), float(fifteen)


def render_one(result: dict[str, Any]) -> str:
    data, reads, targets = result["dataset"], result["reads"], result["targets"]
    name = harness.NAMES[result["backend"]]

    def verdict(key: str) -> str:
        return harness.verdict(targets.get(key))

    out = [
        f"#### {name} (commit {result['source']['commit']}, {result['started_at'][:10]}, "
        f"load average {result['load_average'][0]} on {result['machine']['cpus']} cores)",
        "",
        f"Data: {data['lines']:,} lines, {data['orders']:,} orders, {data['customers']:,} "
        f"customers, {data['products']:,} products; signal rows "
        f"{data['rebuild']['rows']['product_breakdowns']:,} breakdowns; loaded in "
        f"{data['load']['seconds']:,.0f} s, signals rebuilt in {data['rebuild']['seconds']} s.",
        "",
        "| read (HTTP, one client) | p50 | p99 | max | target (10 M lines) |",
        "|---|---|---|---|---|",
        f"| ranking of 1,000 ids | {reads['rank']['p50_ms']} ms | {reads['rank']['p99_ms']} ms "
        f"| {reads['rank']['max_ms']} ms | p99 < {RANK_P99_MS:g} ms: {verdict('rank_p99_ms')} |",
        f"| one product's stats | {reads['stats']['p50_ms']} ms | {reads['stats']['p99_ms']} ms "
        f"| {reads['stats']['max_ms']} ms | p99 < {STATS_P99_MS:g} ms: "
        f"{verdict('stats_p99_ms')} |",
        "",
        f"| report, {REPORT_DAYS} days | rows | median | max | target (10 M lines) |",
        "|---|---|---|---|---|",
    ]
    for group_by in ("category", "day", "product"):
        figures = reads[f"report_{group_by}"]
        target = (
            f"< {REPORT_S[result['backend']]:g} s: {verdict('report_category_s')}"
            if group_by == "category" and result["backend"] in REPORT_S
            else ""
        )
        out.append(
            f"| by {group_by} | {figures['rows']:,} | {figures['median_s']} s | "
            f"{figures['max_s']} s | {target} |"
        )
    return "\n".join(out) + "\n"


class _Sizes(harness.Benchmark):
    """One results file per backend and size (products_scale-<backend>-<lines>.json): a
    run at 1 M lines keeps the 10 M one beside it."""

    def result_files(self) -> list[Path]:
        found = harness.RESULTS.glob(f"{self.name}-*-*.json")
        return sorted(
            found, key=lambda path: (path.stem.split("-")[1], int(path.stem.split("-")[2]))
        )


BENCH = _Sizes("products_scale", "products-scale", "Product signals at scale", render_one)


def cli(argv: list[str]) -> int:
    parser = harness.parser(
        BENCH,
        __doc__ or "",
        quick="100,000 lines, 100 samples; recorded nowhere",
        profile="(not supported)",
    )
    parser.add_argument("--lines", type=int, help="order lines (default 10,000,000)")
    parser.add_argument("--customers", type=int, help="customers (default lines / 10)")
    parser.add_argument("--load-workers", type=int, default=2)
    parser.add_argument("--samples", type=int, default=400, help="timed requests per read")
    parser.add_argument("--report-runs", type=int, default=5)
    harness.add_dataset_options(parser)
    args = parser.parse_args(argv)
    lines = args.lines or (100_000 if args.quick else 10_000_000)
    opts = Options(
        **harness.common(BENCH, args, argv),
        lines=lines,
        customers=args.customers or lines // 10,
        load_workers=args.load_workers,
        samples=100 if args.quick else args.samples,
        report_runs=args.report_runs,
        **harness.dataset_options(args),
    )
    harness.RESULTS.mkdir(exist_ok=True)
    for backend in opts.backends:
        harness.console.rule(f"[bold]{BENCH.name}, {backend}, {opts.lines:,} lines")
        result = run_backend(backend, opts)
        suffix = ".json" if opts.write_results else "-quick.tmp"
        path = harness.RESULTS / f"{BENCH.name}-{backend}-{opts.lines}{suffix}"
        path.write_text(json.dumps(result, indent=2) + "\n")
        harness.console.print(f"results: {path}; targets: {result['targets']}")
    if opts.write_readme:
        BENCH.update_readme()
    return 0
