"""Durability off the writer thread: the WAL fsync that answers a committed group's callers (Syncer), and the
checkpoints that copy the WAL back into the database file (Checkpointer)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path

import structlog

from gateway.adapters.sqlite.jobs import Settled, answer
from gateway.domain.errors import StoreUnavailable

log = structlog.get_logger("gateway.sqlite")

# How often the checkpointer looks for new commits to copy from the WAL into the database file.
CHECKPOINT_EVERY_S = 0.25
# WAL frames (pages) from which the writer finishes a checkpoint itself so that the WAL starts over; SQLite's own
# automatic checkpoint runs at the same size.
RESTART_AFTER_FRAMES = 1000


class Checkpointer:
    """Copies the WAL back into the database file on a thread and a connection of its own.

    The writer turns SQLite's automatic checkpoint off, which would otherwise run inside whichever COMMIT crosses
    1,000 WAL pages and hold that group's callers while the pages are copied and the database file fsynced. This
    thread runs a PASSIVE checkpoint every `every_s` when another connection has committed since the last one
    (`data_version`). PASSIVE never waits for, nor blocks, a reader or a writer: what it cannot copy yet (a reader
    still needs it) is copied by a later one. A failure is logged and the next round tries again; durability does not
    depend on it (a committed transaction is in the fsynced WAL).

    The WAL starts over only once a checkpoint has copied every frame in it, which rounds running beside the writer
    never do while writes keep coming. So when a round finds RESTART_AFTER_FRAMES frames or more, it sets
    `wal_is_long`, and the writer, between two groups, runs one more PASSIVE checkpoint on its own connection: it
    copies the few commits the round left, and the next write starts the WAL over. Never a RESTART checkpoint: that
    would hold other connections' writes behind a long reader.
    """

    def __init__(self, path: Path, *, every_s: float) -> None:
        self._path = path
        self._every_s = every_s
        self.wal_is_long = False  # set here, cleared by the writer once it has finished a checkpoint
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway-sqlite-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        seen = None
        try:
            while not self._stop.wait(self._every_s):
                try:
                    if connection is None:
                        connection = sqlite3.connect(self._path, isolation_level=None)
                    version = connection.execute("PRAGMA data_version").fetchone()[0]
                    if version != seen:
                        _, frames, _ = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                        if frames >= RESTART_AFTER_FRAMES:
                            self.wal_is_long = True
                        seen = version
                except sqlite3.Error as exc:
                    log.warning("sqlite.checkpoint_failed", path=str(self._path), error=str(exc))
                    if connection is not None:
                        with contextlib.suppress(sqlite3.Error):
                            connection.close()
                    connection = None
        finally:
            if connection is not None:
                with contextlib.suppress(sqlite3.Error):
                    connection.close()


class Syncer:
    """Makes the writer's commits durable on a thread of its own, then answers their callers.

    In WAL mode the writer commits with `synchronous=NORMAL` (the commit is written to the WAL, not fsynced), so it
    goes on with the next group instead of waiting for the disk, and hands the group's outcomes here. This thread
    fsyncs the WAL file, which makes every commit written before the fsync began durable, and only then answers
    their callers; commits that end while an fsync is under way share the next one. The guarantee is FULL's: no
    caller hears of a write before it is on disk. A write's effects are visible to the next transaction before that
    fsync (as they are to other processes with FULL, between the WAL write and the fsync); a power loss then loses
    the write, whose caller was never answered (Ringside redelivers it), and anything a later transaction derived
    from it, which is answered after a later fsync that would have failed the same way.
    If the fsync fails, the group's writes fail with StoreUnavailable (the caller retries; a redelivery of a write
    that did reach the disk is then a duplicate, as it must be).
    """

    def __init__(self, wal_path: Path) -> None:
        self._wal_path = wal_path
        self._fd: int | None = None
        self._pending: list[list[Settled]] = []
        self._changed = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="gateway-sqlite-sync", daemon=True)
        self._thread.start()

    def submit(self, settled: list[Settled]) -> None:
        """Answer `settled` (a committed group's outcomes) once the WAL is on disk."""
        with self._changed:
            self._pending.append(settled)
            self._changed.notify()

    def sync(self) -> None:
        """fsync the WAL file now, on the calling thread (after the schema is created)."""
        os.fsync(self._wal_fd())

    def stop(self) -> None:
        """Answer what is pending, then end the thread."""
        with self._changed:
            self._stopping = True
            self._changed.notify()
        self._thread.join(timeout=30)
        self._close_fd()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._stopping:
                    self._changed.wait()
                if not self._pending:
                    return
                groups, self._pending = self._pending, []
            try:
                self.sync()
            except OSError as exc:
                failure = StoreUnavailable(f"the SQLite store could not make the write durable: {exc}")
                log.error("sqlite.fsync_failed", path=str(self._wal_path), error=str(exc))
                self._close_fd()
                groups = [[(job, False, failure if ok else value) for job, ok, value in group] for group in groups]
            for group in groups:
                answer(group)

    def _wal_fd(self) -> int:
        """The WAL file, opened once. Opened again only if the path now names another file: SQLite removes the WAL
        when the last connection to the database closes, and the next connection creates a new one. (While this
        process's connection is open that cannot happen; a WAL removed on closing has been checkpointed into the
        database file and fsynced by SQLite, so the descriptor of the removed one still serves.)"""
        if self._fd is not None:
            try:
                replaced = os.fstat(self._fd).st_ino != os.stat(self._wal_path).st_ino
            except FileNotFoundError:
                replaced = False
            if not replaced:
                return self._fd
            self._close_fd()
        self._fd = os.open(self._wal_path, os.O_RDONLY)
        return self._fd

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
