"""v1's marks, coalesced: the entries its calls delivered are marked sent together, one store step per group.

A v1 call delivers one entry; marking each on its own cost the store a step per call (SQLite: two statements and a
job on the writer thread, whose Python work also takes the interpreter lock from the event loop; Redis: a round
trip). Marks made while a group is on its way to the store wait and go together in the next one, as the stores'
own group commits do, through `mark_sent_many` when the queue has it (BatchDeliveryQueue). An idle dispatcher's
lone mark goes at once. Invariant: a caller returns only once its entry is marked (or with the store's failure),
so a customer's next entry is never sent before the last one is marked.
"""

from __future__ import annotations

import asyncio
from typing import Final

from gateway.domain.ports import BatchDeliveryQueue, Clock, DeliveryQueue

# Marks sent in one store step at most: bounds one SQLite statement's id list and one Redis script's arguments.
MARK_GROUP: Final = 500


class SentMarks:
    def __init__(self, ledger: DeliveryQueue, clock: Clock) -> None:
        self._ledger = ledger
        self._clock = clock
        self._waiting: list[tuple[str, asyncio.Future[None]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def mark(self, event_id: str) -> None:
        """Mark `event_id` sent (at the time its group reaches the store); return once it is."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiting.append((event_id, future))
        sender = self._sender
        if sender is None or sender.done() or sender.get_loop() is not loop:
            self._sender = loop.create_task(self._send_waiting())
        await future

    async def _send_waiting(self) -> None:
        while self._waiting:
            group = self._waiting[:MARK_GROUP]
            del self._waiting[:MARK_GROUP]
            ids = [event_id for event_id, _ in group]
            try:
                await self._mark_group(ids)
            except Exception as exc:  # every caller gets the failure; none is left waiting
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except BaseException:
                for _, future in group:
                    future.cancel()
                raise
            for _, future in group:
                if not future.done():
                    future.set_result(None)

    async def _mark_group(self, ids: list[str]) -> None:
        now = self._clock.now()
        if len(ids) > 1 and isinstance(self._ledger, BatchDeliveryQueue):
            await self._ledger.mark_sent_many(ids, now)
        else:
            await asyncio.gather(*(self._ledger.mark_sent(event_id, now) for event_id in ids))
