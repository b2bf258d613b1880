"""The SQLite file's schema, and the migration that brings any older file up to it on every open."""

from __future__ import annotations

import sqlite3

from gateway.domain.errors import StoreUnavailable

SCHEMA_VERSION = 2

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
    # to or from 'sent', and entries are never deleted) adds to it in its own transaction; migrate() fills it from
    # one scan when a file is upgraded from schema version 1.
    """
    CREATE TABLE IF NOT EXISTS ledger_counters (
        state   TEXT PRIMARY KEY NOT NULL,
        entries INTEGER NOT NULL,
        units   INTEGER NOT NULL
    ) WITHOUT ROWID
    """,
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
