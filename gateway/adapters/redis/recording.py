"""record() as group commit: records made while a batch is on its way to Redis wait, and go together in the next
script, so the client encodes and sends one command per batch rather than one per record."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Final

from redis.asyncio import Redis

from gateway.adapters.redis import scripts
from gateway.adapters.redis.codec import decode_entry, encode, text
from gateway.adapters.redis.errors import MAX_CONFLICTS, store_errors
from gateway.adapters.redis.keys import Keys
from gateway.domain.errors import StoreUnavailable
from gateway.domain.ledger import Claim, Entry, Recorded, pending_entry
from gateway.domain.units import ZERO, Rounding, settle

# Records sent in one record_many script at most: bounds the time one script holds Redis (~10 commands per record).
RECORD_BATCH: Final = 128
# Customers whose last known carry a ledger remembers (see RecordBatcher); past this many it forgets them all.
CARRY_HINTS: Final = 10_000


class _Waiting:
    """A record() waiting for its batch; `future` belongs to the caller's loop. A caller that has gone (cancelled)
    is skipped; its record stands, as a durable record always does."""

    __slots__ = ("claim", "conflicts", "future", "now", "replaces", "rounding", "settles")

    def __init__(
        self, claim: Claim, rounding: Rounding, now: float, replaces: str | None, future: asyncio.Future[Recorded]
    ) -> None:
        self.claim = claim
        self.rounding = rounding
        self.now = now
        self.replaces = replaces
        self.future = future
        self.settles = rounding is Rounding.CARRY
        self.conflicts = 0

    def settle(self, recorded: Recorded) -> None:
        if not self.future.done():
            self.future.set_result(recorded)


class RecordBatcher:
    """RedisLedger.record's group commit: at most RECORD_BATCH records per script; an idle ledger sends a lone
    record at once. Replays (`replaces`) included.

    The carry is settled in Python (units.settle) from the carry this batcher last wrote or read for the customer
    (its hint, instead of a GET), and the script writes a record only if the carry is still that one; otherwise it
    answers the current carry and the record goes again, first in the next batch.
    """

    def __init__(self, client: Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._record_many = scripts.register(client, "record_many")
        # Records waiting for the next record_many, and the task that sends them.
        self._waiting: list[_Waiting] = []
        self._sender: asyncio.Task[None] | None = None
        # customer -> the carry this ledger last wrote or read for them: the hint `record` sends instead of a GET.
        self._carry_hints: dict[str, bytes | str | None] = {}

    async def record(self, claim: Claim, rounding: Rounding, now: float, replaces: str | None) -> Recorded:
        loop = asyncio.get_running_loop()
        waiting = _Waiting(claim, rounding, now, replaces, loop.create_future())
        self._waiting.append(waiting)
        sender = self._sender
        if sender is None or sender.done() or sender.get_loop() is not loop:
            self._sender = loop.create_task(self._send_waiting())
        return await waiting.future

    async def _send_waiting(self) -> None:
        while self._waiting:
            batch = self._waiting[:RECORD_BATCH]
            del self._waiting[:RECORD_BATCH]
            try:
                again = await self._record_batch(batch)
            except Exception as exc:  # every caller gets the failure; none is left waiting
                failure = exc if isinstance(exc, StoreUnavailable) else StoreUnavailable(f"Redis record failed: {exc}")
                for waiting in batch:
                    if not waiting.future.done():
                        waiting.future.set_exception(failure)
                continue
            self._waiting[:0] = again  # carry conflicts go first, in their order

    async def _record_batch(self, batch: list[_Waiting]) -> list[_Waiting]:
        """One record_many for the batch; settles each caller's future, and answers the records to send again
        (their carry changed under them: another process billed the customer)."""
        keys = self._keys
        hints = self._carry_hints
        unknown = list({w.claim.billing_customer for w in batch if w.settles and w.claim.billing_customer not in hints})
        with store_errors():
            if unknown:
                # The carries this ledger has no hint for, in one round trip (the script re-checks them anyway).
                found = await self._client.mget([keys.carry(customer) for customer in unknown])
                for customer, known in zip(unknown, found, strict=True):
                    self._remember_carry(customer, known)
            carries: dict[str, str] = {}  # each customer's carry after the batch's records so far
            records: list[tuple[object, ...]] = []
            entries: list[Entry] = []
            for waiting in batch:
                claim, customer = waiting.claim, waiting.claim.billing_customer
                read = ""
                if waiting.settles:
                    read = carries[customer] if customer in carries else text(hints.get(customer))
                units, settled = settle(claim.exact_units, Decimal(read) if read else ZERO, waiting.rounding)
                entry = pending_entry(claim, units, waiting.now)
                if waiting.settles:
                    carries[customer] = str(settled)
                entries.append(entry)
                record = (claim.event_id, waiting.now, waiting.now, units, waiting.settles, read, str(settled))
                records.append((*record, customer, waiting.replaces or ""))
            reply = await self._record_many(
                keys=[keys.due, keys.age, keys.stats, keys.parked_index(), *keys.every_reason_index()],
                args=[keys.entry(""), keys.parked(""), keys.carry(""), encode(records), *map(encode, entries)],
            )
        again: list[_Waiting] = []
        for position, (waiting, entry) in enumerate(zip(batch, entries, strict=True)):
            outcome, payload = text(reply[2 * position]), reply[2 * position + 1]
            if outcome == "created":
                if waiting.settles:
                    self._remember_carry(entry.billing_customer, carries[entry.billing_customer])
                waiting.settle(Recorded(created=True, entry=entry))
            elif outcome == "exists":
                waiting.settle(Recorded(created=False, entry=decode_entry(payload)))
            elif outcome == "parked":
                waiting.settle(Recorded(created=False, entry=None))
            else:  # "carry": another record of this customer won; settle again from its carry
                self._remember_carry(entry.billing_customer, payload)
                waiting.conflicts += 1
                if waiting.conflicts < MAX_CONFLICTS:
                    again.append(waiting)
                elif not waiting.future.done():
                    waiting.future.set_exception(
                        StoreUnavailable(f"too much contention on the carry of {entry.billing_customer!r}; retry later")
                    )
        return again

    def _remember_carry(self, customer: str, carry: bytes | str | None) -> None:
        if len(self._carry_hints) >= CARRY_HINTS and customer not in self._carry_hints:
            self._carry_hints.clear()
        self._carry_hints[customer] = carry
