"""The group-commit engine: one thread runs the queued calls in order, consecutive writes in one transaction."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from gateway.adapters.sqlite.jobs import Batch, Job, Settled, answer
from gateway.domain.errors import StoreUnavailable

T = TypeVar("T")

# Writes committed together at most: bounds the time one group holds the write lock and its callers wait.
MAX_GROUP_COMMIT = 256
# Waiting for another process's write lock: poll this often (SQLite's own busy handler backs off to 25-100 ms
# sleeps, which a writer committing group after group never leaves a gap long enough for), and, once another
# writer has been seen, leave the lock free this long after each commit so that it gets its turn.
_BUSY_POLL_S = 0.0005
_YIELD_AFTER_COMMIT_S = 0.001


class Host(Protocol):
    """What the writer needs of the database, all called on the writer thread."""

    # The open connection is in WAL mode: a write transaction, once begun, never waits for another connection.
    wal: bool

    def connect(self) -> sqlite3.Connection:
        """The open connection, opened now if it is not."""

    def rollback(self, connection: sqlite3.Connection) -> None:
        """Roll the open transaction back, or drop a connection left in an unknown state."""

    def disconnect(self) -> None:
        """Close the connection, if it is open."""

    def committed(self, settled: list[Settled]) -> None:
        """Answer a write group's callers once its commit is durable."""

    def between_groups(self) -> None:
        """Housekeeping that must not run inside a group's transaction."""


class Writer:
    """One thread, one queue; the group commit of SqliteDatabase (whose docstring states the invariants).

    A group is whatever arrived while the previous one ran: consecutive writes (at most MAX_GROUP_COMMIT) share one
    `BEGIN IMMEDIATE` transaction, each in a SAVEPOINT of its own, so that a write that fails is undone alone. A read
    runs alone, in its place in the queue, in a deferred transaction.
    """

    def __init__(self, host: Host, *, busy_timeout_ms: int) -> None:
        self._host = host
        self._busy_timeout_ms = busy_timeout_ms
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-sqlite")
        self._closed = False
        # The queue of calls; `_draining` is True while a `_drain` is submitted or running, which then owns the queue.
        self._lock = threading.Lock()
        self._jobs: deque[Job] = deque()
        self._draining = False
        self._contended = False  # the last write transaction had to wait for another process: writer thread only
        # The connection whose busy timeout is left at 0 between write groups (WAL mode): writer thread only.
        self._busy_off: sqlite3.Connection | None = None

    async def submit(
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
            self._jobs.append(Job(work, write, loop, future, batch, item))
            start = not self._draining
            self._draining = True
        if start:
            self._executor.submit(self._drain)
        return await future

    def close(self) -> bool:
        """Disconnect once the calls already submitted have finished, and end the thread; False if already closed."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
        # The executor runs in order: a drain already submitted finishes the queue before the connection closes.
        try:
            self._executor.submit(self._host.disconnect)
        except RuntimeError:
            # The executor is already shut down (the interpreter is exiting): no call runs any more, so the
            # connection can be closed from here.
            self._host.disconnect()
        self._executor.shutdown(wait=True)
        return True

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
            if first.write:
                self._host.committed(settled)
            else:
                answer(settled)
            self._host.between_groups()
            if first.write and self._contended:
                # Another process writes to this file too: without a pause, group after group would keep the lock.
                time.sleep(_YIELD_AFTER_COMMIT_S)

    def _run_read(self, job: Job) -> Settled:
        try:
            connection = self._host.connect()
            if self._busy_off is connection:
                # A read may have to wait (another process recovering the WAL, say): SQLite's busy handler again.
                connection.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
                self._busy_off = None
            connection.execute("BEGIN")
            try:
                result = _perform(connection, [job])[0]
                connection.execute("COMMIT")
            except BaseException:
                self._host.rollback(connection)
                raise
        except Exception as exc:
            return job, False, _translated(exc)
        return job, True, result

    def _run_writes(self, group: list[Job], *, savepoints: bool = False) -> list[Settled]:
        """One transaction for the group; every job's outcome, known only after COMMIT.

        The units run one after another, with no savepoint: if one raises, the transaction is rolled back and the
        group runs again with a savepoint per unit (`_run_saved`), so that only the failing one fails. A write
        fails rarely, and a savepoint costs two statements, each of which lets go of the interpreter lock.
        """
        if not group:
            return []
        try:
            connection = self._host.connect()
            self._contended = self._begin_immediate(connection)
        except Exception as exc:
            return [(job, False, _translated(exc)) for job in group]
        units = _units(group)
        if savepoints:
            done, lost = self._run_saved(connection, units)
            if lost is not None:
                return self._run_writes_after_loss(connection, done, lost, units)
        else:
            done = []
            for jobs in units:
                try:
                    results = _perform(connection, jobs)
                except Exception:
                    # Nothing of the group stays: run it again, each unit in a savepoint of its own.
                    self._host.rollback(connection)
                    return self._run_writes(group, savepoints=True)
                done.extend((job, True, result) for job, result in zip(jobs, results, strict=True))
        try:
            connection.execute("COMMIT")
        except Exception as exc:
            self._host.rollback(connection)
            failure = _translated(exc)
            return [(job, False, failure if ok else value) for job, ok, value in done]
        return done

    def _run_saved(
        self, connection: sqlite3.Connection, units: deque[list[Job]]
    ) -> tuple[list[Settled], Exception | None]:
        """Each unit in a SAVEPOINT, a failing one undone alone. The outcomes so far, and the failure when SQLite
        ended the whole transaction (or the savepoint could not be undone), `units` then left holding the failed unit
        and those after it."""
        done: list[Settled] = []
        while units:
            jobs = units[0]
            try:
                connection.execute("SAVEPOINT job")
                results = _perform(connection, jobs)
                connection.execute("RELEASE job")
                units.popleft()
                done.extend((job, True, result) for job, result in zip(jobs, results, strict=True))
                continue
            except Exception as exc:
                failure = _translated(exc)
                if connection.in_transaction and _undo_savepoint(connection):
                    units.popleft()
                    if len(jobs) > 1:
                        # One of the batch's writes failed it: each runs again alone, so that only that one fails.
                        units.extendleft([job] for job in reversed(jobs))
                    else:
                        done.append((jobs[0], False, failure))
                    continue
            return done, failure
        return done, None

    def _run_writes_after_loss(
        self, connection: sqlite3.Connection, done: list[Settled], failure: Exception, units: deque[list[Job]]
    ) -> list[Settled]:
        """SQLite ended the whole transaction itself (SQLITE_FULL, SQLITE_IOERR...) or a savepoint could not be
        undone: the earlier jobs' work is gone with it. They fail too; the failed unit fails; the rest start a new
        transaction."""
        self._host.rollback(connection)
        lost = StoreUnavailable(f"the SQLite store failed: {failure}")
        undone: list[Settled] = [(earlier, False, lost if ok else value) for earlier, ok, value in done]
        jobs = units.popleft()
        rest = [job for unit in units for job in unit]
        return [*undone, *((job, False, failure) for job in jobs), *self._run_writes(rest, savepoints=True)]

    def _begin_immediate(self, connection: sqlite3.Connection) -> bool:
        """Take the file's write lock, waiting up to the busy timeout; True when another process held it meanwhile.

        Polls every _BUSY_POLL_S with SQLite's own busy timeout off, rather than leaving the wait to SQLite: its
        handler sleeps longer and longer (up to 100 ms), and another process that commits group after group leaves
        gaps far shorter than that.
        """
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        waited = False
        if self._busy_off is not connection:
            connection.execute("PRAGMA busy_timeout = 0")
            self._busy_off = connection
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
            # In WAL mode nothing in the transaction waits for another connection, and the next group needs the
            # timeout at 0 again: left so, it saves two statements a group. A rollback journal's COMMIT waits for
            # readers, through SQLite's busy handler.
            if not self._host.wal:
                connection.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
                self._busy_off = None


def _undo_savepoint(connection: sqlite3.Connection) -> bool:
    try:
        connection.execute("ROLLBACK TO job")
        connection.execute("RELEASE job")
    except sqlite3.Error:
        return False
    return True


def _units(group: list[Job]) -> deque[list[Job]]:
    """The group's writes as they run, in order: each alone, but consecutive writes of one batch function together."""
    units: deque[list[Job]] = deque()
    for job in group:
        if job.batch is not None and units and units[-1][-1].batch is job.batch:
            units[-1].append(job)
        else:
            units.append([job])
    return units


def _perform(connection: sqlite3.Connection, jobs: list[Job]) -> list[Any]:
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
