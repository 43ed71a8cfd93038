"""SQLite writers of every process queue on one file lock (kit/db.py), so a waiting writer
starts when the one before it ends instead of polling SQLite's lock with sleeps."""

import contextlib
import fcntl
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

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


def _queue_held(lock_path: Path) -> bool:
    """Whether a writer holds the queue (a lock of another open file conflicts with it)."""
    fd = os.open(lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # and with it a lock it got
    return False


def _sqlite_lock_held(path: Path) -> bool:
    """Whether SQLite's own write lock is held (a writer not queueing, never waiting)."""
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc):
            raise
        return True
    else:
        other.execute("ROLLBACK")
        return False
    finally:
        other.close()


def test_the_queue_is_held_until_the_commit_or_rollback_has_ended(tmp_path: Path) -> None:
    # SQLAlchemy's commit and rollback events come just before the driver's COMMIT or
    # ROLLBACK, while SQLite still holds its lock: a writer let go there would begin, find
    # SQLite's lock held and sleep in its busy handler (1, 2, 5, 10 ms...).
    db, lock_path = _database(tmp_path)
    seen: list[tuple[str, bool, bool]] = []

    def before(name: str) -> Callable[[Any], None]:
        def look(_conn: Any) -> None:
            db_path = tmp_path / "queue.db"
            seen.append((name, _queue_held(lock_path), _sqlite_lock_held(db_path)))

        return look

    event.listen(db.engine, "commit", before("commit"))
    event.listen(db.engine, "rollback", before("rollback"))
    try:
        with db.transaction() as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
        assert seen == [("commit", True, True)]
        assert not _queue_held(lock_path)
        assert not _sqlite_lock_held(tmp_path / "queue.db")

        seen.clear()
        with contextlib.suppress(ValueError), db.transaction() as session:
            session.execute(text("INSERT INTO t VALUES (2)"))
            raise ValueError("refused")
        assert seen == [("rollback", True, True)]
        assert not _queue_held(lock_path)
        with db.transaction(write=False) as session:
            assert session.execute(text("SELECT count(*) FROM t")).scalar_one() == 1
    finally:
        db.dispose()


def test_a_connection_closed_mid_write_lets_the_queue_go(tmp_path: Path) -> None:
    db, lock_path = _database(tmp_path)
    try:
        session = db.session(write=True)
        session.execute(text("INSERT INTO t VALUES (1)"))
        assert _queue_held(lock_path)
        session.connection().invalidate()  # the driver's connection is closed, not returned
        session.close()
        assert not _queue_held(lock_path)
        done = _write_in_thread(db)
        assert done.wait(10)
    finally:
        db.dispose()
