"""The customer map in SQLite: Ringside customer id -> billing customer id, in the same file as the ledger."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from gateway.adapters.sqlite.database import SqliteDatabase
from gateway.domain.ports import CustomerStore


class SqliteCustomers(CustomerStore):
    """Ringside customer id -> Stripe customer id, in the same file as the ledger."""

    def __init__(self, database: SqliteDatabase) -> None:
        self._db = database

    async def get(self, ringside_id: str) -> str | None:
        def work(connection: sqlite3.Connection) -> str | None:
            row = connection.execute(
                "SELECT billing_id FROM customers WHERE ringside_id = ?", (ringside_id,)
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._db.read(work)

    async def set(self, ringside_id: str, billing_id: str) -> None:
        await self._db.write(
            lambda connection: connection.execute(
                "INSERT INTO customers (ringside_id, billing_id) VALUES (?, ?)"
                " ON CONFLICT (ringside_id) DO UPDATE SET billing_id = excluded.billing_id",
                (ringside_id, billing_id),
            )
        )

    async def set_many(self, pairs: Sequence[tuple[str, str]]) -> None:
        rows = [(str(ringside_id), str(billing_id)) for ringside_id, billing_id in pairs]
        if not rows:
            return
        # One transaction: a failure anywhere (disk full, locked) rolls back every row, so an import is never half done.
        await self._db.write(
            lambda connection: connection.executemany(
                "INSERT INTO customers (ringside_id, billing_id) VALUES (?, ?)"
                " ON CONFLICT (ringside_id) DO UPDATE SET billing_id = excluded.billing_id",
                rows,
            )
        )

    async def delete(self, ringside_id: str) -> bool:
        def work(connection: sqlite3.Connection) -> bool:
            return connection.execute("DELETE FROM customers WHERE ringside_id = ?", (ringside_id,)).rowcount > 0

        return await self._db.write(work)

    async def list(self, limit: int = 1000) -> list[tuple[str, str]]:
        if limit <= 0:
            return []

        def work(connection: sqlite3.Connection) -> list[tuple[str, str]]:
            rows = connection.execute(
                "SELECT ringside_id, billing_id FROM customers ORDER BY ringside_id LIMIT ?", (limit,)
            ).fetchall()
            return [(str(row[0]), str(row[1])) for row in rows]

        return await self._db.read(work)
