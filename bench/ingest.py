"""The ingestion benchmark (`python -m bench ingest`): batch ingestion against the database's own
ceiling, one-event requests against the framework's ceiling, and the server's peak memory.

Per backend, on a fresh database:
1. `returnstack tenants create` / `keys create` (the CLI), then `returnstack serve` on a free port.
2. Batch ingestion: warm-up, then the measured events (100 purchases of 3 lines a request).
3. Ceiling: the rows the service wrote for the measured events, counted per table, written
   again straight into the same database (bench/ceiling.py).
4. One-event requests on the same server: warm-up, then the measured requests.
5. The same requests against bench/bare_app.py (async endpoint: the ceiling; sync endpoint:
   the cost of FastAPI's thread pool alone, for information).
6. Peak RSS of the server process (VmHWM from /proc), over its whole life.
"""

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from bench import ceiling, harness, loadgen, profile, profiles, workload
from bench.harness import console
from bench.server import (
    ServerProcess,
    Target,
    bare_server,
    fresh_database,
    kept,
    returnstack_server,
)

BATCH_RATIO_TARGET = {"sqlite": 0.40, "postgresql": 0.20}  # of the database ceiling
SINGLE_RATIO_TARGET = {"sqlite": 0.50, "postgresql": 0.25}  # of bare FastAPI's req/s
PEAK_RSS_TARGET_MB = 300
GROWTH_RATIO_TARGET = 0.80  # throughput on the grown database ÷ on the empty one


@dataclass
class Options(harness.Options):
    events: int
    warmup_events: int
    per_request: int
    clients: int
    single: int
    single_warmup: int
    tool: str
    sort_stores: bool
    profile_wall: bool
    workers: int
    variant: str  # in the results file's name: "" for one process, "-workers2" for two
    preload_lines: int  # 0: none; else the grown database's lines (bench/profiles.py)
    preload_products: bool  # also rebuild product signals on the grown database
    dataset: str | None
    dataset_dir: Path


def options(args: Any, argv: list[str]) -> Options:
    events = args.events or (20_000 if args.quick else 200_000)
    single = args.single or (3_000 if args.quick else 30_000)
    tool = args.loadgen
    if tool == "auto":
        tool = "wrk" if loadgen.available("wrk") else "python"
    elif not loadgen.available(tool):
        raise SystemExit("wrk is not installed (apt-get install wrk), or use --loadgen python")
    return Options(
        **harness.common(BENCH, args, argv),
        events=events,
        warmup_events=min(20_000, max(2_000, events // 10)),
        per_request=100,
        clients=args.clients,
        single=single,
        single_warmup=min(3_000, max(500, single // 10)),
        tool=tool,
        sort_stores=args.store_order == "sorted",
        profile_wall=args.profile_wall,
        workers=args.workers,
        variant=("" if args.workers == 1 else f"-workers{args.workers}")
        + ("-growth" if args.preload_lines else ""),
        preload_lines=args.preload_lines or 0,
        preload_products=args.preload_products,
        **harness.dataset_options(args),
    )


def _load(
    opts: Options, server: ServerProcess, files: list[Path], auth: str, label: str
) -> loadgen.LoadResult:
    console.print(
        f"  {label}: {sum(loadgen.count_lines(f) for f in files)} requests, {len(files)} clients …"
    )
    user_before, system_before = server.cpu_times()
    machine_before = harness.machine_cpu()
    steal_before = harness.machine_steal()
    children_before = harness.children_cpu()
    called = time.monotonic()
    result = loadgen.run(opts.tool, f"{server.base_url}/v1/events", files, auth)
    called = time.monotonic() - called
    user_after, system_after = server.cpu_times()
    result.extra["server_cpu_s"] = round(user_after + system_after - user_before - system_before, 3)
    result.extra["server_cpu_system_share"] = round(
        (system_after - system_before) / max(1e-9, result.extra["server_cpu_s"]), 3
    )
    # Where the cores went during the phase (in cores, out of os.cpu_count()): the server,
    # the load generator, and everything else (PostgreSQL, other people's processes). Over
    # the whole call: the Python load generator's start-up is outside its measured window.
    elapsed = max(called, 1e-9)
    busy = (harness.machine_cpu() - machine_before) / elapsed
    steal = (harness.machine_steal() - steal_before) / elapsed
    server_cores = result.extra["server_cpu_s"] / elapsed
    loadgen_cores = (harness.children_cpu() - children_before) / elapsed
    result.extra["cores_busy"] = {
        "all": round(busy, 2),
        "server": round(server_cores, 2),
        "load_generator": round(loadgen_cores, 2),
        "rest": round(max(0.0, busy - server_cores - loadgen_cores), 2),
        "stolen_by_host": round(steal, 2),
    }
    result.extra["load_average_1_5_15"] = [round(value, 2) for value in os.getloadavg()]
    result.extra["server_cpu_us_per_request"] = round(
        1e6 * result.extra["server_cpu_s"] / max(1, result.requests), 1
    )
    if result.failures:
        raise RuntimeError(
            f"{label}: {result.failures} failed requests; first: {result.first_failure}\n"
            f"server log (tail):\n{server.log()}"
        )
    cores = result.extra["cores_busy"]
    console.print(
        f"    {result.requests_per_s:,.0f} req/s over {result.duration_s:.1f}s, "
        f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms; cores busy {cores['all']:.2f} "
        f"(server {cores['server']:.2f}, load generator {cores['load_generator']:.2f}, "
        f"rest {cores['rest']:.2f})"
    )
    return result


def _raw(opts: Options, backend: str, phase: str) -> Path | None:
    """Where py-spy writes the raw stacks of a phase, when profiling."""
    return None if opts.profile_dir is None else opts.profile_dir / f"{backend}-{phase}.txt"


def _bodies(
    opts: Options, target: Target, phase: str, events: int, per_request: int, lines: int | None
) -> list[Path]:
    return workload.write_body_files(
        target.workdir / "bodies" / phase,
        workload.bodies(
            phase,
            events=events,
            per_request=per_request,
            lines=lines,
            sort_stores=opts.sort_stores,
        ),
        opts.clients,
    )


def run_backend(backend: str, opts: Options) -> dict[str, Any]:
    started = harness.started_at()
    source = harness.source_state()
    busy = harness.wait_idle(opts.wait_idle)
    with fresh_database(backend, opts.postgres_url) as target:
        _, auth = harness.bench_tenant(target)
        console.print("  generating bodies …")
        files = {
            "w": _bodies(opts, target, "w", opts.warmup_events, opts.per_request, 3),
            "m": _bodies(opts, target, "m", opts.events, opts.per_request, 3),
            "u": _bodies(opts, target, "u", opts.single_warmup, 1, None),
            "s": _bodies(opts, target, "s", opts.single, 1, None),
        }
        server = returnstack_server(target, opts.workers)
        with server:
            console.print(f"  returnstack serve: pid {server.pid}, port {server.port}")
            _load(opts, server, files["w"], auth, "batch warm-up")
            before = ceiling.count_rows(target)
            with profile.profiling(server.pid, _raw(opts, backend, "batch"), opts.profile_wall):
                batch = _load(opts, server, files["m"], auth, "batch measured")
            after = ceiling.count_rows(target)
            batch_memory = server.memory()
            delta = {name: after[name] - before[name] for name in ceiling.TABLES}
            if delta["events"] != opts.events:
                raise RuntimeError(
                    f"the service recorded {delta['events']} of {opts.events} events"
                )
            console.print(f"  rows written per table: {delta}")
            console.print("  ceiling: direct insert of the same rows …")
            roof = ceiling.run(target, delta, "m")
            copied = {n: roof.counts_after[n] - after[n] for n in ceiling.TABLES}
            if copied != {n: roof.per_table.get(n, 0) for n in ceiling.TABLES}:
                raise RuntimeError(f"ceiling wrote {copied}, expected {roof.per_table}")
            console.print(
                f"    {roof.rows / roof.seconds:,.0f} rows/s = "
                f"{roof.events / roof.seconds:,.0f} events/s "
                f"({roof.rows} rows in {roof.seconds:.2f}s)"
            )
            _load(opts, server, files["u"], auth, "one-event warm-up")
            with profile.profiling(server.pid, _raw(opts, backend, "single"), opts.profile_wall):
                single = _load(opts, server, files["s"], auth, "one-event measured")
            singles_recorded = ceiling.count_rows(target)["events"] - roof.counts_after["events"]
            if singles_recorded != opts.single + opts.single_warmup:
                raise RuntimeError(f"one-event requests recorded {singles_recorded} events")
        server_log = server.log()
        bare: dict[str, loadgen.LoadResult] = {}
        for mode in ("async", "sync"):
            with bare_server(target, mode, opts.workers) as app:
                _load(opts, app, files["u"], auth, f"bare FastAPI ({mode}) warm-up")
                bare[mode] = _load(opts, app, files["s"], auth, f"bare FastAPI ({mode}) measured")
        versions = harness.machine(target)
        connections = harness.connection_memory(target)
    growth = None
    if opts.preload_lines:
        empty = {"batch": batch, "single": single}
        growth = run_grown(backend, opts, empty)

    profiles = {}
    if opts.profile_dir is not None:
        for phase in ("batch", "single"):
            raw = opts.profile_dir / f"{backend}-{phase}.txt"
            profiles[phase] = profile.summarize(raw) | {"raw": str(raw)}
            profiles[f"{phase}_in_post_events"] = profile.summarize(raw, focus="post_events")
    batch_events_per_s = opts.events / batch.duration_s
    batch_ratio = batch_events_per_s / (roof.events / roof.seconds)
    single_ratio = single.requests_per_s / bare["async"].requests_per_s
    peak_mb = server.final_hwm_kb / 1024
    targets: dict[str, dict[str, Any]] = {
        "batch_ratio": {
            "target": BATCH_RATIO_TARGET[backend],
            "value": round(batch_ratio, 3),
            "met": batch_ratio >= BATCH_RATIO_TARGET[backend],
        },
        "peak_rss_mb": {
            "target": PEAK_RSS_TARGET_MB,
            "value": round(peak_mb, 1),
            "met": peak_mb < PEAK_RSS_TARGET_MB,
        },
    }
    if growth is not None:
        for phase in ("batch", "single"):
            value = growth["ratios"][f"{phase}_throughput"]
            targets[f"growth_{phase}"] = {
                "target": GROWTH_RATIO_TARGET,
                "value": value,
                "met": value >= GROWTH_RATIO_TARGET,
            }
    if backend in SINGLE_RATIO_TARGET:
        targets["single_ratio"] = {
            "target": SINGLE_RATIO_TARGET[backend],
            "value": round(single_ratio, 3),
            "met": single_ratio >= SINGLE_RATIO_TARGET[backend],
        }
    return {
        "backend": backend,
        "started_at": started,
        "command": opts.command,
        "quick": opts.quick,
        "profiled": opts.profile_dir is not None,
        "cpu_busy_before_start": round(busy, 3),
        "source": source,
        "machine": versions,
        "load_generator": {"tool": opts.tool, "clients": opts.clients},
        "workers": opts.workers,
        "store_order": "sorted" if opts.sort_stores else "random",
        "ratios": {
            "batch_vs_ceiling": round(batch_ratio, 3),
            "single_vs_bare_fastapi": round(single_ratio, 3),
            "bare_sync_vs_bare_async": round(
                bare["sync"].requests_per_s / bare["async"].requests_per_s, 3
            ),
        },
        "batch": {
            "events": opts.events,
            "events_per_request": opts.per_request,
            "lines_per_event": 3,
            "warmup_events": opts.warmup_events,
            "events_per_s": round(batch_events_per_s, 1),
            "rows_per_event": {n: round(delta[n] / opts.events, 3) for n in ceiling.TABLES},
            "rows_written": sum(delta.values()),
            "rows_per_s": round(sum(delta.values()) / batch.duration_s, 1),
            "http": batch.as_dict(),
        },
        "ceiling": roof.as_dict(),
        "single": {
            "requests": opts.single,
            "warmup_requests": opts.single_warmup,
            "service": single.as_dict(),
            "bare_fastapi_async": bare["async"].as_dict(),
            "bare_fastapi_sync": bare["sync"].as_dict(),
        },
        "memory": {
            "peak_rss_mb": round(peak_mb, 1),
            "peak_rss_after_batch_mb": round(batch_memory["VmHWM"] / 1024, 1),
            "sampled_peak_rss_mb": round(server.sampled_peak_kb / 1024, 1),
            "connections": connections,
        },
        "targets": targets,
        "server_log_tail": server_log[-1500:],
        **({"profile": profiles} if profiles else {}),
        **({"growth": growth} if growth else {}),
    }


def run_grown(backend: str, opts: Options, empty: dict[str, loadgen.LoadResult]) -> dict[str, Any]:
    """The batch and one-event phases again, on a database holding bench/profiles.py's
    dataset of `--preload-lines` lines (built, or copied from the kept `--dataset`), with
    the same bodies; their throughput and server CPU against the empty database's."""
    customers = max(1, opts.preload_lines // 10)
    keep = kept(backend, opts.dataset, opts.dataset_dir, opts.postgres_url)
    wanted = {
        "kind": "profiles",
        "customers": customers,
        "lines": opts.preload_lines,
        "product_signals": opts.preload_products,
    }
    described = keep.meta() if keep is not None else None
    if described is not None and {key: described.get(key) for key in wanted} != wanted:
        raise SystemExit(
            f"the kept dataset {keep.where if keep else ''} holds "
            f"{ {key: described.get(key) for key in wanted} }, not {wanted}"
        )
    console.rule(f"[bold]ingest, {backend}, on a database of {opts.preload_lines:,} lines")
    t_copy = time.perf_counter()
    with fresh_database(
        backend, opts.postgres_url, copy_of=keep if described is not None else None
    ) as target:
        if described is not None and keep is not None:
            auth = described["auth"]
            load = dict(described["load"])
            load["kept"] = {
                "where": keep.where,
                "copy_s": round(time.perf_counter() - t_copy, 1),
                "built_at": described["built_at"],
                "built_by": described["source"],
            }
            console.print(f"  copied the kept dataset {keep.where} in {load['kept']['copy_s']}s")
        else:
            tenant_id, auth = harness.bench_tenant(target, "EUR")
            load = profiles.preload(
                target, tenant_id, customers, opts.preload_lines, products=opts.preload_products
            )
            if keep is not None:
                meta = {
                    **wanted,
                    "tenant_id": tenant_id,
                    "auth": auth,
                    "load": load,
                    "built_at": harness.started_at(),
                    "source": harness.source_state(),
                }
                console.print(f"  keeping the dataset as {keep.where} …")
                load["kept"] = {"where": keep.where, "keep_s": keep.keep(target, meta)}
                console.print(f"    kept in {load['kept']['keep_s']:.0f}s")
        files = {
            "w": _bodies(opts, target, "w", opts.warmup_events, opts.per_request, 3),
            "m": _bodies(opts, target, "m", opts.events, opts.per_request, 3),
            "u": _bodies(opts, target, "u", opts.single_warmup, 1, None),
            "s": _bodies(opts, target, "s", opts.single, 1, None),
        }
        server = returnstack_server(target, opts.workers)
        with server:
            console.print(f"  returnstack serve: pid {server.pid}, port {server.port}")
            _load(opts, server, files["w"], auth, "batch warm-up")
            before = ceiling.count_rows(target)["events"]
            with profile.profiling(server.pid, _raw(opts, backend, "grown-batch"), False):
                batch = _load(opts, server, files["m"], auth, "batch measured")
            recorded = ceiling.count_rows(target)["events"] - before
            if recorded != opts.events:
                raise RuntimeError(f"the service recorded {recorded} of {opts.events} events")
            _load(opts, server, files["u"], auth, "one-event warm-up")
            before = ceiling.count_rows(target)["events"]
            with profile.profiling(server.pid, _raw(opts, backend, "grown-single"), False):
                single = _load(opts, server, files["s"], auth, "one-event measured")
            recorded = ceiling.count_rows(target)["events"] - before
            if recorded != opts.single:
                raise RuntimeError(f"one-event requests recorded {recorded} events")
    batch_ratio = (opts.events / batch.duration_s) / (opts.events / empty["batch"].duration_s)
    single_ratio = single.requests_per_s / empty["single"].requests_per_s

    def cpu_ratio(grown: loadgen.LoadResult, base: loadgen.LoadResult) -> float:
        return round(grown.extra["server_cpu_s"] / max(1e-9, base.extra["server_cpu_s"]), 3)

    result: dict[str, Any] = {
        "dataset": load,
        "batch": {
            "events_per_s": round(opts.events / batch.duration_s, 1),
            "http": batch.as_dict(),
        },
        "single": {"service": single.as_dict()},
        "peak_rss_mb": round(server.final_hwm_kb / 1024, 1),
        "ratios": {
            "batch_throughput": round(batch_ratio, 3),
            "single_throughput": round(single_ratio, 3),
            # the same work, so the ratio of the server's CPU per event / per request
            "batch_server_cpu": cpu_ratio(batch, empty["batch"]),
            "single_server_cpu": cpu_ratio(single, empty["single"]),
        },
    }
    console.print(
        f"  on {opts.preload_lines:,} lines ÷ on an empty database: batch events/s "
        f"{batch_ratio:.0%}, one-event req/s {single_ratio:.0%}; server CPU per event "
        f"x{result['ratios']['batch_server_cpu']}, per request "
        f"x{result['ratios']['single_server_cpu']} (target: throughput ≥ "
        f"{GROWTH_RATIO_TARGET:.0%})"
    )
    return result


def print_result(result: dict[str, Any]) -> None:
    table = Table(title=f"ingestion, {result['backend']}", show_lines=False)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    targets = result["targets"]

    def verdict(name: str) -> str:
        if name not in targets:
            return ""
        t = targets[name]
        return f"{'met' if t['met'] else 'NOT met'} ({t['target']})"

    batch, roof, single = result["batch"], result["ceiling"], result["single"]
    table.add_row(
        "batch / ceiling", f"{result['ratios']['batch_vs_ceiling']:.1%}", verdict("batch_ratio")
    )
    table.add_row(
        "one-event / bare FastAPI",
        f"{result['ratios']['single_vs_bare_fastapi']:.1%}",
        verdict("single_ratio"),
    )
    table.add_row("peak RSS (MB)", f"{result['memory']['peak_rss_mb']:.0f}", verdict("peak_rss_mb"))
    table.add_row("service batch events/s", f"{batch['events_per_s']:,.0f}", "")
    table.add_row("service batch rows/s", f"{batch['rows_per_s']:,.0f}", "")
    table.add_row("ceiling rows/s", f"{roof['rows_per_s']:,.0f}", "")
    table.add_row("ceiling events/s", f"{roof['events_per_s']:,.0f}", "")
    for label, key in (
        ("service", "service"),
        ("bare async", "bare_fastapi_async"),
        ("bare sync", "bare_fastapi_sync"),
    ):
        figures = single[key]
        table.add_row(
            f"one-event {label}",
            f"{figures['requests_per_s']:,.0f} req/s, "
            f"p50 {figures['p50_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms",
            "",
        )
    console.print(table)
    harness.print_profile(result.get("profile", {}), kinds=("inclusive", "self", "self_lines"))


def _pct(value: float) -> str:
    return f"{value:.0%}" if value >= 0.1 else f"{value:.1%}"


def render_one(result: dict[str, Any]) -> str:
    backend = harness.NAMES[result["backend"]]
    machine = result["machine"]
    targets = result["targets"]
    ratios = result["ratios"]
    batch, roof, single, memory = (
        result["batch"],
        result["ceiling"],
        result["single"],
        result["memory"],
    )
    service, bare, bare_sync = (
        single["service"],
        single["bare_fastapi_async"],
        single["bare_fastapi_sync"],
    )
    single_target = targets.get("single_ratio")
    rows_written = batch.get("rows_written") or round(
        sum(batch["rows_per_event"].values()) * batch["events"]
    )
    workers = result.get("workers", 1)
    processes = "" if workers == 1 else f", {workers} server processes (and bare FastAPI's)"
    if "growth" in result:
        processes += ", and on a grown database"
    lines = [
        f"### {backend}{processes}",
        "",
        f"Run of {result['started_at']}: `{result['command']}` "
        f"({machine['cpus']} cores, {machine['cpu_model'] or 'unknown CPU'}; "
        f"{harness.engine(machine)}; "
        f"Python {machine['python']}; load generator {result['load_generator']['tool']} with "
        f"{result['load_generator']['clients']} connections; source {result['source']['commit']}"
        f"{harness.dirty(result['source'])}; "
        f"other processes kept {result['cpu_busy_before_start']:.0%} of the cores busy "
        "just before the run).",
        "",
        "| ratio (same run) | value | target | |",
        "| --- | ---: | ---: | --- |",
        f"| batch ingestion: service events/s ÷ ceiling events/s | "
        f"**{_pct(ratios['batch_vs_ceiling'])}** | ≥ {_pct(targets['batch_ratio']['target'])} | "
        f"{harness.verdict(targets['batch_ratio'])} |",
        f"| one-event requests: service req/s ÷ bare FastAPI req/s | "
        f"**{_pct(ratios['single_vs_bare_fastapi'])}** | "
        f"{'≥ ' + _pct(single_target['target']) if single_target else '-'} | "
        f"{harness.verdict(single_target)} |",
        f"| peak RSS of the server process | **{memory['peak_rss_mb']:.0f} MB** | "
        f"< {targets['peak_rss_mb']['target']} MB | {harness.verdict(targets['peak_rss_mb'])} |",
        "",
        "| batch ingestion (100 purchases x 3 lines a request) | service | ceiling |",
        "| --- | ---: | ---: |",
        f"| events/s | {batch['events_per_s']:,.0f} | {roof['events_per_s']:,.0f} |",
        f"| rows/s | {batch['rows_per_s']:,.0f} | {roof['rows_per_s']:,.0f} |",
        f"| events measured / rows written | {batch['events']:,} / "
        f"{rows_written:,} | "
        f"{roof['events']:,} / {roof['rows']:,} |",
        f"| time | {batch['http']['duration_s']:.1f} s | {roof['seconds']:.2f} s |",
        f"| request latency p50 / p99 | {batch['http']['p50_ms']:.0f} / "
        f"{batch['http']['p99_ms']:.0f} ms | - |",
        f"| server process CPU per event | "
        f"{1e6 * batch['http']['extra']['server_cpu_s'] / batch['events']:.0f} µs | - |",
        "",
        "Rows per event: "
        + ", ".join(f"{name} {count:g}" for name, count in batch["rows_per_event"].items())
        + f". Ceiling: {roof['method']}.",
        "",
        "| one-event requests (1 purchase, 1-3 lines) | req/s | p50 | p99 | server CPU/request |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, figures in (
        ("service (`returnstack serve`)", service),
        ("bare FastAPI, async endpoint (the ceiling)", bare),
        ("bare FastAPI, sync endpoint (thread pool; information)", bare_sync),
    ):
        lines.append(
            f"| {label} | {figures['requests_per_s']:,.0f} | {figures['p50_ms']:.2f} ms | "
            f"{figures['p99_ms']:.2f} ms | {figures['extra']['server_cpu_us_per_request']:.0f} µs |"
        )

    def cores(figures: dict[str, Any]) -> str:
        busy = figures["extra"].get("cores_busy")
        if not busy:
            return "not recorded"
        return (
            f"{busy['all']:.2f} of {machine['cpus']} (server {busy['server']:.2f}, load generator "
            f"{busy['load_generator']:.2f}, rest {busy['rest']:.2f})"
        )

    lines += [
        "",
        f"Cores busy (CPU seconds per second) during the measured batch: {cores(batch['http'])}; "
        f"during the service's one-event requests: {cores(service)}; during bare FastAPI's: "
        f"{cores(bare)}. The rest is PostgreSQL's processes where it is the backend, and any "
        "other process on the machine.",
        "",
        f"Memory: peak RSS (VmHWM) {memory['peak_rss_mb']:.0f} MB over the server's life; "
        f"{memory['peak_rss_after_batch_mb']:.0f} MB at the end of the batch phase."
        + _connections(memory.get("connections")),
        "",
    ]
    if "growth" in result:
        lines += _growth(result["growth"], targets)
    return "\n".join(lines)


def _growth(growth: dict[str, Any], targets: dict[str, Any]) -> list[str]:
    data, ratios = growth["dataset"], growth["ratios"]
    batch, single = growth["batch"], growth["single"]["service"]
    return [
        f"**On a grown database** (the same phases and bodies, on a fresh server): "
        f"bench/profiles.py's dataset of {data['lines']:,} lines ({data['customers']:,} "
        f"customers; {data['rows_total']:,} rows of facts, the event ledger "
        f"({data['ledger']['rows']:,} rows), profiles"
        + (" and product signals" if "products" in data else "")
        + " rebuilt; "
        f"database {data['database_mb']:,.0f} MB).",
        "",
        "| grown ÷ empty database (same run) | value | target | |",
        "| --- | ---: | ---: | --- |",
        f"| batch ingestion events/s | **{ratios['batch_throughput']:.0%}** | "
        f"≥ {GROWTH_RATIO_TARGET:.0%} | {harness.verdict(targets.get('growth_batch'))} |",
        f"| one-event requests req/s | **{ratios['single_throughput']:.0%}** | "
        f"≥ {GROWTH_RATIO_TARGET:.0%} | {harness.verdict(targets.get('growth_single'))} |",
        f"| server CPU, batch phase (same events) | x{ratios['batch_server_cpu']:.2f} | - | |",
        f"| server CPU, one-event phase (same requests) | x{ratios['single_server_cpu']:.2f} "
        "| - | |",
        "",
        f"Grown database: batch {batch['events_per_s']:,.0f} events/s (p99 "
        f"{batch['http']['p99_ms']:.0f} ms); one-event {single['requests_per_s']:,.0f} req/s "
        f"(p50 {single['p50_ms']:.2f} ms, p99 {single['p99_ms']:.2f} ms); peak RSS "
        f"{growth['peak_rss_mb']:.0f} MB.",
        "",
    ]


def _connections(limits: dict[str, Any] | None) -> str:
    """What the server's connections may hold (results recorded before it have nothing)."""
    if limits is None:
        return ""
    text = f" The server's pool opens at most {limits['max_connections']} connections"
    cache = limits.get("sqlite_page_cache_mib_per_connection")
    if cache is None:
        return text + "."
    return (
        f"{text}, each with a SQLite page cache of up to {cache:g} MiB, so up to "
        f"{cache * limits['max_connections']:,.0f} MiB of page cache on a large database."
    )


BENCH = harness.Benchmark("ingest", "figures", "Figures", render_one)


def cli(argv: list[str]) -> int:
    parser = harness.parser(
        BENCH,
        __doc__.splitlines()[0],
        quick="a short run (20,000 events, 3,000 one-event requests); results not recorded",
        profile="py-spy the server during the measured phases (raw stacks into DIR); "
        "the run's figures are then not recorded",
    )
    parser.add_argument(
        "--events", type=int, help="measured batch events (default 200000; quick 20000)"
    )
    parser.add_argument("--clients", type=int, default=4, help="concurrent connections (default 4)")
    parser.add_argument(
        "--single", type=int, help="measured one-event requests (default 30000; quick 3000)"
    )
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes of the server (`returnstack serve --workers N`) and of the bare "
        "FastAPI baseline (default 1); N > 1 is recorded apart (ingest-workersN-<backend>.json)",
    )
    parser.add_argument(
        "--profile-wall",
        action="store_true",
        help="with --profile: sample waiting threads too (wall-clock time, e.g. lock waits)",
    )
    parser.add_argument(
        "--store-order",
        choices=["random", "sorted"],
        default="random",
        help="order of the events of a batch: as generated (default), or by store id "
        "(the workaround for the PostgreSQL deadlock of README, Known problems)",
    )
    parser.add_argument(
        "--preload-lines",
        type=int,
        metavar="N",
        help="then run the batch and one-event phases again on a database holding the "
        "dataset of bench/profiles.py with N purchase lines (N/10 customers; 10000000 for "
        "issue 14's target), and record the throughput ratio to the empty database's; "
        "with --dataset NAME, that dataset is kept (or reused)",
    )
    parser.add_argument(
        "--preload-products",
        action="store_true",
        help="with --preload-lines: also rebuild the product signals of the grown database "
        "(slow: about 45 s per 200,000 lines on a loaded machine)",
    )
    harness.add_dataset_options(parser)
    args = parser.parse_args(argv)
    if args.events is not None and args.events % 100:
        parser.error("--events must be a multiple of 100")
    opts = options(args, argv)
    return harness.run(BENCH, opts, lambda backend: run_backend(backend, opts), print_result)


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
