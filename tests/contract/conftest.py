"""Adapters under contract: one fixture per adapter, named `<technology>_<port>`.

Each suite picks its adapters by fixture name (litestar's tests/unit/test_stores.py pattern), so a new adapter
joins every test of its port with one fixture here and one name in that suite's `params` list.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway.adapters.lago import LagoBillingPortal, LagoBillingSink
from gateway.adapters.memory import MemoryBiller, MemoryCustomers, MemoryLedger
from gateway.adapters.redis import RedisBiller, RedisCustomers, RedisLedger
from gateway.adapters.sqlite import SqliteBiller, SqliteCustomers, SqliteDatabase, SqliteLedger
from gateway.adapters.stripe_portal import StripeBillingPortal
from gateway.domain.ports import BillingPortal, BillingSink, MeterEvent
from tests.fakes.lago_server import FAKE_LAGO_KEY, METRIC_CODE, SUBSCRIPTION, FakeLago
from tests.fakes.stripe_server import FAKE_API_KEY, FakeStripe


@dataclass(frozen=True)
class LocalBiller:
    """A local ledger biller and the way to read back what it recorded (an attribute on one, a query on another)."""

    sink: BillingSink
    events: Callable[[], Awaitable[list[MeterEvent]]]


@dataclass(frozen=True)
class BillerPortal:
    """A BillingPortal adapter talking to its biller's fake, and that biller's side of things.

    `known` is a billing id the biller knows, `unknown` one it does not; `issued()` lists the portal URLs the
    biller handed out; `fail_next(status, retry_after)` makes the biller answer the adapter's next call so.
    """

    portal: BillingPortal
    known: str
    unknown: str
    issued: Callable[[], list[str]]
    fail_next: Callable[[int, float | None], None]


# -- Storage ----------------------------------------------------------------------------------------------------


@pytest.fixture
async def sqlite_database(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    database = SqliteDatabase(tmp_path / "gateway.db")
    await database.open()
    yield database
    database.close()


# -- Ledger ------------------------------------------------------------------------------------------------


@pytest.fixture
def memory_ledger() -> MemoryLedger:
    return MemoryLedger()


@pytest.fixture
def sqlite_ledger(sqlite_database: SqliteDatabase) -> SqliteLedger:
    return SqliteLedger(sqlite_database)


@pytest.fixture
def redis_ledger(redis_client: Redis, redis_prefix: str) -> RedisLedger:
    return RedisLedger(redis_client, prefix=redis_prefix)


# -- CustomerStore ----------------------------------------------------------------------------------------------


@pytest.fixture
def memory_customers() -> MemoryCustomers:
    return MemoryCustomers()


@pytest.fixture
def sqlite_customers(sqlite_database: SqliteDatabase) -> SqliteCustomers:
    return SqliteCustomers(sqlite_database)


@pytest.fixture
def redis_customers(redis_client: Redis, redis_prefix: str) -> RedisCustomers:
    return RedisCustomers(redis_client, prefix=redis_prefix)


# -- Local ledger billers (BillingSink) -------------------------------------------------------------------------


@pytest.fixture
def memory_biller() -> LocalBiller:
    biller = MemoryBiller()

    async def events() -> list[MeterEvent]:
        return list(biller.events.values())

    return LocalBiller(sink=biller, events=events)


@pytest.fixture
def sqlite_biller(sqlite_database: SqliteDatabase) -> LocalBiller:
    biller = SqliteBiller(sqlite_database)
    return LocalBiller(sink=biller, events=biller.events)


@pytest.fixture
def redis_biller(redis_client: Redis, redis_prefix: str) -> LocalBiller:
    biller = RedisBiller(redis_client, prefix=redis_prefix)
    return LocalBiller(sink=biller, events=biller.events)


@pytest.fixture
async def lago_biller(fake_lago: FakeLago) -> AsyncIterator[LocalBiller]:
    """Lago's adapter against a fake Lago: a real biller under the same contract. Its "records" are the events the
    server stored, read back as MeterEvents; every request must have had the shape Lago bills."""
    sink = LagoBillingSink(FAKE_LAGO_KEY, metric_code=METRIC_CODE, api_url=fake_lago.url, timeout_s=5.0)

    async def events() -> list[MeterEvent]:
        assert fake_lago.invalid_requests == []
        return [
            MeterEvent(
                identifier=e["transaction_id"],
                customer=e["external_subscription_id"],
                value=e["properties"]["units"],
                timestamp=e["timestamp"],
            )
            for e in fake_lago.events
        ]

    yield LocalBiller(sink=sink, events=events)
    await sink.close()


# -- BillingPortal ----------------------------------------------------------------------------------------------


@pytest.fixture
async def stripe_portal(fake_stripe: FakeStripe) -> AsyncIterator[BillerPortal]:
    fake_stripe.known_customers = {"cus_KNOWN"}
    portal = StripeBillingPortal(FAKE_API_KEY, api_base=fake_stripe.url, timeout_s=2.0)

    def fail_next(status: int, retry_after: float | None) -> None:
        fake_stripe.fail_next(1, status, retry_after=retry_after, path="/v1/billing_portal/sessions")

    yield BillerPortal(
        portal=portal,
        known="cus_KNOWN",
        unknown="cus_UNKNOWN",
        issued=lambda: [session["url"] for session in fake_stripe.portal_sessions],
        fail_next=fail_next,
    )
    await portal.close()


@pytest.fixture
async def lago_portal(fake_lago: FakeLago) -> AsyncIterator[BillerPortal]:
    # Lago's billing id is a subscription; its portal belongs to the subscription's customer.
    fake_lago.add_customer("cust_KNOWN", subscriptions=["sub_KNOWN"])
    portal = LagoBillingPortal(FAKE_LAGO_KEY, api_url=fake_lago.url, timeout_s=2.0)

    def fail_next(status: int, retry_after: float | None) -> None:
        fake_lago.fail_next(1, status, retry_after=retry_after, route=SUBSCRIPTION)

    yield BillerPortal(
        portal=portal,
        known="sub_KNOWN",
        unknown="sub_UNKNOWN",
        issued=lambda: [issued["portal_url"] for issued in fake_lago.portal_urls],
        fail_next=fail_next,
    )
    await portal.close()
