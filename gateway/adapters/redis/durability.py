"""The server-settings checks: whether a Redis server could forget acknowledged events or claims.

Long-running processes refuse such a Redis (`refuse_if_volatile`) unless the operator accepted the risk
(GATEWAY_REDIS_ALLOW_VOLATILE=true), and `RedisDurability` re-checks while they run: a Redis can restart with other
settings under a running gateway. Settings that cannot be read (managed services often disable CONFIG) are warned
about, never refused: the gateway cannot tell.
"""

from __future__ import annotations

from typing import Any

import msgspec
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.adapters.redis.codec import text
from gateway.domain.ports import StoreDurability

log = structlog.get_logger("gateway.redis")

# The findings that make a Redis unfit for billing data; "durability_unknown" is only a warning.
_REFUSED = ("redis.no_persistence", "redis.eviction_enabled")
_ALLOW = "Or set GATEWAY_REDIS_ALLOW_VOLATILE=true to run on it anyway, accepting that risk."


class RedisNotDurable(Exception):
    """A long-running process must not start on this Redis; the message names the setting to change."""


class DurabilityWarning(msgspec.Struct, frozen=True):
    """One way a Redis server could forget acknowledged events or claims: a log event name and what to do."""

    event: str
    message: str


async def durability_warnings(client: Redis) -> list[DurabilityWarning]:
    """What is wrong with this Redis as a home for billing data; empty when nothing is. Never raises.

    - `appendonly no`: without AOF, a restart loses every write since the last RDB snapshot (or all of them), so
      events Ringside was told were recorded could be lost, and claims forgotten (a redelivery billed again).
    - a `maxmemory-policy` other than `noeviction`: Redis would evict claims and pending entries under memory
      pressure instead of refusing writes (which become 503s, and Ringside retries).
    """
    try:
        appendonly = _config_value(await client.config_get("appendonly"), "appendonly")
        eviction = _config_value(await client.config_get("maxmemory-policy"), "maxmemory-policy")
    except RedisError as exc:
        # Managed Redis services often disable CONFIG: say that we could not check rather than stay silent.
        return [DurabilityWarning("redis.durability_unknown", f"could not read Redis persistence settings: {exc}")]
    warnings = []
    if appendonly != "yes":
        warnings.append(
            DurabilityWarning(
                "redis.no_persistence",
                "Redis has no AOF persistence (appendonly no): acknowledged events could be lost on a Redis "
                "restart. Run Redis for billing data with appendonly yes (docs/storage.md, Redis).",
            )
        )
    if eviction not in ("noeviction", ""):
        warnings.append(
            DurabilityWarning(
                "redis.eviction_enabled",
                f"maxmemory-policy is {eviction}: Redis may evict claims and pending entries under memory "
                "pressure; set maxmemory-policy noeviction (docs/storage.md, Redis).",
            )
        )
    return warnings


async def warn_if_volatile(client: Redis) -> None:
    """At start-up: log a structlog warning for each durability_warnings() finding. Never raises."""
    for warning in await durability_warnings(client):
        log.warning(warning.event, message=warning.message)


async def volatility(client: Redis) -> str | None:
    """Why this Redis could lose acknowledged events (the settings to change), or None. Never raises."""
    refused = [w.message for w in await durability_warnings(client) if w.event in _REFUSED]
    return " ".join([*refused, _ALLOW]) if refused else None


async def refuse_if_volatile(client: Redis, *, allow_volatile: bool, warn: bool = True) -> None:
    """At start-up: warn about every finding (unless not `warn`); raise RedisNotDurable for a refused one unless
    `allow_volatile`."""
    if warn:
        await warn_if_volatile(client)
    reason = None if allow_volatile else await volatility(client)
    if reason is not None:
        raise RedisNotDurable(reason)


class RedisDurability(StoreDurability):
    """The running check: the reason this Redis could lose acknowledged events now, None when it could not (or
    when the operator allowed a volatile Redis)."""

    def __init__(self, client: Redis, *, allow_volatile: bool = False) -> None:
        self._client = client
        self._allow_volatile = allow_volatile

    async def problem(self) -> str | None:
        return None if self._allow_volatile else await volatility(self._client)


def _config_value(reply: Any, name: str) -> str:
    """One value of a CONFIG GET reply ("" for a parameter the server does not know), whatever the key type.

    redis-py decodes CONFIG replies to str even without decode_responses; accept bytes too, to be independent of it.
    """
    values = {text(key): text(value) for key, value in dict(reply).items()}
    return values.get(name, "")
