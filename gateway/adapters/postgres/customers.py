"""The customer map in PostgreSQL: Ringside customer id -> billing customer id, beside the ledger."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.adapters.postgres.database import Connection, PostgresDatabase
from gateway.domain.ports import CustomerStore


class PostgresCustomers(CustomerStore):
    """Ringside customer id -> Stripe customer id, in the same database as the ledger."""

    def __init__(self, database: PostgresDatabase) -> None:
        self._db = database

    async def get(self, ringside_id: str) -> str | None:
        rows = await self._db.read("SELECT billing_id FROM customers WHERE ringside_id = $1", ringside_id)
        return str(rows[0]["billing_id"]) if rows else None

    async def set(self, ringside_id: str, billing_id: str) -> None:
        await self.set_many([(ringside_id, billing_id)])

    async def set_many(self, pairs: Sequence[tuple[str, str]]) -> None:
        # The last pair of a repeated id wins, and one statement cannot update a row twice: keep only that one.
        latest = dict((str(ringside_id), str(billing_id)) for ringside_id, billing_id in pairs)
        if not latest:
            return

        async def work(connection: Connection) -> None:
            # One statement, one transaction: an import is all done or not at all.
            await connection.execute(
                "INSERT INTO customers (ringside_id, billing_id) SELECT * FROM unnest($1::text[], $2::text[])"
                " ON CONFLICT (ringside_id) DO UPDATE SET billing_id = excluded.billing_id",
                list(latest),
                list(latest.values()),
            )

        await self._db.run(work)

    async def delete(self, ringside_id: str) -> bool:
        async def work(connection: Connection) -> bool:
            status: str = await connection.execute("DELETE FROM customers WHERE ringside_id = $1", ringside_id)
            return status != "DELETE 0"

        return await self._db.run(work)

    async def list(self, limit: int = 1000) -> list[tuple[str, str]]:
        if limit <= 0:
            return []
        rows = await self._db.read(
            'SELECT ringside_id, billing_id FROM customers ORDER BY ringside_id COLLATE "C" LIMIT $1', limit
        )
        return [(str(row["ringside_id"]), str(row["billing_id"])) for row in rows]
