"""The local ledger biller in PostgreSQL: meter events recorded, not sent, shared by every replica."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.adapters.postgres.database import Connection, PostgresDatabase
from gateway.domain.errors import BillerUnavailable, StoreUnavailable
from gateway.domain.ports import BatchBillingSink, BillerTotals, Delivery, MeterEvent
from gateway.domain.reconcile import HOUR_S


class PostgresBiller(BatchBillingSink, BillerTotals):
    """The local ledger biller in PostgreSQL: records meter events instead of sending them.

    Invariant: one row per identifier (its primary key), like Stripe's de-duplication of `identifier`; a second send
    returns ALREADY_SENT and keeps the first event. A store failure is a transient biller failure
    (BillerUnavailable), so the dispatcher retries the entry rather than parking it. A batch (up to `max_batch`) is
    one statement.
    """

    name = "ledger"
    max_batch = 100

    def __init__(self, database: PostgresDatabase) -> None:
        self._db = database

    async def send(self, event: MeterEvent) -> Delivery:
        return (await self.send_batch([event]))[0]

    async def send_batch(self, events: Sequence[MeterEvent]) -> list[Delivery]:
        """Record every event in one statement; SENT or ALREADY_SENT for each, in order, or nothing at all."""

        async def work(connection: Connection) -> set[str]:
            # ON CONFLICT DO NOTHING is the claim, across replicas too; the rows inserted are the new identifiers.
            rows = await connection.fetch(
                "INSERT INTO meter_events (identifier, customer, value, timestamp)"
                " SELECT identifier, customer, value, timestamp"
                " FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])"
                " WITH ORDINALITY AS e(identifier, customer, value, timestamp, n) ORDER BY n"
                " ON CONFLICT (identifier) DO NOTHING RETURNING identifier",
                [event.identifier for event in events],
                [event.customer for event in events],
                [event.value for event in events],
                [event.timestamp for event in events],
            )
            return {row["identifier"] for row in rows}

        try:
            inserted = await self._db.run(work)
        except StoreUnavailable as exc:
            raise BillerUnavailable(exc.message, cause="store_unavailable") from exc
        outcomes = []
        for event in events:
            # A repeated identifier within the batch: its first occurrence was inserted, the others are repeats.
            outcomes.append(Delivery.SENT if event.identifier in inserted else Delivery.ALREADY_SENT)
            inserted.discard(event.identifier)
        return outcomes

    async def events(self) -> list[MeterEvent]:
        """Every recorded meter event, in the order they were first sent."""
        rows = await self._db.read("SELECT identifier, customer, value, timestamp FROM meter_events ORDER BY seq")
        return [
            MeterEvent(
                identifier=r["identifier"], customer=r["customer"], value=int(r["value"]), timestamp=int(r["timestamp"])
            )
            for r in rows
        ]

    async def hourly_units(self, billing_customer: str, start: int, end: int) -> dict[int, int]:
        try:
            rows = await self._db.read(
                f"SELECT timestamp - ((timestamp % {HOUR_S}) + {HOUR_S}) % {HOUR_S} AS window, SUM(value) AS units"
                " FROM meter_events WHERE customer = $1 AND timestamp >= $2 AND timestamp < $3 GROUP BY 1",
                billing_customer,
                start,
                end,
            )
        except StoreUnavailable as exc:
            raise BillerUnavailable(exc.message, cause="store_unavailable") from exc
        return {int(row["window"]): int(row["units"]) for row in rows}

    async def close(self) -> None:
        # The database belongs to the container (the ledger shares it), which closes it.
        return None
