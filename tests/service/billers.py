"""Scripted billers (fakes of the BillingSink ports) and a way to put entries in a ledger: the dispatcher tests'."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal

from gateway.adapters.memory import MemoryBiller, MemoryLedger
from gateway.domain.errors import BillerError, BillerRejected
from gateway.domain.ports import BatchBillingSink, Delivery, MeterEvent
from gateway.domain.units import Rounding, exact_units
from tests.builders import claim


async def record(
    ledger: MemoryLedger, event_id: str, now: float, *, cost: str = "0.01", customer: str = "cus_1"
) -> None:
    """A pending entry for a billable event costing `cost` dollars (100000 units per dollar), stamped `now`."""
    units = exact_units(Decimal(cost), 100_000)
    billable = claim(event_id, exact=units, cost=cost, customer=customer, ringside=None, timestamp=int(now))
    await ledger.record(billable, Rounding.CARRY, now)


class _Scripted(MemoryBiller):
    """Records like the memory biller; each call takes a moment, then fails as scripted in `failures` (in order)."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[BillerError] = []

    async def _call(self) -> None:
        """Take a moment (so that calls overlap), then raise the next scripted failure, if any."""
        await asyncio.sleep(0.001)
        if self.failures:
            raise self.failures.pop(0)


class ScriptedBiller(_Scripted):
    """One event per call; measures concurrency per customer and in all."""

    name = "scripted"

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.in_flight: dict[str, int] = defaultdict(int)
        self.max_in_flight: dict[str, int] = defaultdict(int)
        self.max_total_in_flight = 0

    async def send(self, event: MeterEvent) -> Delivery:
        self.calls += 1
        self.in_flight[event.customer] += 1
        self.max_in_flight[event.customer] = max(self.max_in_flight[event.customer], self.in_flight[event.customer])
        self.max_total_in_flight = max(self.max_total_in_flight, sum(self.in_flight.values()))
        try:
            await self._call()
            return await super().send(event)
        finally:
            self.in_flight[event.customer] -= 1


class BatchBiller(_Scripted, BatchBillingSink):
    """`max_batch` events per call (a BatchBillingSink); records each call's identifiers and the calls in flight.

    `refuse` names identifiers whose presence makes a call be refused as a whole (as a 400 would).
    """

    name = "batch"
    max_batch = 3

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []
        self.refuse: set[str] = set()
        self.in_flight = 0
        self.max_in_flight = 0

    async def send_batch(self, events: Sequence[MeterEvent]) -> list[Delivery]:
        assert 1 <= len(events) <= self.max_batch
        self.calls.append([event.identifier for event in events])
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self._call()
            if self.refuse & {event.identifier for event in events}:
                raise BillerRejected("Invalid event in request.")
            return [await MemoryBiller.send(self, event) for event in events]
        finally:
            self.in_flight -= 1

    async def send(self, event: MeterEvent) -> Delivery:
        return (await self.send_batch([event]))[0]
