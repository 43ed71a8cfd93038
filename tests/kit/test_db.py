"""SQLite writers of every process queue on one file lock (kit/db.py), so a waiting writer
starts when the one before it ends instead of polling SQLite's lock with sleeps."""

import fcntl
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from sqlalchemy import text

from returnstack.config import Settings
from returnstack.kit.db import Database


def _database(tmp_path: Path) -> tuple[Database, Path]:
    path = tmp_path / "queue.db"
    settings = Settings(database_url=f"sqlite:///{path}", data_dir=tmp_path / "data")
    db = Database(settings)
    with db.transaction() as session:
        session.execute(text("CREATE TABLE t (n INTEGER)"))
    return db, Path(f"{path}-writer.lock")


def _write_in_thread(db: Database) -> threading.Event:
    done = threading.Event()

    def write() -> None:
        with db.transaction() as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
        done.set()

    threading.Thread(target=write, daemon=True).start()
    return done


def test_a_write_waits_while_another_process_holds_the_writer_queue(tmp_path: Path) -> None:
    db, lock_path = _database(tmp_path)
    try:
        # Another process's writer, standing in: its own open file holding the lock.
        holder = os.open(lock_path, os.O_RDWR)
        fcntl.flock(holder, fcntl.LOCK_EX)
        done = _write_in_thread(db)
        assert not done.wait(0.5), "the write began while another process held the queue"
        fcntl.flock(holder, fcntl.LOCK_UN)
        os.close(holder)
        assert done.wait(10)
        # Reads never queue.
        with db.transaction(write=False) as session:
            assert session.execute(text("SELECT count(*) FROM t")).scalar_one() == 1
    finally:
        db.dispose()


def test_a_killed_holder_leaves_the_queue_free(tmp_path: Path) -> None:
    db, lock_path = _database(tmp_path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(lock_path)!r}, os.O_RDWR)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        done = _write_in_thread(db)
        assert not done.wait(0.5)
        holder.send_signal(signal.SIGKILL)
        assert done.wait(10)
    finally:
        holder.kill()
        holder.wait()
        db.dispose()
