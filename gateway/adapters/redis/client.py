"""The redis-py asyncio client every Redis adapter of a process shares: its pool, timeouts and retries."""

from __future__ import annotations

from contextlib import suppress
from typing import Final, cast

import hiredis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.typing import EncodableT
from redis.utils import HIREDIS_AVAILABLE

# A webhook must get its answer (or a 503) well within Ringside's delivery timeout: a dead Redis fails fast, a
# slow one is abandoned after SOCKET_TIMEOUT_S per try.
SOCKET_TIMEOUT_S: Final = 2.0
# Connections per process; every step is one short script, so a few dozen serve thousands of deliveries a second.
MAX_CONNECTIONS: Final = 64
POOL_WAIT_S: Final = 5.0
# A pooled connection idle this long is PINGed before use, so a Redis restart is noticed before a command is lost.
HEALTH_CHECK_INTERVAL_S: Final = 15
# Retries re-dial a broken pooled connection (the first command after a Redis restart fails on it). Re-sending a
# script after a lost reply is safe: each one re-checks its preconditions (a second record of an id is answered as
# a duplicate, still a 2xx after a durable record; a second compare-and-set finds the new value and stops; a second
# lease leases other entries, and the first ones come back when their lease runs out).
_RETRY = Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=2)


def connect(url: str, *, max_connections: int = MAX_CONNECTIONS) -> Redis:
    """A client for `redis://host:port/db` (or `rediss://`): no I/O until the first command.

    Bytes in, bytes out (no decode_responses): stored records are binary msgpack. The pool is a blocking one: under
    a burst, calls queue for a connection (up to POOL_WAIT_S) instead of failing at once or opening one connection
    per concurrent delivery. The client owns its pool and closes it with `aclose()`.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=POOL_WAIT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
        retry=_RETRY,
        client_name="ringside-gateway",
    )
    if HIREDIS_AVAILABLE:
        pool.connection_class = _packing_with_hiredis(pool.connection_class)
    return Redis.from_pool(pool)


class _HiredisPacking:
    """Commands packed by hiredis.pack_command (C) rather than redis-py's asyncio packer (Python): the same bytes
    (RESP arrays of bulk strings), at a fraction of the CPU. Command names of several words and what hiredis
    refuses (None, bool: redis-py raises DataError for them) go to redis-py's own packer."""

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        if not (isinstance(args[0], str) and " " in args[0]):
            with suppress(TypeError):
                return [hiredis.pack_command(args)]  # type: ignore[arg-type]  # its stub types a 1-tuple
        return cast("list[bytes]", super().pack_command(*args))  # type: ignore[misc]


def _packing_with_hiredis(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """The pool's own connection class (TCP, TLS or Unix socket, as the URL chose) with _HiredisPacking first."""
    return type(f"Hiredis{connection_class.__name__}", (_HiredisPacking, connection_class), {})
