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

import contextlib
import json
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from rich.table import Table

from bench import ceiling, loadgen, profile, workload
from bench.server import (
    DEFAULT_POSTGRES_URL,
    ServerProcess,
    Target,
    bare_server,
    cli_json,
    fresh_database,
    libpq,
    returnstack_server,
)

RESULTS = Path(__file__).resolve().parent / "results"
README = Path(__file__).resolve().parent / "README.md"

BATCH_RATIO_TARGET = {"sqlite": 0.40, "postgresql": 0.20}  # of the database ceiling
SINGLE_RATIO_TARGET = {"sqlite": 0.50}  # of bare FastAPI's req/s
PEAK_RSS_TARGET_MB = 300

console = Console()


@dataclass
class Options:
    backends: list[str]
    events: int
    warmup_events: int
    per_request: int
    clients: int
    single: int
    single_warmup: int
    tool: str
    quick: bool
    postgres_url: str
    write_readme: bool
    command: str
    profile_dir: Path | None
    sort_stores: bool
    wait_idle: float
    profile_wall: bool


def options(args: Any) -> Options:
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    quick = args.quick
    events = args.events or (20_000 if quick else 200_000)
    single = args.single or (3_000 if quick else 30_000)
    tool = args.loadgen
    if tool == "auto":
        tool = "wrk" if loadgen.available("wrk") else "python"
    elif not loadgen.available(tool):
        raise SystemExit("wrk is not installed (apt-get install wrk), or use --loadgen python")
    return Options(
        backends=backends,
        events=events,
        warmup_events=min(20_000, max(2_000, events // 10)),
        per_request=100,
        clients=args.clients,
        single=single,
        single_warmup=min(3_000, max(500, single // 10)),
        tool=tool,
        quick=quick,
        postgres_url=args.postgres_url or DEFAULT_POSTGRES_URL,
        write_readme=not quick and not args.no_readme and not args.profile,
        command="python -m bench " + " ".join(args.argv),
        profile_dir=Path(args.profile).resolve() if args.profile else None,
        sort_stores=args.store_order == "sorted",
        wait_idle=args.wait_idle,
        profile_wall=args.profile_wall,
    )


def main(args: Any) -> int:
    opts = options(args)
    RESULTS.mkdir(exist_ok=True)
    produced = []
    for backend in opts.backends:
        console.rule(f"[bold]{backend}")
        result = run_backend(backend, opts)
        suffix = "-profiled.tmp" if opts.profile_dir else "-quick.tmp" if opts.quick else ".json"
        name = f"ingest-{backend}{suffix}"
        path = RESULTS / name
        path.write_text(json.dumps(result, indent=2) + "\n")
        print_result(result)
        console.print(f"results: {path}")
        produced.append(result)
    if opts.write_readme:
        from bench import report

        report.update_readme(
            README, [RESULTS / f"ingest-{b}.json" for b in ("sqlite", "postgresql")]
        )
        console.print(f"figures written to {README}")
    missed = [
        f"{r['backend']}: {name}"
        for r in produced
        for name, t in r["targets"].items()
        if not t["met"]
    ]
    if missed:
        console.print("[yellow]targets not met:[/yellow] " + ", ".join(missed))
    return 0


def _load(
    opts: Options, server: ServerProcess, files: list[Path], auth: str, label: str
) -> loadgen.LoadResult:
    console.print(f"  {label}: {sum(_lines(f) for f in files)} requests, {len(files)} clients …")
    user_before, system_before = server.cpu_times()
    machine_before = _machine_cpu()
    steal_before = _machine_steal()
    children_before = _children_cpu()
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
    busy = (_machine_cpu() - machine_before) / elapsed
    steal = (_machine_steal() - steal_before) / elapsed
    server_cores = result.extra["server_cpu_s"] / elapsed
    loadgen_cores = (_children_cpu() - children_before) / elapsed
    result.extra["cores_busy"] = {
        "all": round(busy, 2),
        "server": round(server_cores, 2),
        "load_generator": round(loadgen_cores, 2),
        "rest": round(max(0.0, busy - server_cores - loadgen_cores), 2),
        "stolen_by_host": round(steal, 2),
    }
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


def _profiled(opts: Options, pid: int, name: str) -> contextlib.AbstractContextManager[Any]:
    if opts.profile_dir is None:
        return contextlib.nullcontext()
    return profile.Profiler(pid, opts.profile_dir / f"{name}.txt", idle=opts.profile_wall)


def _lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


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


def _proc_stat_cpu() -> list[int]:
    with open("/proc/stat") as stat:
        return [int(v) for v in stat.readline().split()[1:9]]


def _machine_cpu() -> float:
    """CPU seconds all cores have spent busy since boot (from /proc/stat)."""
    values = _proc_stat_cpu()
    return (sum(values[:7]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def _machine_steal() -> float:
    """CPU seconds stolen by the hypervisor since boot: time this virtual machine's cores
    wanted to run while the host ran something else."""
    return _proc_stat_cpu()[7] / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (wrk, the Python clients)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_busy(seconds: float = 2.0) -> float:
    """The share of all cores busy over `seconds` (from /proc/stat), before the run."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return idle, sum(values[:8])

    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def run_backend(backend: str, opts: Options) -> dict[str, Any]:
    started = datetime.now(UTC)
    source = _source_state()
    busy = cpu_busy()
    deadline = time.monotonic() + opts.wait_idle
    while busy > 0.10 and time.monotonic() < deadline:
        console.print(f"  waiting for a quiet machine ({busy:.0%} busy) …")
        busy = cpu_busy(5.0)
    if busy > 0.10:
        console.print(
            f"[yellow]other processes keep {busy:.0%} of the cores busy: they share the cores "
            "with the benchmark, and its figures will be lower[/yellow]"
        )
    with fresh_database(backend, opts.postgres_url) as target:
        tenant = cli_json(target, "tenants", "create", "bench")
        key = cli_json(target, "keys", "create", "--tenant", "bench", "--kind", "secret")
        auth = f"Bearer {key['key']}"
        console.print(f"  database {target.url}, tenant {tenant['id']}; generating bodies …")
        files = {
            "w": _bodies(opts, target, "w", opts.warmup_events, opts.per_request, 3),
            "m": _bodies(opts, target, "m", opts.events, opts.per_request, 3),
            "u": _bodies(opts, target, "u", opts.single_warmup, 1, None),
            "s": _bodies(opts, target, "s", opts.single, 1, None),
        }
        server = returnstack_server(target)
        with server:
            console.print(f"  returnstack serve: pid {server.pid}, port {server.port}")
            _load(opts, server, files["w"], auth, "batch warm-up")
            before = ceiling.count_rows(target)
            with _profiled(opts, server.pid, f"{backend}-batch"):
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
            with _profiled(opts, server.pid, f"{backend}-single"):
                single = _load(opts, server, files["s"], auth, "one-event measured")
            singles_recorded = ceiling.count_rows(target)["events"] - roof.counts_after["events"]
            if singles_recorded != opts.single + opts.single_warmup:
                raise RuntimeError(f"one-event requests recorded {singles_recorded} events")
        server_log = server.log()
        bare: dict[str, loadgen.LoadResult] = {}
        for mode in ("async", "sync"):
            with bare_server(target, mode) as app:
                _load(opts, app, files["u"], auth, f"bare FastAPI ({mode}) warm-up")
                bare[mode] = _load(opts, app, files["s"], auth, f"bare FastAPI ({mode}) measured")
        versions = _versions(target)

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
    if backend in SINGLE_RATIO_TARGET:
        targets["single_ratio"] = {
            "target": SINGLE_RATIO_TARGET[backend],
            "value": round(single_ratio, 3),
            "met": single_ratio >= SINGLE_RATIO_TARGET[backend],
        }
    return {
        "backend": backend,
        "started_at": started.isoformat(timespec="seconds"),
        "command": opts.command,
        "quick": opts.quick,
        "profiled": opts.profile_dir is not None,
        "cpu_busy_before_start": round(busy, 3),
        "source": source,
        "machine": versions,
        "load_generator": {"tool": opts.tool, "clients": opts.clients},
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
        },
        "targets": targets,
        "server_log_tail": server_log[-1500:],
        **({"profile": profiles} if profiles else {}),
    }


def _versions(target: Target) -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(
                (ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), ""
            )
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "packages": {
            name: _version(name)
            for name in (
                "fastapi",
                "starlette",
                "uvicorn",
                "pydantic",
                "sqlalchemy",
                "psycopg",
                "uvloop",
                "httptools",
            )
        },
        "shared_cores": "server, load generator and database share the same cores",
    }
    if target.backend == "sqlite":
        info["sqlite"] = sqlite3.sqlite_version
    else:
        with psycopg.connect(libpq(target.url)) as conn:
            info["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    try:
        info["wrk"] = subprocess.run(
            ["wrk", "-v"], capture_output=True, text=True, check=False
        ).stdout.splitlines()[0]
    except (OSError, IndexError):
        info["wrk"] = None
    return info


def _source_state() -> dict[str, Any]:
    """The commit the server ran, and whether src/ had uncommitted changes (an editable
    install runs the working tree)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=RESULTS.parent.parent, capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "src_dirty": bool(git("status", "--porcelain", "src")),
    }


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


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
    for phase, summary in result.get("profile", {}).items():
        if not summary.get("samples"):
            continue
        for kind in ("inclusive", "self", "self_lines"):
            listing = Table(title=f"profile, {phase} phase: {kind} ({summary['samples']} samples)")
            listing.add_column("share", justify="right")
            listing.add_column("where")
            for where, share in summary[kind]:
                listing.add_row(f"{share:.1%}", where)
            console.print(listing)


def cli(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m bench ingest", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument(
        "--events", type=int, help="measured batch events (default 200000; quick 20000)"
    )
    parser.add_argument("--clients", type=int, default=4, help="concurrent connections (default 4)")
    parser.add_argument(
        "--single", type=int, help="measured one-event requests (default 30000; quick 3000)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short run; results not recorded in README"
    )
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument(
        "--postgres-url", help=f"server to create the database on (default {DEFAULT_POSTGRES_URL})"
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="py-spy the server during the measured phases (raw stacks into DIR); "
        "the run's figures are then not recorded",
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
        "--wait-idle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="first wait up to SECONDS for other processes to leave the cores idle",
    )
    parser.add_argument(
        "--no-readme", action="store_true", help="do not update the figures in README.md"
    )
    args = parser.parse_args(argv)
    args.argv = ["ingest", *argv]
    if args.events is not None and args.events % 100:
        parser.error("--events must be a multiple of 100")
    start = time.monotonic()
    code = main(args)
    console.print(f"done in {time.monotonic() - start:.0f}s")
    return code


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
