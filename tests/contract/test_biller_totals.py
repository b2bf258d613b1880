"""The BillerTotals contract: what the biller holds per customer and hour, for every biller that can say.

The local ledger billers (in memory, SQLite and Redis) and Stripe (its meter event summaries, against the fake) answer
alike.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import stripe
from redis.asyncio import Redis

from gateway.adapters.memory import MemoryBiller
from gateway.adapters.postgres import PostgresBiller, PostgresDatabase
from gateway.adapters.redis import RedisBiller
from gateway.adapters.sqlite import SqliteBiller, SqliteDatabase
from gateway.adapters.stripe.summaries import StripeMeterTotals
from gateway.domain.ports import BillerTotals, MeterEvent
from tests.fakes.stripe_server import FAKE_API_KEY, FakeStripe

HOUR = 3600
BASE = (int(time.time()) // HOUR - 5) * HOUR


@dataclass(frozen=True)
class Biller:
    totals: BillerTotals
    record: Callable[[MeterEvent], Awaitable[None]]  # put an event in the biller's hands


@pytest.fixture
def memory_totals() -> Biller:
    biller = MemoryBiller()

    async def record(event: MeterEvent) -> None:
        await biller.send(event)

    return Biller(biller, record)


@pytest.fixture
def sqlite_totals(sqlite_database: SqliteDatabase) -> Biller:
    biller = SqliteBiller(sqlite_database)

    async def record(event: MeterEvent) -> None:
        await biller.send(event)

    return Biller(biller, record)


@pytest.fixture
def redis_totals(redis_client: Redis, redis_prefix: str) -> Biller:
    biller = RedisBiller(redis_client, prefix=redis_prefix)

    async def record(event: MeterEvent) -> None:
        await biller.send(event)

    return Biller(biller, record)


@pytest.fixture
def postgres_totals(postgres_database: PostgresDatabase) -> Biller:
    biller = PostgresBiller(postgres_database)

    async def record(event: MeterEvent) -> None:
        await biller.send(event)

    return Biller(biller, record)


@pytest.fixture
async def stripe_totals(fake_stripe: FakeStripe) -> AsyncIterator[Biller]:
    sdk = stripe.StripeClient(
        FAKE_API_KEY,
        base_addresses={"api": fake_stripe.url},
        http_client=stripe.HTTPXClient(timeout=5, allow_sync_methods=True),
    )
    sdk.v1.billing.meters.create(
        {"display_name": "Ringside spend", "event_name": "ringside_spend", "default_aggregation": {"formula": "sum"}}
    )
    totals = StripeMeterTotals(FAKE_API_KEY, api_base=fake_stripe.url, timeout_s=2.0)

    async def record(event: MeterEvent) -> None:
        sdk.v1.billing.meter_events.create(
            {
                "event_name": "ringside_spend",
                "payload": {"stripe_customer_id": event.customer, "value": str(event.value)},
                "identifier": event.identifier,
                "timestamp": event.timestamp,
            }
        )

    yield Biller(totals, record)
    await totals.close()
    assert fake_stripe.invalid_requests == []


@pytest.fixture(params=["memory_totals", "sqlite_totals", "redis_totals", "postgres_totals", "stripe_totals"])
def biller(request: pytest.FixtureRequest) -> Biller:
    found: Biller = request.getfixturevalue(request.param)
    return found


async def test_units_are_summed_per_hour_of_the_event_timestamp(biller: Biller) -> None:
    for n, (offset, value) in enumerate([(0, 5), (HOUR - 1, 7), (HOUR, 11), (3 * HOUR, 13)]):
        await biller.record(MeterEvent(f"evt_{n}", "cus_A", value, BASE + offset))

    held = await biller.totals.hourly_units("cus_A", BASE, BASE + 4 * HOUR)

    assert {window: units for window, units in held.items() if units} == {
        BASE: 12,
        BASE + HOUR: 11,
        BASE + 3 * HOUR: 13,
    }


async def test_only_the_customer_asked_about_and_only_inside_the_range(biller: Biller) -> None:
    await biller.record(MeterEvent("evt_A", "cus_A", 5, BASE + HOUR))
    await biller.record(MeterEvent("evt_B", "cus_B", 100, BASE + HOUR))
    await biller.record(MeterEvent("evt_BEFORE", "cus_A", 1, BASE))
    await biller.record(MeterEvent("evt_AFTER", "cus_A", 1, BASE + 2 * HOUR))

    held = await biller.totals.hourly_units("cus_A", BASE + HOUR, BASE + 2 * HOUR)

    assert {window: units for window, units in held.items() if units} == {BASE + HOUR: 5}


async def test_a_customer_without_usage_has_no_units(biller: Biller) -> None:
    held = await biller.totals.hourly_units("cus_NOBODY", BASE, BASE + HOUR)

    assert sum(held.values()) == 0
