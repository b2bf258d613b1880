"""A stopping dispatcher finishes what is in flight and hands back every lease it holds (graceful shutdown)."""

from __future__ import annotations

import asyncio
import contextlib

from gateway.adapters.clock import FrozenClock
from gateway.adapters.memory import MemoryBiller, MemoryLedger
from gateway.domain.ledger import State
from gateway.domain.ports import Delivery, MeterEvent
from gateway.service.dispatcher import DispatchConfig, Dispatcher
from tests.service.billers import record

ONE_AT_A_TIME = DispatchConfig(batch=100, concurrency=1, lease_s=30, max_rps=1_000_000)


class GatedBiller(MemoryBiller):
    """Records like the local biller, but each call waits at `gate` until the test opens it."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def send(self, event: MeterEvent) -> Delivery:
        self.entered.set()
        await self.gate.wait()
        return await super().send(event)


async def _leased_by_nobody(ledger: MemoryLedger, clock: FrozenClock) -> list[str]:
    """Ids a new dispatcher could lease right now, without waiting for any lease to run out."""
    return sorted(entry.event_id for entry in await ledger.lease_due(clock.now(), 1000, 30))


async def test_finishes_the_call_in_flight_and_releases_the_rest_when_stopped(clock: FrozenClock) -> None:
    ledger, biller = MemoryLedger(), GatedBiller()
    for n in range(3):
        await record(ledger, f"evt_{n}", clock.now(), customer="cus_1")  # one customer: one call at a time
    await record(ledger, "evt_other", clock.now(), customer="cus_2")  # waits for the single slot
    dispatcher = Dispatcher(ledger, biller, clock, ONE_AT_A_TIME)
    running = asyncio.create_task(dispatcher.run())
    await biller.entered.wait()

    dispatcher.stop()
    biller.gate.set()
    await asyncio.wait_for(running, 5)

    in_flight = [e for e in ledger.entries.values() if e.state is State.SENT]
    assert len(in_flight) == 1 and len(biller.events) == 1
    pending = sorted(e.event_id for e in ledger.entries.values() if e.state is State.PENDING)
    assert await _leased_by_nobody(ledger, clock) == pending
    assert len(pending) == 3


async def test_releases_every_lease_when_its_task_is_cancelled_mid_call(clock: FrozenClock) -> None:
    ledger, biller = MemoryLedger(), GatedBiller()
    for n in range(4):
        await record(ledger, f"evt_{n}", clock.now(), customer=f"cus_{n % 2}")
    dispatcher = Dispatcher(ledger, biller, clock, DispatchConfig(batch=100, concurrency=4, lease_s=30))
    running = asyncio.create_task(dispatcher.run())
    await biller.entered.wait()

    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running

    # The cut calls may or may not have reached the biller; their entries come back, and the biller's identifier
    # dedupe turns a resend into "already sent".
    assert await _leased_by_nobody(ledger, clock) == ["evt_0", "evt_1", "evt_2", "evt_3"]
