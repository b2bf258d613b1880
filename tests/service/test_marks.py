"""v1's marks coalesced (gateway/service/marks.py): one store step per group, every caller answered."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.adapters.clock import FrozenClock
from gateway.adapters.memory import MemoryLedger
from gateway.domain.errors import StoreUnavailable
from gateway.domain.ledger import State
from gateway.service.marks import SentMarks
from tests.service.billers import record


class CountingLedger(MemoryLedger):
    """Counts the store steps the marks take; `fail` makes the next group's step fail."""

    def __init__(self) -> None:
        super().__init__()
        self.groups: list[list[str]] = []
        self.fail = False

    async def mark_sent_many(self, event_ids: Sequence[str], now: float) -> None:
        self.groups.append(list(event_ids))
        await asyncio.sleep(0)  # a store step takes a turn of the loop, as a real one does
        if self.fail:
            raise StoreUnavailable("the store is down")
        await super().mark_sent_many(event_ids, now)


async def test_marks_made_while_a_group_is_on_its_way_go_together_in_the_next(clock: FrozenClock) -> None:
    ledger = CountingLedger()
    for n in range(7):
        await record(ledger, f"evt_{n}", clock.now())
    marks = SentMarks(ledger, clock)

    first = asyncio.create_task(marks.mark("evt_0"))
    await asyncio.sleep(0)  # the lone mark goes at once
    await asyncio.gather(first, *(marks.mark(f"evt_{n}") for n in range(1, 7)))

    assert [len(group) for group in ledger.groups] == [6]  # evt_0 alone (mark_sent), then the six together
    assert {entry.state for entry in ledger.entries.values()} == {State.SENT}
    assert {entry.sent_at for entry in ledger.entries.values()} == {clock.now()}


async def test_every_caller_of_a_failed_group_gets_the_failure_and_the_next_group_still_goes(
    clock: FrozenClock,
) -> None:
    ledger = CountingLedger()
    for n in range(4):
        await record(ledger, f"evt_{n}", clock.now())
    marks = SentMarks(ledger, clock)
    ledger.fail = True

    results = await asyncio.gather(*(marks.mark(f"evt_{n}") for n in range(3)), return_exceptions=True)
    ledger.fail = False
    await marks.mark("evt_3")

    assert all(isinstance(result, StoreUnavailable) for result in results)
    states = {event_id: entry.state for event_id, entry in ledger.entries.items()}
    assert states == {"evt_0": State.PENDING, "evt_1": State.PENDING, "evt_2": State.PENDING, "evt_3": State.SENT}
