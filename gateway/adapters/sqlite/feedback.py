"""The ledger's side of closing the loop with the biller, in SQLite: error reports, polling cursors, reconciliation.

Tables (schema version 3, sqlite/schema.py): `handled_reports` (the report ids reject_sent applied), `cursors`,
`corrections`; the partial indexes `entries_sent` (sent_between) and `entries_settled` (sent_windows).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from gateway.adapters.sqlite.database import SqliteDatabase
from gateway.adapters.sqlite.ledger_rows import ENTRY_COLUMNS, PARKED_COLUMNS, entry_from, parked_row
from gateway.domain.feedback import Rejection
from gateway.domain.ledger import Entry, ParkReason, entry_record
from gateway.domain.ports import FeedbackLedger
from gateway.domain.reconcile import HOUR_S, Correction, LedgerWindow

# hour_floor in SQL: `%` truncates towards zero, so it is folded back into [0, HOUR_S) for a negative timestamp.
_WINDOW = f"timestamp - ((timestamp % {HOUR_S}) + {HOUR_S}) % {HOUR_S}"
# Per customer and hour, the units sent and those the biller rejected. INDEXED BY: left to itself the planner walks
# every sent entry through entries_due (state = ...); entries_settled covers the query. A parked entry counts only
# when its parked record says the biller rejected it (one parked on too_old never reached the biller).
SENT_WINDOWS = (
    f"SELECT billing_customer, {_WINDOW} AS window_start,"
    " SUM(CASE WHEN state = 'sent' THEN units ELSE 0 END), SUM(CASE WHEN state = 'parked' THEN units ELSE 0 END)"
    " FROM entries INDEXED BY entries_settled"
    " WHERE state IN ('sent', 'parked') AND timestamp >= :since AND timestamp < :until"
    " AND (:customer IS NULL OR billing_customer = :customer)"
    " AND (state = 'sent' OR EXISTS (SELECT 1 FROM parked WHERE key = event_id AND reason = 'biller_rejected'))"
    " GROUP BY billing_customer, window_start"
)
_CORRECTION_COLUMNS = "identifier, billing_customer, window_start, units, timestamp, recorded_at"


def _reject_sent(
    connection: sqlite3.Connection, report_id: str, rejections: Sequence[Rejection], now: float
) -> int | None:
    claimed = connection.execute(
        "INSERT INTO handled_reports (report_id, handled_at) VALUES (?, ?) ON CONFLICT (report_id) DO NOTHING",
        (report_id, now),
    ).rowcount
    if claimed == 0:
        return None
    moved = 0
    units = 0
    for rejection in rejections:  # a repeated id is moved by its first rejection: it is no longer sent after it
        row = connection.execute(
            "UPDATE entries SET state = 'parked', last_error = ?, leased_until = 0"
            f" WHERE event_id = ? AND state = 'sent' RETURNING {ENTRY_COLUMNS}",
            (rejection.message, rejection.event_id),
        ).fetchone()
        if row is None:
            continue
        entry = entry_from(row)
        # REPLACE, as _park_entry: a rejection must always be recordable, never stuck on a conflict.
        connection.execute(
            f"INSERT OR REPLACE INTO parked ({PARKED_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            parked_row(entry_record(entry, ParkReason.BILLER_REJECTED, rejection.message, now)),
        )
        moved += 1
        units += entry.units
    if moved:
        # The sent counters stats() reads: these entries left 'sent'.
        connection.execute(
            "UPDATE ledger_counters SET entries = entries - ?, units = units - ? WHERE state = 'sent'", (moved, units)
        )
    return moved


def _sent_windows(
    connection: sqlite3.Connection, since: int, until: int, billing_customer: str | None
) -> list[LedgerWindow]:
    bounds = {"since": since, "until": until, "customer": billing_customer}
    windows: dict[tuple[str, int], LedgerWindow] = {}
    for customer, start, sent_units, rejected_units in connection.execute(
        SENT_WINDOWS,
        bounds,
    ):
        windows[(str(customer), int(start))] = LedgerWindow(
            str(customer), int(start), int(sent_units), rejected_units=int(rejected_units)
        )
    for customer, start, count, units, latest in connection.execute(
        "SELECT billing_customer, window_start, COUNT(*), SUM(units), MAX(recorded_at) FROM corrections"
        " WHERE window_start >= :since AND window_start < :until"
        " AND (:customer IS NULL OR billing_customer = :customer) GROUP BY billing_customer, window_start",
        bounds,
    ):
        key = (str(customer), int(start))
        current = windows.get(key) or LedgerWindow(key[0], key[1], 0)
        windows[key] = LedgerWindow(
            key[0],
            key[1],
            current.sent_units,
            rejected_units=current.rejected_units,
            corrections=int(count),
            corrected_units=int(units),
            last_corrected_at=float(latest),
        )
    return [window for key, window in sorted(windows.items()) if _counts(window)]


def _counts(window: LedgerWindow) -> bool:
    return bool(window.sent_units or window.rejected_units or window.corrections)


class SqliteFeedback(FeedbackLedger):
    """FeedbackLedger for SqliteLedger, on its database (`_db`); `get` is the ledger's own."""

    _db: SqliteDatabase

    async def sent_between(self, since: float, until: float, billing_customer: str | None = None) -> list[Entry]:
        def work(connection: sqlite3.Connection) -> list[Entry]:
            # INDEXED BY, as in SENT_WINDOWS: left to itself the planner walks every sent entry through entries_due.
            rows = connection.execute(
                f"SELECT {ENTRY_COLUMNS} FROM entries INDEXED BY entries_sent"
                " WHERE state = 'sent' AND sent_at >= :since AND sent_at <= :until"
                " AND (:customer IS NULL OR billing_customer = :customer)"
                " ORDER BY sent_at, event_id",
                {"since": since, "until": until, "customer": billing_customer},
            ).fetchall()
            return [entry_from(row) for row in rows]

        return await self._db.read(work)

    async def report_handled(self, report_id: str) -> bool:
        def work(connection: sqlite3.Connection) -> bool:
            found = connection.execute("SELECT 1 FROM handled_reports WHERE report_id = ?", (report_id,)).fetchone()
            return found is not None

        return await self._db.read(work)

    async def reject_sent(self, report_id: str, rejections: Sequence[Rejection], now: float) -> int | None:
        # One write: the claim of the report and every move commit together or not at all.
        moved: int | None = await self._db.write(
            lambda connection: _reject_sent(connection, report_id, rejections, now)
        )
        return moved

    async def get_cursor(self, name: str) -> float | None:
        def work(connection: sqlite3.Connection) -> float | None:
            row = connection.execute("SELECT value FROM cursors WHERE name = ?", (name,)).fetchone()
            return None if row is None else float(row[0])

        return await self._db.read(work)

    async def set_cursor(self, name: str, value: float) -> None:
        await self._db.write(
            lambda connection: connection.execute(
                "INSERT INTO cursors (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
                (name, value),
            )
        )

    async def sent_windows(self, since: int, until: int, billing_customer: str | None = None) -> list[LedgerWindow]:
        return await self._db.read(lambda connection: _sent_windows(connection, since, until, billing_customer))

    async def record_correction(self, correction: Correction) -> bool:
        def work(connection: sqlite3.Connection) -> bool:
            inserted = connection.execute(
                f"INSERT INTO corrections ({_CORRECTION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (identifier) DO NOTHING",
                (
                    correction.identifier,
                    correction.billing_customer,
                    correction.window_start,
                    correction.units,
                    correction.timestamp,
                    correction.recorded_at,
                ),
            ).rowcount
            return inserted == 1

        return await self._db.write(work)

    async def corrections(self, since: int | None = None, until: int | None = None) -> list[Correction]:
        def work(connection: sqlite3.Connection) -> list[Correction]:
            rows = connection.execute(
                f"SELECT {_CORRECTION_COLUMNS} FROM corrections"
                " WHERE (:since IS NULL OR window_start >= :since) AND (:until IS NULL OR window_start < :until)"
                " ORDER BY window_start, billing_customer, recorded_at, identifier",
                {"since": since, "until": until},
            ).fetchall()
            return [
                Correction(str(r[0]), str(r[1]), int(r[2]), int(r[3]), int(r[4]), recorded_at=float(r[5])) for r in rows
            ]

        return await self._db.read(work)
