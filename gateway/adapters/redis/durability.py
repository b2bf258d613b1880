"""The server-settings checks: whether a Redis server could forget acknowledged events or claims."""

from __future__ import annotations

from typing import Any

import msgspec
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.adapters.redis.codec import text

log = structlog.get_logger("gateway.redis")


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
                "restart. Run Redis for billing data with appendonly yes (README, Redis).",
            )
        )
    if eviction not in ("noeviction", ""):
        warnings.append(
            DurabilityWarning(
                "redis.eviction_enabled",
                f"maxmemory-policy is {eviction}: Redis may evict claims and pending entries under memory "
                "pressure; set maxmemory-policy noeviction (README, Redis).",
            )
        )
    return warnings


async def warn_if_volatile(client: Redis) -> None:
    """At start-up: log a structlog warning for each durability_warnings() finding. Never raises."""
    for warning in await durability_warnings(client):
        log.warning(warning.event, message=warning.message)


def _config_value(reply: Any, name: str) -> str:
    """One value of a CONFIG GET reply ("" for a parameter the server does not know), whatever the key type.

    redis-py decodes CONFIG replies to str even without decode_responses; accept bytes too, to be independent of it.
    """
    values = {text(key): text(value) for key, value in dict(reply).items()}
    return values.get(name, "")
