"""The database handle: one SQLite file, its one connection and how it is opened, behind the group-commit writer."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import structlog

from gateway.adapters.sqlite.durability import CHECKPOINT_EVERY_S, Checkpointer, Syncer
from gateway.adapters.sqlite.group_commit import Writer
from gateway.adapters.sqlite.jobs import Batch, Settled, answer
from gateway.adapters.sqlite.schema import migrate

log = structlog.get_logger("gateway.sqlite")

T = TypeVar("T")

DEFAULT_BUSY_TIMEOUT_MS = 5000
# How large an emptied WAL file may stay: the writer's connection cuts it back to this when it starts the WAL over.
WAL_SIZE_LIMIT_BYTES = 32 * 1024 * 1024


class SqliteDatabase:
    """One SQLite file, one connection, one thread, group commit.

    Invariants:
    - The connection is created, used and closed only on the writer's single thread; calls are run in submission
      order and the event loop never blocks on disk.
    - No caller of a write is answered before its commit is durable: in WAL mode the commit is fsynced by the
      Syncer thread (one fsync for every commit that ended meanwhile) while the writer goes on with the next group.
    - Every call is atomic: it takes effect whole or not at all, and its SQLite errors arrive as StoreUnavailable.
    - Group commit: consecutive writes waiting in the queue when the thread turns to them (at most
      MAX_GROUP_COMMIT) run in one `BEGIN IMMEDIATE` transaction. A write that raises fails alone: the transaction
      is rolled back and the group runs again, each write inside its own SAVEPOINT, the failing one rolled back to
      it and its caller given the error; the others stay in the transaction. (Savepoints only then: a write rarely
      fails, and each costs two statements.)
      No caller is answered before the COMMIT that made its write durable (and its fsync); if that COMMIT fails,
      every write of the group fails with StoreUnavailable and none took effect. Nothing waits for a group to fill:
      a group is whatever arrived while the previous commit was being written, so an idle store commits a lone
      write at once.
    - Batched writes (`write_batched`): consecutive writes of one batch function in a group run as one call of it,
      so that a group of ledger records costs a few statements rather than a few per record. If that call raises
      (in the group's run with savepoints), its savepoint is undone and each of its writes runs again alone, in a
      savepoint of its own, so that only the write that fails fails, as for any other write.
    - A read runs alone in a deferred transaction (a snapshot, no write lock), in its place in the queue, so it sees
      exactly the writes submitted before it, all committed.
    - Checkpoints (copying the WAL into the database file) run on a thread and a connection of their own
      (Checkpointer), never inside a commit of this one; when the WAL has grown long, the writer finishes one
      between two groups so that the WAL starts over.
    The connection opens lazily (or with `open()`) and is re-opened after a failure that left it unusable.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        checkpoint_every_s: float = CHECKPOINT_EVERY_S,
    ) -> None:
        self.path = Path(path)
        self._file = _File(self.path, busy_timeout_ms=int(busy_timeout_ms), checkpoint_every_s=checkpoint_every_s)
        self._writer = Writer(self._file, busy_timeout_ms=int(busy_timeout_ms))

    @classmethod
    def from_url(cls, url: str, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> SqliteDatabase:
        """`sqlite:///relative.db` or `sqlite:////absolute/path.db`, as in SQLAlchemy URLs."""
        prefix = "sqlite:///"
        if not url.startswith(prefix):
            raise ValueError("a SQLite store URL looks like sqlite:///relative.db or sqlite:////absolute/path.db")
        path = url[len(prefix) :]
        if not path or path == ":memory:":
            raise ValueError("a SQLite store URL needs a file path: sqlite:///relative.db")
        if "?" in path:
            # SQLAlchemy passes query parameters to the driver; silently ignoring them would hide a misconfiguration.
            raise ValueError("query parameters are not supported in GATEWAY_STORE for SQLite")
        return cls(path, busy_timeout_ms=busy_timeout_ms)

    def __repr__(self) -> str:
        return f"SqliteDatabase({str(self.path)!r})"

    async def open(self) -> None:
        """Connect and create the schema now rather than on first use, so that start-up fails fast."""
        await self.read(lambda connection: None)

    async def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in a deferred transaction: a consistent snapshot for reads, no write lock taken."""
        return await self._writer.submit(work, write=False)

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` atomically under the file's write lock (`BEGIN IMMEDIATE`, from its first read on).

        It may share its transaction with other writes (group commit; `work` then runs twice, the first run rolled
        back, when a write of its group fails); it returns only once that transaction is committed.
        """
        return await self._writer.submit(work, write=True)

    async def write_batched(self, batch: Batch, item: Any) -> Any:
        """As `write`, for `batch(connection, [item])[0]`, but `batch` may be called once with the items of the
        writes of the same `batch` queued next to this one: it must treat them in order, each as if it ran alone
        after the ones before it, and answer one result per item."""
        return await self._writer.submit(None, write=True, batch=batch, item=item)

    def close(self) -> None:
        """Close the connection once the calls already submitted have finished. Later calls raise StoreUnavailable.

        Synchronous (the container's resource closes it), and short: it waits only for calls already queued.
        """
        if self._writer.close():
            self._file.stop()  # after the writer: every commit has been handed over


_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _while_busy(deadline: float, step: Callable[[], T]) -> T:
    """Run `step` again while another connection holds the file, until `deadline` (monotonic).

    When several processes create one file at once, switching it to WAL or migrating it can fail "database is
    locked" at once: SQLite does not wait in its busy handler when waiting could deadlock (docs/notes/sqlite.md).
    The failed statement has let its locks go, so trying again is safe.
    """
    pause = 0.001
    while True:
        try:
            return step()
        except sqlite3.OperationalError as exc:
            if (exc.sqlite_errorcode & 0xFF) not in _BUSY or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


class _File:
    """The file as the writer thread sees it: its one connection, opened lazily, and the threads that make its
    commits durable (Syncer) and checkpoint its WAL (Checkpointer). Every method runs on the writer thread, except
    `stop`, which runs once the writer has ended."""

    def __init__(self, path: Path, *, busy_timeout_ms: int, checkpoint_every_s: float) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._checkpoint_every_s = checkpoint_every_s
        self._connection: sqlite3.Connection | None = None
        self.wal = False  # the open connection is in WAL mode (Host.wal)
        self._syncer: Syncer | None = None  # started with the connection in WAL mode
        self._checkpointer: Checkpointer | None = None  # started with the connection

    def connect(self) -> sqlite3.Connection:
        if self._connection is not None:
            return self._connection
        connection = sqlite3.connect(
            self._path,
            # Multi-row statements come in a text per row count (insert_rows), lookups per power of two (in_list).
            cached_statements=512,
            timeout=self._busy_timeout_ms / 1000,
            isolation_level=None,  # autocommit at the driver: we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # only the writer thread uses it; the check would only add a failure mode
        )
        try:
            connection.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            deadline = time.monotonic() + self._busy_timeout_ms / 1000
            # WAL lets readers (stats, CLI) run while a writer commits. When the file system cannot do WAL, SQLite
            # stays in its rollback journal, which is just as correct, only less concurrent.
            wal = _while_busy(deadline, lambda: connection.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            wal = str(wal).lower() == "wal"
            # A write is on disk before its caller is answered, because the webhook is acknowledged right after it:
            # in WAL mode the Syncer fsyncs the WAL after the commit (NORMAL: the commit itself does not);
            # in a rollback journal the commit fsyncs (FULL).
            connection.execute("PRAGMA synchronous = NORMAL" if wal else "PRAGMA synchronous = FULL")
            # Checkpoints run on their own thread (Checkpointer), never inside one of this connection's commits; an
            # emptied WAL is cut back to this size when this connection starts it over.
            connection.execute("PRAGMA wal_autocheckpoint = 0")
            connection.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
            connection.execute("PRAGMA foreign_keys = ON")
            _while_busy(deadline, lambda: migrate(connection))
            if wal:
                if self._syncer is None:
                    self._syncer = Syncer(Path(f"{self._path}-wal").absolute())
                self._syncer.sync()  # the schema, if it was just created
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        self.wal = wal
        if self._checkpointer is None:
            self._checkpointer = Checkpointer(self._path, every_s=self._checkpoint_every_s)
        return connection

    def rollback(self, connection: sqlite3.Connection) -> None:
        # After SQLITE_FULL, SQLITE_IOERR and the like SQLite may already have rolled back on its own.
        if not connection.in_transaction:
            return
        try:
            connection.execute("ROLLBACK")
        except sqlite3.Error:
            # The connection is in an unknown state: closing it discards the open transaction, and the next call
            # opens a fresh one.
            self.disconnect()

    def disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            # Nothing of ours is pending (every transaction committed or rolled back), so a failing close loses nothing.
            with contextlib.suppress(sqlite3.Error):
                connection.close()

    def committed(self, settled: list[Settled]) -> None:
        if self._syncer is not None and any(ok for _, ok, _ in settled):
            self._syncer.submit(settled)
        else:
            answer(settled)

    def between_groups(self) -> None:
        if self._checkpointer is not None and self._checkpointer.wal_is_long:
            self._finish_checkpoint(self._checkpointer)

    def stop(self) -> None:
        """Answer what the Syncer still holds, then end both threads."""
        if self._syncer is not None:
            self._syncer.stop()
        if self._checkpointer is not None:
            self._checkpointer.stop()

    def _finish_checkpoint(self, checkpointer: Checkpointer) -> None:
        """Copy what the checkpointer's rounds left, so that the next write starts the WAL over. A failure only
        leaves the WAL long for now; the next round asks again."""
        checkpointer.wal_is_long = False
        connection = self._connection
        if connection is None:
            return
        try:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("sqlite.checkpoint_failed", path=str(self._path), error=str(exc))
