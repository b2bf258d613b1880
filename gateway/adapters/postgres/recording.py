"""Recording claims in PostgreSQL, several to a transaction (group commit).

Exactly once across replicas rests on three things, all inside one transaction per batch:

- a transaction-scoped advisory lock per claimed key (taken in one statement, in a fixed order, so two batches never
  deadlock): record() and park() of one id, in any replica, run one after the other, and the second sees the
  first's claim in the entries or parked table (a batch's locks and reads are one call of record_claims_state, a
  function of the schema whose every statement takes a fresh snapshot);
- the claim itself is the entries table's primary key: the INSERT ... ON CONFLICT DO NOTHING must insert every new
  entry, else the transaction is rolled back (a backstop: the lock means it never conflicts);
- each customer's carry row is locked (INSERT ... ON CONFLICT DO UPDATE, in a fixed order) before it is read, and
  written in the same transaction as the entries it settled.

The answer waits for the COMMIT, so a webhook is acknowledged only once its entry is durable. Concurrent deliveries
share commits: calls that arrive while MAX_IN_FLIGHT batches are being written queue up and go together in the
next one, so one commit (one WAL flush) acknowledges many deliveries (measured: docs/performance.md).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Final

from gateway.adapters.postgres.database import Connection, PostgresDatabase, is_connection_lost
from gateway.adapters.postgres.rows import ENTRY_ARRAYS, ENTRY_COLUMNS, entry_columns, entry_from
from gateway.domain.errors import StoreUnavailable
from gateway.domain.ledger import Claim, Entry, Recorded, settle_claims
from gateway.domain.units import Rounding

# One record() call: the claim, its rounding rule, the time, and the parked key it replaces (a replay) or None.
Item = tuple[Claim, Rounding, float, str | None]

MAX_BATCH: Final = 128
# Batches written at the same time by one process; more calls wait for the next batch (and join it).
MAX_IN_FLIGHT: Final = 4

# Sorted, distinct lock keys, taken in that order by every transaction: lock waits can never form a cycle.
LOCK_KEYS = (
    "SELECT count(pg_advisory_xact_lock(h)) FROM"
    " (SELECT DISTINCT hashtextextended(k, 0) AS h FROM unnest($1::text[]) AS k ORDER BY h) AS keys"
)
# The locks, the ids' entries and parked records, and the customers' carries (locked): schema.py, migration 2.
CLAIMS_STATE = "SELECT * FROM record_claims_state($1::text[], $2::text[], $3::text[])"
# Every write of a batch in one statement; the data-modifying CTEs all run, referenced or not.
WRITE_CLAIMS = (
    f"WITH inserted AS (INSERT INTO entries ({ENTRY_COLUMNS}) SELECT * FROM unnest({ENTRY_ARRAYS})"
    " ON CONFLICT (event_id) DO NOTHING RETURNING 1),"
    " carried AS (UPDATE carries SET carry = v.carry FROM unnest($14::text[], $15::text[]) AS v(customer, carry)"
    " WHERE carries.billing_customer = v.customer RETURNING 1),"
    " unparked AS (DELETE FROM parked WHERE key = ANY($16::text[]) RETURNING 1)"
    " SELECT count(*) FROM inserted"
)


async def record_many(connection: Connection, items: list[Item]) -> list[Recorded]:
    """PostgresLedger.record for several claims in one transaction, each treated in order as if recorded alone after
    the ones before it (a second claim of an id is a duplicate of the first; a customer's carry goes from one claim
    to the next; a replay takes the place of the parked record it replaces, which is deleted). Two round trips
    besides BEGIN and COMMIT: the state (locks, reads), then the writes."""
    ids = [claim.event_id for claim, _, _, _ in items]
    keys = ids + [replaces for _, _, _, replaces in items if replaces is not None]
    # Every customer of the batch, a duplicate's too: its carry row is locked (and made) for nothing, which is rare.
    customers = list({claim.billing_customer for claim, _, _, _ in items})
    entries: dict[str, Entry] = {}
    parked: set[str] = set()
    carries: dict[str, Decimal] = {}
    for row in await connection.fetch(CLAIMS_STATE, keys, ids, customers):
        kind = row["kind"]
        if kind == "carry":
            carries[row["billing_customer"]] = Decimal(row["cost_usd"])
        elif kind == "entry":
            entries[row["event_id"]] = entry_from(row)
        else:
            parked.add(row["event_id"])
    settled = settle_claims(items, entries, parked, carries)
    created = settled.created
    if created or settled.replaced:
        settled_customers = list(dict.fromkeys(entry.billing_customer for entry in created))
        inserted = await connection.fetchval(
            WRITE_CLAIMS,
            *entry_columns(created),
            settled_customers,
            [str(carries[customer]) for customer in settled_customers],
            settled.replaced,
        )
        if inserted != len(created):
            raise StoreUnavailable("an event id was claimed concurrently; nothing was recorded, retry")
    return settled.recorded


class GroupCommit:
    """Queues record() calls and writes them MAX_BATCH at a time, at most MAX_IN_FLIGHT transactions at once.

    A batch that fails for anything but a lost server is written again one call per transaction, so that one bad
    claim fails alone and the others are recorded.
    """

    def __init__(self, database: PostgresDatabase, *, max_batch: int = MAX_BATCH, in_flight: int = MAX_IN_FLIGHT):
        self._db = database
        self._max_batch = max_batch
        self._max_in_flight = in_flight
        self._queue: list[tuple[Item, asyncio.Future[Recorded]]] = []
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def record(self, item: Item) -> Recorded:
        future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._in_flight < self._max_in_flight:
            self._in_flight += 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                await self._commit(batch)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0 and self._queue:
                # Cancelled (shutdown) with calls still queued: nobody would write them; their callers must not hang.
                queued, self._queue = self._queue, []
                _fail(queued, asyncio.CancelledError())

    async def _commit(self, batch: list[tuple[Item, asyncio.Future[Recorded]]]) -> None:
        items = [item for item, _ in batch]
        try:
            results = await self._db.run(lambda connection: record_many(connection, items))
        except StoreUnavailable as exc:
            if len(batch) > 1 and not is_connection_lost(exc):
                for one in batch:
                    await self._commit([one])
                return
            _fail(batch, exc)
        except asyncio.CancelledError as exc:
            _fail(batch, exc)
            raise
        except Exception as exc:  # a bug: its callers hear of it, and the queue goes on
            _fail(batch, exc)
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)


def _fail(batch: list[tuple[Item, asyncio.Future[Recorded]]], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
