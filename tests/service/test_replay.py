"""Replay of parked deliveries through the pipeline, on the in-memory adapters."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from gateway.adapters.clock import FrozenClock
from gateway.adapters.memory import MemoryCustomers, MemoryLedger
from gateway.domain.ledger import ParkReason, State
from gateway.domain.policy import BillingPolicy, UnknownTypes
from gateway.domain.signature import SignatureVerifier
from gateway.service.ingest import Ingest, Status
from gateway.service.replay import Replayer, ReplayResult, ReplayStatus
from tests.builders import SECRET, encode, event


@pytest.fixture
def customers() -> MemoryCustomers:
    return MemoryCustomers()


def ingest_with(
    ledger: MemoryLedger, customers: MemoryCustomers, clock: FrozenClock, policy: BillingPolicy | None = None
) -> Ingest:
    # The biller's window is Stripe's 35 days, as its profile gives it.
    return Ingest(SignatureVerifier([SECRET]), ledger, customers, clock, policy or BillingPolicy(max_age_s=35 * 86400))


@pytest.fixture
def replayer(ledger: MemoryLedger, customers: MemoryCustomers, clock: FrozenClock) -> Replayer:
    return Replayer(ingest_with(ledger, customers, clock), ledger, customers, clock)


async def park_unmapped(ledger: MemoryLedger, customers: MemoryCustomers, clock: FrozenClock, event_id: str) -> None:
    body = encode(event(event_id, cost="0.0123", customer="cust_LATE", stripe_customer=None))
    outcome = await ingest_with(ledger, customers, clock).process(body, int(clock.now()), clock.now())
    assert outcome.status is Status.PARKED


async def test_replay_records_the_event_and_removes_the_record_when_a_mapping_was_added(
    ledger: MemoryLedger, customers: MemoryCustomers, clock: FrozenClock, replayer: Replayer
) -> None:
    await park_unmapped(ledger, customers, clock, "evt_LATE")
    await customers.set("cust_LATE", "cus_LATE")

    result = await replayer.replay("evt_LATE")

    assert result == ReplayResult("evt_LATE", ReplayStatus.BILLED, units=1230, customer="cus_LATE")
    assert ledger.parked == {}
    entry = ledger.entries["evt_LATE"]
    assert (entry.state, entry.billing_customer, entry.units) == (State.PENDING, "cus_LATE", 1230)


async def test_replay_leaves_the_record_untouched_when_still_unmapped(
    ledger: MemoryLedger, customers: MemoryCustomers, clock: FrozenClock, replayer: Replayer
) -> None:
    await park_unmapped(ledger, customers, clock, "evt_LATE")
    before = ledger.parked["evt_LATE"]

    result = await replayer.replay("evt_LATE")

    assert (result.status, result.reason) == (ReplayStatus.STILL_PARKED, ParkReason.UNKNOWN_CUSTOMER)
    assert ledger.parked == {"evt_LATE": before}
    assert ledger.entries == {}


async def test_replays_that_race_bill_once(
    ledger: MemoryLedger, customers: MemoryCustomers, clock: FrozenClock, replayer: Replayer
) -> None:
    await park_unmapped(ledger, customers, clock, "evt_RACE")
    await customers.set("cust_LATE", "cus_LATE")

    results = await asyncio.gather(*(replayer.replay("evt_RACE") for _ in range(5)))

    assert sum(result.status is ReplayStatus.BILLED for result in results) == 1
    assert list(ledger.entries) == ["evt_RACE"]


async def test_replay_is_ignored_and_kept_when_the_type_is_no_longer_billable(
    ledger: MemoryLedger, customers: MemoryCustomers, clock: FrozenClock
) -> None:
    await park_unmapped(ledger, customers, clock, "evt_LATE")
    await customers.set("cust_LATE", "cus_LATE")
    policy = BillingPolicy(billable_types=frozenset({"run.completed"}), unknown_types=UnknownTypes.IGNORE)
    replayer = Replayer(ingest_with(ledger, customers, clock, policy), ledger, customers, clock)

    result = await replayer.replay("evt_LATE")

    assert result.status is ReplayStatus.IGNORED
    assert "evt_LATE" in ledger.parked


async def test_replay_is_still_parked_and_kept_when_the_type_is_no_longer_billable_and_unknown_types_park(
    ledger: MemoryLedger, customers: MemoryCustomers, clock: FrozenClock
) -> None:
    await park_unmapped(ledger, customers, clock, "evt_LATE")
    await customers.set("cust_LATE", "cus_LATE")
    before = ledger.parked["evt_LATE"]
    policy = BillingPolicy(billable_types=frozenset({"run.completed"}))
    replayer = Replayer(ingest_with(ledger, customers, clock, policy), ledger, customers, clock)

    result = await replayer.replay("evt_LATE")

    assert (result.status, result.reason) == (ReplayStatus.STILL_PARKED, ParkReason.UNKNOWN_TYPE)
    assert ledger.parked == {"evt_LATE": before}


async def test_event_of_an_unlisted_type_is_billed_by_replay_once_its_type_is_listed(
    ledger: MemoryLedger, customers: MemoryCustomers, clock: FrozenClock
) -> None:
    # Arrange: parked unknown_type under today's settings.
    body = encode(event("evt_NEW_TYPE", event_type="image.generated", cost="0.04", stripe_customer="cus_IMG"))
    parked = await ingest_with(ledger, customers, clock).process(body, int(clock.now()), clock.now())
    assert (parked.status, parked.reason) == (Status.PARKED, ParkReason.UNKNOWN_TYPE)
    listed = BillingPolicy(billable_types=frozenset({"chat.completion.finished", "image.generated"}))
    replayer = Replayer(ingest_with(ledger, customers, clock, listed), ledger, customers, clock)

    # Act: GATEWAY_BILLABLE_EVENTS now lists the type.
    result = await replayer.replay("evt_NEW_TYPE")

    # Assert
    assert (result.status, result.units, result.customer) == (ReplayStatus.BILLED, 4000, "cus_IMG")
    assert ledger.parked == {}
    assert ledger.entries["evt_NEW_TYPE"].event_type == "image.generated"


async def test_replay_of_a_rejected_entry_keeps_its_customer_when_no_mapping_exists(
    ledger: MemoryLedger, customers: MemoryCustomers, clock: FrozenClock, replayer: Replayer
) -> None:
    body = encode(event("evt_REJECTED", cost="0.5", customer="cust_R", stripe_customer="cus_FLAKY"))
    await ingest_with(ledger, customers, clock).process(body, int(clock.now()), clock.now())
    await ledger.mark_rejected("evt_REJECTED", "account under review", clock.now())
    clock.advance(60)

    result = await replayer.replay("evt_REJECTED")

    assert result == ReplayResult("evt_REJECTED", ReplayStatus.BILLED, units=50_000, customer="cus_FLAKY")
    assert ledger.entries["evt_REJECTED"] == msgspec.structs.replace(
        ledger.entries["evt_REJECTED"], state=State.PENDING, next_attempt_at=clock.now(), attempts=0
    )
    assert ledger.parked == {}


async def test_replay_all_lists_every_key_beyond_one_page(
    ledger: MemoryLedger, customers: MemoryCustomers, clock: FrozenClock, replayer: Replayer
) -> None:
    for number in range(1_100):
        await park_unmapped(ledger, customers, clock, f"evt_{number:04d}")
        clock.advance(0.001)

    keys = await replayer.parked_keys(ParkReason.UNKNOWN_CUSTOMER)

    assert keys == [f"evt_{number:04d}" for number in range(1_100)]
    assert await replayer.parked_keys(ParkReason.TOO_OLD) == []


DAY_S = 24 * 3600


async def too_old_entry(ledger: MemoryLedger, customers: MemoryCustomers, clock: FrozenClock, event_id: str) -> None:
    """An entry recorded at the clock's time, then held pending past the biller's window and parked by the
    dispatcher."""
    body = encode(event(event_id, cost="0.5", customer="cust_OLD", stripe_customer="cus_OLD", created=int(clock.now())))
    assert (await ingest_with(ledger, customers, clock).process(body, int(clock.now()), clock.now())).status is (
        Status.ACCEPTED
    )
    clock.advance(36 * DAY_S)
    await ledger.mark_too_old(event_id, "event is older than the biller's 35-day window", clock.now())


async def test_replay_of_an_entry_parked_too_old_keeps_it_parked_and_says_to_restamp(
    ledger: MemoryLedger, customers: MemoryCustomers, clock: FrozenClock, replayer: Replayer
) -> None:
    await too_old_entry(ledger, customers, clock, "evt_STALE")
    before = (ledger.entries["evt_STALE"], ledger.parked["evt_STALE"])

    result = await replayer.replay("evt_STALE")

    assert (result.status, result.reason) == (ReplayStatus.STILL_PARKED, ParkReason.TOO_OLD)
    assert result.message is not None and "restamp" in result.message
    assert (ledger.entries["evt_STALE"], ledger.parked["evt_STALE"]) == before


async def test_replay_with_restamp_requeues_an_entry_parked_too_old_stamped_now(
    ledger: MemoryLedger, customers: MemoryCustomers, clock: FrozenClock, replayer: Replayer
) -> None:
    await too_old_entry(ledger, customers, clock, "evt_STALE")

    result = await replayer.replay("evt_STALE", restamp=True)
    again = await replayer.replay("evt_STALE", restamp=True)

    assert (result.status, result.units, result.customer) == (ReplayStatus.BILLED, 50_000, "cus_OLD")
    assert again.status is ReplayStatus.NOT_PARKED
    entry = ledger.entries["evt_STALE"]
    assert (entry.state, entry.units, entry.timestamp) == (State.PENDING, 50_000, int(clock.now()))
    assert ledger.parked == {}


async def test_replay_with_restamp_bills_an_event_parked_too_old_at_ingest_stamped_now(
    ledger: MemoryLedger, customers: MemoryCustomers, clock: FrozenClock, replayer: Replayer
) -> None:
    created = int(clock.now()) - 40 * DAY_S
    body = encode(event("evt_ANCIENT", cost="0.5", stripe_customer="cus_OLD", created=created))
    parked = await ingest_with(ledger, customers, clock).process(body, int(clock.now()), clock.now())
    assert parked.reason is ParkReason.TOO_OLD

    plain = await replayer.replay("evt_ANCIENT")
    restamped = await replayer.replay("evt_ANCIENT", restamp=True)

    assert (plain.status, plain.reason) == (ReplayStatus.STILL_PARKED, ParkReason.TOO_OLD)
    assert plain.message is not None and "restamp" in plain.message
    assert (restamped.status, restamped.units) == (ReplayStatus.BILLED, 50_000)
    assert ledger.entries["evt_ANCIENT"].timestamp == int(clock.now())
    assert ledger.parked == {}


async def test_restamp_leaves_the_timestamp_of_a_record_parked_for_another_reason(
    ledger: MemoryLedger, customers: MemoryCustomers, clock: FrozenClock, replayer: Replayer
) -> None:
    created = int(clock.now()) - 3600
    body = encode(event("evt_UNMAPPED", cost="0.5", customer="cust_LATE", stripe_customer=None, created=created))
    await ingest_with(ledger, customers, clock).process(body, int(clock.now()), clock.now())
    await customers.set("cust_LATE", "cus_LATE")

    result = await replayer.replay("evt_UNMAPPED", restamp=True)

    assert result.status is ReplayStatus.BILLED
    assert ledger.entries["evt_UNMAPPED"].timestamp == created
