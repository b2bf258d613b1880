"""The connection pool every PostgreSQL adapter of a process shares, and PostgreSQL failures as StoreUnavailable.

The pool is made on first use (the container builds adapters synchronously, and a server that is down at start-up
may be up a second later), and the schema is migrated once then, under an advisory lock (schema.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Final, TypeVar

import asyncpg

from gateway.adapters.postgres import schema
from gateway.domain.errors import StoreUnavailable

T = TypeVar("T")
# What a pooled connection is: every adapter's statements take one.
Connection = schema.Connection

# A webhook must get its answer (or a 503) well within Ringside's delivery timeout: a dead server fails fast.
CONNECT_TIMEOUT_S: Final = 2.0
COMMAND_TIMEOUT_S: Final = 5.0
# Waiting longer than this for a pooled connection is a pool exhausted: 503, Ringside retries.
POOL_WAIT_S: Final = 5.0
# Connections per process. Group commit (recording.py) keeps a few transactions in flight, not one per delivery,
# so a small pool serves thousands of deliveries a second and leaves max_connections for the other replicas.
MAX_CONNECTIONS: Final = 10
# A deadlock or serialization failure aborts the transaction whole: it is run again, this many times at most.
MAX_ATTEMPTS: Final = 3
_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
# The server went away (restart, failover, network): every pooled connection is likely dead too.
_CONNECTION_LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    OSError,
)


def is_connection_lost(exc: StoreUnavailable) -> bool:
    """Whether the server (not the statement) failed: running the work again now would fail the same way."""
    return isinstance(exc.__cause__, (*_CONNECTION_LOST, TimeoutError))


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


class PostgresDatabase:
    """One asyncpg pool for `postgresql://user:password@host:port/dbname?sslmode=...` (or `postgres://`).

    `run(work)` runs `work(connection)` in one transaction and maps every failure to StoreUnavailable: a caller
    never sees a half-written step, and the pool replaces broken connections by itself.
    """

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = MAX_CONNECTIONS,
        migrate: bool = True,
        pool_wait_s: float = POOL_WAIT_S,
    ) -> None:
        if not is_postgres_url(url):
            raise ValueError("a PostgreSQL URL starts with postgresql:// or postgres://")
        self.url = url
        self._max_connections = max_connections
        self._migrate = migrate
        self._pool_wait_s = pool_wait_s
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    async def pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                with store_errors():
                    pool = await asyncpg.create_pool(
                        self.url,
                        min_size=1,
                        max_size=self._max_connections,
                        timeout=CONNECT_TIMEOUT_S,
                        command_timeout=COMMAND_TIMEOUT_S,
                        server_settings={"application_name": "ringside-gateway"},
                        reset=_keep_session,
                    )
                    try:
                        if self._migrate:
                            async with pool.acquire(timeout=POOL_WAIT_S) as connection:
                                await schema.migrate(connection)
                    except BaseException:
                        await pool.close()
                        raise
                self._pool = pool
        return self._pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection, outside any transaction (reads of one statement, the schema commands)."""
        pool = await self.pool()
        try:
            with store_errors():
                async with pool.acquire(timeout=self._pool_wait_s) as connection:
                    yield connection
        except StoreUnavailable as exc:
            if isinstance(exc.__cause__, _CONNECTION_LOST):
                # The next calls get fresh connections instead of each finding a dead one.
                await pool.expire_connections()
            raise

    async def run(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        """`work(connection)` in one transaction, run again on a deadlock or serialization failure."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                async with self.connection() as connection, connection.transaction():
                    return await work(connection)
            except StoreUnavailable as exc:
                if attempt == MAX_ATTEMPTS or not isinstance(exc.__cause__, _RETRYABLE):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def read(self, query: str, *args: object) -> list[asyncpg.Record]:
        async with self.connection() as connection:
            rows: list[asyncpg.Record] = await connection.fetch(query, *args)
            return rows

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


async def _keep_session(connection: asyncpg.Connection) -> None:
    """What the pool does to a connection it takes back, besides rolling back an open transaction (it always does):
    nothing. Its default sends RESET ALL, CLOSE ALL, UNLISTEN * and pg_advisory_unlock_all(), a round trip after
    every transaction, for session state the gateway never makes (no SET, LISTEN, cursor or session-level lock)."""
    return None


@contextmanager
def store_errors() -> Iterator[None]:
    """Any PostgreSQL failure (refused, lost, timed out, pool exhausted, read-only standby after a failover, shut
    down by an operator, ...) becomes StoreUnavailable: the delivery gets 503 and Ringside retries."""
    try:
        yield
    except TimeoutError as exc:
        raise StoreUnavailable("PostgreSQL did not answer in time (or the connection pool is exhausted)") from exc
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise StoreUnavailable(f"PostgreSQL is unavailable: {exc}") from exc
