"""The gateway's hot PostgreSQL statement shapes, written once for asyncpg and once for psycopg 3 (bench/pg_drivers.py
times them).

The statements are those of gateway/adapters/postgres/recording.py (record_many) and ledger.py (lease_due), copied
here so that both drivers send exactly the same SQL; keep them in step. The domain's settle_claims is left out (the
same Python for either driver): a batch is all new claims, settled as a fixed addition to each customer's carry.
Rows are read by position with one decoder for both drivers, so the difference is the drivers' own decoding.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Protocol

import asyncpg
import msgspec
from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from gateway.adapters.postgres.recording import LOCK_KEYS
from gateway.adapters.postgres.rows import ENTRY_ARRAYS, ENTRY_COLUMNS
from gateway.domain.errors import StoreUnavailable
from gateway.domain.ledger import Entry, State

SELECT_ENTRIES = f"SELECT {ENTRY_COLUMNS} FROM entries WHERE event_id = ANY($1::text[])"
SELECT_PARKED = "SELECT key FROM parked WHERE key = ANY($1::text[])"
UPSERT_CARRIES = (
    "INSERT INTO carries (billing_customer, carry) SELECT c, '0' FROM unnest($1::text[]) AS c ORDER BY c"
    " ON CONFLICT (billing_customer) DO UPDATE SET carry = carries.carry RETURNING billing_customer, carry"
)
INSERT_ENTRIES = (
    f"INSERT INTO entries ({ENTRY_COLUMNS}) SELECT * FROM unnest({ENTRY_ARRAYS})"
    " ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)
UPDATE_CARRIES = (
    "UPDATE carries SET carry = v.carry FROM unnest($1::text[], $2::text[]) AS v(customer, carry)"
    " WHERE carries.billing_customer = v.customer"
)
LEASE_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('ringside-gateway-lease:' || current_schema(), 0))"
LEASE = f"""
    UPDATE entries SET leased_until = $1
    WHERE event_id IN (
        SELECT event_id FROM entries AS due
        WHERE state = 'pending' AND next_attempt_at <= $2 AND leased_until <= $2
        AND NOT EXISTS (
            SELECT 1 FROM entries AS held
            WHERE held.billing_customer = due.billing_customer
            AND held.state = 'pending' AND held.leased_until > $2
        )
        ORDER BY next_attempt_at, created_at, seq
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    )
    RETURNING seq, {ENTRY_COLUMNS}
"""
# The same 100 rows as a plain read, outside a transaction: the decoding alone, nearly.
FETCH = (
    f"SELECT seq, {ENTRY_COLUMNS} FROM entries WHERE state = 'pending'"
    " ORDER BY next_attempt_at, created_at, seq LIMIT $1"
)
# What each claim adds to its customer's carry (settle_claims' place).
ADDED = Decimal("0.37")


class Row(Protocol):
    """A result row read by position: asyncpg's Record, psycopg's tuple."""

    def __getitem__(self, index: int, /) -> Any: ...


class Batch(msgspec.Struct, frozen=True):
    """One record transaction's arguments: the ids, their customers, and the entries as one list per column."""

    ids: list[str]
    customers: list[str]
    columns: list[list[object]]


class BatchMaker:
    """New claims, ids never seen before, customers drawn (seeded) from a fixed set."""

    def __init__(self, tag: str, customers: int, seed: int) -> None:
        self._tag = tag
        self._customers = customers
        self._random = random.Random(seed)
        self._n = 0

    def make(self, size: int, now: float) -> Batch:
        ids = [f"evt_{self._tag}_{n:020d}" for n in range(self._n, self._n + size)]
        self._n += size
        customers = [f"cus_{self._random.randrange(self._customers):014d}" for _ in ids]
        columns: list[list[object]] = [
            list(ids),
            ["chat.completion.finished"] * size,
            list(customers),
            [f"cust_{c[-10:]}" for c in customers],
            ["0.0123456"] * size,
            [1234] * size,
            [int(now)] * size,
            ["pending"] * size,
            [now] * size,
            [0] * size,
            [now] * size,
            [None] * size,
            [None] * size,
        ]
        return Batch(ids=ids, customers=sorted(set(customers)), columns=columns)


def entry_at(row: Row, at: int = 0) -> Entry:
    """An entry from a row whose ENTRY_COLUMNS start at position `at` (asyncpg's Record and psycopg's tuple alike)."""
    return Entry(
        event_id=row[at],
        event_type=row[at + 1],
        billing_customer=row[at + 2],
        ringside_customer=row[at + 3],
        cost_usd=Decimal(row[at + 4]),
        units=int(row[at + 5]),
        timestamp=int(row[at + 6]),
        state=State(row[at + 7]),
        created_at=float(row[at + 8]),
        attempts=int(row[at + 9]),
        next_attempt_at=float(row[at + 10]),
        last_error=row[at + 11],
        sent_at=None if row[at + 12] is None else float(row[at + 12]),
    )


def leased(rows: Sequence[Row]) -> list[Entry]:
    # As lease_due: RETURNING has no order, restore the subquery's (next_attempt_at, created_at, seq).
    return [entry_at(row, 1) for row in sorted(rows, key=lambda row: (row[11], row[9], row[0]))]


def new_carries(rows: Sequence[Row], batch: Batch) -> list[str]:
    carries = {row[0]: Decimal(row[1]) for row in rows}
    for customer in batch.columns[2]:
        carries[str(customer)] += ADDED
    return [str(carries[customer]) for customer in batch.customers]


class AsyncpgShapes:
    """The shapes as the gateway runs them: one statement per round trip, asyncpg's prepared-statement cache. The
    pool's default reset on release (database.py keeps it) is one more round trip a transaction: `name` says which
    pool this is."""

    def __init__(self, pool: asyncpg.Pool, name: str = "asyncpg") -> None:
        self._pool = pool
        self.name = name

    async def record(self, batch: Batch) -> None:
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(LOCK_KEYS, batch.ids)
            found = [entry_at(row) for row in await connection.fetch(SELECT_ENTRIES, batch.ids)]
            parked = {row[0] for row in await connection.fetch(SELECT_PARKED, batch.ids)}
            if found or parked:
                raise AssertionError("a new claim was found in the store")
            carries = new_carries(await connection.fetch(UPSERT_CARRIES, batch.customers), batch)
            inserted = await connection.fetch(INSERT_ENTRIES, *batch.columns)
            if len(inserted) != len(batch.ids):
                raise StoreUnavailable("an event id was claimed concurrently")
            await connection.execute(UPDATE_CARRIES, batch.customers, carries)

    async def lease(self, now: float, limit: int) -> list[Entry]:
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(LEASE_LOCK)
            return leased(await connection.fetch(LEASE, now, now, limit))

    async def fetch(self, limit: int) -> list[Entry]:
        async with self._pool.acquire() as connection:
            return [entry_at(row, 1) for row in await connection.fetch(FETCH, limit)]

    async def backend_pids(self, size: int) -> list[int]:
        held = [await self._pool.acquire() for _ in range(size)]
        try:
            return [connection.get_server_pid() for connection in held]
        finally:
            for connection in held:
                await self._pool.release(connection)


def psycopg_query(query: str) -> tuple[str, list[int]]:
    """A $n query as psycopg's %s placeholders, and which argument goes to each (a $n may appear twice)."""
    order = [int(number) - 1 for number in re.findall(r"\$(\d+)", query)]
    return re.sub(r"\$\d+", "%s", query), order


class PsycopgShapes:
    """The same shapes through psycopg 3 and its pool, binary results; with `pipeline`, the statements that do not
    wait for an answer go together in one round trip (BEGIN, the locks and both look-ups; the insert and the carry
    update; the COMMIT): 4 round trips a record instead of 8, 2 a lease instead of 4. psycopg's pool resets nothing on
    release (no round trip)."""

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[TupleRow]], *, pipeline: bool) -> None:
        self._pool = pool
        self._pipeline = pipeline
        self.name = "psycopg-pipeline" if pipeline else "psycopg"
        self._queries: dict[str, tuple[str, list[int]]] = {}

    async def record(self, batch: Batch) -> None:
        async with self._pool.connection() as connection:
            if self._pipeline:
                # BEGIN and COMMIT as statements: psycopg's transaction() waits for an answer (a Sync) at both ends
                # in pipeline mode. A failure leaves the transaction aborted; the pool rolls it back on return.
                async with connection.pipeline():
                    await connection.execute("BEGIN")
                    await self._record(connection, batch)
                    await connection.execute("COMMIT")
            else:
                async with connection.transaction():
                    await self._record(connection, batch)

    async def _record(self, connection: AsyncConnection[TupleRow], batch: Batch) -> None:
        # Each fetch waits for its answer; in pipeline mode the executes before it go in the same round trip.
        await self._execute(connection, LOCK_KEYS, batch.ids)
        entries = await self._execute(connection, SELECT_ENTRIES, batch.ids)
        parked = await self._execute(connection, SELECT_PARKED, batch.ids)
        found = [entry_at(row) for row in await entries.fetchall()]
        if found or await parked.fetchall():
            raise AssertionError("a new claim was found in the store")
        upserted = await self._execute(connection, UPSERT_CARRIES, batch.customers)
        carries = new_carries(await upserted.fetchall(), batch)
        inserted = await self._execute(connection, INSERT_ENTRIES, *batch.columns)
        await self._execute(connection, UPDATE_CARRIES, batch.customers, carries)
        if len(await inserted.fetchall()) != len(batch.ids):
            raise StoreUnavailable("an event id was claimed concurrently")

    async def lease(self, now: float, limit: int) -> list[Entry]:
        async with self._pool.connection() as connection:
            if self._pipeline:
                async with connection.pipeline():
                    await connection.execute("BEGIN")
                    entries = await self._lease(connection, now, limit)
                    await connection.execute("COMMIT")
                    return entries
            async with connection.transaction():
                return await self._lease(connection, now, limit)

    async def _lease(self, connection: AsyncConnection[TupleRow], now: float, limit: int) -> list[Entry]:
        await self._execute(connection, LEASE_LOCK)
        cursor = await self._execute(connection, LEASE, now, now, limit)
        return leased(await cursor.fetchall())

    async def fetch(self, limit: int) -> list[Entry]:
        async with self._pool.connection() as connection:
            cursor = await self._execute(connection, FETCH, limit)
            return [entry_at(row, 1) for row in await cursor.fetchall()]

    async def backend_pids(self, size: int) -> list[int]:
        held = [await self._pool.getconn() for _ in range(size)]
        try:
            return [int(connection.info.backend_pid) for connection in held]
        finally:
            for connection in held:
                await self._pool.putconn(connection)

    async def _execute(self, connection: AsyncConnection[TupleRow], query: str, *args: object) -> AsyncCursor[TupleRow]:
        if query not in self._queries:
            self._queries[query] = psycopg_query(query)
        text, order = self._queries[query]
        return await connection.execute(text, [args[i] for i in order], binary=True)
