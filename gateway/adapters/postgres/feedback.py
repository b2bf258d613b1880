"""The ledger's side of the biller's feedback in PostgreSQL: error reports, the polling cursor, reconciliation windows
and corrections (the FeedbackLedger port, with MemoryLedger's semantics)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from gateway.adapters.postgres.database import Connection, PostgresDatabase
from gateway.adapters.postgres.rows import ENTRY_COLUMNS, PARKED_COLUMNS, entry_from, parked_args
from gateway.domain.feedback import Rejection
from gateway.domain.ledger import Entry, ParkReason, entry_record
from gateway.domain.reconcile import HOUR_S, Correction, LedgerWindow

# A parked record of an entry, overwriting any earlier one of its key (as MemoryLedger does): parking an entry must
# always be recordable, never stuck on a conflict.
UPSERT_PARKED = (
    f"INSERT INTO parked ({PARKED_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (key) DO UPDATE"
    " SET reason = excluded.reason, message = excluded.message, body = excluded.body, signed_at = excluded.signed_at,"
    " parked_at = excluded.parked_at, event_type = excluded.event_type, ringside_customer = excluded.ringside_customer"
)
# An epoch-aligned hour, floored like Python's // for negative timestamps too (SQL's / truncates toward zero).
_HOUR = f"(timestamp - ((timestamp % {HOUR_S}) + {HOUR_S}) % {HOUR_S})"


async def count_sent(connection: Connection, rows: list[asyncpg.Record], sign: int = 1) -> None:
    """Adjust the counters stats() reads by the entries just moved into (sign 1) or out of (-1) 'sent'."""
    if rows:
        await connection.execute(
            "UPDATE ledger_counters SET entries = entries + $1, units = units + $2 WHERE state = 'sent'",
            sign * len(rows),
            sign * sum(int(row["units"]) for row in rows),
        )


class PostgresFeedback:
    """BillerFeedback, FeedbackCursor and ReconcileLedger over the ledger's tables; PostgresLedger inherits them."""

    _db: PostgresDatabase

    async def sent_between(self, since: float, until: float, billing_customer: str | None = None) -> list[Entry]:
        rows = await self._db.read(
            f"SELECT {ENTRY_COLUMNS} FROM entries WHERE state = 'sent' AND sent_at BETWEEN $1 AND $2"
            ' AND ($3::text IS NULL OR billing_customer = $3) ORDER BY sent_at, event_id COLLATE "C"',
            since,
            until,
            billing_customer,
        )
        return [entry_from(row) for row in rows]

    async def report_handled(self, report_id: str) -> bool:
        rows = await self._db.read("SELECT 1 FROM reports WHERE report_id = $1", report_id)
        return bool(rows)

    async def reject_sent(self, report_id: str, rejections: Sequence[Rejection], now: float) -> int | None:
        async def work(connection: Connection) -> int | None:
            # The report's primary key is its claim: a second handler (another replica) waits, then finds it.
            claimed = await connection.fetchval(
                "INSERT INTO reports (report_id, handled_at) VALUES ($1, $2)"
                " ON CONFLICT (report_id) DO NOTHING RETURNING 1",
                report_id,
                now,
            )
            if claimed is None:
                return None
            messages: dict[str, str] = {}
            for rejection in rejections:
                messages.setdefault(rejection.event_id, rejection.message)
            # The first rejection of an id moves it (later ones find it parked), as MemoryLedger does.
            rows = await connection.fetch(
                "UPDATE entries SET state = 'parked', last_error = m.message"
                " FROM unnest($1::text[], $2::text[]) AS m(event_id, message)"
                f" WHERE entries.event_id = m.event_id AND entries.state = 'sent'"
                f" RETURNING {', '.join('entries.' + c.strip() for c in ENTRY_COLUMNS.split(','))}",
                list(messages),
                list(messages.values()),
            )
            await count_sent(connection, rows, sign=-1)
            for row in rows:
                entry = entry_from(row)
                record = entry_record(entry, ParkReason.BILLER_REJECTED, messages[entry.event_id], now)
                await connection.execute(UPSERT_PARKED, *parked_args(record))
            return len(rows)

        return await self._db.run(work)

    async def get_cursor(self, name: str) -> float | None:
        rows = await self._db.read("SELECT value FROM cursors WHERE name = $1", name)
        return float(rows[0]["value"]) if rows else None

    async def set_cursor(self, name: str, value: float) -> None:
        async def work(connection: Connection) -> None:
            await connection.execute(
                "INSERT INTO cursors (name, value) VALUES ($1, $2)"
                " ON CONFLICT (name) DO UPDATE SET value = GREATEST(cursors.value, excluded.value)",
                name,
                value,
            )

        await self._db.run(work)

    async def sent_windows(self, since: int, until: int, billing_customer: str | None = None) -> list[LedgerWindow]:
        rows = await self._db.read(
            f"""
            WITH ledger AS (
                -- Only what the biller rejected is owed to it; an entry parked too_old never reached it.
                SELECT billing_customer, {_HOUR} AS window_start,
                       COALESCE(SUM(units) FILTER (WHERE state = 'sent'), 0) AS sent_units,
                       COALESCE(SUM(units) FILTER (WHERE p.reason = 'biller_rejected'), 0) AS rejected_units
                FROM entries LEFT JOIN parked AS p ON p.key = entries.event_id AND entries.state = 'parked'
                WHERE state <> 'pending' AND timestamp >= $1 AND timestamp < $2
                  AND ($3::text IS NULL OR billing_customer = $3)
                GROUP BY 1, 2
            ), fixes AS (
                SELECT billing_customer, window_start, COUNT(*) AS corrections, SUM(units) AS corrected_units,
                       MAX(recorded_at) AS last_corrected_at
                FROM corrections
                WHERE window_start >= $1 AND window_start < $2 AND ($3::text IS NULL OR billing_customer = $3)
                GROUP BY 1, 2
            )
            SELECT billing_customer, window_start, COALESCE(l.sent_units, 0) AS sent_units,
                   COALESCE(l.rejected_units, 0) AS rejected_units, COALESCE(f.corrections, 0) AS corrections,
                   COALESCE(f.corrected_units, 0) AS corrected_units, f.last_corrected_at
            FROM ledger AS l FULL JOIN fixes AS f USING (billing_customer, window_start)
            WHERE COALESCE(l.sent_units, 0) <> 0 OR COALESCE(l.rejected_units, 0) <> 0 OR f.corrections IS NOT NULL
            ORDER BY billing_customer COLLATE "C", window_start
            """,
            since,
            until,
            billing_customer,
        )
        return [
            LedgerWindow(
                billing_customer=row["billing_customer"],
                window_start=int(row["window_start"]),
                sent_units=int(row["sent_units"]),
                rejected_units=int(row["rejected_units"]),
                corrections=int(row["corrections"]),
                corrected_units=int(row["corrected_units"]),
                last_corrected_at=None if row["last_corrected_at"] is None else float(row["last_corrected_at"]),
            )
            for row in rows
        ]

    async def record_correction(self, correction: Correction) -> bool:
        async def work(connection: Connection) -> bool:
            inserted = await connection.fetchval(
                "INSERT INTO corrections (identifier, billing_customer, window_start, units, timestamp, recorded_at)"
                " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (identifier) DO NOTHING RETURNING 1",
                correction.identifier,
                correction.billing_customer,
                correction.window_start,
                correction.units,
                correction.timestamp,
                correction.recorded_at,
            )
            return inserted is not None

        return await self._db.run(work)

    async def corrections(self, since: int | None = None, until: int | None = None) -> list[Correction]:
        rows = await self._db.read(
            "SELECT identifier, billing_customer, window_start, units, timestamp, recorded_at FROM corrections"
            " WHERE ($1::bigint IS NULL OR window_start >= $1) AND ($2::bigint IS NULL OR window_start < $2)"
            ' ORDER BY window_start, billing_customer COLLATE "C", recorded_at',
            since,
            until,
        )
        return [
            Correction(
                identifier=row["identifier"],
                billing_customer=row["billing_customer"],
                window_start=int(row["window_start"]),
                units=int(row["units"]),
                timestamp=int(row["timestamp"]),
                recorded_at=float(row["recorded_at"]),
            )
            for row in rows
        ]
