"""Redis failures as the gateway's errors: nothing named `redis.*` travels upward."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from redis.exceptions import RedisError

from gateway.domain.errors import StoreUnavailable

# Optimistic steps retry on a conflict; every conflict means another call succeeded, so progress is certain, and
# this bound only turns pathological contention into a 503 (Ringside retries) instead of an endless loop.
MAX_CONFLICTS: Final = 1000


@contextmanager
def store_errors() -> Iterator[None]:
    """Any Redis failure (connection refused or lost, timeout, OOM, READONLY replica, ...) becomes StoreUnavailable:
    the delivery gets 503 and Ringside retries. The client's connections reconnect by themselves on the next call."""
    try:
        yield
    except RedisError as exc:
        raise StoreUnavailable(f"Redis is unavailable: {exc}") from exc
