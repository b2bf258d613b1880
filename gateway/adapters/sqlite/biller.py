"""The local ledger biller: meter events recorded in the store's file instead of being sent to a biller."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from gateway.adapters.sqlite.database import SqliteDatabase
from gateway.adapters.sqlite.sql import in_list, insert_rows
from gateway.domain.errors import BillerUnavailable, StoreUnavailable
from gateway.domain.ports import BatchBillingSink, BillerTotals, Delivery, MeterEvent
from gateway.domain.reconcile import HOUR_S


class SqliteBiller(BatchBillingSink, BillerTotals):
    """The local ledger biller: records meter events in the store's file instead of sending them.

    Invariant: one row per identifier (its PRIMARY KEY), like Stripe's de-duplication of `identifier`; a second
    send of an identifier returns ALREADY_SENT and keeps the first event. A store failure is a transient biller
    failure (BillerUnavailable), so the dispatcher retries the entry rather than parking it. It takes batches like
    Stripe's v2 stream (up to `max_batch` events in one transaction), so that it costs the dispatcher one write per
    batch rather than one per event.
    """

    name = "ledger"
    max_batch = 100

    def __init__(self, database: SqliteDatabase) -> None:
        self._db = database

    async def send(self, event: MeterEvent) -> Delivery:
        return (await self.send_batch([event]))[0]

    async def send_batch(self, events: Sequence[MeterEvent]) -> list[Delivery]:
        """Record every event in one transaction; SENT or ALREADY_SENT for each, in order, or nothing at all."""

        def work(connection: sqlite3.Connection) -> list[Delivery]:
            # One lookup and one executemany for the batch: the identifiers already known are ALREADY_SENT, the
            # others are new (the write lock is held from the lookup on); a repeated identifier counts once.
            marks, identifiers = in_list([event.identifier for event in events])
            known = {
                str(row[0])
                for row in connection.execute(
                    f"SELECT identifier FROM meter_events WHERE identifier IN ({marks})", identifiers
                )
            }
            outcomes = []
            rows = []
            for event in events:
                if event.identifier in known:
                    outcomes.append(Delivery.ALREADY_SENT)
                    continue
                known.add(event.identifier)
                rows.append((event.identifier, event.customer, event.value, event.timestamp))
                outcomes.append(Delivery.SENT)
            insert_rows(
                connection, "INSERT INTO meter_events (identifier, customer, value, timestamp) VALUES {rows}", rows
            )
            return outcomes

        try:
            return await self._db.write(work)
        except StoreUnavailable as exc:
            raise BillerUnavailable(exc.message, cause="store_unavailable") from exc

    async def hourly_units(self, billing_customer: str, start: int, end: int) -> dict[int, int]:
        """The units recorded for `billing_customer` per hour of the event timestamp, over [start, end)."""

        def work(connection: sqlite3.Connection) -> dict[int, int]:
            # hour_floor in SQL; `%` truncates towards zero, so it is folded back for a negative timestamp.
            rows = connection.execute(
                f"SELECT timestamp - ((timestamp % {HOUR_S}) + {HOUR_S}) % {HOUR_S} AS hour, SUM(value)"
                " FROM meter_events WHERE customer = ? AND timestamp >= ? AND timestamp < ? GROUP BY hour",
                (billing_customer, start, end),
            ).fetchall()
            return {int(hour): int(units) for hour, units in rows}

        try:
            return await self._db.read(work)
        except StoreUnavailable as exc:
            raise BillerUnavailable(exc.message, cause="store_unavailable") from exc

    async def events(self) -> list[MeterEvent]:
        """Every recorded meter event, in the order they were first sent."""

        def work(connection: sqlite3.Connection) -> list[MeterEvent]:
            rows = connection.execute(
                "SELECT identifier, customer, value, timestamp FROM meter_events ORDER BY rowid"
            ).fetchall()
            return [MeterEvent(identifier=r[0], customer=r[1], value=int(r[2]), timestamp=int(r[3])) for r in rows]

        return await self._db.read(work)

    async def close(self) -> None:
        # The database belongs to whoever opened it (the container's resource), and the ledger shares it.
        return None
