"""Real processes for tests: the installed `returnstack` console script and a live server.

`run_cli` runs one command to completion; `Server` starts `returnstack serve` on a free port,
waits for /healthz, and is always killed (its whole process group) when the test ends.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

# The console script installed next to the interpreter running the tests (the venv's).
RETURNSTACK = Path(sys.executable).with_name("returnstack")


def process_env(database_url: str | None, **extra: str) -> dict[str, str]:
    """The test process's environment without any RETURNSTACK_* setting, plus the given ones.

    With database_url None the command falls back to its default (./returnstack.db in cwd).
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("RETURNSTACK_")}
    env["RETURNSTACK_RATE_LIMIT_PER_SECOND"] = "0"
    env["COLUMNS"] = "200"  # Rich wraps human output at the terminal width (80 when piped)
    env["PYTHONUNBUFFERED"] = "1"
    if database_url is not None:
        env["RETURNSTACK_DATABASE_URL"] = database_url
    env.update(extra)
    return env


@dataclass
class CliResult:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """The one JSON object a --json command prints on stdout."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected one JSON line on stdout, got:\n{self}"
        return json.loads(lines[0])

    def __str__(self) -> str:
        return (
            f"$ returnstack {' '.join(self.args)}\nexit code {self.returncode}\n"
            f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        )


def run_cli(
    *args: str,
    database_url: str | None,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 180,
) -> CliResult:
    """Run `returnstack ARGS...` to completion in cwd (no stdin, output captured)."""
    assert RETURNSTACK.exists(), f"console script not installed: {RETURNSTACK}"
    completed = subprocess.run(
        [str(RETURNSTACK), *args],
        cwd=cwd,
        env=process_env(database_url, **(env or {})),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CliResult(args, completed.returncode, completed.stdout, completed.stderr)


def admitted(send: Callable[[], httpx.Response], *, tries: int = 10) -> httpx.Response:
    """`send()`, sent again after its Retry-After while the server answers 503 `overloaded`
    (nothing written: admission control on a busy machine), as a client does."""
    response = send()
    for _ in range(tries - 1):
        if response.status_code != 503:
            break
        assert response.json()["error"]["type"] == "overloaded", response.text
        time.sleep(float(response.headers["Retry-After"]))
        response = send()
    return response


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerFailed(RuntimeError):
    pass


class Server:
    """`returnstack serve` as a child process on 127.0.0.1 and a free port.

    Output goes to files in workdir (stdout.log, stderr.log), appended across restarts.
    Use as a context manager, or call stop() in a finally: the process never outlives the test.
    """

    def __init__(
        self, database_url: str, workdir: Path, *, args: Sequence[str] = (), **env: str
    ) -> None:
        self.database_url = database_url
        self.workdir = workdir
        self.args = list(args)  # more `serve` options, e.g. ["--workers", "2"]
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        workdir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = workdir / "stdout.log"
        self.stderr_path = workdir / "stderr.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> Self:
        assert self.process is None, "already running"
        assert RETURNSTACK.exists(), f"console script not installed: {RETURNSTACK}"
        for _attempt in range(3):  # another process may take the free port before we bind it
            self.port = free_port()
            with self.stdout_path.open("ab") as stdout, self.stderr_path.open("ab") as stderr:
                self.process = subprocess.Popen(
                    [
                        str(RETURNSTACK),
                        "serve",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(self.port),
                        *self.args,
                    ],
                    cwd=self.workdir,
                    env=process_env(
                        self.database_url,
                        RETURNSTACK_DATA_DIR=str(self.workdir / "data"),
                        **self.env,
                    ),
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    start_new_session=True,  # its own process group, killed as one
                )
            if self._wait_ready(timeout):
                return self
            self.process = None
            if "address already in use" not in self.stderr().lower():
                break
        raise ServerFailed(f"the server did not become ready:\n{self.stderr()[-4000:]}")

    def _wait_ready(self, timeout: float) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=2) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                try:
                    if http.get("/healthz").status_code == 200:
                        return True
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        self.kill()
        return False

    def kill(self) -> int:
        """SIGKILL: a crash, no shutdown code runs. Returns the exit status (-9)."""
        return self._end(signal.SIGKILL, wait=10)

    def stop(self) -> int | None:
        """A graceful stop (SIGTERM), SIGKILL if that takes too long. Idempotent."""
        if self.process is None:
            return None
        try:
            return self._end(signal.SIGTERM, wait=15)
        except subprocess.TimeoutExpired:
            return self.kill()

    def _end(self, sig: signal.Signals, *, wait: float) -> int:
        process = self.process
        assert process is not None, "not running"
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)  # the group we created (start_new_session)
        status = process.wait(timeout=wait)
        self.process = None
        return status

    def processes(self) -> list[int]:
        """The pids of the server's process group (the server and any workers it started)."""
        assert self.process is not None, "not running"
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # the process ended while we looked
            if int(fields[2]) == self.process.pid and fields[0] != "Z":  # pgrp, state
                found.append(int(stat.parent.name))
        return found

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def errors(self, limit: int = 5) -> list[str]:
        """The last lines of the exceptions the server logged, for assertion messages."""
        found = []
        for line in self.stderr().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("exception"):
                # The exception lines of a (chained) traceback; the root cause comes first.
                causes = [
                    text[:300]
                    for text in str(entry["exception"]).splitlines()
                    if text[:1].isalpha() and not text.startswith(("Traceback", "The above"))
                ]
                found.append(" | ".join(causes[:2]))
        return found[-limit:]

    def __enter__(self) -> Self:
        return self.start() if self.process is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
