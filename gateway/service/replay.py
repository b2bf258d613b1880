"""Replay: an operator sends a parked delivery through the pipeline again (`gateway parked replay`).

Two kinds of parked records, two ways back (docs/design.md, "Ledger first"):
- parked at ingest (`unknown_customer`, `invalid_payload`, `too_old`, `unknown_type`): the body is run through
  `Ingest.process` exactly as a delivery would be, with `replaces=key`, so the new ledger entry and the removal of
  the parked record happen in one atomic step. A mapping added since (`gateway customers set`), or a type added to
  GATEWAY_BILLABLE_EVENTS, is therefore picked up, and the event is billed once: the id is then claimed by its
  entry, so a second replay finds nothing parked, and a live redelivery racing the replay is a duplicate of
  whichever claimed the id first.
- rejected by the biller (`biller_rejected`): the entry is already in the ledger, in state parked.
  `ParkedRecords.requeue` puts it back to pending and removes the record in one step, billed to the customer store's
  current mapping for its Ringside customer when that changed (the usual fix for "No such customer").
- `too_old`: past the biller's window (Stripe: 35 days), parked at ingest or, when it stayed pending that long, by
  the dispatcher with its entry kept. Neither can be sent as it is: a replay leaves it parked unless `restamp` is
  asked for, which bills it at the current time, in the current billing period (an entry is requeued with the new
  timestamp; a body runs through the pipeline as if created now).

Invariant: a replay never bills an event twice, and a replay that still cannot bill leaves the parked record as it
was, so nothing is lost.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.domain.ledger import Parked, ParkReason
from gateway.domain.outcome import Outcome, ReplayResult, ReplayStatus, Status, with_message
from gateway.domain.ports import Clock, CustomerStore, ParkedRecords
from gateway.service.ingest import Ingest

__all__ = ["ReplayResult", "ReplayStatus", "Replayer"]  # the results are the domain's, importable from here too

# `replay --all` reads the keys in pages that double in size, since the records left parked stay listed.
_FIRST_PAGE = 500


class Replayer:
    def __init__(self, ingest: Ingest, ledger: ParkedRecords, customers: CustomerStore, clock: Clock) -> None:
        self._ingest = ingest
        self._ledger = ledger
        self._customers = customers
        self._clock = clock

    async def replay(self, key: str, *, restamp: bool = False) -> ReplayResult:
        """Replay the record parked under `key`; `restamp` bills a too_old one at the current time. Raises
        StoreUnavailable (then nothing changed)."""
        parked = await self._ledger.get_parked(key)
        if parked is None:
            return ReplayResult(key, ReplayStatus.NOT_PARKED)
        if parked.reason is ParkReason.BILLER_REJECTED:
            return await self._requeue(parked)
        restamp = restamp and parked.reason is ParkReason.TOO_OLD
        now = self._clock.now()
        if parked.reason is ParkReason.TOO_OLD and await self._ledger.get(key) is not None:
            # Parked by the dispatcher: the entry waits in the ledger, its units settled.
            if not restamp:
                message = _restamp(parked.message)
                return ReplayResult(key, ReplayStatus.STILL_PARKED, reason=parked.reason, message=message)
            return await self._requeue(parked, timestamp=int(now))
        outcome = await self._ingest.process(parked.body, parked.signed_at, now, replaces=key, restamp=restamp)
        result = _result(key, outcome)
        if result.reason is ParkReason.TOO_OLD and result.message is not None:
            return with_message(result, _restamp(result.message))
        return result

    async def parked_keys(self, reason: ParkReason | None = None) -> list[str]:
        """Every key parked now (with `reason`, when given), oldest first."""
        limit = _FIRST_PAGE
        while True:
            page = await self._ledger.list_parked(reason, limit=limit)
            if len(page) < limit:
                return [record.key for record in page]
            limit *= 2

    async def replay_all(
        self, keys: list[str], on_each: Callable[[ReplayResult], None] = lambda result: None, *, restamp: bool = False
    ) -> list[ReplayResult]:
        """Replay `keys` one after another (the customer carry makes order matter: oldest first, as parked)."""
        results = []
        for key in keys:
            result = await self.replay(key, restamp=restamp)
            results.append(result)
            on_each(result)
        return results

    async def _requeue(self, parked: Parked, *, timestamp: int | None = None) -> ReplayResult:
        entry = await self._ledger.get(parked.key)
        if entry is None:
            return ReplayResult(parked.key, ReplayStatus.NOT_PARKED)
        customer = entry.billing_customer
        if entry.ringside_customer:
            # The customer store is where an operator fixes a wrong Stripe id; the rejected id is kept otherwise.
            customer = await self._customers.get(entry.ringside_customer) or customer
        requeued = await self._ledger.requeue(
            parked.key, self._clock.now(), billing_customer=customer, timestamp=timestamp
        )
        if requeued is None:
            # Replayed by someone else between our two reads.
            return ReplayResult(parked.key, ReplayStatus.NOT_PARKED)
        return ReplayResult(parked.key, ReplayStatus.BILLED, units=requeued.units, customer=requeued.billing_customer)


def _restamp(message: str) -> str:
    return f"{message}; restamp it to send it with the current time (billed in the current billing period)"


def _result(key: str, outcome: Outcome) -> ReplayResult:
    if outcome.status is Status.ACCEPTED:
        return ReplayResult(key, ReplayStatus.BILLED, units=outcome.units, customer=outcome.customer)
    if outcome.status is Status.PARKED:
        return ReplayResult(key, ReplayStatus.STILL_PARKED, reason=outcome.reason, message=outcome.message)
    if outcome.status is Status.DUPLICATE:
        return ReplayResult(
            key,
            ReplayStatus.DUPLICATE,
            customer=outcome.customer,
            message=f"event {outcome.event_id} is already in the ledger",
        )
    return ReplayResult(
        key,
        ReplayStatus.IGNORED,
        message=f"event type {outcome.event_type!r} is not billable (GATEWAY_BILLABLE_EVENTS)",
    )
