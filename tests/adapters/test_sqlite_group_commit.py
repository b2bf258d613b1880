"""SqliteDatabase's group commit: writes that queue up together share one transaction, each atomic on its own.

Every test holds the writer thread inside a first write (a gate), queues more writes behind it, then opens the gate,
so the grouping is deterministic without any sleep: the queued writes are one group.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.adapters.sqlite import SqliteDatabase, SqliteLedger, durability
from gateway.adapters.sqlite import database as handle
from gateway.adapters.sqlite.durability import Syncer
from gateway.domain.errors import StoreUnavailable
from gateway.domain.ledger import Parked, ParkReason
from gateway.domain.units import Rounding
from tests.builders import claim


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    db = SqliteDatabase(tmp_path / "group.db")
    await db.write(lambda c: c.execute("CREATE TABLE items (name TEXT PRIMARY KEY)"))
    yield db
    db.close()


def insert(name: str) -> Callable[[sqlite3.Connection], str]:
    def work(connection: sqlite3.Connection) -> str:
        connection.execute("INSERT INTO items (name) VALUES (?)", (name,))
        return name

    return work


async def names(database: SqliteDatabase) -> list[str]:
    rows = await database.read(lambda c: c.execute("SELECT name FROM items ORDER BY name").fetchall())
    return [str(row[0]) for row in rows]


async def queued_behind_a_gate(
    database: SqliteDatabase, works: list[Callable[[sqlite3.Connection], Any]], statements: list[str]
) -> list[Any]:
    """Hold the writer thread in a first write, queue `works`, release; return their outcomes (values or errors)."""
    return await calls_behind_a_gate(database, [lambda work=work: database.write(work) for work in works], statements)


async def calls_behind_a_gate(
    database: SqliteDatabase, calls: list[Callable[[], Awaitable[Any]]], statements: list[str]
) -> list[Any]:
    """Hold the writer thread in a first write, make `calls` (each queues its writes), release; their outcomes."""
    entered, gate = threading.Event(), threading.Event()

    def hold(connection: sqlite3.Connection) -> None:
        connection.set_trace_callback(statements.append)
        entered.set()
        gate.wait(timeout=10)

    first = asyncio.ensure_future(database.write(hold))
    await asyncio.to_thread(entered.wait, 10)
    pending: list[Awaitable[Any]] = [asyncio.ensure_future(call()) for call in calls]
    await asyncio.sleep(0)  # let every write reach the queue before the gate opens
    gate.set()
    await first
    return list(await asyncio.gather(*pending, return_exceptions=True))


async def test_writes_share_one_commit_when_they_queue_while_another_commits(database: SqliteDatabase) -> None:
    statements: list[str] = []

    results = await queued_behind_a_gate(database, [insert(f"item_{n}") for n in range(10)], statements)

    assert results == [f"item_{n}" for n in range(10)]
    assert statements.count("COMMIT") == 2  # the gate's own transaction, then one for all ten
    # No write failed, so none ran in a savepoint; in WAL mode the busy timeout stays off from group to group.
    assert statements.count("SAVEPOINT job") == 0
    assert [statement for statement in statements if statement.startswith("PRAGMA busy_timeout")] == []
    assert await names(database) == sorted(f"item_{n}" for n in range(10))


async def test_failing_write_is_undone_alone_when_it_shares_a_group(database: SqliteDatabase) -> None:
    def insert_then_fail(connection: sqlite3.Connection) -> None:
        connection.execute("INSERT INTO items (name) VALUES ('half_written')")
        raise ValueError("the caller's own error")

    results = await queued_behind_a_gate(database, [insert("before"), insert_then_fail, insert("after")], [])

    assert results[0] == "before" and results[2] == "after"
    assert isinstance(results[1], ValueError)
    assert await names(database) == ["after", "before"]


async def test_sqlite_error_fails_only_its_own_write_when_it_shares_a_group(database: SqliteDatabase) -> None:
    results = await queued_behind_a_gate(database, [insert("evt_A"), insert("evt_A"), insert("evt_B")], [])

    assert results[0] == "evt_A" and results[2] == "evt_B"
    assert isinstance(results[1], StoreUnavailable)  # the primary key refused the second evt_A
    assert await names(database) == ["evt_A", "evt_B"]


async def test_earlier_writes_fail_and_later_ones_commit_when_sqlite_ends_the_transaction(
    database: SqliteDatabase,
) -> None:
    def lose_the_transaction(connection: sqlite3.Connection) -> None:
        # What SQLITE_FULL or SQLITE_IOERR do: SQLite rolls the whole transaction back by itself.
        connection.execute("ROLLBACK")
        raise sqlite3.OperationalError("disk I/O error (simulated)")

    results = await queued_behind_a_gate(database, [insert("lost"), lose_the_transaction, insert("later")], [])

    assert isinstance(results[0], StoreUnavailable)
    assert isinstance(results[1], StoreUnavailable)
    assert results[2] == "later"
    assert await names(database) == ["later"]


async def test_every_write_of_the_group_fails_and_none_stays_when_commit_fails(database: SqliteDatabase) -> None:
    await database.write(
        lambda c: c.execute("CREATE TABLE children (parent TEXT REFERENCES items (name) DEFERRABLE INITIALLY DEFERRED)")
    )

    def orphan(connection: sqlite3.Connection) -> None:
        # A deferred foreign key is checked at COMMIT only: the one way to make a COMMIT itself refuse.
        connection.execute("INSERT INTO children (parent) VALUES ('nobody')")

    results = await queued_behind_a_gate(database, [insert("innocent"), orphan], [])

    assert all(isinstance(result, StoreUnavailable) for result in results)
    assert await names(database) == []


async def test_a_read_waits_for_other_connections_again_after_writes_left_the_busy_timeout_off(tmp_path: Path) -> None:
    database = SqliteDatabase(tmp_path / "busy.db", busy_timeout_ms=1234)
    try:
        during_write = await database.write(lambda c: c.execute("PRAGMA busy_timeout").fetchone()[0])
        during_read = await database.read(lambda c: c.execute("PRAGMA busy_timeout").fetchone()[0])
        again = await database.write(lambda c: c.execute("PRAGMA busy_timeout").fetchone()[0])
    finally:
        database.close()

    # A write transaction in WAL mode never waits once begun (BEGIN IMMEDIATE is polled); a read may.
    assert (during_write, during_read, again) == (0, 1234, 0)


async def test_read_sees_exactly_the_writes_submitted_before_it(database: SqliteDatabase) -> None:
    writes = [asyncio.ensure_future(database.write(insert(f"w{n}"))) for n in range(5)]
    seen = asyncio.ensure_future(names(database))
    later = asyncio.ensure_future(database.write(insert("w9")))

    await asyncio.gather(*writes, later)

    assert await seen == ["w0", "w1", "w2", "w3", "w4"]


async def test_two_handles_on_one_file_both_finish_when_they_write_group_after_group(tmp_path: Path) -> None:
    # Two handles are two writers, as two processes are: each commits group after group and must still let the
    # other in (with SQLite's own busy handler the second one could wait out its whole timeout).
    first, second = SqliteDatabase(tmp_path / "shared.db"), SqliteDatabase(tmp_path / "shared.db")
    try:
        await first.write(lambda c: c.execute("CREATE TABLE items (name TEXT PRIMARY KEY)"))
        handles = (("a", first), ("b", second))
        writes = [database.write(insert(f"{tag}_{n}")) for n in range(400) for tag, database in handles]

        results = await asyncio.gather(*writes, return_exceptions=True)

        assert [r for r in results if isinstance(r, BaseException)] == []
        assert len(await names(first)) == 800
    finally:
        first.close()
        second.close()


def insert_all(connection: sqlite3.Connection, names: list[str]) -> list[str]:
    """A batch function: one statement for all the names."""
    connection.executemany("INSERT INTO items (name) VALUES (?)", [(name,) for name in names])
    return [f"inserted {name}" for name in names]


async def test_batched_writes_queued_together_run_as_one_call(database: SqliteDatabase) -> None:
    statements: list[str] = []
    calls = [lambda n=n: database.write_batched(insert_all, f"item_{n}") for n in range(10)]

    results = await calls_behind_a_gate(database, calls, statements)

    assert results == [f"inserted item_{n}" for n in range(10)]
    assert statements.count("SAVEPOINT job") == 0
    assert len([statement for statement in statements if statement.startswith("INSERT")]) == 10
    assert statements.count("COMMIT") == 2  # the gate's own transaction, then one for the batch
    assert await names(database) == sorted(f"item_{n}" for n in range(10))


async def test_a_batched_write_that_fails_its_batch_fails_alone_and_the_others_commit(database: SqliteDatabase) -> None:
    statements: list[str] = []
    items = ["evt_A", "evt_B", "evt_A", "evt_C"]  # the second evt_A breaks the primary key, and so the batch
    calls = [lambda item=item: database.write_batched(insert_all, item) for item in items]

    results = await calls_behind_a_gate(database, calls, statements)

    assert results[0] == "inserted evt_A" and results[1] == "inserted evt_B" and results[3] == "inserted evt_C"
    assert isinstance(results[2], StoreUnavailable)
    # The group at once, rolled back; again with savepoints: the batch, then each write alone.
    assert statements.count("SAVEPOINT job") == 1 + len(items)
    assert statements.count("ROLLBACK") == 1
    assert await names(database) == ["evt_A", "evt_B", "evt_C"]


async def test_a_batch_takes_only_the_writes_of_its_function_and_keeps_the_queue_order(
    database: SqliteDatabase,
) -> None:
    statements: list[str] = []
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: database.write_batched(insert_all, "b1"),
        lambda: database.write_batched(insert_all, "b2"),
        lambda: database.write(insert("lone")),
        lambda: database.write_batched(insert_all, "b3"),
    ]

    results = await calls_behind_a_gate(database, calls, statements)

    assert results == ["inserted b1", "inserted b2", "lone", "inserted b3"]
    inserts = [statement for statement in statements if statement.startswith("INSERT")]
    assert inserts == [
        "INSERT INTO items (name) VALUES ('b1')",
        "INSERT INTO items (name) VALUES ('b2')",
        "INSERT INTO items (name) VALUES ('lone')",
        "INSERT INTO items (name) VALUES ('b3')",
    ]


async def test_ledger_records_queued_together_chain_carries_and_see_each_others_claims(
    database: SqliteDatabase,
) -> None:
    ledger = SqliteLedger(database)
    claims = [
        claim("evt_1", exact="0.6"),
        claim("evt_2", exact="0.6"),
        claim("evt_1", exact="0.6"),  # a redelivery racing the first: a duplicate of it
        claim("evt_3", exact="0.6", customer="cus_B"),
        claim("evt_4", exact="0.6"),
    ]
    calls = [lambda c=c: ledger.record(c, Rounding.CARRY, 1_800_000_000.0) for c in claims]

    results = await calls_behind_a_gate(database, calls, [])

    assert [(r.created, r.entry.units if r.entry else None) for r in results] == [
        (True, 0),  # carry 0.6
        (True, 1),  # 1.2 -> 1, carry 0.2
        (False, 0),  # evt_1 as first recorded
        (True, 0),  # cus_B's own carry: 0.6
        (True, 0),  # 0.8
    ]
    assert [await ledger.get(c.event_id) for c in claims] == [results[0].entry, *(r.entry for r in results[1:])]
    assert (await ledger.stats()).pending == 4


async def test_a_batch_larger_than_one_insert_statement_records_every_claim(database: SqliteDatabase) -> None:
    ledger = SqliteLedger(database)
    claims = [claim(f"evt_{n:03d}", exact="0.25", customer=f"cus_{n % 3}") for n in range(150)]
    calls = [lambda c=c: ledger.record(c, Rounding.CARRY, 1_800_000_000.0) for c in claims]

    results = await calls_behind_a_gate(database, calls, [])

    assert all(result.created for result in results)
    assert sum(r.entry.units for r in results if r.entry) == 36  # 50 claims of 0.25 per customer: 12 units each
    assert (await ledger.stats()).pending == 150
    assert [await ledger.get(c.event_id) for c in claims] == [r.entry for r in results]


async def test_a_replay_in_a_batch_takes_its_parked_records_place_before_the_records_after_it(
    database: SqliteDatabase,
) -> None:
    ledger = SqliteLedger(database)
    await ledger.park(Parked("evt_P", ParkReason.UNKNOWN_CUSTOMER, "no mapping", b"{}", 1_799_999_990, 1.0))
    now = 1_800_000_000.0
    calls = [
        lambda: ledger.record(claim("evt_P"), Rounding.CARRY, now),  # a redelivery while parked: a duplicate
        lambda: ledger.record(claim("evt_P"), Rounding.CARRY, now, replaces="evt_P"),  # the operator's replay
        lambda: ledger.record(claim("evt_P"), Rounding.CARRY, now),  # a redelivery after it: a duplicate of it
    ]

    results = await calls_behind_a_gate(database, calls, [])

    assert [(r.created, r.entry is not None) for r in results] == [(False, False), (True, True), (False, True)]
    assert results[2].entry == results[1].entry
    assert await ledger.get_parked("evt_P") is None


# -- durability: the WAL is fsynced (by the syncer thread) before a writer hears of its write -------------------------


class _GatedFsync:
    """Stands in for os.fsync in the SQLite adapter: counts the calls, and can hold them, or fail them."""

    def __init__(self, real: Callable[[int], None]) -> None:
        self.real = real
        self.calls = 0
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self.error: OSError | None = None

    def __call__(self, fd: int) -> None:
        self.calls += 1
        self.entered.set()
        self.gate.wait(timeout=10)
        if self.error is not None:
            raise self.error
        self.real(fd)


@pytest.fixture
def fsync(monkeypatch: pytest.MonkeyPatch) -> _GatedFsync:
    gated = _GatedFsync(os.fsync)
    monkeypatch.setattr(durability.os, "fsync", gated)
    return gated


async def test_a_write_is_answered_only_after_the_wal_is_fsynced(database: SqliteDatabase, fsync: _GatedFsync) -> None:
    assert await database.read(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
    fsync.gate.clear()
    fsync.entered.clear()

    write = asyncio.ensure_future(database.write(insert("durable")))
    await asyncio.to_thread(fsync.entered.wait, 10)
    await asyncio.sleep(0.05)

    assert not write.done()  # committed, visible, but not yet on disk: its caller waits
    assert await names(database) == ["durable"]
    fsync.gate.set()
    assert await write == "durable"


async def test_commits_that_end_during_an_fsync_share_the_next_one(
    database: SqliteDatabase, fsync: _GatedFsync
) -> None:
    fsync.gate.clear()
    fsync.entered.clear()
    first = asyncio.ensure_future(database.write(insert("first")))
    await asyncio.to_thread(fsync.entered.wait, 10)
    calls_before = fsync.calls

    # Each of these commits on its own (they are awaited one by one), all while the first fsync is held.
    later = []
    for n in range(5):
        later.append(asyncio.ensure_future(database.write(insert(f"later_{n}"))))
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert not any(write.done() for write in later)
    fsync.gate.set()

    assert await first == "first"
    assert await asyncio.gather(*later) == [f"later_{n}" for n in range(5)]
    assert fsync.calls - calls_before <= 2  # the held one, then one for the five commits that ended meanwhile


async def test_a_failed_fsync_fails_the_writes_it_covered_and_a_retry_finds_the_claim(
    tmp_path: Path, fsync: _GatedFsync
) -> None:
    database = SqliteDatabase(tmp_path / "fsync.db")
    ledger = SqliteLedger(database)
    try:
        await database.open()
        fsync.error = OSError(5, "Input/output error")
        with pytest.raises(StoreUnavailable, match="could not make the write durable"):
            await ledger.record(claim("evt_eio"), Rounding.CARRY, 1.0)

        fsync.error = None
        retried = await ledger.record(claim("evt_eio"), Rounding.CARRY, 2.0)
        assert not retried.created  # the commit had reached the file: the redelivery is a duplicate, never a second
    finally:
        database.close()


def test_the_syncer_keeps_a_removed_wal_and_follows_a_new_one(tmp_path: Path, fsync: _GatedFsync) -> None:
    wal = tmp_path / "x.db-wal"
    wal.write_bytes(b"first")
    synced: list[int] = []
    fsync.real = lambda fd: synced.append(os.fstat(fd).st_ino)
    syncer = Syncer(wal)
    try:
        syncer.sync()
        first = wal.stat().st_ino
        wal.unlink()  # removed by SQLite on the last close: the open descriptor still syncs
        syncer.sync()
        wal.write_bytes(b"second")  # a new WAL at the same path: followed
        syncer.sync()
        assert synced == [first, first, wal.stat().st_ino]
    finally:
        syncer.stop()


async def test_the_wal_starts_over_while_writes_keep_coming(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under steady writes PASSIVE checkpoints alone never let the WAL start over, and it grew without bound (145 MB
    in 12 s at bench load); the writer's own checkpoint between groups lets it start over."""
    monkeypatch.setattr(durability, "RESTART_AFTER_FRAMES", 64)
    monkeypatch.setattr(handle, "WAL_SIZE_LIMIT_BYTES", 512 * 1024)
    database = SqliteDatabase(tmp_path / "busy.db", checkpoint_every_s=0.02)
    wal = tmp_path / "busy.db-wal"
    try:
        await database.write(lambda c: c.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)"))
        largest = 0

        async def keep_writing() -> None:  # 8 x 500 writes of a 4 KB page each: 16 MB through the WAL
            nonlocal largest
            for _ in range(500):
                await database.write(lambda c: c.execute("INSERT INTO blobs (data) VALUES (randomblob(4000))"))
                largest = max(largest, wal.stat().st_size)

        await asyncio.gather(*(keep_writing() for _ in range(8)))
    finally:
        database.close()

    assert largest < 6 * 1024 * 1024  # PASSIVE checkpoints alone: 84 MB here


async def test_a_long_reader_holds_the_writes_only_briefly_when_the_wal_would_start_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The WAL cannot start over while a reader still needs it (another process's long read); the checkpoints that
    try (PASSIVE ones, never a RESTART) must not hold the writes meanwhile."""
    monkeypatch.setattr(durability, "RESTART_AFTER_FRAMES", 16)
    database = SqliteDatabase(tmp_path / "read.db", checkpoint_every_s=0.01)
    reader = sqlite3.connect(tmp_path / "read.db", isolation_level=None)
    try:
        await database.write(lambda c: c.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)"))
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM blobs").fetchone()  # a snapshot held for the whole test
        slowest = 0.0
        loop = asyncio.get_running_loop()
        for _ in range(300):
            started = loop.time()
            await database.write(lambda c: c.execute("INSERT INTO blobs (data) VALUES (randomblob(4000))"))
            slowest = max(slowest, loop.time() - started)
    finally:
        reader.close()
        database.close()

    assert slowest < 0.5  # a RESTART checkpoint held each write for its busy timeout (5 s) here
