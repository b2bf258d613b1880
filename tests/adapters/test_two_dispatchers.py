"""Two dispatchers on one store and a slow Stripe: at most one call in flight per customer at any instant.

Each customer's queue takes longer than a lease (eight calls of 0.1 s against leases of 0.6 s), and a round takes
one customer's queue (batch = 8); there is one customer more than a dispatcher has rounds in flight, so both
dispatchers get some, and one of them is idle while the other still serves its customers: without renewal, the idle
one would take such a customer over when its lease runs out, while the other is still sending to it. Every call's
start and end is recorded per customer on the client side (a call's whole life, so the server's is inside it), and
the fake Stripe counts the calls it holds at once per customer as well.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway.adapters.clock import SystemClock
from gateway.adapters.redis import RedisLedger
from gateway.adapters.sqlite import SqliteDatabase, SqliteLedger
from gateway.adapters.stripe.sink import StripeBillingSink
from gateway.domain.ledger import State
from gateway.domain.ports import BillingSink, Delivery, Ledger, MeterEvent
from gateway.domain.units import Rounding
from gateway.service.concurrency import ROUNDS_IN_FLIGHT
from gateway.service.dispatcher import DispatchConfig, Dispatcher
from tests.builders import claim
from tests.fakes.stripe_server import FAKE_API_KEY, FakeStripe
from tests.redis_fixtures import open_test_redis

CUSTOMERS = [f"cus_{index}" for index in range(ROUNDS_IN_FLIGHT + 1)]
PER_CUSTOMER = 8
CALL_S = 0.1
CONFIG = DispatchConfig(batch=PER_CUSTOMER, concurrency=8, lease_s=0.6, poll_s=0.02, max_rps=10_000, retry_base_s=0.05)

Interval = tuple[float, float]


class Timed(BillingSink):
    """Passes every call on, recording its start and end (monotonic seconds) under the event's customer."""

    def __init__(self, inner: BillingSink, calls: dict[str, list[Interval]]) -> None:
        self.name = inner.name
        self._inner = inner
        self._calls = calls
        self.made = 0

    async def send(self, event: MeterEvent) -> Delivery:
        started = time.monotonic()
        self.made += 1
        try:
            return await self._inner.send(event)
        finally:
            self._calls[event.customer].append((started, time.monotonic()))

    async def close(self) -> None:
        await self._inner.close()


@pytest.fixture
async def sqlite_pair(tmp_path: Path) -> AsyncIterator[tuple[Ledger, Ledger]]:
    """Two ledgers on one SQLite file, each with its own connection and writer, as two processes would have."""
    first, second = SqliteDatabase(tmp_path / "gateway.db"), SqliteDatabase(tmp_path / "gateway.db")
    await first.open()
    await second.open()
    yield SqliteLedger(first), SqliteLedger(second)
    first.close()
    second.close()


@pytest.fixture
async def redis_pair(redis_client: Redis, redis_prefix: str) -> AsyncIterator[tuple[Ledger, Ledger]]:
    """Two ledgers on one Redis prefix, each with its own client, as two replicas would have."""
    other = await open_test_redis()
    yield RedisLedger(redis_client, prefix=redis_prefix), RedisLedger(other, prefix=redis_prefix)
    await other.aclose()


@pytest.fixture(params=["sqlite_pair", "redis_pair"])
def ledgers(request: pytest.FixtureRequest) -> tuple[Ledger, Ledger]:
    pair: tuple[Ledger, Ledger] = request.getfixturevalue(request.param)
    return pair


def overlaps(intervals: list[Interval]) -> list[tuple[Interval, Interval]]:
    ordered = sorted(intervals)
    return [(a, b) for a, b in itertools.pairwise(ordered) if b[0] < a[1]]


async def wait_until(done: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await done():
        assert time.monotonic() < deadline, f"not done within {timeout_s}s"
        await asyncio.sleep(0.05)


async def test_at_most_one_call_in_flight_per_customer_when_two_dispatchers_share_a_store(
    ledgers: tuple[Ledger, Ledger], fake_stripe: FakeStripe
) -> None:
    # Arrange: every customer's queue (8 calls of 0.1 s) outlasts a lease (0.6 s).
    fake_stripe.latency_s = CALL_S
    now = time.time()
    ids = [f"evt_{customer}_{n}" for customer in CUSTOMERS for n in range(PER_CUSTOMER)]
    for n, event_id in enumerate(ids):
        customer = event_id.rsplit("_", 1)[0].removeprefix("evt_")
        billable = claim(event_id, customer=customer, timestamp=int(now))
        await ledgers[0].record(billable, Rounding.CARRY, now + n * 1e-3)
    calls: dict[str, list[Interval]] = defaultdict(list)
    sinks: list[Timed] = []

    # Act: two dispatchers, each with its own ledger and its own Stripe client, until every entry is sent.
    async with AsyncExitStack() as stack:
        dispatchers = []
        for ledger in ledgers:
            sink = Timed(StripeBillingSink(FAKE_API_KEY, api_base=fake_stripe.url, timeout_s=5.0), calls)
            stack.push_async_callback(sink.close)
            sinks.append(sink)
            dispatchers.append(Dispatcher(ledger, sink, SystemClock(), CONFIG))
        tasks = [asyncio.create_task(dispatcher.run()) for dispatcher in dispatchers]

        async def all_sent() -> bool:
            entries = [await ledgers[1].get(event_id) for event_id in ids]
            return all(entry is not None and entry.state is State.SENT for entry in entries)

        try:
            await wait_until(all_sent, timeout_s=30.0)
        finally:
            for dispatcher in dispatchers:
                dispatcher.stop()
            await asyncio.gather(*tasks)

    # Assert: each customer's calls one after another, on both sides of the wire; every entry sent once.
    assert {customer: overlaps(intervals) for customer, intervals in calls.items()} == {c: [] for c in CUSTOMERS}
    assert fake_stripe.max_in_flight_per_customer == 1
    assert sorted(event["identifier"] for event in fake_stripe.meter_events) == sorted(ids)
    assert len(fake_stripe.requests) == len(ids)
    # Both dispatchers worked, and each customer's queue outlasted a lease: what renewal is for.
    assert all(sink.made > 0 for sink in sinks)
    assert all(intervals[-1][1] - min(intervals)[0] > CONFIG.lease_s for intervals in calls.values())
