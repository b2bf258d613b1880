"""Redis adapters: the shared store of several gateway replicas (`GATEWAY_STORE=redis://host:port/db`).

Every replica (`gateway serve`, `gateway worker`, CLI commands) talks to one Redis through redis-py's asyncio
client. The rules of each port stay MemoryLedger's; what Redis adds is that they must hold across processes, so:

- every state change is ONE server-side step: a Lua script (Redis runs a script whole, with nothing interleaved),
  or a MULTI/EXEC transaction. Python never reads a key and then writes another on the strength of that read;
- Decimal carries and ledger rules are computed in Python (gateway.domain.units.settle, msgspec structs), and the
  scripts commit them only if what Python read is still what the server holds (compare-and-set). A script that
  finds its precondition broken writes nothing and says why, and Python retries with the fresh value;
- every script checks all of its preconditions before its first write. Redis refuses a write for lack of memory
  (maxmemory) only before a script's first write, and never stops one half-way, so a script writes all or nothing;
- any Redis failure surfaces as StoreUnavailable (errors.py).

Modules: `client` (connect), `durability` (the server-settings checks), `keys` (the key layout), `scripts` (the Lua
scripts under lua/), `codec` (values and replies), `errors`, and the adapters `ledger` (with `recording`, its group
commit, and `feedback`, the biller's error reports and reconciliation), `customers` and `biller`. Imports of
redis-py are absolute (`redis.*`), never this package.

Redis Cluster is not supported: the lease script reads entry keys it learns from the queue, which Cluster does not
allow. Use one primary (with replicas, Sentinel or a managed failover).
"""

from gateway.adapters.redis.biller import RedisBiller
from gateway.adapters.redis.client import MAX_CONNECTIONS, connect
from gateway.adapters.redis.customers import RedisCustomers
from gateway.adapters.redis.durability import (
    DurabilityWarning,
    RedisDurability,
    RedisNotDurable,
    durability_warnings,
    refuse_if_volatile,
    warn_if_volatile,
)
from gateway.adapters.redis.keys import DEFAULT_PREFIX
from gateway.adapters.redis.ledger import DEFAULT_DEDUPE_TTL_S, RedisLedger

__all__ = [
    "DEFAULT_DEDUPE_TTL_S",
    "DEFAULT_PREFIX",
    "MAX_CONNECTIONS",
    "DurabilityWarning",
    "RedisBiller",
    "RedisCustomers",
    "RedisDurability",
    "RedisLedger",
    "RedisNotDurable",
    "connect",
    "durability_warnings",
    "refuse_if_volatile",
    "warn_if_volatile",
]
