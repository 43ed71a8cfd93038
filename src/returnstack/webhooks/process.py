"""The dispatcher of a `serve` process, in a child process of its own at a lower CPU priority.

A thread in the server would share the GIL (and the cores) with request handling: every
delivery's CPU would be taken from requests. A child process has its own interpreter, and
at `RETURNSTACK_WEBHOOKS_NICE` the kernel runs it on what the server leaves idle: a burst of
requests delays deliveries a little (the backlog is drained as soon as the burst ends),
rather than deliveries slowing the requests down.

The server talks to the child through one pipe, the child's stdin: the settings (one JSON
line), then a byte per commit with events (on SQLite, the wake-up a thread got in-process;
on PostgreSQL, LISTEN/NOTIFY wakes it). End of file means stop: the child then finishes the
attempts in flight, records them and releases its lease, whether the server stopped
gracefully or died (a SIGKILL of the server's process group, as a crash or `kill -9` of a
service manager, ends the child with it). If the child dies, the server starts another.
"""

import logging
import os
import signal
import subprocess
import sys
import threading
from typing import IO

from returnstack.config import Settings
from returnstack.outbox.service import committed as wake

log = logging.getLogger("returnstack.webhooks")

RESTART_AFTER = 1.0  # seconds before a child that died is replaced


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
    if settings.webhooks_nice:
        os.nice(settings.webhooks_nice)
    logging.config.dictConfig(logging_config(settings.log_level))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the server stops us
    stop = threading.Event()

    def on_term(_signum: int, _frame: object) -> None:
        stop.set()
        wake.set()

    signal.signal(signal.SIGTERM, on_term)
    threading.Thread(target=_lifeline, args=(stop,), name="webhook-lifeline", daemon=True).start()
    db = Database(settings, background_checkpoints=True)
    dispatcher = Dispatcher(db, settings)
    try:
        dispatcher.run(stop)
    finally:
        dispatcher.close()
        db.dispose()


if __name__ == "__main__":
    main()
