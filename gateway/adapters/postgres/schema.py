"""The PostgreSQL schema as numbered migrations, applied once under an advisory lock, recorded in schema_versions.

Every replica migrates when it first connects (and `gateway db migrate` does it on demand): the first to take the
lock applies what is missing, in one transaction per migration, and the others wait, then find nothing to do.
Tables live in the first schema of the connection's search_path, so one database can hold several gateways
(the tests give each test a schema of its own).
"""

from __future__ import annotations

from typing import Final

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from gateway.domain.errors import StoreUnavailable

# A connection of the pool, or a direct one (the statements are the same); database.Connection, which imports this.
Connection = asyncpg.Connection | PoolConnectionProxy

# (version, what it does, statements). Append only: a released migration never changes.
Migration = tuple[int, str, tuple[str, ...]]
MIGRATIONS: Final[tuple[Migration, ...]] = (
    (
        1,
        "ledger, parked records, carries, customers, local biller, feedback",
        (
            """
            CREATE TABLE entries (
                event_id          text PRIMARY KEY,
                event_type        text NOT NULL,
                billing_customer  text NOT NULL,
                ringside_customer text,
                cost_usd          text NOT NULL,
                units             bigint NOT NULL,
                timestamp         bigint NOT NULL,
                state             text NOT NULL CHECK (state IN ('pending', 'sent', 'parked')),
                created_at        double precision NOT NULL,
                attempts          integer NOT NULL DEFAULT 0,
                next_attempt_at   double precision NOT NULL,
                last_error        text,
                sent_at           double precision,
                leased_until      double precision NOT NULL DEFAULT 0,
                seq               bigserial NOT NULL  -- the insertion order: ties in lease_due go oldest first
            ) WITH (fillfactor = 90)
            """,
            # lease_due walks this partial index (pending is small in steady state) in ORDER BY order.
            "CREATE INDEX entries_due ON entries (next_attempt_at, created_at, seq) WHERE state = 'pending'",
            # lease_due's check that a customer has no live lease; leased_until is left out, so that a lease's
            # update writes no index entry (HOT).
            "CREATE INDEX entries_pending_by_customer ON entries (billing_customer) WHERE state = 'pending'",
            "CREATE INDEX entries_sent ON entries (sent_at) WHERE state = 'sent'",
            # Room on each page for the lease's update to stay there (a HOT update: no index entry written); and
            # reports scan by event time through a BRIN index, a few pages for millions of rows (event times grow
            # with the insert order), instead of a B-tree every insert adds to.
            "CREATE INDEX entries_by_time ON entries USING brin (timestamp)",
            """
            CREATE TABLE parked (
                key               text PRIMARY KEY,
                reason            text NOT NULL,
                message           text NOT NULL,
                body              bytea NOT NULL,
                signed_at         bigint NOT NULL,
                parked_at         double precision NOT NULL,
                event_type        text,
                ringside_customer text,
                seq               bigserial NOT NULL
            )
            """,
            "CREATE INDEX parked_by_time ON parked (parked_at, seq)",
            "CREATE INDEX parked_by_reason ON parked (reason, parked_at, seq)",
            # Decimal carries as text, never a float: every digit survives (numeric would too, but text is what
            # Decimal prints and reads back unchanged, exponent and all).
            "CREATE TABLE carries (billing_customer text PRIMARY KEY, carry text NOT NULL)",
            "CREATE TABLE customers (ringside_id text PRIMARY KEY, billing_id text NOT NULL)",
            """
            CREATE TABLE meter_events (
                identifier text PRIMARY KEY,
                customer   text NOT NULL,
                value      bigint NOT NULL,
                timestamp  bigint NOT NULL,
                seq        bigserial NOT NULL
            )
            """,
            "CREATE INDEX meter_events_by_customer ON meter_events (customer, timestamp)",
            # stats() reads the sent figures here instead of counting millions of sent entries; every statement
            # that moves an entry into or out of 'sent' adjusts it in the same transaction.
            "CREATE TABLE ledger_counters (state text PRIMARY KEY, entries bigint NOT NULL, units bigint NOT NULL)",
            "INSERT INTO ledger_counters (state, entries, units) VALUES ('sent', 0, 0)",
            # ping() writes here: a committed write is the only proof that the store can be written now.
            "CREATE TABLE heartbeat (id integer PRIMARY KEY CHECK (id = 1), beats bigint NOT NULL)",
            "INSERT INTO heartbeat (id, beats) VALUES (1, 0)",
            "CREATE TABLE reports (report_id text PRIMARY KEY, handled_at double precision NOT NULL)",
            "CREATE TABLE cursors (name text PRIMARY KEY, value double precision NOT NULL)",
            """
            CREATE TABLE corrections (
                identifier       text PRIMARY KEY,
                billing_customer text NOT NULL,
                window_start     bigint NOT NULL,
                units            bigint NOT NULL,
                timestamp        bigint NOT NULL,
                recorded_at      double precision NOT NULL
            )
            """,
            "CREATE INDEX corrections_by_window ON corrections (window_start)",
        ),
    ),
    (
        2,
        "record_claims_state: a group commit's locks and reads in one call",
        (
            # recording.py's first step in one round trip instead of four. VOLATILE plpgsql: each statement takes a
            # fresh snapshot (READ COMMITTED), so the reads after the locks see what a concurrent holder committed.
            # Each id is its own primary-key probe (the LATERAL ... OFFSET 0 is never flattened into a join): a
            # `= ANY(ids)` on a young table without statistics was planned as a sequential scan (measured: half the
            # server's CPU in bench.wrk, docs/postgres.md).
            """
            CREATE FUNCTION record_claims_state(lock_keys text[], ids text[], customers text[])
            RETURNS TABLE (
                kind text, event_id text, event_type text, billing_customer text, ringside_customer text,
                cost_usd text, units bigint, "timestamp" bigint, state text, created_at double precision,
                attempts integer, next_attempt_at double precision, last_error text, sent_at double precision
            )
            LANGUAGE plpgsql VOLATILE AS $$
            #variable_conflict use_column
            BEGIN
                -- Sorted, distinct lock keys: two batches never wait for each other in a cycle.
                PERFORM count(pg_advisory_xact_lock(h))
                FROM (SELECT DISTINCT hashtextextended(k, 0) AS h FROM unnest(lock_keys) AS k ORDER BY h) AS keys;
                RETURN QUERY
                    SELECT 'entry', e.event_id, e.event_type, e.billing_customer, e.ringside_customer, e.cost_usd,
                        e.units, e.timestamp, e.state, e.created_at, e.attempts, e.next_attempt_at, e.last_error,
                        e.sent_at
                    FROM unnest(ids) AS wanted(id)
                    CROSS JOIN LATERAL (SELECT * FROM entries WHERE entries.event_id = wanted.id OFFSET 0) AS e;
                RETURN QUERY
                    SELECT 'parked', p.key, NULL, NULL, NULL, NULL, NULL::bigint, NULL::bigint, NULL, NULL::float8,
                        NULL::integer, NULL::float8, NULL, NULL::float8
                    FROM unnest(ids) AS wanted(id)
                    CROSS JOIN LATERAL (SELECT key FROM parked WHERE parked.key = wanted.id OFFSET 0) AS p;
                -- A zero carry for a new customer; every row (a new one too) locked until the COMMIT, in a fixed
                -- order. The carry comes back in cost_usd.
                RETURN QUERY
                    INSERT INTO carries AS c (billing_customer, carry)
                    SELECT customer, '0' FROM unnest(customers) AS customer ORDER BY customer
                    ON CONFLICT (billing_customer) DO UPDATE SET carry = c.carry
                    RETURNING 'carry', NULL, NULL, c.billing_customer, NULL, c.carry, NULL::bigint, NULL::bigint,
                        NULL, NULL::float8, NULL::integer, NULL::float8, NULL, NULL::float8;
            END
            $$
            """,
        ),
    ),
)
LATEST: Final = MIGRATIONS[-1][0]

_VERSIONS = """
    CREATE TABLE IF NOT EXISTS schema_versions (
        version     integer PRIMARY KEY,
        description text NOT NULL,
        applied_at  timestamptz NOT NULL DEFAULT now()
    )
"""
# One lock per schema: replicas of one gateway wait for each other, gateways in other schemas do not.
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('ringside-gateway:' || current_schema(), 0))"


class SchemaStatus(msgspec.Struct, frozen=True):
    schema: str
    version: int
    latest: int
    applied: list[tuple[int, str, str]]  # (version, description, applied at)

    @property
    def pending(self) -> list[int]:
        return [version for version, _, _ in MIGRATIONS if version > self.version]


async def migrate(connection: Connection, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Apply the missing `migrations` (all of them but in tests), each in its own transaction under the schema's
    advisory lock; the versions applied. Refuses a schema written by a newer gateway rather than misread it."""
    applied = []
    for version, description, statements in migrations:
        async with connection.transaction():
            await connection.execute(_LOCK)
            current = await _current(connection)
            if current > LATEST:
                raise StoreUnavailable(
                    f"the PostgreSQL schema has version {current}; this gateway understands up to {LATEST}"
                )
            if version <= current:
                continue
            for statement in statements:
                await connection.execute(statement)
            await connection.execute(
                "INSERT INTO schema_versions (version, description) VALUES ($1, $2)", version, description
            )
            applied.append(version)
    return applied


async def status(connection: Connection) -> SchemaStatus:
    schema_name = str(await connection.fetchval("SELECT current_schema()"))
    exists = await connection.fetchval("SELECT to_regclass('schema_versions') IS NOT NULL")
    if not exists:
        return SchemaStatus(schema=schema_name, version=0, latest=LATEST, applied=[])
    rows = await connection.fetch("SELECT version, description, applied_at::text FROM schema_versions ORDER BY version")
    applied = [(int(row[0]), str(row[1]), str(row[2])) for row in rows]
    return SchemaStatus(
        schema=schema_name, version=max((v for v, _, _ in applied), default=0), latest=LATEST, applied=applied
    )


async def _current(connection: Connection) -> int:
    await connection.execute(_VERSIONS)
    version = await connection.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_versions")
    return int(version)
