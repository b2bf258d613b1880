"""Adapters under contract: one fixture per adapter, named `<technology>_<port>`.

Each suite picks its adapters by fixture name (litestar's tests/unit/test_stores.py pattern), so a new adapter
joins every test of its port with one fixture here and one name in that suite's `params` list.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
from redis.asyncio import Redis

from gateway.adapters.clock import FrozenClock
from gateway.adapters.lago.portal import LagoBillingPortal
from gateway.adapters.lago.sink import LagoBillingSink
from gateway.adapters.memory import MemoryBiller, MemoryCustomers, MemoryLedger
from gateway.adapters.postgres import PostgresBiller, PostgresCustomers, PostgresDatabase, PostgresLedger
from gateway.adapters.redis import RedisBiller, RedisCustomers, RedisLedger
from gateway.adapters.ringside.customers import RingsideCustomerLookup
from gateway.adapters.sqlite import SqliteBiller, SqliteCustomers, SqliteDatabase, SqliteLedger
from gateway.adapters.stripe.portal import StripeBillingPortal
from gateway.adapters.stripe.sink import StripeBillingSink
from gateway.adapters.stripe.stream import StripeStreamBillingSink
from gateway.domain.ports import BillingPortal, BillingSink, Delivery, MeterEvent
from tests.fakes.lago_server import FAKE_LAGO_KEY, METRIC_CODE, SUBSCRIPTION, FakeLago
from tests.fakes.ringside_server import FAKE_RINGSIDE_KEY, FakeRingside
from tests.fakes.stripe_server import FAKE_API_KEY, METER_EVENT_STREAM, FakeStripe

# A remote sink's timeout: long enough that a fake on a loaded machine always answers within it. A shorter one made
# a call time out while the fake was still busy with it; the test's scripted answer (a 429) then went to the next
# call instead, and the test saw a different story than the one it scripted.
REMOTE_TIMEOUT_S = 10.0
# For the tests of a hung call only, so that they stay quick.
HUNG_CALL_TIMEOUT_S = 0.5


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
    fail_next: Callable[[int, float | str | None], None]


class SinkBuilder(Protocol):
    def __call__(
        self, key: str | None, url: str | None, timeout_s: float = REMOTE_TIMEOUT_S
    ) -> BillingSink: ...  # pragma: no cover


@dataclass(frozen=True)
class RemoteBiller:
    """A remote BillingSink adapter talking to its biller's fake, and that biller's side of things.

    `customer` is a billing id the biller accepts; `stored()` lists the identifiers the biller holds;
    `repeat` is what the adapter answers for an event the biller already holds (Stripe's stream drops it silently,
    so SENT; the others say ALREADY_SENT); `fail_next(status, retry_after)` and `hang_next(seconds)` act on the
    adapter's next event call; `build(key, url, timeout_s)` makes another adapter for the same biller (the caller
    closes it).
    """

    sink: BillingSink
    customer: str
    repeat: Delivery
    stored: Callable[[], list[str]]
    invalid_requests: Callable[[], list[object]]
    fail_next: Callable[[int, float | str | None], None]
    hang_next: Callable[[float], None]
    build: SinkBuilder
    url: str


def closed_port_url() -> str:
    """The URL of a port that was free a moment ago: nothing listens there."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


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


@pytest.fixture
def postgres_ledger(postgres_database: PostgresDatabase) -> PostgresLedger:
    return PostgresLedger(postgres_database)


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


@pytest.fixture
def postgres_customers(postgres_database: PostgresDatabase) -> PostgresCustomers:
    return PostgresCustomers(postgres_database)


@pytest.fixture
async def ringside_customers(fake_ringside: FakeRingside) -> AsyncIterator[RingsideCustomerLookup]:
    """The customer store with Ringside's customer API behind its misses (Ringside knows no customer here)."""
    lookup = RingsideCustomerLookup(MemoryCustomers(), api_key=FAKE_RINGSIDE_KEY, api_base=fake_ringside.url)
    yield lookup
    await lookup.close()


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
def postgres_biller(postgres_database: PostgresDatabase) -> LocalBiller:
    biller = PostgresBiller(postgres_database)
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


# -- Remote billers (BillingSink over HTTP, each against its fake) ---------------------------------------------------


@pytest.fixture
async def stripe_sink(fake_stripe: FakeStripe) -> AsyncIterator[RemoteBiller]:
    def build(key: str | None, url: str | None, timeout_s: float = REMOTE_TIMEOUT_S) -> BillingSink:
        return StripeBillingSink(key or FAKE_API_KEY, api_base=url or fake_stripe.url, timeout_s=timeout_s)

    sink = build(None, None)
    yield RemoteBiller(
        sink=sink,
        customer="cus_A",
        repeat=Delivery.ALREADY_SENT,
        stored=lambda: [event["identifier"] for event in fake_stripe.meter_events],
        invalid_requests=lambda: list(fake_stripe.invalid_requests),
        fail_next=lambda status, retry_after: fake_stripe.fail_next(1, status, retry_after=retry_after),
        hang_next=lambda seconds: fake_stripe.hang_next(1, seconds=seconds),
        build=build,
        url=fake_stripe.url,
    )
    await sink.close()


@pytest.fixture
async def stripe_stream_sink(fake_stripe: FakeStripe) -> AsyncIterator[RemoteBiller]:
    # The sink compares its clock with the session's real `expires_at`, so the clock starts at the real time.
    clock = FrozenClock(time.time())

    def build(key: str | None, url: str | None, timeout_s: float = REMOTE_TIMEOUT_S) -> BillingSink:
        return StripeStreamBillingSink(
            key or FAKE_API_KEY, api_base=url or fake_stripe.url, timeout_s=timeout_s, clock=clock
        )

    def fail_next(status: int, retry_after: float | str | None) -> None:
        fake_stripe.fail_next(1, status, retry_after=retry_after, path=METER_EVENT_STREAM)

    sink = build(None, None)
    yield RemoteBiller(
        sink=sink,
        customer="cus_A",
        repeat=Delivery.SENT,
        stored=lambda: [event["identifier"] for event in fake_stripe.meter_events],
        invalid_requests=lambda: list(fake_stripe.invalid_requests),
        fail_next=fail_next,
        hang_next=lambda seconds: fake_stripe.hang_next(1, seconds=seconds, path=METER_EVENT_STREAM),
        build=build,
        url=fake_stripe.url,
    )
    await sink.close()


@pytest.fixture
async def lago_sink(fake_lago: FakeLago) -> AsyncIterator[RemoteBiller]:
    def build(key: str | None, url: str | None, timeout_s: float = REMOTE_TIMEOUT_S) -> BillingSink:
        return LagoBillingSink(
            key or FAKE_LAGO_KEY, metric_code=METRIC_CODE, api_url=url or fake_lago.url, timeout_s=timeout_s
        )

    sink = build(None, None)
    yield RemoteBiller(
        sink=sink,
        customer="sub_ACME",
        repeat=Delivery.ALREADY_SENT,
        stored=lambda: [event["transaction_id"] for event in fake_lago.events],
        invalid_requests=lambda: list(fake_lago.invalid_requests),
        fail_next=lambda status, retry_after: fake_lago.fail_next(1, status, retry_after=retry_after),
        hang_next=lambda seconds: fake_lago.hang_next(1, seconds=seconds),
        build=build,
        url=fake_lago.url,
    )
    await sink.close()


# -- BillingPortal ----------------------------------------------------------------------------------------------


@pytest.fixture
async def stripe_portal(fake_stripe: FakeStripe) -> AsyncIterator[BillerPortal]:
    fake_stripe.known_customers = {"cus_KNOWN"}
    portal = StripeBillingPortal(FAKE_API_KEY, api_base=fake_stripe.url, timeout_s=2.0)

    def fail_next(status: int, retry_after: float | str | None) -> None:
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

    def fail_next(status: int, retry_after: float | str | None) -> None:
        fake_lago.fail_next(1, status, retry_after=retry_after, route=SUBSCRIPTION)

    yield BillerPortal(
        portal=portal,
        known="sub_KNOWN",
        unknown="sub_UNKNOWN",
        issued=lambda: [issued["portal_url"] for issued in fake_lago.portal_urls],
        fail_next=fail_next,
    )
    await portal.close()
