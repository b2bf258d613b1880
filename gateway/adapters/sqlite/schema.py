"""The SQLite file's schema, and the migration that brings any older file up to it on every open."""

from __future__ import annotations

import sqlite3

from gateway.domain.errors import StoreUnavailable

SCHEMA_VERSION = 4

# Idempotent: run on every open, inside one transaction with the user_version bump.
STATEMENTS = (
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
    # lease_due runs every poll of every dispatcher: next_attempt_at finds the due entries and created_at finishes
    # the ORDER BY, so the query walks the index instead of sorting the table. Partial (version 4): only pending
    # entries are in it, so marking an entry sent or parked deletes its item and inserts none (before, `state` was
    # the first column and every mark moved the item; docs/performance.md, "The v2 stream").
    "CREATE INDEX IF NOT EXISTS entries_due ON entries (next_attempt_at, created_at) WHERE state = 'pending'",
    # lease_due asks, for each due row, whether its customer has a live lease. Only pending entries that were leased
    # and not yet marked or released have leased_until > 0, so this index stays as small as the leases.
    "CREATE INDEX IF NOT EXISTS entries_leased ON entries (billing_customer, leased_until) WHERE leased_until > 0",
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
    # Every statement that moves an entry into 'sent' (mark_sent, mark_sent_many) adds to it, and the only one that
    # moves an entry out of it (reject_sent) subtracts, each in its own transaction (entries are never deleted);
    # migrate() fills it from one scan when a file is upgraded from schema version 1.
    """
    CREATE TABLE IF NOT EXISTS ledger_counters (
        state   TEXT PRIMARY KEY NOT NULL,
        entries INTEGER NOT NULL,
        units   INTEGER NOT NULL
    ) WITHOUT ROWID
    """,
    # Version 3: the biller's feedback (docs/reconcile.md). The error reports applied (reject_sent claims
    # each report id here, so a report is applied once), the polling cursors, and the corrections repair sent.
    """
    CREATE TABLE IF NOT EXISTS handled_reports (
        report_id  TEXT PRIMARY KEY NOT NULL,
        handled_at REAL NOT NULL
    ) WITHOUT ROWID
    """,
    "CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY NOT NULL, value REAL NOT NULL) WITHOUT ROWID",
    """
    CREATE TABLE IF NOT EXISTS corrections (
        identifier       TEXT PRIMARY KEY NOT NULL,
        billing_customer TEXT NOT NULL,
        window_start     INTEGER NOT NULL,
        units            INTEGER NOT NULL,
        timestamp        INTEGER NOT NULL,
        recorded_at      REAL NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS corrections_by_window ON corrections (window_start, billing_customer, recorded_at)",
    # Partial indexes, so that recording a (pending) entry never touches them: sent_between walks the sent entries
    # by sent_at; sent_windows reads the sent and parked entries of a time range from the index alone (covering).
    "CREATE INDEX IF NOT EXISTS entries_sent ON entries (sent_at) WHERE state = 'sent'",
    "CREATE INDEX IF NOT EXISTS entries_settled ON entries (timestamp, billing_customer, units, state, event_id)"
    " WHERE state IN ('sent', 'parked')",
    # The local ledger biller's hourly totals (BillerTotals) read one customer's time range from this index alone.
    "CREATE INDEX IF NOT EXISTS meter_events_by_customer ON meter_events (customer, timestamp, value)",
)


def migrate(connection: sqlite3.Connection) -> None:
    """Create the schema if needed; refuse a file written by a newer gateway rather than misread it."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = int(connection.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"the SQLite store has schema version {version}; this gateway understands up to {SCHEMA_VERSION}"
            )
        if version < 4:
            # Version 4 made entries_due partial: the older index of that name goes, and STATEMENTS makes the new one.
            connection.execute("DROP INDEX IF EXISTS entries_due")
        for statement in STATEMENTS:
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


def file_version(path: str) -> int | None:
    """The schema version of the SQLite file at `path`, read without changing it; None when there is no file."""
    import os

    if not os.path.exists(path):
        return None
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(connection.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"cannot read the SQLite store at {path}: {exc}") from exc
    finally:
        connection.close()
