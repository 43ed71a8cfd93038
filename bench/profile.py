"""Sampling profiles of the server process with py-spy (`.venv/bin/pip install py-spy`), and
their summary: where the server's CPU samples go, by function and by source line.

py-spy runs with --nonblocking (it does not pause the server to sample), so a profiled run
is slowed only a little, but its figures are still not recorded as results. By default only
the thread holding the GIL is sampled (`--gil`: where the Python CPU time goes; a 2-core
machine shared with other processes makes py-spy's own idle detection unreliable, as runnable
threads waiting for a core look busy); with `idle`, every thread, waiting or not (where the
wall-clock time of a request goes, lock and I/O waits included).
"""

import contextlib
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profiler:
    """`py-spy record` on a pid while the block runs; raw (collapsed stacks) output."""

    def __init__(self, pid: int, output: Path, rate: int = 250, idle: bool = False) -> None:
        self.pid = pid
        self.idle = idle
        self.output = output
        self.rate = rate
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "Profiler":
        command = py_spy()
        if command is None:
            raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [command, "record", "-p", str(self.pid), "-r", str(self.rate), "-f", "raw",
             "-o", str(self.output), "--nonblocking", "--idle" if self.idle else "--gil"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        return self

    def __exit__(self, *_: object) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def profiling(
    pid: int, output: Path | None, idle: bool = False
) -> contextlib.AbstractContextManager[object]:
    """A Profiler on `pid` writing `output`, or nothing when `output` is None."""
    return contextlib.nullcontext() if output is None else Profiler(pid, output, idle=idle)


def _frames(stack: str) -> list[tuple[str, str]]:
    """[(function, file:line)] from a py-spy raw stack 'f (file:line);g (file:line)'."""
    frames = []
    for frame in stack.split(";"):
        name, _, where = frame.rpartition(" (")
        frames.append((name or frame, where.rstrip(")")))
    return frames


def summarize(raw: Path, top: int = 15, focus: str | None = None) -> dict[str, Any]:
    """Inclusive shares per function, self shares per function and per source line; with
    `focus`, only the stacks that contain that function (e.g. "post_events")."""
    total = 0
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    for entry in raw.read_text().splitlines():
        stack, _, count_text = entry.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        if focus is not None and f";{focus} (" not in f";{stack}":
            continue
        total += count
        frames = _frames(stack)
        functions = {f"{name} ({where.rpartition(':')[0]})" for name, where in frames}
        for function in functions:
            inclusive[function] += count
        name, where = frames[-1]
        own[f"{name} ({where.rpartition(':')[0]})"] += count
        lines[where] += count
    if not total:
        return {"samples": 0}

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[key, round(value / total, 4)] for key, value in counter.most_common(top)]

    return {
        "samples": total,
        "inclusive": share(inclusive),
        "self": share(own),
        "self_lines": share(lines),
    }
