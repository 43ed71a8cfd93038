"""Fresh databases, real server processes, and the memory of a process read from /proc."""

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES_URL = os.environ.get(
    "RETURNSTACK_BENCH_POSTGRES_URL",
    os.environ.get("RETURNSTACK_TEST_POSTGRES_URL", "postgresql+psycopg://127.0.0.1:5432/test"),
)


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@dataclass
class Target:
    """A fresh database: its URL for the service, and the temp directory of the run."""

    backend: str
    url: str
    workdir: Path

    @property
    def sqlite_path(self) -> Path:
        return Path(self.url.removeprefix("sqlite:///"))


@contextlib.contextmanager
def fresh_database(
    backend: str, postgres_url: str = DEFAULT_POSTGRES_URL, copy_of: "Kept | None" = None
) -> Iterator[Target]:
    """A new SQLite file in a temp dir, or a new PostgreSQL database dropped afterwards;
    with `copy_of`, a copy of that kept dataset (the kept one is never written)."""
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"returnstack-bench-{uuid.uuid4().hex[:8]}"
    workdir.mkdir(parents=True)
    try:
        if backend == "sqlite":
            path = workdir / "bench.db"
            if copy_of is not None:
                shutil.copyfile(copy_of.sqlite_path, path)
            yield Target(backend, f"sqlite:///{path}", workdir)
            return
        name = f"returnstack_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(libpq(postgres_url), autocommit=True) as admin:
            if copy_of is None:
                admin.execute(f'CREATE DATABASE "{name}"')
            else:  # a file copy: much faster than WAL_LOG for a large database
                admin.execute(
                    f'CREATE DATABASE "{name}" TEMPLATE "{copy_of.database}" STRATEGY FILE_COPY'
                )
        base = postgres_url.rpartition("/")[0]
        try:
            yield Target(backend, f"{base}/{name}", workdir)
        finally:
            with psycopg.connect(libpq(postgres_url), autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


KEPT_PREFIX = "bench_kept_"
DEFAULT_DATA_DIR = Path(os.environ.get("RETURNSTACK_BENCH_DATA_DIR", ROOT / "bench" / "data"))


@dataclass
class Kept:
    """A dataset kept between runs, by name: on SQLite the file `DIR/bench_kept_NAME.db`
    with its description in `DIR/bench_kept_NAME.json`; on PostgreSQL the database
    `bench_kept_NAME` next to the benchmark's, its description in the database's comment.
    A run never writes it: it runs on a copy (`fresh_database(copy_of=...)`)."""

    backend: str
    name: str
    data_dir: Path
    postgres_url: str

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / f"{KEPT_PREFIX}{self.name}.db"

    @property
    def database(self) -> str:
        return f"{KEPT_PREFIX}{self.name}"

    @property
    def where(self) -> str:
        if self.backend == "sqlite":
            return str(self.sqlite_path)
        return f"PostgreSQL database {self.database}"

    def meta(self) -> dict[str, Any] | None:
        """The description written when it was kept; None when there is no such dataset."""
        if self.backend == "sqlite":
            described = self.sqlite_path.with_suffix(".json")
            if not self.sqlite_path.exists() or not described.exists():
                return None
            found: dict[str, Any] = json.loads(described.read_text())
            return found
        with psycopg.connect(libpq(self.postgres_url), autocommit=True) as admin:
            row = admin.execute(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                (self.database,),
            ).fetchone()
        if row is None:
            return None
        described_pg: dict[str, Any] = json.loads(row[0] or "{}")
        return described_pg

    def keep(self, target: Target, meta: dict[str, Any]) -> float:
        """Keep a copy of `target` (nothing may be connected to it) under this name; the
        seconds it took."""
        started = time.perf_counter()
        if self.backend == "sqlite":
            self.data_dir.mkdir(parents=True, exist_ok=True)
            partial = self.sqlite_path.with_suffix(".db.partial")
            partial.unlink(missing_ok=True)
            # SQLite's backup, not a file copy: this process may still hold connections to
            # the database (the loader's pool), and closing a plain file descriptor of it
            # drops every POSIX lock the process holds on it. Another process then took
            # itself for the last connection at its close, checkpointed and reset the WAL
            # under this one's connections, whose reads later failed ("database disk image
            # is malformed", or counts off by a few dozen rows). The database was intact.
            original = sqlite3.connect(target.sqlite_path)
            copy = sqlite3.connect(partial)
            try:
                original.backup(copy, pages=65536)
            finally:
                copy.close()
                original.close()
            partial.rename(self.sqlite_path)
            self.sqlite_path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
        else:
            source = target.url.rpartition("/")[2]
            with psycopg.connect(libpq(self.postgres_url), autocommit=True) as admin:
                admin.execute(
                    f'CREATE DATABASE "{self.database}" TEMPLATE "{source}" STRATEGY FILE_COPY'
                )
                text = json.dumps(meta).replace("'", "''")
                admin.execute(f"COMMENT ON DATABASE \"{self.database}\" IS '{text}'")
        return round(time.perf_counter() - started, 1)


def kept(backend: str, name: str | None, data_dir: Path, postgres_url: str) -> Kept | None:
    if not name:
        return None
    if not name.replace("_", "").isalnum() or name != name.lower():
        raise SystemExit(f"--dataset {name!r}: lower-case letters, digits and _ only")
    return Kept(backend, name, data_dir, postgres_url)


def service_env(target: Target) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RETURNSTACK_")}
    env.update(
        RETURNSTACK_DATABASE_URL=target.url,
        RETURNSTACK_DATA_DIR=str(target.workdir / "data"),
        RETURNSTACK_RATE_LIMIT_PER_SECOND="0",
        RETURNSTACK_LOG_REQUESTS="false",
        PYTHONUNBUFFERED="1",
    )
    return env


def returnstack_command() -> str:
    beside = Path(sys.executable).parent / "returnstack"
    found = str(beside) if beside.exists() else shutil.which("returnstack")
    if found is None:
        raise RuntimeError("the `returnstack` command is not installed (pip install -e .)")
    return found


def cli_json(target: Target, *args: str) -> dict[str, object]:
    """Run `returnstack ARGS --json` against the target database; its JSON answer."""
    done = subprocess.run(
        [returnstack_command(), *args, "--json"],
        env=service_env(target),
        cwd=target.workdir,  # no stray .env file is read
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"returnstack {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    answer: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in kB."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU time used so far by a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (a server's worker processes)."""
    found = [pid]
    for parent in found:
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{parent}/task"):
                with open(f"/proc/{parent}/task/{task}/children") as children:
                    found += [int(child) for child in children.read().split()]
    return found


def tree_cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU time of `pid` and its descendants that are alive (a server and
    its workers), in seconds."""
    user = system = 0.0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            u, s = cpu_times(member)
            user, system = user + u, system + s
    return user, system


def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by a process (all its threads)."""
    return sum(cpu_times(pid))


class ServerProcess:
    """A server started as a subprocess, ready once GET /healthz answers."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path, name: str) -> None:
        self.command = command
        self.env = env
        self.cwd = cwd
        self.name = name
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = cwd / f"{name}.log"
        self._sampler: threading.Thread | None = None
        self._sampling = threading.Event()
        self.sampled_peak_kb = 0
        self.final_hwm_kb = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout_s: float = 180) -> "ServerProcess":
        command = [part.replace("{port}", str(self.port)) for part in self.command]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not answer /healthz in {timeout_s}s")
            time.sleep(0.1)
        self._sampling.set()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _sample(self) -> None:
        while self._sampling.is_set():
            with contextlib.suppress(OSError, KeyError, ValueError):
                rss = self.memory()["VmRSS"]
                self.sampled_peak_kb = max(self.sampled_peak_kb, rss)
            time.sleep(0.1)

    def cpu_seconds(self) -> float:
        return sum(tree_cpu_times(self.pid))

    def cpu_times(self) -> tuple[float, float]:
        """The server's CPU time, its worker processes' included."""
        return tree_cpu_times(self.pid)

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM of the largest process of the server (its workers included)."""
        sizes = []
        for member in process_tree(self.pid):
            with contextlib.suppress(OSError, KeyError):
                sizes.append(proc_status(member))
        return max(sizes, key=lambda size: size.get("VmHWM", 0))

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(OSError, KeyError, ValueError):
            self.final_hwm_kb = self.memory()["VmHWM"]
        self._sampling.clear()
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def returnstack_server(target: Target, workers: int = 1) -> ServerProcess:
    command = [returnstack_command(), "serve", "--host", "127.0.0.1", "--port", "{port}"]
    if workers > 1:
        command += ["--workers", str(workers)]
    return ServerProcess(command, service_env(target), target.workdir, "returnstack")


def bare_server(target: Target, mode: str, workers: int = 1) -> ServerProcess:
    """The framework ceiling (bench/bare_app.py), served like `returnstack serve` serves."""
    env = service_env(target)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "bench.bare_app", "--port", "{port}", "--mode", mode]
    command += ["--workers", str(workers)]
    return ServerProcess(command, env, target.workdir, f"bare-{mode}")
