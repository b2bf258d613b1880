"""What is SQLite's own: URLs, the file outliving processes, several processes on one file, failures of the file.

The port semantics are in tests/contract/, which runs against SQLite too. "Another process" is played by another
SqliteDatabase on the same file (its own connection and thread) or by a raw sqlite3 connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.adapters.sqlite import SCHEMA_VERSION, SqliteBiller, SqliteCustomers, SqliteDatabase, SqliteLedger
from gateway.adapters.sqlite.feedback import SENT_WINDOWS
from gateway.domain.errors import BillerUnavailable, StoreUnavailable
from gateway.domain.ledger import LedgerStats, Parked, ParkReason
from gateway.domain.ports import MeterEvent
from gateway.domain.units import Rounding
from tests.builders import claim

NOW = 1_800_000_000.0


def parked(key: str) -> Parked:
    return Parked(
        key=key,
        reason=ParkReason.UNKNOWN_CUSTOMER,
        message="no Stripe customer is mapped to rs_A",
        body=b"\xff raw body \x00",
        signed_at=1_799_999_995,
        parked_at=NOW,
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "gateway.db"


@pytest.fixture
def databases(path: Path) -> Iterator[list[SqliteDatabase]]:
    """Opens databases on demand and closes them all, even when a test fails."""
    opened: list[SqliteDatabase] = []
    yield opened
    for database in opened:
        database.close()


@pytest.fixture
async def database(path: Path, databases: list[SqliteDatabase]) -> AsyncIterator[SqliteDatabase]:
    database = SqliteDatabase(path)
    databases.append(database)
    await database.open()
    yield database


GARBAGE = b"this is not a SQLite database\n" * 100


@pytest.fixture
def broken_path(path: Path) -> Path:
    """A file that is not a SQLite database (a truncated copy, another program's file, a bad disk)."""
    path.write_bytes(GARBAGE)
    return path


def raw(path: Path) -> sqlite3.Connection:
    """Another process's connection to the file, outside the adapter."""
    return sqlite3.connect(path, isolation_level=None)


def opened(path: Path, databases: list[SqliteDatabase]) -> tuple[SqliteDatabase, SqliteLedger]:
    """The store at `path`, opened as the gateway opens it (and closed by the `databases` fixture)."""
    database = SqliteDatabase(path)
    databases.append(database)
    return database, SqliteLedger(database)


def rewritten(path: Path, *statements: str) -> None:
    """Run `statements` on the closed file at `path`: how an older gateway would have left it."""
    connection = raw(path)
    try:
        for statement in statements:
            connection.execute(statement)
    finally:
        connection.close()


# -- from_url ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///gateway.db", Path("gateway.db")),
        ("sqlite:///data/gateway.db", Path("data/gateway.db")),
        ("sqlite:////var/lib/gateway/gateway.db", Path("/var/lib/gateway/gateway.db")),
    ],
)
def test_from_url_reads_relative_and_absolute_paths_when_url_is_sqlalchemy_style(url: str, expected: Path) -> None:
    database = SqliteDatabase.from_url(url)

    assert database.path == expected
    database.close()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///",
        "sqlite:///:memory:",
        "sqlite:///gateway.db?mode=ro",
        "redis://localhost:6379/0",
        "memory://",
        "gateway.db",
    ],
)
def test_from_url_raises_value_error_when_url_is_not_a_sqlite_file(url: str) -> None:
    with pytest.raises(ValueError):
        SqliteDatabase.from_url(url)


async def test_relative_url_creates_file_in_working_directory_when_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, databases: list[SqliteDatabase]
) -> None:
    monkeypatch.chdir(tmp_path)
    database = SqliteDatabase.from_url("sqlite:///relative.db")
    databases.append(database)

    await database.open()

    assert (tmp_path / "relative.db").is_file()


# -- the file ---------------------------------------------------------------------------------------------------


async def test_schema_is_versioned_in_wal_mode_with_decimals_as_text_when_opened(
    database: SqliteDatabase, path: Path
) -> None:
    await SqliteLedger(database).record(claim("evt_TEXT", exact="0.6"), Rounding.CARRY, NOW)

    connection = raw(path)
    try:
        assert connection.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert connection.execute("SELECT typeof(cost_usd), typeof(units) FROM entries").fetchone() == (
            "text",
            "integer",
        )
        assert connection.execute("SELECT carry, typeof(carry) FROM carries").fetchone() == ("0.6", "text")
    finally:
        connection.close()


async def test_opening_twice_changes_nothing_when_schema_exists(path: Path, databases: list[SqliteDatabase]) -> None:
    first = SqliteDatabase(path)
    databases.append(first)
    await SqliteLedger(first).record(claim("evt_KEPT"), Rounding.CARRY, NOW)
    first.close()

    second = SqliteDatabase(path)
    databases.append(second)
    await second.open()

    assert await SqliteLedger(second).get("evt_KEPT") is not None


async def test_lease_due_walks_the_due_index_when_planning(database: SqliteDatabase) -> None:
    plan = await database.read(
        lambda connection: connection.execute(
            "EXPLAIN QUERY PLAN SELECT rowid FROM entries"
            " WHERE state = 'pending' AND next_attempt_at <= 1 AND leased_until <= 1"
            " ORDER BY next_attempt_at, created_at, rowid LIMIT 10"
        ).fetchall()
    )

    details = " ".join(str(row[-1]) for row in plan)
    assert "USING INDEX entries_due" in details


# -- durability across restarts ---------------------------------------------------------------------------------


async def test_everything_survives_when_the_file_is_closed_and_reopened(
    path: Path, databases: list[SqliteDatabase]
) -> None:
    before = SqliteDatabase(path)
    databases.append(before)
    ledger = SqliteLedger(before)
    recorded = await ledger.record(claim("evt_PENDING", exact="0.6"), Rounding.CARRY, NOW)
    await ledger.park(parked("sha256:0badbody"))
    await SqliteCustomers(before).set("rs_A", "cus_A")
    await SqliteBiller(before).send(MeterEvent(identifier="evt_BILLED", customer="cus_A", value=5, timestamp=1))
    before.close()

    after = SqliteDatabase(path)
    databases.append(after)
    restarted = SqliteLedger(after)

    assert await restarted.lease_due(NOW + 1, 10, 30.0) == [recorded.entry]
    assert await restarted.get_parked("sha256:0badbody") == parked("sha256:0badbody")
    assert await SqliteCustomers(after).get("rs_A") == "cus_A"
    assert [event.identifier for event in await SqliteBiller(after).events()] == ["evt_BILLED"]
    # The carry survived too: 0.6 before the restart + 0.4 after it = 1 unit.
    following = await restarted.record(claim("evt_FOLLOWING", exact="0.4"), Rounding.CARRY, NOW + 2)
    assert following.entry is not None and following.entry.units == 1


async def test_leases_survive_when_a_dispatcher_dies_without_releasing(
    path: Path, databases: list[SqliteDatabase]
) -> None:
    crashed = SqliteDatabase(path)
    databases.append(crashed)
    await SqliteLedger(crashed).record(claim("evt_LEASED"), Rounding.CARRY, NOW)
    await SqliteLedger(crashed).lease_due(NOW, 10, 30.0)
    crashed.close()

    restarted = SqliteDatabase(path)
    databases.append(restarted)
    successor = SqliteLedger(restarted)

    assert await successor.lease_due(NOW + 1, 10, 30.0) == []
    assert [entry.event_id for entry in await successor.lease_due(NOW + 30, 10, 30.0)] == ["evt_LEASED"]


# -- several processes on one file ------------------------------------------------------------------------------


async def test_each_id_is_created_once_when_two_processes_record_it_concurrently(
    path: Path, databases: list[SqliteDatabase]
) -> None:
    one, other = SqliteDatabase(path), SqliteDatabase(path)
    databases.extend([one, other])
    await one.open()
    await other.open()
    ledgers = [SqliteLedger(one), SqliteLedger(other)]
    event_ids = [f"evt_RACE_{index:02d}" for index in range(50)]

    results = await asyncio.gather(
        *(
            ledger.record(claim(event_id, exact="0.37", customer=f"cus_{index % 5}"), Rounding.CARRY, NOW)
            for _ in range(5)
            for index, event_id in enumerate(event_ids)
            for ledger in ledgers
        )
    )

    created = [result.entry for result in results if result.created and result.entry is not None]
    assert sorted(entry.event_id for entry in created) == event_ids
    units_by_customer: dict[str, int] = defaultdict(int)
    for entry in created:
        units_by_customer[entry.billing_customer] += entry.units
    assert units_by_customer == {f"cus_{index}": 3 for index in range(5)}  # floor(10 * 0.37) each


async def test_two_processes_never_lease_one_entry_when_they_poll_together(
    path: Path, databases: list[SqliteDatabase]
) -> None:
    one, other = SqliteDatabase(path), SqliteDatabase(path)
    databases.extend([one, other])
    for index in range(30):
        await SqliteLedger(one).record(claim(f"evt_{index:02d}", customer=f"cus_{index}"), Rounding.CARRY, NOW)

    batches = await asyncio.gather(
        *(SqliteLedger(database).lease_due(NOW, 4, 30.0) for _ in range(5) for database in (one, other))
    )

    leased = [entry.event_id for batch in batches for entry in batch]
    assert len(leased) == len(set(leased)) == 30


async def test_two_processes_never_lease_one_customer_when_they_poll_together(
    path: Path, databases: list[SqliteDatabase]
) -> None:
    one, other = SqliteDatabase(path), SqliteDatabase(path)
    databases.extend([one, other])
    for index in range(30):
        await SqliteLedger(one).record(claim(f"evt_{index:02d}", customer=f"cus_{index % 7}"), Rounding.CARRY, NOW)

    batches = await asyncio.gather(
        *(SqliteLedger(database).lease_due(NOW, 4, 30.0) for _ in range(5) for database in (one, other))
    )

    holders = {(entry.billing_customer, n) for n, batch in enumerate(batches) for entry in batch}
    customers = [customer for customer, _ in holders]
    assert len(customers) == len(set(customers)) == 7


async def test_one_process_sees_another_processes_writes_when_both_are_open(
    path: Path, databases: list[SqliteDatabase]
) -> None:
    one, other = SqliteDatabase(path), SqliteDatabase(path)
    databases.extend([one, other])
    await SqliteCustomers(other).get("rs_A")  # open the reader before the write

    await SqliteCustomers(one).set("rs_A", "cus_A")
    await SqliteLedger(one).record(claim("evt_SEEN"), Rounding.CARRY, NOW)

    assert await SqliteCustomers(other).get("rs_A") == "cus_A"
    assert await SqliteLedger(other).get("evt_SEEN") is not None


# -- failures of the file ---------------------------------------------------------------------------------------


async def test_every_call_raises_store_unavailable_when_file_is_not_a_database(
    broken_path: Path, databases: list[SqliteDatabase]
) -> None:
    database = SqliteDatabase(broken_path)
    databases.append(database)
    ledger = SqliteLedger(database)

    with pytest.raises(StoreUnavailable):
        await database.open()
    with pytest.raises(StoreUnavailable):
        await ledger.record(claim("evt_BROKEN"), Rounding.CARRY, NOW)
    with pytest.raises(StoreUnavailable):
        await ledger.ping()
    with pytest.raises(StoreUnavailable):
        await SqliteCustomers(database).get("rs_A")
    assert await asyncio.to_thread(broken_path.read_bytes) == GARBAGE  # refused, never "repaired" into an empty ledger


async def test_store_unavailable_when_directory_does_not_exist(tmp_path: Path, databases: list[SqliteDatabase]) -> None:
    database = SqliteDatabase(tmp_path / "missing" / "gateway.db")
    databases.append(database)

    with pytest.raises(StoreUnavailable):
        await SqliteLedger(database).ping()


async def test_store_unavailable_and_nothing_recorded_when_file_stays_locked(
    path: Path, databases: list[SqliteDatabase]
) -> None:
    database = SqliteDatabase(path, busy_timeout_ms=50)
    databases.append(database)
    ledger = SqliteLedger(database)
    await database.open()
    locker = raw(path)
    locker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock longer than our busy timeout
    try:
        with pytest.raises(StoreUnavailable):
            await ledger.record(claim("evt_LOCKED"), Rounding.CARRY, NOW)
        with pytest.raises(StoreUnavailable):
            await ledger.ping()
    finally:
        locker.execute("ROLLBACK")
        locker.close()

    # The lock is gone: the same delivery, retried by Ringside, is recorded as new.
    retried = await ledger.record(claim("evt_LOCKED"), Rounding.CARRY, NOW + 5)
    assert retried.created


async def test_nothing_is_half_written_when_a_statement_fails_midway(database: SqliteDatabase, path: Path) -> None:
    ledger = SqliteLedger(database)
    # The entry's INSERT succeeds, then the carry's INSERT fails: the entry must not survive alone.
    connection = raw(path)
    connection.execute(
        "CREATE TRIGGER fail_carry BEFORE INSERT ON carries BEGIN SELECT RAISE(ABORT, 'disk full (simulated)'); END"
    )

    with pytest.raises(StoreUnavailable):
        await ledger.record(claim("evt_HALF", exact="0.6"), Rounding.CARRY, NOW)

    assert await ledger.get("evt_HALF") is None
    assert await ledger.stats() == LedgerStats(0, 0, 0, None, 0, 0)
    connection.execute("DROP TRIGGER fail_carry")
    connection.close()
    retried = await ledger.record(claim("evt_HALF", exact="0.6"), Rounding.CARRY, NOW)
    assert retried.created and retried.entry is not None and retried.entry.units == 0


async def test_store_unavailable_when_file_has_a_newer_schema(path: Path, databases: list[SqliteDatabase]) -> None:
    connection = raw(path)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    database = SqliteDatabase(path)
    databases.append(database)

    with pytest.raises(StoreUnavailable, match="schema version"):
        await database.open()


def scanned_stats(path: Path) -> LedgerStats:
    """The ledger's figures counted the slow way, from every row of the file."""
    connection = raw(path)
    try:
        by_state = {
            row[0]: row
            for row in connection.execute(
                "SELECT state, COUNT(*), COALESCE(SUM(units), 0), MIN(created_at) FROM entries GROUP BY state"
            )
        }
        parked_count = int(connection.execute("SELECT COUNT(*) FROM parked").fetchone()[0])
    finally:
        connection.close()
    pending = by_state.get("pending", ("pending", 0, 0, None))
    sent = by_state.get("sent", ("sent", 0, 0, None))
    return LedgerStats(
        pending=pending[1],
        sent=sent[1],
        parked=parked_count,
        oldest_pending_at=pending[3],
        units_sent=sent[2],
        units_pending=pending[2],
    )


async def test_stats_stay_exact_without_scanning_sent_entries_when_entries_move_and_file_reopens(
    path: Path, databases: list[SqliteDatabase]
) -> None:
    first = SqliteDatabase(path)
    databases.append(first)
    ledger = SqliteLedger(first)
    for number in range(6):
        await ledger.record(claim(f"evt_{number}", exact=str(number + 1)), Rounding.CARRY, NOW + number)
    await ledger.mark_sent("evt_0", NOW)
    await ledger.mark_sent("evt_0", NOW)  # already sent: counted once
    await ledger.mark_sent_many(["evt_1", "evt_2", "evt_1", "evt_MISSING"], NOW)
    await ledger.mark_rejected("evt_3", "no such customer", NOW)
    await ledger.mark_rejected("evt_4", "no such customer", NOW)
    assert await ledger.requeue("evt_3", NOW) is not None
    await ledger.mark_sent("evt_3", NOW)
    await ledger.park(parked("evt_PARKED"))

    assert await ledger.stats() == scanned_stats(path)
    assert (await ledger.stats()).sent == 4
    assert (await ledger.stats()).units_sent == 1 + 2 + 3 + 4
    first.close()

    second = SqliteDatabase(path)
    databases.append(second)
    ledger = SqliteLedger(second)
    assert await ledger.stats() == scanned_stats(path)
    await ledger.mark_sent("evt_5", NOW)
    assert await ledger.stats() == scanned_stats(path)
    assert (await ledger.stats()).pending == 0

    plan = await second.read(
        lambda connection: connection.execute(
            "EXPLAIN QUERY PLAN SELECT COUNT(*), COALESCE(SUM(units), 0), MIN(created_at)"
            " FROM entries WHERE state = 'pending'"
        ).fetchall()
    )
    # entries_due holds the pending entries only (a partial index): walking it whole reads no sent entry.
    assert " ".join(str(row[-1]) for row in plan) == "SCAN entries USING INDEX entries_due"


async def test_sent_counters_are_counted_once_when_a_version_1_file_is_upgraded(
    path: Path, databases: list[SqliteDatabase]
) -> None:
    first, ledger = opened(path, databases)
    for number in range(4):
        await ledger.record(claim(f"evt_{number}", exact=str(number + 1)), Rounding.CARRY, NOW)
    await ledger.mark_sent_many(["evt_0", "evt_1"], NOW)
    first.close()
    # Make it a version-1 file, as the previous gateway left it (no counters), and let that gateway send more.
    rewritten(
        path,
        "DROP TABLE ledger_counters",
        "PRAGMA user_version = 1",
        "UPDATE entries SET state = 'sent', sent_at = 1 WHERE event_id = 'evt_2'",
    )

    _, ledger = opened(path, databases)
    stats = await ledger.stats()

    assert stats == scanned_stats(path)
    assert (stats.sent, stats.units_sent, stats.pending, stats.units_pending) == (3, 1 + 2 + 3, 1, 4)
    await ledger.mark_sent("evt_3", NOW)
    assert await ledger.stats() == scanned_stats(path)
    connection = raw(path)
    try:
        assert connection.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    finally:
        connection.close()


async def test_a_version_2_file_gains_the_feedback_tables_and_indexes_when_upgraded(
    path: Path, databases: list[SqliteDatabase]
) -> None:
    first, ledger = opened(path, databases)
    await ledger.record(claim("evt_SENT", exact="3", timestamp=1_799_996_400), Rounding.CARRY, NOW)
    await ledger.mark_sent("evt_SENT", NOW)
    first.close()
    # Make it a version-2 file, as the previous gateway left it: none of the feedback's tables or indexes.
    rewritten(
        path,
        *(f"DROP TABLE {table}" for table in ("handled_reports", "cursors", "corrections")),
        *(f"DROP INDEX {index}" for index in ("entries_sent", "entries_settled", "meter_events_by_customer")),
        "PRAGMA user_version = 2",
    )

    _, ledger = opened(path, databases)

    assert [e.event_id for e in await ledger.sent_between(NOW, NOW)] == ["evt_SENT"]
    assert await ledger.reject_sent("evt_test_REPORT", [], NOW) == 0
    connection = raw(path)
    try:
        assert connection.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    finally:
        connection.close()


async def test_a_version_3_file_gets_the_partial_due_index_and_leases_as_before_when_upgraded(
    path: Path, databases: list[SqliteDatabase]
) -> None:
    first, ledger = opened(path, databases)
    for number in range(3):
        await ledger.record(claim(f"evt_{number}", exact="1"), Rounding.CARRY, NOW + number)
    await ledger.mark_sent("evt_0", NOW)
    first.close()
    # Make it a version-3 file, as the previous gateway left it: entries_due over every entry, led by `state`.
    rewritten(
        path,
        "DROP INDEX entries_due",
        "CREATE INDEX entries_due ON entries (state, next_attempt_at, created_at)",
        "PRAGMA user_version = 3",
    )

    _, ledger = opened(path, databases)

    assert [entry.event_id for entry in await ledger.lease_due(NOW + 10, 10, 30.0)] == ["evt_1", "evt_2"]
    assert (await ledger.stats()).sent == 1
    connection = raw(path)
    try:
        assert connection.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        [sql] = connection.execute("SELECT sql FROM sqlite_master WHERE name = 'entries_due'").fetchone()
        assert "WHERE state = 'pending'" in sql
    finally:
        connection.close()


async def test_feedback_queries_walk_their_own_indexes_when_planning(database: SqliteDatabase) -> None:
    def plan(sql: str) -> str:
        return " ".join(str(row[-1]) for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall())

    connection = raw(database.path)
    try:
        sent = plan(
            "SELECT event_id FROM entries INDEXED BY entries_sent"
            " WHERE state = 'sent' AND sent_at >= 1 AND sent_at <= 2"
        )
        windows = plan(SENT_WINDOWS.replace(":customer", "NULL").replace(":since", "1").replace(":until", "2"))
        totals = plan(
            "SELECT SUM(value) FROM meter_events WHERE customer = 'cus_A' AND timestamp >= 1 AND timestamp < 2"
        )
    finally:
        connection.close()

    assert "USING INDEX entries_sent (sent_at>? AND sent_at<?)" in sent
    assert "USING COVERING INDEX entries_settled (timestamp>? AND timestamp<?)" in windows
    assert "USING COVERING INDEX meter_events_by_customer (customer=? AND timestamp>? AND timestamp<?)" in totals


async def test_store_unavailable_when_database_is_closed(database: SqliteDatabase) -> None:
    database.close()
    database.close()  # closing twice is harmless

    with pytest.raises(StoreUnavailable):
        await SqliteLedger(database).ping()


async def test_local_biller_raises_biller_unavailable_when_store_fails(
    broken_path: Path, databases: list[SqliteDatabase]
) -> None:
    database = SqliteDatabase(broken_path)
    databases.append(database)

    with pytest.raises(BillerUnavailable):
        await SqliteBiller(database).send(MeterEvent(identifier="evt_X", customer="cus_A", value=1, timestamp=1))


def _entries_in_the_file_alone(path: Path, copy: Path) -> int | None:
    """What the database file holds without its WAL: a copy of the file alone, opened read-only."""
    try:
        shutil.copyfile(path, copy)
        with contextlib.closing(sqlite3.connect(f"file:{copy}?mode=ro", uri=True)) as connection:
            return int(connection.execute("SELECT count(*) FROM entries").fetchone()[0])
    except sqlite3.Error:
        return None  # copied while a checkpoint was writing it: look again


async def test_commits_leave_checkpoints_to_a_thread_of_their_own_which_copies_the_wal_into_the_file(
    tmp_path: Path,
) -> None:
    running_before = set(threading.enumerate())
    database = SqliteDatabase(tmp_path / "checkpointed.db", checkpoint_every_s=0.01)
    ledger = SqliteLedger(database)
    try:
        await asyncio.gather(*(ledger.record(claim(f"evt_{n}"), Rounding.CARRY, NOW) for n in range(50)))
        autocheckpoint = await database.read(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        copied = None
        for _ in range(500):
            copied = _entries_in_the_file_alone(tmp_path / "checkpointed.db", tmp_path / "copy.db")
            if copied == 50:
                break
            await asyncio.sleep(0.01)
    finally:
        database.close()

    assert autocheckpoint == 0  # no commit of the writer runs a checkpoint
    assert copied == 50  # the checkpointer did
    started = [t for t in set(threading.enumerate()) - running_before if t.name == "gateway-sqlite-checkpoint"]
    assert not [t for t in started if t.is_alive()]  # close() stopped it
