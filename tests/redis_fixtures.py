"""A real Redis for tests (never a mock): the server at 127.0.0.1:6379 that `scripts/test` starts when none answers.

Every test gets a key prefix of its own (`test:<uuid>:`) and its keys are deleted afterwards, so tests can run
against a shared server, side by side. Without Redis the tests are skipped on a laptop, but under `CI=true` a
missing Redis fails them: CI must never pass by skipping the production adapter.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.adapters.redis import connect

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


async def open_test_redis(url: str = REDIS_URL) -> Redis:
    """A connected client, or a skip (a failure under CI) naming the URL that did not answer."""
    client = connect(url)
    try:
        await client.ping()
    except RedisError as exc:
        await client.aclose()
        message = f"no Redis answers at {url} ({exc}); start one: redis-server --port 6379 --save '' --daemonize yes"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return client


@pytest.fixture
async def redis_client() -> AsyncIterator[Redis]:
    client = await open_test_redis()
    yield client
    await client.aclose()


@pytest.fixture
async def redis_prefix(redis_client: Redis) -> AsyncIterator[str]:
    """A key prefix no other test uses; every key under it is deleted when the test ends."""
    prefix = f"test:{uuid.uuid4().hex}:"
    yield prefix
    batch = [key async for key in redis_client.scan_iter(match=f"{prefix}*", count=1000)]
    if batch:
        await redis_client.delete(*batch)
