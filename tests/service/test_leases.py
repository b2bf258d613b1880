"""The dispatcher's leases while a round runs (gateway/service/leases.py): renewed on a timer, and a round that can
no longer renew them stops starting calls and gives the rest back instead of racing another dispatcher."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.adapters.clock import FrozenClock
from gateway.adapters.memory import MemoryLedger
from gateway.domain.errors import StoreUnavailable
from gateway.domain.ledger import State
from gateway.domain.ports import Delivery, MeterEvent
from gateway.service.dispatcher import DispatchConfig, Dispatcher
from gateway.service.leases import LeaseKeeper
from tests.service.billers import ScriptedBiller, record

LEASE_S = 0.09  # renewals every 0.03 s of real time


class Unrenewable(MemoryLedger):
    """A ledger whose store cannot be reached to renew a lease (everything else works)."""

    async def renew(self, event_ids: Sequence[str], now: float, lease_s: float) -> list[str]:
        raise StoreUnavailable("the store is unreachable")


class SlowBiller(ScriptedBiller):
    """Each call takes `call_s` on the dispatcher's clock."""

    def __init__(self, clock: FrozenClock, call_s: float) -> None:
        super().__init__()
        self._clock = clock
        self._call_s = call_s

    async def send(self, event: MeterEvent) -> Delivery:
        self._clock.advance(self._call_s)
        return await super().send(event)


async def test_keeper_renews_the_leases_while_the_work_runs(ledger: MemoryLedger, clock: FrozenClock) -> None:
    await record(ledger, "evt_A", clock.now())
    await record(ledger, "evt_B", clock.now(), customer="cus_2")
    leased = await ledger.lease_due(clock.now(), 10, LEASE_S)

    async with LeaseKeeper(
        ledger, clock, [e.event_id for e in leased], leased_at=clock.now(), lease_s=LEASE_S
    ) as keeper:
        for _ in range(4):  # four times the lease, each step within a renewal period
            clock.advance(LEASE_S / 3)
            await asyncio.sleep(LEASE_S / 3 * 1.5)
            assert keeper.holds()
        # Another dispatcher finds both customers still held.
        assert await ledger.lease_due(clock.now(), 10, LEASE_S) == []


async def test_keeper_stops_holding_when_the_store_cannot_renew(clock: FrozenClock) -> None:
    ledger = Unrenewable()
    await record(ledger, "evt_A", clock.now())
    leased = await ledger.lease_due(clock.now(), 10, LEASE_S)

    async with LeaseKeeper(ledger, clock, [leased[0].event_id], leased_at=clock.now(), lease_s=LEASE_S) as keeper:
        clock.advance(LEASE_S / 3)
        await asyncio.sleep(LEASE_S / 3 * 1.5)
        assert keeper.holds()  # the first deadline still has a third of the lease to spare
        clock.advance(LEASE_S / 3 + 1e-6)
        assert not keeper.holds()


async def test_a_round_that_cannot_renew_stops_starting_calls_and_releases_the_rest(clock: FrozenClock) -> None:
    # Arrange: one customer's queue of 5 calls, each taking a third of the lease; the store cannot renew.
    ledger = Unrenewable()
    for n in range(5):
        await record(ledger, f"evt_{n}", clock.now())
    biller = SlowBiller(clock, LEASE_S / 3)
    config = DispatchConfig(batch=10, concurrency=1, lease_s=LEASE_S, max_rps=1_000_000)
    dispatcher = Dispatcher(ledger, biller, clock, config, jitter=lambda: 0.0)

    # Act
    await dispatcher.run_once()

    # Assert: calls stop while the lease still has a third to spare; the rest is pending, untouched and free.
    assert biller.calls == 2
    sent = [e.event_id for e in ledger.entries.values() if e.state is State.SENT]
    assert sent == ["evt_0", "evt_1"]
    rest = await ledger.lease_due(clock.now(), 10, LEASE_S)
    assert [(e.event_id, e.attempts) for e in rest] == [("evt_2", 0), ("evt_3", 0), ("evt_4", 0)]
