"""The ledger in SQLite: entries, parked records and customers' carries, in the store's one file."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from decimal import Decimal

from gateway.adapters.sqlite.database import SqliteDatabase
from gateway.adapters.sqlite.feedback import SqliteFeedback
from gateway.adapters.sqlite.ledger_rows import (
    ENTRY_COLUMNS,
    PARKED_COLUMNS,
    Row,
    entry_from,
    entry_row,
    parked_from,
    parked_row,
)
from gateway.adapters.sqlite.sql import in_list, insert_rows
from gateway.domain.errors import StoreUnavailable
from gateway.domain.ledger import (
    REQUEUEABLE,
    Claim,
    CustomerUsage,
    Entry,
    LedgerStats,
    Parked,
    ParkReason,
    Recorded,
    entry_record,
    settle_claims,
)
from gateway.domain.ports import BatchLedger
from gateway.domain.units import Rounding


def _count_sent(connection: sqlite3.Connection, units: list[Row]) -> None:
    """Add the entries just moved into 'sent' (their `units`, one row each) to the counters stats() reads."""
    if units:
        connection.execute(
            "UPDATE ledger_counters SET entries = entries + ?, units = units + ? WHERE state = 'sent'",
            (len(units), sum(int(row[0]) for row in units)),
        )


def _select_entry(connection: sqlite3.Connection, event_id: str) -> Entry | None:
    row = connection.execute(f"SELECT {ENTRY_COLUMNS} FROM entries WHERE event_id = ?", (event_id,)).fetchone()
    return None if row is None else entry_from(row)


def _is_parked(connection: sqlite3.Connection, key: str) -> bool:
    return connection.execute("SELECT 1 FROM parked WHERE key = ?", (key,)).fetchone() is not None


# One record() call: the claim, its rounding rule, the time, and the parked key it replaces (a replay) or None.
_Record = tuple[Claim, Rounding, float, str | None]


def _record_many(connection: sqlite3.Connection, items: list[_Record]) -> list[Recorded]:
    """SqliteLedger.record for several claims in one go: three lookups and a few writes for the lot, each claim
    treated in order as if recorded alone after the ones before it (a second claim of an id is a duplicate of the
    first; a customer's carry goes from one claim to the next; a replay takes the place of the parked record it
    replaces, which is deleted)."""
    marks, ids = in_list([claim.event_id for claim, _, _, _ in items])
    entries: dict[str, Entry] = {
        str(row[0]): entry_from(row)
        for row in connection.execute(f"SELECT {ENTRY_COLUMNS} FROM entries WHERE event_id IN ({marks})", ids)
    }
    parked = {str(row[0]) for row in connection.execute(f"SELECT key FROM parked WHERE key IN ({marks})", ids)}
    marks, customers = in_list(list({claim.billing_customer for claim, _, _, _ in items}))
    carries = {
        str(row[0]): Decimal(row[1])
        for row in connection.execute(
            f"SELECT billing_customer, carry FROM carries WHERE billing_customer IN ({marks})", customers
        )
    }
    settled = settle_claims(items, entries, parked, carries)
    rows = [entry_row(entry) for entry in settled.created]
    insert_rows(connection, f"INSERT INTO entries ({ENTRY_COLUMNS}) VALUES {{rows}}", rows)
    customers_settled = list(dict.fromkeys(entry.billing_customer for entry in settled.created))
    insert_rows(
        connection,
        "INSERT INTO carries (billing_customer, carry) VALUES {rows}"
        " ON CONFLICT (billing_customer) DO UPDATE SET carry = excluded.carry",
        [(customer, str(carries[customer])) for customer in customers_settled],
    )
    if settled.replaced:
        marks, keys = in_list(settled.replaced)
        connection.execute(f"DELETE FROM parked WHERE key IN ({marks})", keys)
    return settled.recorded


# One statement: the subquery walks entries_due for the due entries that are not leased...
_LEASE_DUE = """
    UPDATE entries SET leased_until = :until
    WHERE rowid IN (
        SELECT rowid FROM entries AS due
        WHERE state = 'pending' AND next_attempt_at <= :now AND leased_until <= :now {customers}
        ORDER BY next_attempt_at, created_at, rowid
        LIMIT :limit
    )
    RETURNING rowid, {columns}
"""
_LEASE = _LEASE_DUE.format(customers="", columns=ENTRY_COLUMNS)
# ...and, holding customers, of customers with no live lease (entries_leased answers that per row).
_LEASE_HOLDING_CUSTOMERS = _LEASE_DUE.format(
    customers="""
        AND NOT EXISTS (
            SELECT 1 FROM entries AS held
            WHERE held.billing_customer = due.billing_customer
            AND held.leased_until > 0 AND held.leased_until > :now AND held.state = 'pending'
        )""",
    columns=ENTRY_COLUMNS,
)


class SqliteLedger(BatchLedger, SqliteFeedback):
    """The ledger in SQLite, with MemoryLedger's semantics.

    Invariants: an id is claimed by at most one entry or one parked record (a biller-rejected entry keeps its entry
    and gains a parked record of the same key); every method is one transaction; a lease is `leased_until` on the
    entry, so leases are shared by every process using the file. The biller's feedback is in SqliteFeedback.
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
                f"INSERT INTO parked ({PARKED_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", parked_row(parked)
            )
            return True

        return await self._db.write(work)

    async def lease_due(self, now: float, limit: int, lease_s: float, *, hold_customers: bool = True) -> list[Entry]:
        if limit <= 0:
            return []
        statement = _LEASE_HOLDING_CUSTOMERS if hold_customers else _LEASE

        def work(connection: sqlite3.Connection) -> list[Entry]:
            # The write lock (BEGIN IMMEDIATE) means no other process can lease the same rows, or another entry of
            # the same customers, between the choice and the update.
            rows = connection.execute(statement, {"until": now + lease_s, "now": now, "limit": limit}).fetchall()
            # RETURNING gives no order guarantee: restore the subquery's.
            rows.sort(key=lambda row: (row[11], row[9], row[0]))
            return [entry_from(row[1:]) for row in rows]

        return await self._db.write(work)

    async def release(self, event_ids: list[str]) -> None:
        if not event_ids:
            return

        def work(connection: sqlite3.Connection) -> None:
            connection.executemany(
                "UPDATE entries SET leased_until = 0 WHERE event_id = ?", [(event_id,) for event_id in event_ids]
            )

        await self._db.write(work)

    async def renew(self, event_ids: Sequence[str], now: float, lease_s: float) -> list[str]:
        if not event_ids:
            return []

        def work(connection: sqlite3.Connection) -> list[str]:
            marks, ids = in_list(list(event_ids))
            rows = connection.execute(
                f"UPDATE entries SET leased_until = ? WHERE event_id IN ({marks})"
                " AND state = 'pending' AND leased_until > ? RETURNING event_id",
                [now + lease_s, *ids, now],
            ).fetchall()
            renewed = {row[0] for row in rows}
            return [event_id for event_id in event_ids if event_id in renewed]

        return await self._db.write(work)

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
                f" WHERE event_id = ? AND state = 'pending' RETURNING {ENTRY_COLUMNS}",
                (message, event_id),
            ).fetchone()
            if row is None:
                return
            # REPLACE, as MemoryLedger overwrites: a rejection must always be recordable, never stuck on a conflict.
            connection.execute(
                f"INSERT OR REPLACE INTO parked ({PARKED_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                parked_row(entry_record(entry_from(row), reason, message, now)),
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
                f" WHERE event_id = ? AND state = 'parked' RETURNING {ENTRY_COLUMNS}",
                (billing_customer or None, now, timestamp, event_id),
            ).fetchone()
            if row is None:
                return None
            connection.execute("DELETE FROM parked WHERE key = ?", (event_id,))
            return entry_from(row)

        return await self._db.write(work)

    async def get(self, event_id: str) -> Entry | None:
        return await self._db.read(lambda connection: _select_entry(connection, event_id))

    async def get_parked(self, key: str) -> Parked | None:
        def work(connection: sqlite3.Connection) -> Parked | None:
            row = connection.execute(f"SELECT {PARKED_COLUMNS} FROM parked WHERE key = ?", (key,)).fetchone()
            return None if row is None else parked_from(row)

        return await self._db.read(work)

    async def list_parked(self, reason: ParkReason | None = None, limit: int = 100) -> list[Parked]:
        if limit <= 0:
            return []

        def work(connection: sqlite3.Connection) -> list[Parked]:
            rows = connection.execute(
                f"SELECT {PARKED_COLUMNS} FROM parked WHERE (:reason IS NULL OR reason = :reason)"
                " ORDER BY parked_at, rowid LIMIT :limit",
                {"reason": None if reason is None else reason.value, "limit": limit},
            ).fetchall()
            return [parked_from(row) for row in rows]

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
