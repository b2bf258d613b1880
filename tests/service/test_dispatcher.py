"""The dispatcher against the in-memory ledger and a scripted biller (tests/service/billers.py)."""

from __future__ import annotations

import pytest

from gateway.adapters.clock import FrozenClock
from gateway.adapters.memory import MemoryLedger
from gateway.domain.errors import BillerMisconfigured, BillerRateLimited, BillerRejected, BillerUnavailable
from gateway.domain.ledger import ParkReason, State
from gateway.domain.ports import MeterEvent
from gateway.service.dispatcher import DispatchConfig, Dispatcher
from tests.service.billers import ScriptedBiller, record

# The biller's window is Stripe's 35 days, as its profile gives it.
FAST = DispatchConfig(
    batch=100, concurrency=8, lease_s=30, max_rps=1_000_000, retry_base_s=1, retry_max_s=60, max_event_age_s=35 * 86400
)


@pytest.fixture
def biller() -> ScriptedBiller:
    return ScriptedBiller()


@pytest.fixture
def dispatcher(ledger: MemoryLedger, biller: ScriptedBiller, clock: FrozenClock) -> Dispatcher:
    return Dispatcher(ledger, biller, clock, FAST, jitter=lambda: 0.0)


async def test_sends_each_pending_entry_once_and_marks_it_sent(
    dispatcher: Dispatcher, ledger: MemoryLedger, biller: ScriptedBiller, clock: FrozenClock
) -> None:
    await record(ledger, "evt_A", clock.now())
    await record(ledger, "evt_B", clock.now(), cost="0.02", customer="cus_2")

    assert await dispatcher.run_once() == 2
    assert await dispatcher.run_once() == 0

    assert biller.events == {
        "evt_A": MeterEvent("evt_A", "cus_1", 1000, int(clock.now())),
        "evt_B": MeterEvent("evt_B", "cus_2", 2000, int(clock.now())),
    }
    assert {e.state for e in ledger.entries.values()} == {State.SENT}


async def test_marks_zero_unit_entry_sent_without_calling_biller(
    dispatcher: Dispatcher, ledger: MemoryLedger, biller: ScriptedBiller, clock: FrozenClock
) -> None:
    await record(ledger, "evt_TINY", clock.now(), cost="0.000001")

    await dispatcher.run_once()

    assert biller.calls == 0
    assert ledger.entries["evt_TINY"].state is State.SENT


async def test_schedules_retry_with_backoff_when_biller_fails_transiently(
    dispatcher: Dispatcher, ledger: MemoryLedger, biller: ScriptedBiller, clock: FrozenClock
) -> None:
    await record(ledger, "evt_RETRY", clock.now())
    biller.failures = [BillerUnavailable("boom", cause="server_error"), BillerUnavailable("boom", cause="timeout")]

    await dispatcher.run_once()
    first = ledger.entries["evt_RETRY"]
    clock.advance(first.next_attempt_at - clock.now())
    await dispatcher.run_once()
    second = ledger.entries["evt_RETRY"]

    assert (first.state, first.attempts, first.next_attempt_at) == (State.PENDING, 1, 1_800_000_000.5)
    assert (second.attempts, second.last_error) == (2, "timeout: boom")
    assert second.next_attempt_at - clock.now() == pytest.approx(1.0)  # base 1 s doubled, halved by zero jitter
    clock.advance(5)
    await dispatcher.run_once()
    assert ledger.entries["evt_RETRY"].state is State.SENT
    assert list(biller.events) == ["evt_RETRY"]


async def test_waits_at_least_retry_after_and_pauses_everyone_when_rate_limited(
    dispatcher: Dispatcher, ledger: MemoryLedger, biller: ScriptedBiller, clock: FrozenClock
) -> None:
    await record(ledger, "evt_429", clock.now())
    biller.failures = [BillerRateLimited(retry_after_s=7)]

    await dispatcher.run_once()
    await record(ledger, "evt_OTHER", clock.now(), customer="cus_2")
    paused = await dispatcher.run_once()
    clock.advance(7)
    resumed = await dispatcher.run_once()

    assert paused == 0
    assert resumed == 2
    assert set(biller.events) == {"evt_429", "evt_OTHER"}


async def test_parks_entry_with_biller_message_when_rejected_for_good(
    dispatcher: Dispatcher, ledger: MemoryLedger, biller: ScriptedBiller, clock: FrozenClock
) -> None:
    await record(ledger, "evt_REJECTED", clock.now(), customer="cus_gone")
    biller.failures = [BillerRejected("No such customer: 'cus_gone'")]

    await dispatcher.run_once()

    assert ledger.entries["evt_REJECTED"].state is State.PARKED
    parked = ledger.parked["evt_REJECTED"]
    assert (parked.reason, parked.message) == (ParkReason.BILLER_REJECTED, "No such customer: 'cus_gone'")
    assert await dispatcher.run_once() == 0


async def test_keeps_one_call_in_flight_per_customer_while_serving_customers_in_parallel(
    dispatcher: Dispatcher, ledger: MemoryLedger, biller: ScriptedBiller, clock: FrozenClock
) -> None:
    for n in range(40):
        await record(ledger, f"evt_{n}", clock.now(), customer=f"cus_{n % 4}")

    await dispatcher.run_once()

    assert len(biller.events) == 40
    assert max(biller.max_in_flight.values()) == 1
    assert biller.max_total_in_flight > 1


async def test_releases_customers_later_entries_when_an_earlier_one_fails(
    dispatcher: Dispatcher, ledger: MemoryLedger, biller: ScriptedBiller, clock: FrozenClock
) -> None:
    await record(ledger, "evt_FIRST", clock.now(), customer="cus_1")
    await record(ledger, "evt_SECOND", clock.now(), customer="cus_1")
    biller.failures = [BillerUnavailable("down")]

    await dispatcher.run_once()
    again = await ledger.lease_due(clock.now(), 10, 30)

    assert [e.event_id for e in again] == ["evt_SECOND"]
    assert biller.events == {}


async def test_sends_the_identifier_the_biller_rule_maps_the_event_id_to(
    ledger: MemoryLedger, biller: ScriptedBiller, clock: FrozenClock
) -> None:
    dispatcher = Dispatcher(ledger, biller, clock, FAST, jitter=lambda: 0.0, identifier=lambda id_: f"id_{id_}")
    await record(ledger, "evt_MAPPED", clock.now())

    await dispatcher.run_once()

    assert list(biller.events) == ["id_evt_MAPPED"]
    entry = await ledger.get("evt_MAPPED")
    assert entry is not None and entry.state is State.SENT


async def test_sends_the_event_id_itself_when_given_no_identifier_rule(
    dispatcher: Dispatcher, ledger: MemoryLedger, biller: ScriptedBiller, clock: FrozenClock
) -> None:
    long_id = "evt_" + "x" * 200
    await record(ledger, long_id, clock.now())

    await dispatcher.run_once()

    assert list(biller.events) == [long_id]


async def test_new_dispatcher_takes_over_entries_whose_lease_ran_out(
    ledger: MemoryLedger, biller: ScriptedBiller, clock: FrozenClock
) -> None:
    await record(ledger, "evt_ORPHAN", clock.now())
    await ledger.lease_due(clock.now(), 10, 30)  # a dispatcher leased it, then died
    successor = Dispatcher(ledger, biller, clock, FAST)

    before_expiry = await successor.run_once()
    clock.advance(31)
    after_expiry = await successor.run_once()

    assert (before_expiry, after_expiry) == (0, 1)
    assert list(biller.events) == ["evt_ORPHAN"]


async def test_counts_already_sent_as_sent_when_biller_holds_identifier(
    dispatcher: Dispatcher, ledger: MemoryLedger, biller: ScriptedBiller, clock: FrozenClock
) -> None:
    await record(ledger, "evt_SEEN", clock.now())
    await biller.send(MeterEvent("evt_SEEN", "cus_1", 1000, int(clock.now())))  # the crash window: sent, not marked

    await dispatcher.run_once()

    assert ledger.entries["evt_SEEN"].state is State.SENT
    assert len(biller.events) == 1


DAY_S = 24 * 3600


async def test_parks_entry_too_old_with_its_units_instead_of_sending_it_when_it_outlived_the_window(
    dispatcher: Dispatcher, ledger: MemoryLedger, biller: ScriptedBiller, clock: FrozenClock
) -> None:
    # Arrange: recorded, then held pending (an outage) past the biller's 35-day window.
    await record(ledger, "evt_STALE", clock.now(), cost="0.5")
    await record(ledger, "evt_FRESH", clock.now() + 2 * DAY_S, cost="0.25", customer="cus_2")
    clock.advance(35 * DAY_S + 1)

    # Act
    handled = await dispatcher.run_once()

    # Assert: no call for it; parked too_old with its units; the other entry is sent.
    assert handled == 2
    assert list(biller.events) == ["evt_FRESH"]
    stale = ledger.entries["evt_STALE"]
    assert (stale.state, stale.units) == (State.PARKED, 50_000)
    parked = ledger.parked["evt_STALE"]
    assert parked.reason is ParkReason.TOO_OLD
    assert "35-day" in parked.message
    assert await dispatcher.run_once() == 0


async def test_sends_entry_as_old_as_the_window_allows(
    dispatcher: Dispatcher, ledger: MemoryLedger, biller: ScriptedBiller, clock: FrozenClock
) -> None:
    await record(ledger, "evt_EDGE", clock.now())
    clock.advance(35 * DAY_S)

    await dispatcher.run_once()

    assert list(biller.events) == ["evt_EDGE"]
    assert ledger.entries["evt_EDGE"].state is State.SENT


async def test_keeps_every_entry_untouched_and_pauses_when_the_biller_refuses_the_set_up(
    dispatcher: Dispatcher, ledger: MemoryLedger, biller: ScriptedBiller, clock: FrozenClock
) -> None:
    for n in range(3):
        await record(ledger, f"evt_{n}", clock.now(), customer="cus_1")
    before = dict(ledger.entries)
    biller.failures = [BillerMisconfigured("session refused", cause="session_refused")]

    await dispatcher.run_once()

    # The refused entry and the rest of its customer's queue: as they were, and free to be leased again.
    assert ledger.entries == before
    assert ledger.parked == {}
    assert biller.calls == 1
    assert await dispatcher.run_once() == 0  # paused for retry_base_s
    clock.advance(FAST.retry_base_s)
    assert await dispatcher.run_once() == 3
    assert {entry.state for entry in ledger.entries.values()} == {State.SENT}
