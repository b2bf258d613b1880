"""The dispatcher with a biller that takes batches (BatchBillingSink), asserted by the ledger's and biller's state."""

from __future__ import annotations

import pytest

from gateway.adapters.clock import FrozenClock
from gateway.adapters.memory import MemoryLedger
from gateway.domain.errors import BillerRateLimited, BillerUnavailable
from gateway.domain.ledger import ParkReason, State
from gateway.domain.ports import MeterEvent
from gateway.service.concurrency import BATCH_WAVES
from gateway.service.dispatcher import DispatchConfig, Dispatcher
from tests.service.billers import BatchBiller, record

# The biller's window is Stripe's 35 days, as its profile gives it.
CONFIG = DispatchConfig(
    batch=2, concurrency=2, lease_s=30, max_rps=1_000_000, retry_base_s=1, retry_max_s=60, max_event_age_s=35 * 86400
)


@pytest.fixture
def biller() -> BatchBiller:
    return BatchBiller()


@pytest.fixture
def dispatcher(ledger: MemoryLedger, biller: BatchBiller, clock: FrozenClock) -> Dispatcher:
    return Dispatcher(ledger, biller, clock, CONFIG, jitter=lambda: 0.0)


async def test_sends_entries_in_batches_of_max_batch_whatever_their_customers(
    dispatcher: Dispatcher, ledger: MemoryLedger, biller: BatchBiller, clock: FrozenClock
) -> None:
    for n in range(6):
        await record(ledger, f"evt_{n}", clock.now(), customer=f"cus_{n % 2}")

    handled = await dispatcher.run_once()

    assert handled == 6  # max_batch x concurrency leased, although GATEWAY_DISPATCH_BATCH is 2
    assert sorted(len(call) for call in biller.calls) == [3, 3]
    assert biller.max_in_flight == 2
    assert set(biller.events) == {f"evt_{n}" for n in range(6)}
    assert {e.state for e in ledger.entries.values()} == {State.SENT}


async def test_leases_max_batch_times_concurrency_for_several_waves_per_round(
    dispatcher: Dispatcher, ledger: MemoryLedger, biller: BatchBiller, clock: FrozenClock
) -> None:
    per_round = 3 * 2 * BATCH_WAVES  # max_batch x concurrency x waves
    for n in range(per_round + 2):
        await record(ledger, f"evt_{n}", clock.now())

    first, second, third = await dispatcher.run_once(), await dispatcher.run_once(), await dispatcher.run_once()

    assert (first, second, third) == (per_round, 2, 0)
    assert len(biller.events) == per_round + 2
    assert biller.max_in_flight == 2  # the waves share the `concurrency` slots


async def test_marks_zero_unit_entries_sent_without_a_call(
    dispatcher: Dispatcher, ledger: MemoryLedger, biller: BatchBiller, clock: FrozenClock
) -> None:
    await record(ledger, "evt_TINY", clock.now(), cost="0.000001")
    await record(ledger, "evt_REAL", clock.now(), customer="cus_2")

    await dispatcher.run_once()

    assert biller.calls == [["evt_REAL"]]
    assert ledger.entries["evt_TINY"].state is State.SENT


async def test_schedules_each_entry_of_a_failed_batch_for_retry_with_its_own_backoff(
    dispatcher: Dispatcher, ledger: MemoryLedger, biller: BatchBiller, clock: FrozenClock
) -> None:
    await record(ledger, "evt_FRESH", clock.now())
    await record(ledger, "evt_RETRIED", clock.now())
    await ledger.mark_retry("evt_RETRIED", clock.now(), "earlier failure")  # one attempt already, due now
    biller.failures = [BillerUnavailable("boom", cause="server_error")]

    await dispatcher.run_once()

    fresh, retried = ledger.entries["evt_FRESH"], ledger.entries["evt_RETRIED"]
    assert (fresh.state, fresh.attempts, fresh.last_error) == (State.PENDING, 1, "server_error: boom")
    assert fresh.next_attempt_at - clock.now() == pytest.approx(0.5)  # base 1 s, halved by zero jitter
    assert (retried.attempts, retried.next_attempt_at - clock.now()) == (2, pytest.approx(1.0))
    assert biller.events == {}
    clock.advance(5)
    await dispatcher.run_once()
    assert {e.state for e in ledger.entries.values()} == {State.SENT}


async def test_a_rate_limited_batch_pauses_the_whole_dispatcher(
    dispatcher: Dispatcher, ledger: MemoryLedger, biller: BatchBiller, clock: FrozenClock
) -> None:
    await record(ledger, "evt_429", clock.now())
    biller.failures = [BillerRateLimited(retry_after_s=7)]

    await dispatcher.run_once()
    await record(ledger, "evt_OTHER", clock.now())
    paused = await dispatcher.run_once()
    clock.advance(7)
    resumed = await dispatcher.run_once()

    assert (paused, resumed) == (0, 2)
    assert set(biller.events) == {"evt_429", "evt_OTHER"}


async def test_parks_only_the_entry_at_fault_when_a_batch_is_refused_as_a_whole(
    dispatcher: Dispatcher, ledger: MemoryLedger, biller: BatchBiller, clock: FrozenClock
) -> None:
    for event_id in ("evt_A", "evt_POISON", "evt_C"):
        await record(ledger, event_id, clock.now())
    biller.refuse = {"evt_POISON"}

    await dispatcher.run_once()

    assert biller.calls == [["evt_A", "evt_POISON", "evt_C"], ["evt_A"], ["evt_POISON"], ["evt_C"]]
    assert set(biller.events) == {"evt_A", "evt_C"}
    assert ledger.entries["evt_POISON"].state is State.PARKED
    assert ledger.parked["evt_POISON"].reason is ParkReason.BILLER_REJECTED
    assert ledger.parked["evt_POISON"].message == "Invalid event in request."
    assert {ledger.entries[e].state for e in ("evt_A", "evt_C")} == {State.SENT}


async def test_counts_identifiers_the_biller_already_holds_as_sent(
    dispatcher: Dispatcher, ledger: MemoryLedger, biller: BatchBiller, clock: FrozenClock
) -> None:
    await record(ledger, "evt_SEEN", clock.now())
    await biller.send(MeterEvent("evt_SEEN", "cus_1", 1000, int(clock.now())))  # sent before a crash, not marked

    await dispatcher.run_once()

    assert ledger.entries["evt_SEEN"].state is State.SENT
    assert len(biller.events) == 1


async def test_releases_unsent_batches_when_stopped_before_they_start(
    ledger: MemoryLedger, biller: BatchBiller, clock: FrozenClock
) -> None:
    for n in range(4):
        await record(ledger, f"evt_{n}", clock.now())
    dispatcher = Dispatcher(ledger, biller, clock, CONFIG)
    dispatcher.stop()

    await dispatcher.run_once()
    again = await ledger.lease_due(clock.now(), 10, 30)

    assert biller.calls == []
    assert len(again) == 4  # released, not left leased for 30 s


async def test_parks_entry_too_old_instead_of_batching_it_when_it_outlived_the_window(
    dispatcher: Dispatcher, ledger: MemoryLedger, biller: BatchBiller, clock: FrozenClock
) -> None:
    await record(ledger, "evt_STALE", clock.now())
    await record(ledger, "evt_FRESH", clock.now() + 3600)
    clock.advance(35 * 24 * 3600 + 1)

    await dispatcher.run_once()

    assert [list(call) for call in biller.calls] == [["evt_FRESH"]]
    assert ledger.entries["evt_STALE"].state is State.PARKED
    assert ledger.parked["evt_STALE"].reason is ParkReason.TOO_OLD
    assert ledger.entries["evt_FRESH"].state is State.SENT
