"""Whether the PostgreSQL server's settings let it keep what it acknowledged."""

from __future__ import annotations

from gateway.adapters.postgres.database import PostgresDatabase
from gateway.domain.errors import StoreUnavailable
from gateway.domain.ports import StoreDurability


class PostgresDurability(StoreDurability):
    """The running check (sweep, /readyz): a webhook is acknowledged once its COMMIT returns, which is durable only
    when the commit waited for its WAL flush (`synchronous_commit` not off) and the flush reached the disk (`fsync`
    on). Both can be changed per role, per database or on a restarted server, so they are read on the live
    connections, as the gateway's own sessions see them."""

    def __init__(self, database: PostgresDatabase) -> None:
        self._db = database

    async def problem(self) -> str | None:
        try:
            rows = await self._db.read(
                "SELECT current_setting('synchronous_commit') AS synchronous_commit, current_setting('fsync') AS fsync"
            )
        except StoreUnavailable:
            return None  # unreachable is /readyz's ping to report, not a durability finding
        problems = []
        if rows[0]["synchronous_commit"] == "off":
            problems.append(
                "synchronous_commit is off: PostgreSQL acknowledges a commit before its WAL is flushed, so a crash "
                "can lose events Ringside was told were recorded; set synchronous_commit = on (docs/postgres.md)."
            )
        if rows[0]["fsync"] != "on":
            problems.append(
                "fsync is off: PostgreSQL never forces its WAL to disk, so a crash can lose or corrupt acknowledged "
                "events; set fsync = on (docs/postgres.md)."
            )
        return " ".join(problems) or None
