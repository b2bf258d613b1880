"""SQLite adapters: the embedded default store (`GATEWAY_STORE=sqlite:///gateway.db`, CONTRACT 5).

One file holds the ledger (entries, parked records, customers' carries), the customer map and, without
`STRIPE_API_KEY`, the local ledger biller's meter events. Several processes (`gateway serve`, `gateway worker`, CLI
commands) may share the file, so:

- every write runs inside a `BEGIN IMMEDIATE` ... `COMMIT` transaction: the write lock is taken before the first
  read, so a check-then-write (is this id claimed? then claim it) can never interleave with another process's;
- a write is durable before its caller hears of it, because a webhook is acknowledged right after it: the WAL is
  fsynced after the commit, by a thread of its own (_Syncer), before the callers of that commit are answered
  (in rollback-journal mode, `synchronous=FULL` fsyncs inside the commit instead);
- group commit: writes that queue up while a commit is being written share the next transaction, each in a
  SAVEPOINT of its own, and commits that end while an fsync is under way share the next fsync, so one fsync
  acknowledges many deliveries; a write that fails is rolled back to its savepoint alone and the others commit
  (see SqliteDatabase);
- any SQLite failure (locked beyond the busy timeout, disk full, I/O error, read-only, not a database) rolls the
  transaction back and surfaces as StoreUnavailable, so a caller never sees a half-written step.

Decimals (costs, carries) are stored as TEXT, never REAL, so that every digit survives; units are INTEGER.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import structlog

from gateway.domain.errors import BillerUnavailable, StoreUnavailable
from gateway.domain.ledger import (
    REQUEUEABLE,
    Claim,
    CustomerUsage,
    Entry,
    LedgerStats,
    Parked,
    ParkReason,
    Recorded,
    State,
    entry_record,
    pending_entry,
)
from gateway.domain.ports import BatchBillingSink, BatchLedger, CustomerStore, Delivery, MeterEvent
from gateway.domain.units import ZERO, Rounding, settle

log = structlog.get_logger("gateway.sqlite")

T = TypeVar("T")
Row = Sequence[Any]

SCHEMA_VERSION = 2
DEFAULT_BUSY_TIMEOUT_MS = 5000

# Idempotent: run on every open, inside one transaction with the user_version bump.
_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS entries (
        event_id         TEXT PRIMARY KEY NOT NULL,
        event_type       TEXT NOT NULL,
        billing_customer TEXT NOT NULL,
        ringside_customer TEXT,
        cost_usd         TEXT NOT NULL,
        units            INTEGER NOT NULL,
        timestamp        INTEGER NOT NULL,
        state            TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'parked')),
        created_at       REAL NOT NULL,
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_at  REAL NOT NULL,
        last_error       TEXT,
        sent_at          REAL,
        leased_until     REAL NOT NULL DEFAULT 0
    )
    """,
    # lease_due runs every poll of every dispatcher: state + next_attempt_at find the due entries and
    # created_at finishes the ORDER BY, so the query walks the index instead of sorting the table.
    "CREATE INDEX IF NOT EXISTS entries_due ON entries (state, next_attempt_at, created_at)",
    """
    CREATE TABLE IF NOT EXISTS parked (
        key               TEXT PRIMARY KEY NOT NULL,
        reason            TEXT NOT NULL,
        message           TEXT NOT NULL,
        body              BLOB NOT NULL,
        signed_at         INTEGER NOT NULL,
        parked_at         REAL NOT NULL,
        event_type        TEXT,
        ringside_customer TEXT
    )
    """,
    "CREATE INDEX IF NOT EXISTS parked_by_time ON parked (parked_at)",
    "CREATE INDEX IF NOT EXISTS parked_by_reason ON parked (reason, parked_at)",
    """
    CREATE TABLE IF NOT EXISTS carries (
        billing_customer TEXT PRIMARY KEY NOT NULL,
        carry            TEXT NOT NULL
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS customers (
        ringside_id TEXT PRIMARY KEY NOT NULL,
        billing_id  TEXT NOT NULL
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS meter_events (
        identifier TEXT PRIMARY KEY NOT NULL,
        customer   TEXT NOT NULL,
        value      INTEGER NOT NULL,
        timestamp  INTEGER NOT NULL
    )
    """,
    # ping() writes here: a committed write is the only proof that the file can be written now.
    "CREATE TABLE IF NOT EXISTS heartbeat (id INTEGER PRIMARY KEY CHECK (id = 1), beats INTEGER NOT NULL)",
    # stats() reads the sent figures here instead of scanning every sent entry (millions, on the writer thread).
    # Every statement that moves an entry into 'sent' (mark_sent, mark_sent_many: nothing else changes a state
    # to or from 'sent', and entries are never deleted) adds to it in its own transaction; _migrate fills it from
    # one scan when a file is upgraded from schema version 1.
    """
    CREATE TABLE IF NOT EXISTS ledger_counters (
        state   TEXT PRIMARY KEY NOT NULL,
        entries INTEGER NOT NULL,
        units   INTEGER NOT NULL
    ) WITHOUT ROWID
    """,
)


# Writes committed together at most: bounds the time one group holds the write lock and its callers wait.
MAX_GROUP_COMMIT = 256
# Waiting for another process's write lock: poll this often (SQLite's own busy handler backs off to 25-100 ms
# sleeps, which a writer committing group after group never leaves a gap long enough for), and, once another
# writer has been seen, leave the lock free this long after each commit so that it gets its turn.
_BUSY_POLL_S = 0.0005
_YIELD_AFTER_COMMIT_S = 0.001


# A write that may be run together with the queued writes of the same function: it is given their items, in queue
# order, and answers one result per item, in that order (SqliteDatabase.write_batched).
Batch = Callable[[sqlite3.Connection, list[Any]], list[Any]]


# How often the checkpointer looks for new commits to copy from the WAL into the database file (see _Checkpointer).
CHECKPOINT_EVERY_S = 0.25
# WAL frames (pages) from which the writer finishes a checkpoint itself so that the WAL starts over (see
# _Checkpointer); SQLite's own automatic checkpoint runs at the same size. And how large an emptied WAL file may stay.
RESTART_AFTER_FRAMES = 1000
WAL_SIZE_LIMIT_BYTES = 32 * 1024 * 1024


class _Checkpointer:
    """Copies the WAL back into the database file on a thread and a connection of its own.

    Why: left to SQLite (wal_autocheckpoint), the checkpoint runs inside whichever COMMIT crosses 1,000 WAL pages,
    so that commit (and every delivery of its group, waiting for its acknowledgement) also waits for the pages to be
    copied and the database file to be fsynced. The writer turns automatic checkpoints off, and this thread runs a
    PASSIVE checkpoint every `every_s` when another connection has committed since the last one (`data_version`).
    PASSIVE never waits for, nor blocks, a reader or a writer: what it cannot copy yet (a reader still needs it) is
    copied by a later one, as with SQLite's own. A failure is logged and the next round tries again; durability
    does not depend on it (a committed transaction is in the fsynced WAL).

    PASSIVE rounds here never let the WAL start over while writes keep coming: SQLite reuses the WAL from its
    beginning only once a checkpoint has copied every frame in it, and the writer appends new frames while each
    round runs. Measured at ~2,800 deliveries/s: the WAL grew by ~12 MB a second (145 MB after 12 s, for a 7.7 MB
    database), every page read searched a longer WAL index, and the file took new disk blocks for every commit. So
    when a round finds RESTART_AFTER_FRAMES frames or more, it sets `wal_is_long`, and the writer, between two
    groups, runs one more PASSIVE checkpoint on its own connection (SqliteDatabase._finish_checkpoint): nothing of
    this process appends meanwhile, so it copies the few commits the round left and the next write starts the WAL
    over (its `journal_size_limit` cuts the file back to WAL_SIZE_LIMIT_BYTES). That costs the writer a moment
    (the last frames and the database file's fsync) and never holds another connection's writes or waits for a
    reader, as a RESTART checkpoint would (one here stalled writes behind a long reader for the busy timeout).
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


class _Syncer:
    """Makes the writer's commits durable on a thread of its own, then answers their callers.

    Why: with `synchronous=FULL` the writer thread fsyncs the WAL inside every COMMIT, and waits there (~0.5 ms here,
    much more on a busy disk) while the next group's writes queue up (bench: +15 to 30% requests/s without that
    wait). In WAL mode the writer commits with `synchronous=NORMAL` (the commit is written to the WAL, not
    fsynced) and hands the group's outcomes here; this thread fsyncs the WAL file,
    which makes every commit written before the fsync began durable, and only then answers their callers. Commits
    that end while an fsync is under way are covered by the next one: one fsync for all of them. The guarantee is
    FULL's: no caller hears of a write before it is on disk. A write's effects are visible to the next transaction
    before that fsync (as they are to other processes with FULL, between the WAL write and the fsync); a power loss
    then loses the write, whose caller was never answered (Ringside redelivers it), and anything a later
    transaction derived from it, which is answered after a later fsync that would have failed the same way.
    If the fsync fails, the group's writes fail with StoreUnavailable (the caller retries; a redelivery of a write
    that did reach the disk is then a duplicate, as it must be).
    """

    def __init__(self, wal_path: Path) -> None:
        self._wal_path = wal_path
        self._fd: int | None = None
        self._pending: list[list[_Settled]] = []
        self._changed = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="gateway-sqlite-sync", daemon=True)
        self._thread.start()

    def submit(self, settled: list[_Settled]) -> None:
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
                _answer(group)

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


@dataclass(slots=True)
class _Job:
    """One call waiting for the writer thread; `future` belongs to `loop` and is settled only through it. A batched
    write has its `batch` function and `item` instead of `work`."""

    work: Callable[[sqlite3.Connection], Any] | None
    write: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    batch: Batch | None = None
    item: Any = None


# (job, succeeded, result or exception)
_Settled = tuple[_Job, bool, Any]


class SqliteDatabase:
    """One SQLite file, one connection, one thread, group commit.

    Invariants:
    - The connection is created, used and closed only on the single worker thread of `_executor`; calls are run in
      submission order and the event loop never blocks on disk.
    - No caller of a write is answered before its commit is durable: in WAL mode the commit is fsynced by the
      _Syncer thread (one fsync for every commit that ended meanwhile) while the writer goes on with the next group.
    - Every call is atomic: it takes effect whole or not at all, and its SQLite errors arrive as StoreUnavailable.
    - Group commit: consecutive writes waiting in the queue when the thread turns to them (at most
      MAX_GROUP_COMMIT) run in one `BEGIN IMMEDIATE` transaction, each inside its own SAVEPOINT. A write that raises
      is rolled back to its savepoint, alone, and its caller gets the error; the others stay in the transaction.
      No caller is answered before the COMMIT that made its write durable (and its fsync); if that COMMIT fails,
      every write of the group fails with StoreUnavailable and none took effect. Nothing waits for a group to fill:
      a group is whatever arrived while the previous commit was being written, so an idle store commits a lone
      write at once.
    - Batched writes (`write_batched`): consecutive writes of one batch function in a group run as one call of it,
      in one savepoint, so that a group of ledger records costs a few statements rather than a few per record. If
      that call raises, its savepoint is undone and each of its writes runs again alone, in a savepoint of its own,
      so that only the write that fails fails, as for any other write.
    - A read runs alone in a deferred transaction (a snapshot, no write lock), in its place in the queue, so it sees
      exactly the writes submitted before it, all committed.
    - Checkpoints (copying the WAL into the database file) run on a thread and a connection of their own
      (_Checkpointer), never inside a commit of this one; when the WAL has grown long, the writer finishes one
      between two groups so that the WAL starts over (_finish_checkpoint).
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
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._checkpoint_every_s = checkpoint_every_s
        self._checkpointer: _Checkpointer | None = None  # started with the connection, on the executor thread
        self._syncer: _Syncer | None = None  # started with the connection in WAL mode, on the executor thread
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-sqlite")
        self._connection: sqlite3.Connection | None = None  # touched on the executor thread only
        self._closed = False
        # The queue of calls; `_draining` is True while a `_drain` is submitted or running, which then owns the queue.
        self._lock = threading.Lock()
        self._jobs: deque[_Job] = deque()
        self._draining = False
        self._contended = False  # the last write transaction had to wait for another process: writer thread only

    @classmethod
    def from_url(cls, url: str, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> SqliteDatabase:
        """`sqlite:///relative.db` or `sqlite:////absolute/path.db`, as in SQLAlchemy URLs (CONTRACT 5)."""
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
        return await self._submit(work, write=False)

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` atomically under the file's write lock (`BEGIN IMMEDIATE`, from its first read on).

        It may share its transaction with other writes (group commit, inside a savepoint of its own); it returns
        only once that transaction is committed.
        """
        return await self._submit(work, write=True)

    async def write_batched(self, batch: Batch, item: Any) -> Any:
        """As `write`, for `batch(connection, [item])[0]`, but `batch` may be called once with the items of the
        writes of the same `batch` queued next to this one: it must treat them in order, each as if it ran alone
        after the ones before it, and answer one result per item."""
        return await self._submit(None, write=True, batch=batch, item=item)

    def close(self) -> None:
        """Close the connection once the calls already submitted have finished. Later calls raise StoreUnavailable.

        Synchronous (the container's resource closes it), and short: it waits only for calls already queued.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        # The executor runs in order: a drain already submitted finishes the queue before the connection closes.
        try:
            self._executor.submit(self._disconnect)
        except RuntimeError:
            # The executor is already shut down (the interpreter is exiting): no call runs any more, so the
            # connection can be closed from here.
            self._disconnect()
        self._executor.shutdown(wait=True)
        if self._syncer is not None:
            self._syncer.stop()  # after the executor: every commit has been handed over
        if self._checkpointer is not None:
            self._checkpointer.stop()

    async def _submit(
        self,
        work: Callable[[sqlite3.Connection], T] | None,
        *,
        write: bool,
        batch: Batch | None = None,
        item: Any = None,
    ) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._closed:
                raise StoreUnavailable("the SQLite store is closed")
            self._jobs.append(_Job(work, write, loop, future, batch, item))
            start = not self._draining
            self._draining = True
        if start:
            self._executor.submit(self._drain)
        return await future

    def _drain(self) -> None:
        """On the executor thread: run the queue, a group at a time, until it is empty."""
        while True:
            with self._lock:
                if not self._jobs:
                    self._draining = False
                    return
                first = self._jobs.popleft()
                group = [first]
                if first.write:
                    while self._jobs and self._jobs[0].write and len(group) < MAX_GROUP_COMMIT:
                        group.append(self._jobs.popleft())
            try:
                settled = self._run_writes(group) if first.write else [self._run_read(first)]
            except BaseException as exc:  # never leave a caller waiting, whatever happened
                settled = [(job, False, exc) for job in group]
            if first.write and self._syncer is not None and any(ok for _, ok, _ in settled):
                self._syncer.submit(settled)
            else:
                _answer(settled)
            if self._checkpointer is not None and self._checkpointer.wal_is_long:
                self._finish_checkpoint(self._checkpointer)
            if first.write and self._contended:
                # Another process writes to this file too: without a pause, group after group would keep the lock.
                time.sleep(_YIELD_AFTER_COMMIT_S)

    def _finish_checkpoint(self, checkpointer: _Checkpointer) -> None:
        """Between two groups: copy what the checkpointer's rounds left, so that the next write starts the WAL over
        (see _Checkpointer). A failure only leaves the WAL long for now; the next round asks again."""
        checkpointer.wal_is_long = False
        connection = self._connection
        if connection is None:
            return
        try:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("sqlite.checkpoint_failed", path=str(self.path), error=str(exc))

    def _run_read(self, job: _Job) -> _Settled:
        try:
            connection = self._connect()
            connection.execute("BEGIN")
            try:
                result = _perform(connection, [job])[0]
                connection.execute("COMMIT")
            except BaseException:
                self._rollback(connection)
                raise
        except Exception as exc:
            return job, False, _translated(exc)
        return job, True, result

    def _run_writes(self, group: list[_Job]) -> list[_Settled]:
        """One transaction for the group, a savepoint per job; every job's outcome, known only after COMMIT."""
        if not group:
            return []
        try:
            connection = self._connect()
            self._contended = self._begin_immediate(connection)
        except Exception as exc:
            return [(job, False, _translated(exc)) for job in group]
        done: list[_Settled] = []
        units = _units(group)
        while units:
            jobs = units.popleft()
            try:
                connection.execute("SAVEPOINT job")
                results = _perform(connection, jobs)
                connection.execute("RELEASE job")
                done.extend((job, True, result) for job, result in zip(jobs, results, strict=True))
                continue
            except Exception as exc:
                failure = _translated(exc)
                if connection.in_transaction and self._undo_savepoint(connection):
                    if len(jobs) > 1:
                        # One of the batch's writes failed it: each runs again alone, so that only that one fails.
                        units.extendleft([job] for job in reversed(jobs))
                    else:
                        done.append((jobs[0], False, failure))
                    continue
            # SQLite ended the whole transaction itself (SQLITE_FULL, SQLITE_IOERR...) or the savepoint could not be
            # undone: the earlier jobs' work is gone with it. They fail too; the rest start a new transaction.
            self._rollback(connection)
            lost = StoreUnavailable(f"the SQLite store failed: {failure}")
            undone: list[_Settled] = [(earlier, False, lost if ok else value) for earlier, ok, value in done]
            rest = [job for unit in units for job in unit]
            return [*undone, *((job, False, failure) for job in jobs), *self._run_writes(rest)]
        try:
            connection.execute("COMMIT")
        except Exception as exc:
            self._rollback(connection)
            failure = _translated(exc)
            return [(job, False, failure if ok else value) for job, ok, value in done]
        return done

    def _begin_immediate(self, connection: sqlite3.Connection) -> bool:
        """Take the file's write lock, waiting up to the busy timeout; True when another process held it meanwhile.

        Polls every _BUSY_POLL_S with SQLite's own busy timeout off, rather than leaving the wait to SQLite: its
        handler sleeps longer and longer (up to 100 ms), and another process that commits group after group leaves
        gaps far shorter than that, so a second `gateway serve --workers` process, a `gateway worker` or a CLI
        command used to wait out the whole timeout and fail ("database is locked": bench/run.py, two workers).
        """
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        waited = False
        connection.execute("PRAGMA busy_timeout = 0")
        try:
            while True:
                try:
                    connection.execute("BEGIN IMMEDIATE")
                    return waited
                except sqlite3.OperationalError as exc:
                    if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                        raise
                waited = True
                time.sleep(_BUSY_POLL_S)
        finally:
            connection.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")

    def _undo_savepoint(self, connection: sqlite3.Connection) -> bool:
        try:
            connection.execute("ROLLBACK TO job")
            connection.execute("RELEASE job")
        except sqlite3.Error:
            return False
        return True

    def _connect(self) -> sqlite3.Connection:
        if self._connection is not None:
            return self._connection
        connection = sqlite3.connect(
            self.path,
            # Multi-row statements come in a text per row count (_insert_rows), lookups per power of two (_in_list).
            cached_statements=512,
            timeout=self._busy_timeout_ms / 1000,
            isolation_level=None,  # autocommit at the driver: we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # only the executor thread uses it; the check would only add a failure mode
        )
        try:
            connection.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            # WAL lets readers (stats, CLI) run while a writer commits. When the file system cannot do WAL, SQLite
            # stays in its rollback journal, which is just as correct, only less concurrent.
            wal = str(connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower() == "wal"
            # A write is on disk before its caller is answered, because the webhook is acknowledged right after it:
            # in WAL mode the _Syncer fsyncs the WAL after the commit (NORMAL: the commit itself does not);
            # in a rollback journal the commit fsyncs (FULL).
            connection.execute("PRAGMA synchronous = NORMAL" if wal else "PRAGMA synchronous = FULL")
            # Checkpoints run on their own thread (_Checkpointer), never inside one of this connection's commits; an
            # emptied WAL is cut back to this size when this connection starts it over.
            connection.execute("PRAGMA wal_autocheckpoint = 0")
            connection.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
            connection.execute("PRAGMA foreign_keys = ON")
            _migrate(connection)
            if wal:
                if self._syncer is None:
                    self._syncer = _Syncer(Path(f"{self.path}-wal").absolute())
                self._syncer.sync()  # the schema, if it was just created
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        if self._checkpointer is None:
            self._checkpointer = _Checkpointer(self.path, every_s=self._checkpoint_every_s)
        return connection

    def _rollback(self, connection: sqlite3.Connection) -> None:
        # After SQLITE_FULL, SQLITE_IOERR and the like SQLite may already have rolled back on its own.
        if not connection.in_transaction:
            return
        try:
            connection.execute("ROLLBACK")
        except sqlite3.Error:
            # The connection is in an unknown state: closing it discards the open transaction, and the next call
            # opens a fresh one.
            self._disconnect()

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            # Nothing of ours is pending (every transaction committed or rolled back), so a failing close loses nothing.
            with contextlib.suppress(sqlite3.Error):
                connection.close()


def _units(group: list[_Job]) -> deque[list[_Job]]:
    """The group's writes as they run, in order: each alone, but consecutive writes of one batch function together."""
    units: deque[list[_Job]] = deque()
    for job in group:
        if job.batch is not None and units and units[-1][-1].batch is job.batch:
            units[-1].append(job)
        else:
            units.append([job])
    return units


def _perform(connection: sqlite3.Connection, jobs: list[_Job]) -> list[Any]:
    """Run one unit: a lone job's work, or one call of a batch function over its jobs' items (one result each)."""
    batch = jobs[0].batch
    if batch is None:
        work = jobs[0].work
        assert work is not None  # a job has a batch function or its own work
        return [work(connection)]
    results = batch(connection, [job.item for job in jobs])
    if len(results) != len(jobs):
        raise RuntimeError(f"a batch of {len(jobs)} writes answered {len(results)} results")
    return results


def _translated(exc: Exception) -> Exception:
    """SQLite's errors become StoreUnavailable (the port's error); the caller's own errors pass through as they are."""
    if isinstance(exc, sqlite3.Error):
        translated = StoreUnavailable(f"the SQLite store failed: {exc}")
        translated.__cause__ = exc
        return translated
    return exc


def _answer(settled: list[_Settled]) -> None:
    """Hand each outcome to its caller's event loop: one wake-up per loop, not one per job."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Settled]] = {}
    for item in settled:
        by_loop.setdefault(item[0].loop, []).append(item)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, items)


def _settle(items: list[_Settled]) -> None:
    """On the caller's loop. A caller that was cancelled meanwhile is skipped (its write stands, as before)."""
    for job, ok, value in items:
        if job.future.done():
            continue
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)


def _migrate(connection: sqlite3.Connection) -> None:
    """Create the schema if needed; refuse a file written by a newer gateway rather than misread it."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = int(connection.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"the SQLite store has schema version {version}; this gateway understands up to {SCHEMA_VERSION}"
            )
        for statement in _SCHEMA:
            connection.execute(statement)
        connection.execute("INSERT INTO heartbeat (id, beats) VALUES (1, 0) ON CONFLICT (id) DO NOTHING")
        counted = connection.execute("SELECT 1 FROM ledger_counters WHERE state = 'sent'").fetchone() is not None
        if version < 2 or not counted:
            # Before version 2 nothing kept the counters: count the sent entries once, under this write lock.
            connection.execute(
                "INSERT OR REPLACE INTO ledger_counters (state, entries, units)"
                " SELECT 'sent', COUNT(*), COALESCE(SUM(units), 0) FROM entries WHERE state = 'sent'"
            )
        if version < SCHEMA_VERSION:
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


# -- Ledger -----------------------------------------------------------------------------------------------------


def _count_sent(connection: sqlite3.Connection, units: list[Row]) -> None:
    """Add the entries just moved into 'sent' (their `units`, one row each) to the counters stats() reads."""
    if units:
        connection.execute(
            "UPDATE ledger_counters SET entries = entries + ?, units = units + ? WHERE state = 'sent'",
            (len(units), sum(int(row[0]) for row in units)),
        )


_ENTRY_COLUMNS = (
    "event_id, event_type, billing_customer, ringside_customer, cost_usd, units, timestamp, state, created_at,"
    " attempts, next_attempt_at, last_error, sent_at"
)
_PARKED_COLUMNS = "key, reason, message, body, signed_at, parked_at, event_type, ringside_customer"


def _entry(row: Row) -> Entry:
    return Entry(
        event_id=str(row[0]),
        event_type=str(row[1]),
        billing_customer=str(row[2]),
        ringside_customer=row[3],
        cost_usd=Decimal(row[4]),
        units=int(row[5]),
        timestamp=int(row[6]),
        state=State(row[7]),
        created_at=float(row[8]),
        attempts=int(row[9]),
        next_attempt_at=float(row[10]),
        last_error=row[11],
        sent_at=None if row[12] is None else float(row[12]),
    )


def _parked(row: Row) -> Parked:
    return Parked(
        key=str(row[0]),
        reason=ParkReason(row[1]),
        message=str(row[2]),
        body=bytes(row[3]),
        signed_at=int(row[4]),
        parked_at=float(row[5]),
        event_type=row[6],
        ringside_customer=row[7],
    )


def _park_row(parked: Parked) -> tuple[object, ...]:
    return (
        parked.key,
        parked.reason.value,
        parked.message,
        bytes(parked.body),
        parked.signed_at,
        parked.parked_at,
        parked.event_type,
        parked.ringside_customer,
    )


def _select_entry(connection: sqlite3.Connection, event_id: str) -> Entry | None:
    row = connection.execute(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE event_id = ?", (event_id,)).fetchone()
    return None if row is None else _entry(row)


def _is_parked(connection: sqlite3.Connection, key: str) -> bool:
    return connection.execute("SELECT 1 FROM parked WHERE key = ?", (key,)).fetchone() is not None


# Lookups by a set of keys bind one parameter per key. The number of keys is rounded up to a power of two (the
# first key repeated), so that a handful of statement texts stay in the connection's statement cache.
def _in_list(keys: Sequence[str]) -> tuple[str, list[str]]:
    size = 1 << max(0, len(keys) - 1).bit_length()
    return ", ".join("?" * size), [*keys, *[keys[0]] * (size - len(keys))]


# One record() call: the claim, its rounding rule, the time, and the parked key it replaces (a replay) or None.
_Record = tuple[Claim, Rounding, float, str | None]


def _record_many(connection: sqlite3.Connection, items: list[_Record]) -> list[Recorded]:
    """SqliteLedger.record for several claims in one go: three lookups and a few writes for the lot, each claim
    treated in order as if recorded alone after the ones before it (a second claim of an id is a duplicate of the
    first; a customer's carry goes from one claim to the next; a replay takes the place of the parked record it
    replaces, which is deleted)."""
    marks, ids = _in_list([claim.event_id for claim, _, _, _ in items])
    entries: dict[str, Entry] = {
        str(row[0]): _entry(row)
        for row in connection.execute(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE event_id IN ({marks})", ids)
    }
    parked = {str(row[0]) for row in connection.execute(f"SELECT key FROM parked WHERE key IN ({marks})", ids)}
    marks, customers = _in_list(list({claim.billing_customer for claim, _, _, _ in items}))
    carries = {
        str(row[0]): Decimal(row[1])
        for row in connection.execute(
            f"SELECT billing_customer, carry FROM carries WHERE billing_customer IN ({marks})", customers
        )
    }
    recorded: list[Recorded] = []
    rows: list[tuple[object, ...]] = []
    replaced: list[str] = []
    for claim, rounding, now, replaces in items:
        if claim.event_id in entries:
            recorded.append(Recorded(created=False, entry=entries[claim.event_id]))
            continue
        if claim.event_id in parked and claim.event_id != replaces:
            recorded.append(Recorded(created=False, entry=None))
            continue
        units, carries[claim.billing_customer] = settle(
            claim.exact_units, carries.get(claim.billing_customer, ZERO), rounding
        )
        entry = pending_entry(claim, units, now)
        entries[claim.event_id] = entry
        rows.append(_entry_row(entry))
        recorded.append(Recorded(created=True, entry=entry))
        if replaces is not None:
            replaced.append(replaces)
            parked.discard(replaces)
    _insert_rows(connection, f"INSERT INTO entries ({_ENTRY_COLUMNS}) VALUES {{rows}}", rows)
    settled = list(dict.fromkeys(str(row[2]) for row in rows))
    _insert_rows(
        connection,
        "INSERT INTO carries (billing_customer, carry) VALUES {rows}"
        " ON CONFLICT (billing_customer) DO UPDATE SET carry = excluded.carry",
        [(customer, str(carries[customer])) for customer in settled],
    )
    if replaced:
        marks, keys = _in_list(replaced)
        connection.execute(f"DELETE FROM parked WHERE key IN ({marks})", keys)
    return recorded


# Rows per multi-row INSERT: one statement step for them all. executemany steps once per row, and each step lets
# go of the GIL and takes it back, which costs a thread switch whenever the event loop is waiting for it.
_ROWS_PER_INSERT = 64


def _insert_rows(connection: sqlite3.Connection, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
    """`sql` with `{rows}` standing for the VALUES list, run over `rows` in multi-row statements."""
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        row = f"({', '.join('?' * len(chunk[0]))})"
        connection.execute(sql.format(rows=", ".join([row] * len(chunk))), [value for r in chunk for value in r])


def _entry_row(entry: Entry) -> tuple[object, ...]:
    return (
        entry.event_id,
        entry.event_type,
        entry.billing_customer,
        entry.ringside_customer,
        str(entry.cost_usd),
        entry.units,
        entry.timestamp,
        entry.state.value,
        entry.created_at,
        entry.attempts,
        entry.next_attempt_at,
        entry.last_error,
        entry.sent_at,
    )


class SqliteLedger(BatchLedger):
    """The ledger in SQLite, with MemoryLedger's semantics.

    Invariants: an id is claimed by at most one entry or one parked record (a biller-rejected entry keeps its entry
    and gains a parked record of the same key); every method is one transaction; a lease is `leased_until` on the
    entry, so leases are shared by every process using the file.
    """

    def __init__(self, database: SqliteDatabase) -> None:
        self._db = database

    async def record(self, claim: Claim, rounding: Rounding, now: float, *, replaces: str | None = None) -> Recorded:
        # Batched with the other records queued with it (_record_many), replays included.
        recorded: Recorded = await self._db.write_batched(_record_many, (claim, rounding, now, replaces))
        return recorded

    async def park(self, parked: Parked) -> bool:
        def work(connection: sqlite3.Connection) -> bool:
            claimed = connection.execute("SELECT 1 FROM entries WHERE event_id = ?", (parked.key,)).fetchone()
            if claimed is not None or _is_parked(connection, parked.key):
                return False
            connection.execute(
                f"INSERT INTO parked ({_PARKED_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _park_row(parked)
            )
            return True

        return await self._db.write(work)

    async def lease_due(self, now: float, limit: int, lease_s: float) -> list[Entry]:
        if limit <= 0:
            return []

        def work(connection: sqlite3.Connection) -> list[Entry]:
            # One statement: the subquery walks entries_due; the write lock (BEGIN IMMEDIATE) means no other
            # process can lease the same rows between the choice and the update.
            rows = connection.execute(
                f"""
                UPDATE entries SET leased_until = :until
                WHERE rowid IN (
                    SELECT rowid FROM entries
                    WHERE state = 'pending' AND next_attempt_at <= :now AND leased_until <= :now
                    ORDER BY next_attempt_at, created_at, rowid
                    LIMIT :limit
                )
                RETURNING rowid, {_ENTRY_COLUMNS}
                """,
                {"until": now + lease_s, "now": now, "limit": limit},
            ).fetchall()
            # RETURNING gives no order guarantee: restore the subquery's.
            rows.sort(key=lambda row: (row[11], row[9], row[0]))
            return [_entry(row[1:]) for row in rows]

        return await self._db.write(work)

    async def release(self, event_ids: list[str]) -> None:
        if not event_ids:
            return

        def work(connection: sqlite3.Connection) -> None:
            connection.executemany(
                "UPDATE entries SET leased_until = 0 WHERE event_id = ?", [(event_id,) for event_id in event_ids]
            )

        await self._db.write(work)

    async def mark_sent(self, event_id: str, now: float) -> None:
        def work(connection: sqlite3.Connection) -> None:
            rows = connection.execute(
                "UPDATE entries SET state = 'sent', sent_at = ?, leased_until = 0"
                " WHERE event_id = ? AND state = 'pending' RETURNING units",
                (now, event_id),
            ).fetchall()
            _count_sent(connection, rows)

        await self._db.write(work)

    async def mark_sent_many(self, event_ids: Sequence[str], now: float) -> None:
        if not event_ids:
            return
        ids = json.dumps(list(event_ids))

        def work(connection: sqlite3.Connection) -> None:
            # One statement for the whole batch; a repeated id is one row. `+state` keeps the planner on the primary
            # key: with a bare `state = 'pending'` it walks every pending entry through entries_due instead.
            rows = connection.execute(
                "UPDATE entries SET state = 'sent', sent_at = ?, leased_until = 0"
                " WHERE event_id IN (SELECT value FROM json_each(?)) AND +state = 'pending' RETURNING units",
                (now, ids),
            ).fetchall()
            _count_sent(connection, rows)

        await self._db.write(work)

    async def mark_retry(self, event_id: str, next_attempt_at: float, error: str) -> None:
        await self._db.write(
            lambda connection: connection.execute(
                "UPDATE entries SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, leased_until = 0"
                " WHERE event_id = ? AND state = 'pending'",
                (next_attempt_at, error, event_id),
            )
        )

    async def mark_rejected(self, event_id: str, message: str, now: float) -> None:
        await self._park_entry(event_id, ParkReason.BILLER_REJECTED, message, now)

    async def mark_too_old(self, event_id: str, message: str, now: float) -> None:
        await self._park_entry(event_id, ParkReason.TOO_OLD, message, now)

    async def _park_entry(self, event_id: str, reason: ParkReason, message: str, now: float) -> None:
        def work(connection: sqlite3.Connection) -> None:
            row = connection.execute(
                "UPDATE entries SET state = 'parked', last_error = ?, leased_until = 0"
                f" WHERE event_id = ? AND state = 'pending' RETURNING {_ENTRY_COLUMNS}",
                (message, event_id),
            ).fetchone()
            if row is None:
                return
            # REPLACE, as MemoryLedger overwrites: a rejection must always be recordable, never stuck on a conflict.
            connection.execute(
                f"INSERT OR REPLACE INTO parked ({_PARKED_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                _park_row(entry_record(_entry(row), reason, message, now)),
            )

        await self._db.write(work)

    async def requeue(
        self, event_id: str, now: float, *, billing_customer: str | None = None, timestamp: int | None = None
    ) -> Entry | None:
        def work(connection: sqlite3.Connection) -> Entry | None:
            # The parked record is checked inside the write lock, so two replays cannot both requeue the entry.
            record = connection.execute("SELECT reason FROM parked WHERE key = ?", (event_id,)).fetchone()
            if record is None or ParkReason(record[0]) not in REQUEUEABLE:
                return None
            row = connection.execute(
                "UPDATE entries SET state = 'pending', billing_customer = COALESCE(?, billing_customer),"
                " attempts = 0, next_attempt_at = ?, leased_until = 0, timestamp = COALESCE(?, timestamp)"
                f" WHERE event_id = ? AND state = 'parked' RETURNING {_ENTRY_COLUMNS}",
                (billing_customer or None, now, timestamp, event_id),
            ).fetchone()
            if row is None:
                return None
            connection.execute("DELETE FROM parked WHERE key = ?", (event_id,))
            return _entry(row)

        return await self._db.write(work)

    async def get(self, event_id: str) -> Entry | None:
        return await self._db.read(lambda connection: _select_entry(connection, event_id))

    async def get_parked(self, key: str) -> Parked | None:
        def work(connection: sqlite3.Connection) -> Parked | None:
            row = connection.execute(f"SELECT {_PARKED_COLUMNS} FROM parked WHERE key = ?", (key,)).fetchone()
            return None if row is None else _parked(row)

        return await self._db.read(work)

    async def list_parked(self, reason: ParkReason | None = None, limit: int = 100) -> list[Parked]:
        if limit <= 0:
            return []

        def work(connection: sqlite3.Connection) -> list[Parked]:
            rows = connection.execute(
                f"SELECT {_PARKED_COLUMNS} FROM parked WHERE (:reason IS NULL OR reason = :reason)"
                " ORDER BY parked_at, rowid LIMIT :limit",
                {"reason": None if reason is None else reason.value, "limit": limit},
            ).fetchall()
            return [_parked(row) for row in rows]

        return await self._db.read(work)

    async def stats(self) -> LedgerStats:
        def work(connection: sqlite3.Connection) -> LedgerStats:
            # Never a scan of the sent entries: pending rows come through entries_due (pending is small in steady
            # state), the sent figures from ledger_counters, parked from its own small table.
            pending = connection.execute(
                "SELECT COUNT(*), COALESCE(SUM(units), 0), MIN(created_at) FROM entries WHERE state = 'pending'"
            ).fetchone()
            sent = connection.execute("SELECT entries, units FROM ledger_counters WHERE state = 'sent'").fetchone()
            if sent is None:
                raise StoreUnavailable("the SQLite store has no ledger counters; reopen it to repair the schema")
            parked = int(connection.execute("SELECT COUNT(*) FROM parked").fetchone()[0])
            return LedgerStats(
                pending=int(pending[0]),
                sent=int(sent[0]),
                parked=parked,
                oldest_pending_at=None if pending[2] is None else float(pending[2]),
                units_sent=int(sent[1]),
                units_pending=int(pending[1]),
            )

        return await self._db.read(work)

    async def usage(self, since: int | None = None, until: int | None = None) -> list[CustomerUsage]:
        def work(connection: sqlite3.Connection) -> list[CustomerUsage]:
            rows = connection.execute(
                "SELECT billing_customer, COUNT(*),"
                " COALESCE(SUM(CASE WHEN state = 'sent' THEN units END), 0),"
                " COALESCE(SUM(CASE WHEN state = 'pending' THEN units END), 0)"
                " FROM entries WHERE state IN ('pending', 'sent')"
                " AND (:since IS NULL OR timestamp >= :since) AND (:until IS NULL OR timestamp < :until)"
                " GROUP BY billing_customer ORDER BY billing_customer",
                {"since": since, "until": until},
            ).fetchall()
            return [
                CustomerUsage(str(r[0]), events=int(r[1]), units_sent=int(r[2]), units_pending=int(r[3])) for r in rows
            ]

        return await self._db.read(work)

    async def ping(self) -> None:
        # A committed write: only that proves the file is writable (not read-only, not full, not locked for long).
        await self._db.write(lambda connection: connection.execute("UPDATE heartbeat SET beats = beats + 1"))


# -- Customers --------------------------------------------------------------------------------------------------


class SqliteCustomers(CustomerStore):
    """Ringside customer id -> Stripe customer id, in the same file as the ledger."""

    def __init__(self, database: SqliteDatabase) -> None:
        self._db = database

    async def get(self, ringside_id: str) -> str | None:
        def work(connection: sqlite3.Connection) -> str | None:
            row = connection.execute(
                "SELECT billing_id FROM customers WHERE ringside_id = ?", (ringside_id,)
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._db.read(work)

    async def set(self, ringside_id: str, billing_id: str) -> None:
        await self._db.write(
            lambda connection: connection.execute(
                "INSERT INTO customers (ringside_id, billing_id) VALUES (?, ?)"
                " ON CONFLICT (ringside_id) DO UPDATE SET billing_id = excluded.billing_id",
                (ringside_id, billing_id),
            )
        )

    async def set_many(self, pairs: Sequence[tuple[str, str]]) -> None:
        rows = [(str(ringside_id), str(billing_id)) for ringside_id, billing_id in pairs]
        if not rows:
            return
        # One transaction: a failure anywhere (disk full, locked) rolls back every row, so an import is never half done.
        await self._db.write(
            lambda connection: connection.executemany(
                "INSERT INTO customers (ringside_id, billing_id) VALUES (?, ?)"
                " ON CONFLICT (ringside_id) DO UPDATE SET billing_id = excluded.billing_id",
                rows,
            )
        )

    async def delete(self, ringside_id: str) -> bool:
        def work(connection: sqlite3.Connection) -> bool:
            return connection.execute("DELETE FROM customers WHERE ringside_id = ?", (ringside_id,)).rowcount > 0

        return await self._db.write(work)

    async def list(self, limit: int = 1000) -> list[tuple[str, str]]:
        if limit <= 0:
            return []

        def work(connection: sqlite3.Connection) -> list[tuple[str, str]]:
            rows = connection.execute(
                "SELECT ringside_id, billing_id FROM customers ORDER BY ringside_id LIMIT ?", (limit,)
            ).fetchall()
            return [(str(row[0]), str(row[1])) for row in rows]

        return await self._db.read(work)


# -- The local ledger biller ------------------------------------------------------------------------------------


class SqliteBiller(BatchBillingSink):
    """The local ledger biller: records meter events in the store's file instead of sending them (CONTRACT 5).

    Invariant: one row per identifier (its PRIMARY KEY), like Stripe's de-duplication of `identifier`; a second
    send of an identifier returns ALREADY_SENT and keeps the first event. A store failure is a transient biller
    failure (BillerUnavailable), so the dispatcher retries the entry rather than parking it. It takes batches like
    Stripe's v2 stream (up to `max_batch` events in one transaction), so that it costs the dispatcher one write per
    batch rather than one per event.
    """

    name = "ledger"
    max_batch = 100

    def __init__(self, database: SqliteDatabase) -> None:
        self._db = database

    async def send(self, event: MeterEvent) -> Delivery:
        return (await self.send_batch([event]))[0]

    async def send_batch(self, events: Sequence[MeterEvent]) -> list[Delivery]:
        """Record every event in one transaction; SENT or ALREADY_SENT for each, in order, or nothing at all."""

        def work(connection: sqlite3.Connection) -> list[Delivery]:
            # One lookup and one executemany for the batch: the identifiers already known are ALREADY_SENT, the
            # others are new (the write lock is held from the lookup on); a repeated identifier counts once.
            marks, identifiers = _in_list([event.identifier for event in events])
            known = {
                str(row[0])
                for row in connection.execute(
                    f"SELECT identifier FROM meter_events WHERE identifier IN ({marks})", identifiers
                )
            }
            outcomes = []
            rows = []
            for event in events:
                if event.identifier in known:
                    outcomes.append(Delivery.ALREADY_SENT)
                    continue
                known.add(event.identifier)
                rows.append((event.identifier, event.customer, event.value, event.timestamp))
                outcomes.append(Delivery.SENT)
            _insert_rows(
                connection, "INSERT INTO meter_events (identifier, customer, value, timestamp) VALUES {rows}", rows
            )
            return outcomes

        try:
            return await self._db.write(work)
        except StoreUnavailable as exc:
            raise BillerUnavailable(exc.message, cause="store_unavailable") from exc

    async def events(self) -> list[MeterEvent]:
        """Every recorded meter event, in the order they were first sent."""

        def work(connection: sqlite3.Connection) -> list[MeterEvent]:
            rows = connection.execute(
                "SELECT identifier, customer, value, timestamp FROM meter_events ORDER BY rowid"
            ).fetchall()
            return [MeterEvent(identifier=r[0], customer=r[1], value=int(r[2]), timestamp=int(r[3])) for r in rows]

        return await self._db.read(work)

    async def close(self) -> None:
        # The database belongs to whoever opened it (the container's resource), and the ledger shares it.
        return None
