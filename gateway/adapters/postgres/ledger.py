"""The ledger in PostgreSQL: entries, parked records and customers' carries, shared by every replica."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.adapters.postgres.database import Connection, PostgresDatabase
from gateway.adapters.postgres.feedback import UPSERT_PARKED, PostgresFeedback, count_sent
from gateway.adapters.postgres.recording import LOCK_KEYS, GroupCommit, record_many
from gateway.adapters.postgres.rows import ENTRY_COLUMNS, PARKED_COLUMNS, entry_from, parked_args, parked_from
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
)
from gateway.domain.ports import BatchLedger, FeedbackLedger
from gateway.domain.units import Rounding

# For the rest of the transaction, no bitmap scans: the pending entries' partial indexes keep an item per entry
# pending since the last VACUUM, and a bitmap scan visits the heap for each, every time, where an index scan marks
# the dead ones once and skips them after (measured: docs/postgres.md). Set before the statements it plans.
_NO_BITMAP_SCANS = "set_config('enable_bitmapscan', 'off', true)"
_LEASE_LOCK = (
    "SELECT pg_advisory_xact_lock(hashtextextended('ringside-gateway-lease:' || current_schema(), 0)),"
    f" {_NO_BITMAP_SCANS}"
)
_INSERT_PARKED = f"INSERT INTO parked ({PARKED_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"


class PostgresLedger(PostgresFeedback, BatchLedger, FeedbackLedger):
    """The ledger in PostgreSQL, with MemoryLedger's semantics, for any number of replicas.

    Invariants: an id is claimed by at most one entry or one parked record (a biller-rejected entry keeps its entry
    and gains a parked record of the same key); every method is one transaction; a lease is `leased_until` on the
    entry, taken with FOR UPDATE SKIP LOCKED, so two dispatchers never lease one entry and an expired lease (a
    killed replica's) is taken over by the next lease_due.
    """

    def __init__(self, database: PostgresDatabase, *, group_commit: bool = True) -> None:
        self._db = database
        self._group = GroupCommit(database) if group_commit else None

    async def record(self, claim: Claim, rounding: Rounding, now: float, *, replaces: str | None = None) -> Recorded:
        item = (claim, rounding, now, replaces)
        if self._group is not None:
            return await self._group.record(item)
        return (await self._db.run(lambda connection: record_many(connection, [item])))[0]

    async def park(self, parked: Parked) -> bool:
        async def work(connection: Connection) -> bool:
            await connection.execute(LOCK_KEYS, [parked.key])
            if await connection.fetchval("SELECT 1 FROM entries WHERE event_id = $1", parked.key) is not None:
                return False
            status = await connection.execute(_INSERT_PARKED + " ON CONFLICT (key) DO NOTHING", *parked_args(parked))
            return bool(status.endswith(" 1"))

        return await self._db.run(work)

    async def lease_due(self, now: float, limit: int, lease_s: float, *, hold_customers: bool = True) -> list[Entry]:
        if limit <= 0:
            return []
        # The customers holding a live lease are found once per call (NOT IN: a subplan run once, then probed); a NOT
        # EXISTS per candidate was planned, on a young table's estimates, as a walk over every pending entry for each
        # candidate (docs/postgres.md).
        customers = (
            """
                    AND due.billing_customer NOT IN (
                        SELECT held.billing_customer FROM entries AS held
                        WHERE held.state = 'pending' AND held.leased_until > $2
                    )"""
            if hold_customers
            else ""
        )

        async def work(connection: Connection) -> list[Entry]:
            # A customer's entries belong to one dispatcher at a time: two replicas choosing at once could each take
            # an entry of one customer (neither sees the other's lease before it commits), so lease_due calls that
            # hold customers take turns on one lock per schema; a choice is a few milliseconds, and the next one sees
            # the last one's leases (a fresh snapshot per statement). Without customers held, SKIP LOCKED suffices.
            await connection.execute(_LEASE_LOCK if hold_customers else f"SELECT {_NO_BITMAP_SCANS}")
            rows = await connection.fetch(
                f"""
                UPDATE entries SET leased_until = $1
                WHERE event_id IN (
                    SELECT event_id FROM entries AS due
                    WHERE state = 'pending' AND next_attempt_at <= $2 AND leased_until <= $2{customers}
                    ORDER BY next_attempt_at, created_at, seq
                    LIMIT $3
                    FOR UPDATE SKIP LOCKED
                )
                RETURNING seq, {ENTRY_COLUMNS}
                """,
                now + lease_s,
                now,
                limit,
            )
            # RETURNING gives no order guarantee: restore the subquery's.
            rows = sorted(rows, key=lambda row: (row["next_attempt_at"], row["created_at"], row["seq"]))
            return [entry_from(row) for row in rows]

        return await self._db.run(work)

    async def renew(self, event_ids: Sequence[str], now: float, lease_s: float) -> list[str]:
        if not event_ids:
            return []

        async def work(connection: Connection) -> list[str]:
            rows = await connection.fetch(
                "UPDATE entries SET leased_until = $1"
                " WHERE event_id = ANY($2::text[]) AND state = 'pending' AND leased_until > $3 RETURNING event_id",
                now + lease_s,
                list(event_ids),
                now,
            )
            renewed = {row["event_id"] for row in rows}
            return [event_id for event_id in event_ids if event_id in renewed]

        return await self._db.run(work)

    async def release(self, event_ids: list[str]) -> None:
        if event_ids:
            await self._execute("UPDATE entries SET leased_until = 0 WHERE event_id = ANY($1::text[])", event_ids)

    async def mark_sent(self, event_id: str, now: float) -> None:
        await self.mark_sent_many([event_id], now)

    async def mark_sent_many(self, event_ids: Sequence[str], now: float) -> None:
        if not event_ids:
            return

        async def work(connection: Connection) -> None:
            await connection.execute(f"SELECT {_NO_BITMAP_SCANS}")
            rows = await connection.fetch(
                "UPDATE entries SET state = 'sent', sent_at = $1, leased_until = 0"
                " WHERE event_id = ANY($2::text[]) AND state = 'pending' RETURNING units",
                now,
                list(event_ids),
            )
            await count_sent(connection, rows)

        await self._db.run(work)

    async def mark_retry(self, event_id: str, next_attempt_at: float, error: str) -> None:
        await self._execute(
            "UPDATE entries SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2, leased_until = 0"
            " WHERE event_id = $3 AND state = 'pending'",
            next_attempt_at,
            error,
            event_id,
        )

    async def mark_rejected(self, event_id: str, message: str, now: float) -> None:
        await self._park_entry(event_id, ParkReason.BILLER_REJECTED, message, now)

    async def mark_too_old(self, event_id: str, message: str, now: float) -> None:
        await self._park_entry(event_id, ParkReason.TOO_OLD, message, now)

    async def _park_entry(self, event_id: str, reason: ParkReason, message: str, now: float) -> None:
        async def work(connection: Connection) -> None:
            row = await connection.fetchrow(
                "UPDATE entries SET state = 'parked', last_error = $1, leased_until = 0"
                f" WHERE event_id = $2 AND state = 'pending' RETURNING {ENTRY_COLUMNS}",
                message,
                event_id,
            )
            if row is None:
                return
            record = entry_record(entry_from(row), reason, message, now)
            await connection.execute(UPSERT_PARKED, *parked_args(record))

        await self._db.run(work)

    async def requeue(
        self, event_id: str, now: float, *, billing_customer: str | None = None, timestamp: int | None = None
    ) -> Entry | None:
        async def work(connection: Connection) -> Entry | None:
            # FOR UPDATE: two replays of one id wait for each other, and the second finds no parked record.
            reason = await connection.fetchval("SELECT reason FROM parked WHERE key = $1 FOR UPDATE", event_id)
            if reason is None or ParkReason(reason) not in REQUEUEABLE:
                return None
            row = await connection.fetchrow(
                "UPDATE entries SET state = 'pending', billing_customer = COALESCE($1, billing_customer),"
                " attempts = 0, next_attempt_at = $2, leased_until = 0, timestamp = COALESCE($3, timestamp)"
                f" WHERE event_id = $4 AND state = 'parked' RETURNING {ENTRY_COLUMNS}",
                billing_customer or None,
                now,
                timestamp,
                event_id,
            )
            if row is None:
                return None
            await connection.execute("DELETE FROM parked WHERE key = $1", event_id)
            return entry_from(row)

        return await self._db.run(work)

    async def get(self, event_id: str) -> Entry | None:
        rows = await self._db.read(f"SELECT {ENTRY_COLUMNS} FROM entries WHERE event_id = $1", event_id)
        return entry_from(rows[0]) if rows else None

    async def get_parked(self, key: str) -> Parked | None:
        rows = await self._db.read(f"SELECT {PARKED_COLUMNS} FROM parked WHERE key = $1", key)
        return parked_from(rows[0]) if rows else None

    async def list_parked(self, reason: ParkReason | None = None, limit: int = 100) -> list[Parked]:
        if limit <= 0:
            return []
        rows = await self._db.read(
            f"SELECT {PARKED_COLUMNS} FROM parked WHERE ($1::text IS NULL OR reason = $1)"
            " ORDER BY parked_at, seq LIMIT $2",
            None if reason is None else reason.value,
            limit,
        )
        return [parked_from(row) for row in rows]

    async def stats(self) -> LedgerStats:
        # Never a count of the sent entries: pending through entries_due, sent from ledger_counters.
        rows = await self._db.read(
            "SELECT p.entries AS pending, p.units AS units_pending, p.oldest, s.entries AS sent, s.units AS units_sent,"
            " (SELECT COUNT(*) FROM parked) AS parked"
            " FROM (SELECT COUNT(*) AS entries, COALESCE(SUM(units), 0) AS units, MIN(created_at) AS oldest"
            "       FROM entries WHERE state = 'pending') AS p,"
            " ledger_counters AS s WHERE s.state = 'sent'"
        )
        row = rows[0]
        return LedgerStats(
            pending=int(row["pending"]),
            sent=int(row["sent"]),
            parked=int(row["parked"]),
            oldest_pending_at=None if row["oldest"] is None else float(row["oldest"]),
            units_sent=int(row["units_sent"]),
            units_pending=int(row["units_pending"]),
        )

    async def usage(self, since: int | None = None, until: int | None = None) -> list[CustomerUsage]:
        rows = await self._db.read(
            "SELECT billing_customer, COUNT(*) AS events,"
            " COALESCE(SUM(units) FILTER (WHERE state = 'sent'), 0) AS sent,"
            " COALESCE(SUM(units) FILTER (WHERE state = 'pending'), 0) AS pending"
            " FROM entries WHERE state IN ('pending', 'sent')"
            " AND ($1::bigint IS NULL OR timestamp >= $1) AND ($2::bigint IS NULL OR timestamp < $2)"
            ' GROUP BY billing_customer ORDER BY billing_customer COLLATE "C"',
            since,
            until,
        )
        return [
            CustomerUsage(
                r["billing_customer"],
                events=int(r["events"]),
                units_sent=int(r["sent"]),
                units_pending=int(r["pending"]),
            )
            for r in rows
        ]

    async def ping(self) -> None:
        # A committed write: only that proves the store is writable (not a read-only standby after a failover).
        await self._execute("UPDATE heartbeat SET beats = beats + 1")

    async def _execute(self, query: str, *args: object) -> None:
        async def work(connection: Connection) -> None:
            await connection.execute(query, *args)

        await self._db.run(work)
