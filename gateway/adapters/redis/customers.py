"""The customer map in Redis: Ringside customer id -> billing customer id, shared by every replica."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis
from redis.typing import EncodableT

from gateway.adapters.redis.codec import members, text
from gateway.adapters.redis.errors import store_errors
from gateway.adapters.redis.keys import DEFAULT_PREFIX, Keys
from gateway.domain.ports import CustomerStore


class RedisCustomers(CustomerStore):
    """Ringside customer id -> Stripe customer id: a hash, plus a score-0 zset that keeps the ids in byte order.

    Invariant: an id is in the hash exactly when it is in the zset; both change in one MULTI/EXEC.
    """

    def __init__(self, client: Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._keys = Keys(prefix)

    async def get(self, ringside_id: str) -> str | None:
        with store_errors():
            value = await self._client.hget(self._keys.customers, ringside_id)
        return None if value is None else text(value)

    async def set(self, ringside_id: str, billing_id: str) -> None:
        with store_errors():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(self._keys.customers, ringside_id, billing_id)
                pipe.zadd(self._keys.customer_index, {ringside_id: 0})
                await pipe.execute()

    async def set_many(self, pairs: Sequence[tuple[str, str]]) -> None:
        # A dict keeps each id's last pair, as the port requires; one MULTI/EXEC applies all of them or none.
        mapping: dict[EncodableT, EncodableT] = dict(pairs)
        if not mapping:
            return
        with store_errors():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(self._keys.customers, mapping=mapping)
                pipe.zadd(self._keys.customer_index, {ringside_id: 0 for ringside_id, _ in pairs})
                await pipe.execute()

    async def delete(self, ringside_id: str) -> bool:
        with store_errors():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hdel(self._keys.customers, ringside_id)
                pipe.zrem(self._keys.customer_index, ringside_id)
                removed, _ = await pipe.execute()
        return bool(removed)

    async def list(self, limit: int = 1000) -> list[tuple[str, str]]:
        if limit <= 0:
            return []
        with store_errors():
            # Members of equal score are ordered by their bytes: UTF-8 byte order is code point order, as sorted().
            ids = members(await self._client.zrange(self._keys.customer_index, 0, limit - 1))
            if not ids:
                return []
            billing_ids = await self._client.hmget(self._keys.customers, list(ids))
        # An id deleted between the two reads is simply no longer listed.
        pairs = zip(ids, billing_ids, strict=True)
        return [(ringside, text(billing)) for ringside, billing in pairs if billing is not None]
