"""What every benchmark shares: the command line, the run loop that writes
bench/results/<bench>-<backend>.json, the README section rendered from those files, the
machine and source a run records, and the CPU and log accounting of a server.

A benchmark module gives a `Benchmark` (its name, README markers and renderer), builds its
parser with `parser()`, its options on `Options`, and calls `run()` with its `run_backend`.
"""

import argparse
import contextlib
import json
import os
import platform
import resource
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
import psycopg
from rich.console import Console
from rich.table import Table

from bench.server import (
    DEFAULT_DATA_DIR,
    DEFAULT_POSTGRES_URL,
    ServerProcess,
    Target,
    cli_json,
    libpq,
)

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
README = BENCH / "README.md"
BACKENDS = ("sqlite", "postgresql")
NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
BUSY_LIMIT = 0.10  # other processes above this share of the cores: the run is on a busy machine

console = Console()

Result = dict[str, Any]


# --- the README ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Benchmark:
    """`python -m bench <name>`: results in bench/results/<name>-<backend>.json, figures in
    README.md between `<!-- <marker>:begin ... -->` and `<!-- <marker>:end -->`."""

    name: str
    marker: str
    heading: str  # the section made at the end of README.md when the markers are missing
    render_one: Callable[[Result], str]

    @property
    def begin(self) -> str:
        return (
            f"<!-- {self.marker}:begin (written by `python -m bench {self.name}` "
            "from bench/results/) -->"
        )

    @property
    def end(self) -> str:
        return f"<!-- {self.marker}:end -->"

    def result_files(self) -> list[Path]:
        """Per backend, its results, then those of its variants (e.g. `ingest-workers2-`)."""
        files = []
        for backend in BACKENDS:
            files.append(RESULTS / f"{self.name}-{backend}.json")
            files += sorted(RESULTS.glob(f"{self.name}-*-{backend}.json"))
        return files

    def update_readme(self, readme: Path = README) -> None:
        """Rewrite the figures between the markers from the recorded results."""
        results = [json.loads(path.read_text()) for path in self.result_files() if path.exists()]
        body = "\n".join(self.render_one(r) for r in results) or "(no full run recorded yet)\n"
        block = f"{self.begin}\n\n{body}\n{self.end}"
        text = readme.read_text() if readme.exists() else ""
        if self.begin in text and self.end in text:
            head, _, rest = text.partition(self.begin)
            _, _, tail = rest.partition(self.end)
            text = head + block + tail
        else:
            text = text.rstrip() + f"\n\n## {self.heading}\n\n{block}\n"
        readme.write_text(text)


def engine(machine: dict[str, Any]) -> str:
    if "sqlite" in machine:
        return f"SQLite {machine.get('sqlite')}"
    return f"PostgreSQL {machine.get('postgresql')}"


def dirty(source: dict[str, Any]) -> str:
    return " + uncommitted changes in src/" if source["src_dirty"] else ""


def verdict(target: dict[str, Any] | None) -> str:
    if target is None:
        return "(no target)"
    return "**met**" if target["met"] else "**not met**"


# --- the command line and the run loop ------------------------------------------------------


@dataclass
class Options:
    """The options every benchmark has; a benchmark's own Options extend these."""

    backends: list[str]
    quick: bool
    postgres_url: str
    write_results: bool  # a full run: results/<name>-<backend>.json (else a .tmp file)
    write_readme: bool
    command: str
    profile_dir: Path | None
    wait_idle: float


def parser(bench: Benchmark, doc: str, *, quick: str, profile: str) -> argparse.ArgumentParser:
    """The parser with the options every benchmark has; the benchmark adds its own."""
    result = argparse.ArgumentParser(prog=f"python -m bench {bench.name}", description=doc)
    result.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    result.add_argument("--quick", action="store_true", help=quick)
    result.add_argument(
        "--postgres-url", help=f"server to create the database on (default {DEFAULT_POSTGRES_URL})"
    )
    result.add_argument("--profile", metavar="DIR", help=profile)
    result.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="before the measurements, wait up to SECONDS for other processes to leave the "
        "cores idle",
    )
    result.add_argument(
        "--no-readme", action="store_true", help="do not update the figures in README.md"
    )
    return result


def add_dataset_options(parser: argparse.ArgumentParser) -> None:
    """--dataset NAME and --dataset-dir DIR: keep the dataset a run builds, or run on a
    copy of the one kept under that name (bench/server.py, `Kept`)."""
    parser.add_argument(
        "--dataset",
        metavar="NAME",
        help="keep the dataset this run builds under NAME (SQLite: DIR/bench_kept_NAME.db; "
        "PostgreSQL: the database bench_kept_NAME), or, when it exists, run on a copy of it "
        "instead of building one",
    )
    parser.add_argument(
        "--dataset-dir",
        metavar="DIR",
        help=f"where SQLite datasets are kept (default {DEFAULT_DATA_DIR}; "
        "$RETURNSTACK_BENCH_DATA_DIR)",
    )


def dataset_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "dataset": args.dataset,
        "dataset_dir": Path(args.dataset_dir).resolve() if args.dataset_dir else DEFAULT_DATA_DIR,
    }


def common(bench: Benchmark, args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """The fields of `Options` from the parsed arguments: quick and profiled runs are not
    recorded."""
    recorded = not args.quick and not args.profile
    return {
        "backends": list(BACKENDS) if args.backend == "both" else [args.backend],
        "quick": args.quick,
        "postgres_url": args.postgres_url or DEFAULT_POSTGRES_URL,
        "write_results": recorded,
        "write_readme": recorded and not args.no_readme,
        "command": " ".join(["python -m bench", bench.name, *argv]),
        "profile_dir": Path(args.profile).resolve() if args.profile else None,
        "wait_idle": args.wait_idle,
    }


def run(
    bench: Benchmark,
    opts: Options,
    run_backend: Callable[[str], Result],
    show: Callable[[Result], None] | None = None,
) -> int:
    """Each backend in turn: run, write its results file, show it; then the README section
    (full runs only) and the targets missed."""
    started = time.monotonic()
    RESULTS.mkdir(exist_ok=True)
    produced = []
    for backend in opts.backends:
        console.rule(f"[bold]{bench.name}, {backend}")
        result = run_backend(backend)
        suffix = (
            ".json" if opts.write_results else "-profiled.tmp" if opts.profile_dir else "-quick.tmp"
        )
        variant = getattr(opts, "variant", "")
        path = RESULTS / f"{bench.name}{variant}-{backend}{suffix}"
        path.write_text(json.dumps(result, indent=2) + "\n")
        if show is not None:
            show(result)
        console.print(f"results: {path}")
        produced.append(result)
    if opts.write_readme:
        bench.update_readme()
        console.print(f"figures written to {README}")
    missed = [
        f"{r['backend']}: {name}"
        for r in produced
        for name, t in r.get("targets", {}).items()
        if not t["met"]
    ]
    if missed:
        console.print("[yellow]targets not met:[/yellow] " + ", ".join(missed))
    console.print(f"done in {time.monotonic() - started:.0f}s")
    return 0


def print_profile(
    summaries: dict[str, Any], kinds: tuple[str, ...] = ("inclusive", "self_lines")
) -> None:
    """The top functions and lines of py-spy summaries (bench/profile.py), per focus."""
    for focus, summary in summaries.items():
        if not isinstance(summary, dict) or not summary.get("samples"):
            continue
        for kind in kinds:
            listing = Table(title=f"profile ({focus}): {kind}, {summary['samples']} samples")
            listing.add_column("share", justify="right")
            listing.add_column("where")
            for where, share in summary[kind]:
                listing.add_row(f"{share:.1%}", where)
            console.print(listing)


# --- the database -----------------------------------------------------------------------------


def bench_tenant(target: Target, currency: str | None = None) -> tuple[str, str]:
    """A tenant `bench` and a secret key, made with the CLI (which also builds the schema):
    the tenant id and the Authorization header."""
    extra = ["--currency", currency] if currency else []
    tenant = cli_json(target, "tenants", "create", "bench", *extra)
    key = cli_json(target, "keys", "create", "--tenant", "bench", "--kind", "secret")
    console.print(f"  database {target.url}, tenant {tenant['id']}")
    return str(tenant["id"]), f"Bearer {key['key']}"


def sql(target: Target, statement: str) -> list[tuple[Any, ...]]:
    """Rows of one statement on a plain driver connection (autocommit on PostgreSQL)."""
    if target.backend == "sqlite":
        with sqlite3.connect(target.sqlite_path, timeout=60) as conn:
            return list(conn.execute(statement))
    with psycopg.connect(libpq(target.url), autocommit=True) as conn:
        cursor = conn.execute(statement)
        return list(cursor.fetchall()) if cursor.description else []


def vacuum_analyze_loaded(target: Target) -> float:
    """PostgreSQL: seconds to VACUUM ANALYZE the tables a load filled, not the empty ones,
    as autovacuum would after the load. An empty table analyzed records 0 rows, and the
    planner then keeps choosing plans for an empty table (a tenant-wide index scan for a
    return's items) while the run fills it: autovacuum would analyze it again after its
    first 50 rows, but it is off on this machine's PostgreSQL. Never analyzed, the planner
    estimates from the table's size instead."""
    started = time.perf_counter()
    with psycopg.connect(libpq(target.url), autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT relname FROM pg_class WHERE relkind = 'r' "
                "AND relnamespace = 'public'::regnamespace ORDER BY relname"
            )
        ]
        for table in tables:
            if conn.execute(f'SELECT EXISTS (SELECT FROM "{table}")').fetchone() == (True,):
                conn.execute(f'VACUUM ANALYZE "{table}"')
    return round(time.perf_counter() - started, 1)


class Autovacuum:
    """PostgreSQL's autovacuum, done by the bench while a run lasts when the server has it off
    (this machine's PostgreSQL does: `SHOW autovacuum`). A production server runs it: without
    it the statistics of the tables a run fills (returns, their items and history) stay
    those of the empty tables, and the planner scans the tenant's index for a return's items
    (thousands of rows at every action, more as the run goes) instead of the primary key.

    Every `autovacuum_naptime` it does what the launcher would, with the server's settings:
    ANALYZE a table once its rows changed since the last analyze exceed
    `autovacuum_analyze_threshold + autovacuum_analyze_scale_factor * reltuples`, VACUUM it
    once its dead rows (or rows inserted since its last vacuum) exceed the vacuum thresholds,
    throttled as autovacuum is (`vacuum_cost_delay` 2 ms). Per-table settings are not read.
    Nothing when autovacuum is on, or on SQLite."""

    def __init__(self, target: Target) -> None:
        self.target = target
        # Per table, how many times (a run may see several rounds).
        self.done: dict[str, dict[str, int]] = {"analyzed": {}, "vacuumed": {}}
        self.emulated = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Autovacuum":
        if self.target.backend != "postgresql":
            return self
        with psycopg.connect(libpq(self.target.url), autocommit=True) as conn:
            settings: dict[str, str] = dict(
                conn.execute(
                    "SELECT name, setting FROM pg_settings WHERE name LIKE 'autovacuum%'"
                ).fetchall()
            )
        if settings["autovacuum"] == "on":
            return self
        self.emulated = True
        self._thread = threading.Thread(target=self._loop, args=(settings,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def report(self) -> dict[str, Any]:
        return {"emulated": self.emulated, **self.done}

    def _count(self, what: str, table: str) -> None:
        self.done[what][table] = self.done[what].get(table, 0) + 1

    def _loop(self, settings: dict[str, str]) -> None:
        naptime = float(settings["autovacuum_naptime"])
        with psycopg.connect(libpq(self.target.url), autocommit=True) as conn:
            conn.execute("SET vacuum_cost_delay = '2ms'")
            conn.execute("SET vacuum_cost_limit = 200")
            while not self._stop.wait(naptime):
                for table, analyze, vacuum in conn.execute(
                    """
                    SELECT s.relname,
                           s.n_mod_since_analyze > %(at)s + %(asf)s * greatest(c.reltuples, 0),
                           s.n_dead_tup > %(vt)s + %(vsf)s * greatest(c.reltuples, 0)
                           OR s.n_ins_since_vacuum > %(it)s + %(isf)s * greatest(c.reltuples, 0)
                    FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
                    WHERE s.schemaname = 'public' ORDER BY s.relname
                    """,
                    {
                        "at": float(settings["autovacuum_analyze_threshold"]),
                        "asf": float(settings["autovacuum_analyze_scale_factor"]),
                        "vt": float(settings["autovacuum_vacuum_threshold"]),
                        "vsf": float(settings["autovacuum_vacuum_scale_factor"]),
                        "it": float(settings["autovacuum_vacuum_insert_threshold"]),
                        "isf": float(settings["autovacuum_vacuum_insert_scale_factor"]),
                    },
                ).fetchall():
                    if self._stop.is_set():
                        return
                    if vacuum:
                        conn.execute(f'VACUUM {"(ANALYZE) " if analyze else ""}"{table}"')
                        self._count("vacuumed", table)
                    elif analyze:
                        conn.execute(f'ANALYZE "{table}"')
                    if analyze:
                        self._count("analyzed", table)


def flush_load(target: Target) -> float:
    """Seconds to write a load's dirty pages to disk before anything is measured: a
    checkpoint (PostgreSQL `CHECKPOINT`, SQLite `PRAGMA wal_checkpoint(TRUNCATE)`), then the
    kernel's `sync`. Otherwise the first checkpoint after a load of gigabytes flushes them
    during the run: on this machine up to 1.5 GB in one second, and every commit waiting
    for its WAL flush behind it (a stall of ~0.5 s of every request in flight). A database
    in production has long flushed its bulk load."""
    started = time.perf_counter()
    sql(
        target,
        "CHECKPOINT" if target.backend == "postgresql" else "PRAGMA wal_checkpoint(TRUNCATE)",
    )
    os.sync()
    return round(time.perf_counter() - started, 1)


def timed_sql(target: Target, statement: str) -> float:
    """Seconds one statement (VACUUM, a checkpoint) took."""
    started = time.perf_counter()
    sql(target, statement)
    return round(time.perf_counter() - started, 1)


@contextlib.contextmanager
def driver_connection(target: Target) -> Iterator[Any]:
    """A plain driver connection (sqlite3 / psycopg) made by the service's own engine, so on
    SQLite with the PRAGMAs the server's connections have (cache size, WAL)."""
    from returnstack.config import Settings
    from returnstack.kit.db import Database

    db = Database(Settings(database_url=target.url, _env_file=None))
    raw = db.engine.raw_connection()
    try:
        yield raw.driver_connection
    finally:
        raw.close()
        db.dispose()


def connection_memory(target: Target) -> dict[str, Any]:
    """What the service's connections may hold, from its own engine: the most connections
    its pool opens and, on SQLite, the page cache each keeps."""
    from returnstack.kit.db import THREAD_POOL_SIZE  # the pool plus its overflow

    limits: dict[str, Any] = {"max_connections": THREAD_POOL_SIZE}
    if target.backend == "sqlite":
        with driver_connection(target) as conn:
            cache = conn.execute("PRAGMA cache_size").fetchone()[0]
            page = conn.execute("PRAGMA page_size").fetchone()[0]
        # cache_size: KiB when negative, pages when positive
        size = -cache * 1024 if cache < 0 else cache * page
        limits["sqlite_page_cache_mib_per_connection"] = round(size / 2**20, 1)
    return limits


def database_size_mb(target: Target) -> float:
    if target.backend == "sqlite":
        files = [target.sqlite_path, *target.sqlite_path.parent.glob("bench.db-*")]
        return round(sum(f.stat().st_size for f in files if f.exists()) / 2**20, 1)
    size = sql(target, "SELECT pg_database_size(current_database())")[0][0]
    return round(int(size) / 2**20, 1)


# --- the machine, the source, the CPU --------------------------------------------------------


def started_at() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def machine(target: Target) -> dict[str, Any]:
    """The machine and the versions of what ran: recorded with every result."""
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(
                (ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), ""
            )
    except OSError:
        pass
    packages = ("fastapi", "starlette", "uvicorn", "pydantic", "sqlalchemy", "psycopg")
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in (*packages, "uvloop", "httptools")},
        "shared_cores": "server, load generator and database share the same cores",
    }
    if target.backend == "sqlite":
        info["sqlite"] = sqlite3.sqlite_version
    else:
        info["postgresql"] = sql(target, "SHOW server_version")[0][0]
    try:
        info["wrk"] = subprocess.run(
            ["wrk", "-v"], capture_output=True, text=True, check=False
        ).stdout.splitlines()[0]
    except (OSError, IndexError):
        info["wrk"] = None
    return info


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def source_state() -> dict[str, Any]:
    """The commit the server ran, and whether src/ had uncommitted changes (an editable
    install runs the working tree)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=BENCH.parent, capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "src_dirty": bool(git("status", "--porcelain", "src")),
    }


def _proc_stat_cpu() -> list[int]:
    with open("/proc/stat") as stat:
        return [int(v) for v in stat.readline().split()[1:9]]


def machine_cpu() -> float:
    """CPU seconds all cores have spent busy since boot (from /proc/stat)."""
    values = _proc_stat_cpu()
    return (sum(values[:7]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def machine_steal() -> float:
    """CPU seconds stolen by the hypervisor since boot: time this virtual machine's cores
    wanted to run while the host ran something else."""
    return _proc_stat_cpu()[7] / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """CPU seconds of this process's finished children (wrk, the Python clients)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_busy(seconds: float = 2.0) -> float:
    """The share of all cores busy over `seconds` (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        values = _proc_stat_cpu()
        return values[3] + values[4], sum(values)  # idle + iowait, all

    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def wait_idle(seconds: float) -> float:
    """Wait up to `seconds` for other processes to leave the cores; how busy they keep them."""
    busy = cpu_busy()
    deadline = time.monotonic() + seconds
    while busy > BUSY_LIMIT and time.monotonic() < deadline:
        console.print(f"  waiting for a quiet machine ({busy:.0%} busy) …")
        busy = cpu_busy(5.0)
    if busy > BUSY_LIMIT:
        console.print(
            f"[yellow]other processes keep {busy:.0%} of the cores busy: they share the cores "
            "with the benchmark, and its figures will be worse[/yellow]"
        )
    return busy


class CpuWindow:
    """CPU of the server and of the machine over a window [start, end] (time.monotonic()),
    read by a thread at those moments while the load runs."""

    def __init__(self, server: ServerProcess, start: float, end: float) -> None:
        self.server = server
        self.start, self.end = start, end
        self.values: dict[str, float] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for label, moment in (("before", self.start), ("after", self.end)):
            delay = moment - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.values[f"server_{label}"] = self.server.cpu_seconds()
            self.values[f"machine_{label}"] = machine_cpu()
            self.values[f"at_{label}"] = time.monotonic()

    def result(self) -> dict[str, float]:
        self.thread.join()
        elapsed = self.values["at_after"] - self.values["at_before"]
        server = self.values["server_after"] - self.values["server_before"]
        busy = self.values["machine_after"] - self.values["machine_before"]
        return {
            "seconds": round(elapsed, 2),
            "server_cpu_s": round(server, 2),
            "server_cores": round(server / elapsed, 2),
            "machine_cores": round(busy / elapsed, 2),
        }


def log_errors(log: str) -> dict[str, int]:
    """The server's logged errors, by their last line (the exception), most frequent first."""
    counts: dict[str, int] = {}
    for line in log.splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(entry, dict) or entry.get("level") not in ("error", "critical"):
            continue
        text = str(entry.get("exception") or entry.get("event") or "")
        last = text.strip().splitlines()[-1][:200] if text.strip() else "?"
        counts[last] = counts.get(last, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:8])


def keep_log(server: ServerProcess, name: str) -> dict[str, int]:
    """The server's whole log kept (git-ignored) as results/<name>-server-log.tmp, for when
    something went wrong; its logged errors."""
    log = server.log_path.read_bytes() if server.log_path.exists() else b""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}-server-log.tmp").write_bytes(log)
    return log_errors(log.decode(errors="replace"))
