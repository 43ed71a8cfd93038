"""The dispatcher of a `serve` process, in a child process of its own at a lower CPU priority.

A thread in the server would share the GIL (and the cores) with request handling: every
delivery's CPU would be taken from requests. A child process has its own interpreter, and
its sending threads run at `RETURNSTACK_WEBHOOKS_NICE`, so the kernel runs them on what the
server leaves idle: a burst of requests delays deliveries a little (the backlog is drained
as soon as the burst ends), rather than deliveries slowing the requests down. Its loop,
which writes to the database, is not niced: on SQLite a niced transaction holding the write
lock was the last to be given a core back, and the server's writer waited behind it.

The server talks to the child through one pipe, the child's stdin: the settings (one JSON
line), then a byte per commit with events (on SQLite, the wake-up a thread got in-process;
on PostgreSQL, LISTEN/NOTIFY wakes it). End of file means stop: the child then finishes the
attempts in flight, records them and releases its lease, whether the server stopped
gracefully or died (a SIGKILL of the server's process group, as a crash or `kill -9` of a
service manager, ends the child with it). If the child dies, the server starts another.

Niceness alone does not keep deliveries out of a burst's way: on SQLite the child's write
transactions queue on the same lock as the server's, and on PostgreSQL its statements run
in database processes that are not niced. So the child also watches the server's CPU time
(ServerLoad): while the server is busy, the dispatcher writes only once per
`RETURNSTACK_WEBHOOKS_YIELD_INTERVAL`, in small batches (Dispatcher._yield), and catches up
when the burst is over.
"""

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO

from returnstack.config import Settings
from returnstack.outbox.service import committed as wake

log = logging.getLogger("returnstack.webhooks")

RESTART_AFTER = 1.0  # seconds before a child that died is replaced
BUSY_SHARE = 0.5  # of a core: a server using more than this is busy
ACTIVE_SHARE = 0.1  # of a core: a server using more than this while the cores are all busy, too
SATURATED = 0.9  # of all cores' time busy: the machine has no CPU to spare
BUSY_WINDOW = 0.25  # seconds: the shortest period the server's CPU use is measured over
BUSY_HOLD = 1.0  # seconds a server found busy counts as busy (see ServerLoad)


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads) so far; None where it cannot
    be read (no /proc, or the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def machine_cpu_ticks() -> tuple[int, int] | None:
    """Busy and total CPU time of all cores since boot, in ticks (from /proc/stat); None
    where it cannot be read."""
    try:
        with open("/proc/stat", "rb") as stat:
            values = [int(value) for value in stat.readline().split()[1:]]
        idle = values[3] + values[4]  # idle, iowait
        return sum(values) - idle, sum(values)
    except (OSError, ValueError, IndexError):
        return None


class ServerLoad:
    """Whether the server is busy, over the last `window` seconds or more (a longer period
    when asked less often): it used more than `share` of a core, or more than `active` of
    one while the machine's cores were `saturated` (then whatever the dispatcher uses is
    taken from it, whatever its niceness: database processes are not niced). Never busy
    where its CPU time cannot be read.

    A server found busy counts as busy for `hold` seconds more: during a burst it also
    waits (on SQLite, for the write lock behind the dispatcher's transaction; for its
    clients), and a window of less CPU then must not send the dispatcher back to full
    speed, whose larger transactions would make it wait longer still."""

    def __init__(
        self,
        cpu_seconds: Callable[[], float | None],
        machine: Callable[[], tuple[int, int] | None] = lambda: None,
        *,
        share: float = BUSY_SHARE,
        active: float = ACTIVE_SHARE,
        saturated: float = SATURATED,
        window: float = BUSY_WINDOW,
        hold: float = BUSY_HOLD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cpu_seconds = cpu_seconds
        self.machine = machine
        self.share = share
        self.active = active
        self.saturated = saturated
        self.window = window
        self.hold = hold
        self.clock = clock
        self._since = clock()
        self._cpu = cpu_seconds()
        self._machine = machine()
        self._busy_until = float("-inf")

    def __call__(self) -> bool:
        now = self.clock()
        if now - self._since >= self.window:
            cpu, machine = self.cpu_seconds(), self.machine()
            if cpu is not None and self._cpu is not None:
                used = (cpu - self._cpu) / (now - self._since)
                if used > self.share or (used > self.active and self._full(self._machine, machine)):
                    self._busy_until = now + max(self.hold, self.window)
            self._since, self._cpu, self._machine = now, cpu, machine
        return now < self._busy_until

    def _full(self, before: tuple[int, int] | None, after: tuple[int, int] | None) -> bool:
        if before is None or after is None or after[1] <= before[1]:
            return False
        return (after[0] - before[0]) / (after[1] - before[1]) > self.saturated


class DispatcherProcess:
    """Starts, watches and stops the dispatcher child of a server process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="webhook-child", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._watcher.start()

    def _spawn(self) -> None:
        process = subprocess.Popen(
            [sys.executable, "-m", "returnstack.webhooks.process"], stdin=subprocess.PIPE
        )
        stdin: IO[bytes] = process.stdin  # type: ignore[assignment]
        stdin.write(self.settings.model_dump_json().encode() + b"\n")
        stdin.flush()
        os.set_blocking(stdin.fileno(), False)  # a wake-up never blocks a request
        self.process = process
        if self.settings.is_sqlite:
            wake.forward_to(stdin.fileno())

    def _watch(self) -> None:
        while not self._stopping.is_set():
            process = self.process
            assert process is not None
            status = process.wait()
            if self._stopping.is_set():
                return
            log.error("webhook.dispatcher_died", extra={"status": status})
            wake.forward_to(None)
            if process.stdin is not None:
                process.stdin.close()
            if self._stopping.wait(RESTART_AFTER):
                return
            self._spawn()

    def shutdown(self, timeout: float = 20.0) -> None:
        """Close the pipe (the child stops: it ends the attempts in flight, bounded by the
        attempt timeout) and wait for it; kill it if it takes longer than `timeout`."""
        self._stopping.set()
        wake.forward_to(None)
        process = self.process
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("webhook.dispatcher_killed", extra={"pid": process.pid})
            process.kill()
            process.wait()
        self._watcher.join(2.0)


def _lifeline(stop: threading.Event) -> None:
    """Each byte from the server is news; end of file, the server is gone or stopping."""
    try:
        while os.read(0, 4096):
            wake.news_arrived()
    except OSError:
        pass
    stop.set()
    wake.set()


def main() -> None:
    import logging.config

    from returnstack.kit.db import Database
    from returnstack.kit.logs import logging_config
    from returnstack.webhooks.dispatcher import Dispatcher

    # The settings of the server (one line, read without buffering ahead of the wake-ups).
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(0, 1)
        if not chunk:
            return
        line += chunk
    settings = Settings.model_validate_json(line)
    logging.config.dictConfig(logging_config(settings.log_level))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the server stops us
    stop = threading.Event()

    def on_term(_signum: int, _frame: object) -> None:
        stop.set()
        wake.set()

    signal.signal(signal.SIGTERM, on_term)
    threading.Thread(target=_lifeline, args=(stop,), name="webhook-lifeline", daemon=True).start()
    db = Database(settings, background_checkpoints=True)
    server = os.getppid()
    dispatcher = Dispatcher(
        db,
        settings,
        sender_nice=settings.webhooks_nice,
        server_busy=ServerLoad(lambda: process_cpu_seconds(server), machine_cpu_ticks),
    )
    try:
        dispatcher.run(stop)
    finally:
        dispatcher.close()
        db.dispose()


if __name__ == "__main__":
    main()
