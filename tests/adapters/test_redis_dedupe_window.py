"""Redis forgets a sent event id only after the gateway would refuse the event anyway (GATEWAY_DEDUPE_TTL_S).

Ingest accepts an event up to the biller's window old (35 days for Stripe), so a sent entry must be remembered at
least that long, plus the signature tolerance: a redelivery inside the window is a duplicate, never billed twice.
Time is a FrozenClock for the gateway; Redis's own clock is moved by the same amount by taking that much off every
key's time to live (what Redis does as time passes: a key whose time runs out is gone).
"""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from gateway.adapters.clock import FrozenClock
from gateway.adapters.memory import MemoryBiller, MemoryCustomers
from gateway.adapters.redis import DEFAULT_DEDUPE_TTL_S, RedisLedger
from gateway.app.environment import load_settings
from gateway.app.settings_checks import SettingsError
from gateway.domain.outcome import Status
from gateway.domain.signature import SignatureVerifier, sign
from gateway.service.dispatcher import DispatchConfig, Dispatcher
from gateway.service.ingest import Ingest
from tests.builders import SECRET, encode, event

NOW = 1_800_000_000.0
DAY = 24 * 3600


async def let_redis_time_pass(client: Redis, prefix: str, seconds: float) -> None:
    """Age every key under `prefix` by `seconds`, as Redis's clock would: a key whose time to live runs out goes."""
    async for key in client.scan_iter(match=f"{prefix}*", count=1000):
        left_ms = await client.pttl(key)
        if left_ms < 0:
            continue  # no expiry
        remaining = left_ms - int(seconds * 1000)
        if remaining <= 0:
            await client.delete(key)
        else:
            await client.pexpire(key, remaining)


@pytest.mark.parametrize("age_days", [1, 30, 34, 35], ids=lambda days: f"{days} days")
async def test_redelivery_is_a_duplicate_when_the_event_is_as_old_as_ingest_accepts(
    redis_client: Redis, redis_prefix: str, age_days: int
) -> None:
    # Arrange: the default settings, an event recorded and sent at NOW.
    config = load_settings({})
    clock = FrozenClock(NOW)
    ledger = RedisLedger(redis_client, prefix=redis_prefix, dedupe_ttl_s=config.redis.dedupe_ttl_s)
    ingest = Ingest(
        SignatureVerifier([SECRET], config.signature_tolerance_s),
        ledger,
        MemoryCustomers(),
        clock,
        config.policy(),
    )
    body = encode(event("evt_LATE_REDELIVERY", created=int(NOW)))
    first = await ingest.deliver(sign(body, SECRET, int(NOW)), body)
    await Dispatcher(ledger, MemoryBiller(), clock, DispatchConfig(max_rps=1_000_000)).run_once()
    assert first.status is Status.ACCEPTED
    assert (await ledger.stats()).sent == 1

    # Act: Ringside delivers it again, freshly signed, once the event is `age_days` old.
    clock.advance(age_days * DAY)
    await let_redis_time_pass(redis_client, redis_prefix, age_days * DAY)
    again = await ingest.deliver(sign(body, SECRET, int(clock.now())), body)

    # Assert
    assert again.status is Status.DUPLICATE
    assert (await ledger.stats()).pending == 0


def test_default_dedupe_ttl_covers_the_35_day_window_and_the_signature_tolerance() -> None:
    config = load_settings({})

    assert config.redis.dedupe_ttl_s == DEFAULT_DEDUPE_TTL_S == 40 * DAY
    assert config.redis.dedupe_ttl_s >= config.policy().max_age_s + config.signature_tolerance_s


@pytest.mark.parametrize(
    "environment",
    [
        {"GATEWAY_DEDUPE_TTL_S": str(30 * DAY)},
        {"GATEWAY_DEDUPE_TTL_S": str(35 * DAY)},
        {"GATEWAY_DEDUPE_TTL_S": str(35 * DAY + 300), "GATEWAY_SIGNATURE_TOLERANCE_S": "301"},
    ],
    ids=["30 days", "35 days without the tolerance", "one second short of a wider tolerance"],
)
def test_settings_refuse_a_dedupe_ttl_shorter_than_the_accepted_age_and_the_tolerance(
    environment: dict[str, str],
) -> None:
    with pytest.raises(SettingsError, match="GATEWAY_DEDUPE_TTL_S"):
        load_settings(environment)


def test_settings_take_a_dedupe_ttl_that_covers_the_accepted_age_and_the_tolerance() -> None:
    assert load_settings({"GATEWAY_DEDUPE_TTL_S": str(35 * DAY + 300)}).redis.dedupe_ttl_s == 35 * DAY + 300
