"""What the PostgreSQL server spends while a bench runs: its processes' CPU and the WAL it writes.

The server must run on this machine (its processes are read from /proc): the postmaster is the parent of the
backend that answers here, and its CPU is that of every process under it (the gateway's pooled backends, the WAL
writer, the checkpointer, ...), so on a shared server other clients' work counts too. To see it alone, run the bench
against a throwaway cluster of its own (docs/postgres.md, "Measuring the server").
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from bench.load import ProcessMemory


@dataclass(frozen=True)
class Snapshot:
    cpu_s: float
    wal_lsn: str


def _parent(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]


class PostgresServer:
    def __init__(self, url: str) -> None:
        self.url = url
        # The backend's parent, read while the backend lives (it ends with its connection).
        self._postmaster = ProcessMemory(int(self._query("SELECT pg_backend_pid()", parent_of_answer=True)))

    def snapshot(self) -> Snapshot:
        return Snapshot(self._postmaster.cpu_s(), self._query("SELECT pg_current_wal_lsn()::text"))

    def since(self, before: Snapshot) -> tuple[float, int]:
        """CPU seconds and WAL bytes since `before`."""
        now = self.snapshot()
        wal = int(self._query(f"SELECT pg_wal_lsn_diff('{now.wal_lsn}', '{before.wal_lsn}')::bigint"))
        return now.cpu_s - before.cpu_s, wal

    def _query(self, sql: str, *, parent_of_answer: bool = False) -> str:
        import asyncpg

        async def run() -> str:
            connection = await asyncpg.connect(self.url)
            try:
                answer = str(await connection.fetchval(sql))
                if parent_of_answer:
                    answer = _parent(int(answer))
                return answer
            finally:
                await connection.close()

        return asyncio.run(run())
