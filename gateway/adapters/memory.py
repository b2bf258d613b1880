"""In-memory adapters: the reference semantics of every port, for tests and throwaway runs.

They hold the same rules and raise the same errors as the durable adapters, and pass the same contract suites.
Methods do no awaiting between their reads and writes, so each is atomic on the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import msgspec

from gateway.domain.feedback import Rejection
from gateway.domain.ledger import (
    REQUEUEABLE,
    Claim,
    CustomerUsage,
    Entry,
    LedgerStats,
    Parked,
    ParkReason,
    Recorded,
    State,
    entry_record,
    pending_entry,
    sent_within,
)
from gateway.domain.ports import (
    BatchLedger,
    BillerTotals,
    BillingSink,
    CustomerStore,
    Delivery,
    FeedbackLedger,
    MeterEvent,
)
from gateway.domain.reconcile import Correction, LedgerWindow, counted, hour_floor, with_correction
from gateway.domain.units import ZERO, Rounding, settle


class MemoryLedger(BatchLedger, FeedbackLedger):
    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.parked: dict[str, Parked] = {}
        self.carries: dict[str, Decimal] = {}
        self.reports: set[str] = set()
        self.cursors: dict[str, float] = {}
        self.fixes: dict[str, Correction] = {}
        self._leases: dict[str, float] = {}

    async def record(self, claim: Claim, rounding: Rounding, now: float, *, replaces: str | None = None) -> Recorded:
        existing = self.entries.get(claim.event_id)
        if existing is not None or (claim.event_id in self.parked and claim.event_id != replaces):
            return Recorded(created=False, entry=existing)
        units, carry = settle(claim.exact_units, self.carries.get(claim.billing_customer, ZERO), rounding)
        entry = pending_entry(claim, units, now)
        if replaces is not None:
            self.parked.pop(replaces, None)
        self.carries[claim.billing_customer] = carry
        self.entries[claim.event_id] = entry
        return Recorded(created=True, entry=entry)

    async def park(self, parked: Parked) -> bool:
        if parked.key in self.entries or parked.key in self.parked:
            return False
        self.parked[parked.key] = parked
        return True

    async def lease_due(self, now: float, limit: int, lease_s: float, *, hold_customers: bool = True) -> list[Entry]:
        live = {
            event_id
            for event_id, until in self._leases.items()
            if until > now and event_id in self.entries and self.entries[event_id].state is State.PENDING
        }
        held = {self.entries[event_id].billing_customer for event_id in live} if hold_customers else set()
        due = sorted(
            (
                entry
                for entry in self.entries.values()
                if entry.state is State.PENDING
                and entry.next_attempt_at <= now
                and entry.event_id not in live
                and entry.billing_customer not in held
            ),
            key=lambda entry: (entry.next_attempt_at, entry.created_at),
        )[:limit]
        for entry in due:
            self._leases[entry.event_id] = now + lease_s
        return due

    async def release(self, event_ids: list[str]) -> None:
        for event_id in event_ids:
            self._leases.pop(event_id, None)

    async def renew(self, event_ids: Sequence[str], now: float, lease_s: float) -> list[str]:
        renewed = []
        for event_id in event_ids:
            entry = self.entries.get(event_id)
            if entry is not None and entry.state is State.PENDING and self._leases.get(event_id, 0.0) > now:
                self._leases[event_id] = now + lease_s
                renewed.append(event_id)
        return renewed

    def _update(self, event_id: str, **changes: object) -> Entry | None:
        entry = self.entries.get(event_id)
        if entry is None or entry.state is not State.PENDING:
            return None
        self._leases.pop(event_id, None)
        self.entries[event_id] = updated = msgspec.structs.replace(entry, **changes)
        return updated

    async def mark_sent(self, event_id: str, now: float) -> None:
        self._update(event_id, state=State.SENT, sent_at=now)

    async def mark_sent_many(self, event_ids: Sequence[str], now: float) -> None:
        for event_id in event_ids:
            self._update(event_id, state=State.SENT, sent_at=now)

    async def mark_retry(self, event_id: str, next_attempt_at: float, error: str) -> None:
        entry = self.entries.get(event_id)
        if entry is not None:
            self._update(event_id, attempts=entry.attempts + 1, next_attempt_at=next_attempt_at, last_error=error)

    async def mark_rejected(self, event_id: str, message: str, now: float) -> None:
        self._park_entry(event_id, ParkReason.BILLER_REJECTED, message, now)

    async def mark_too_old(self, event_id: str, message: str, now: float) -> None:
        self._park_entry(event_id, ParkReason.TOO_OLD, message, now)

    def _park_entry(self, event_id: str, reason: ParkReason, message: str, now: float) -> None:
        entry = self._update(event_id, state=State.PARKED, last_error=message)
        if entry is not None:
            self.parked[event_id] = entry_record(entry, reason, message, now)

    async def requeue(
        self, event_id: str, now: float, *, billing_customer: str | None = None, timestamp: int | None = None
    ) -> Entry | None:
        entry = self.entries.get(event_id)
        record = self.parked.get(event_id)
        if entry is None or entry.state is not State.PARKED or record is None:
            return None
        if record.reason not in REQUEUEABLE:
            return None
        requeued = msgspec.structs.replace(
            entry,
            state=State.PENDING,
            billing_customer=billing_customer or entry.billing_customer,
            attempts=0,
            next_attempt_at=now,
            timestamp=entry.timestamp if timestamp is None else timestamp,
        )
        del self.parked[event_id]
        self._leases.pop(event_id, None)
        self.entries[event_id] = requeued
        return requeued

    async def get(self, event_id: str) -> Entry | None:
        return self.entries.get(event_id)

    async def get_parked(self, key: str) -> Parked | None:
        return self.parked.get(key)

    async def list_parked(self, reason: ParkReason | None = None, limit: int = 100) -> list[Parked]:
        matching = [p for p in self.parked.values() if reason is None or p.reason is reason]
        return sorted(matching, key=lambda p: p.parked_at)[:limit]

    async def stats(self) -> LedgerStats:
        pending = [e for e in self.entries.values() if e.state is State.PENDING]
        sent = [e for e in self.entries.values() if e.state is State.SENT]
        return LedgerStats(
            pending=len(pending),
            sent=len(sent),
            parked=len(self.parked),
            oldest_pending_at=min((e.created_at for e in pending), default=None),
            units_sent=sum(e.units for e in sent),
            units_pending=sum(e.units for e in pending),
        )

    async def usage(self, since: int | None = None, until: int | None = None) -> list[CustomerUsage]:
        totals: dict[str, list[int]] = {}
        for entry in self.entries.values():
            if entry.state is State.PARKED:
                continue
            if (since is not None and entry.timestamp < since) or (until is not None and entry.timestamp >= until):
                continue
            events, sent, pending = totals.setdefault(entry.billing_customer, [0, 0, 0])
            sent_now = entry.units if entry.state is State.SENT else 0
            totals[entry.billing_customer] = [events + 1, sent + sent_now, pending + entry.units - sent_now]
        return [
            CustomerUsage(customer, events=events, units_sent=sent, units_pending=pending)
            for customer, (events, sent, pending) in sorted(totals.items())
        ]

    async def ping(self) -> None:
        return None

    # -- the biller's feedback ------------------------------------------------------------------------------------

    async def sent_between(self, since: float, until: float, billing_customer: str | None = None) -> list[Entry]:
        return sent_within(self.entries.values(), since, until, billing_customer)

    async def report_handled(self, report_id: str) -> bool:
        return report_id in self.reports

    async def reject_sent(self, report_id: str, rejections: Sequence[Rejection], now: float) -> int | None:
        if report_id in self.reports:
            return None
        self.reports.add(report_id)
        moved = 0
        for rejection in rejections:
            entry = self.entries.get(rejection.event_id)
            if entry is None or entry.state is not State.SENT:
                continue
            self.entries[entry.event_id] = parked = msgspec.structs.replace(
                entry, state=State.PARKED, last_error=rejection.message
            )
            self.parked[entry.event_id] = entry_record(parked, ParkReason.BILLER_REJECTED, rejection.message, now)
            moved += 1
        return moved

    async def get_cursor(self, name: str) -> float | None:
        return self.cursors.get(name)

    async def set_cursor(self, name: str, value: float) -> None:
        self.cursors[name] = max(value, self.cursors.get(name, value))

    async def sent_windows(self, since: int, until: int, billing_customer: str | None = None) -> list[LedgerWindow]:
        windows: dict[tuple[str, int], LedgerWindow] = {}

        def window(customer: str, start: int) -> LedgerWindow:
            return windows.get((customer, start)) or LedgerWindow(customer, start, 0)

        for entry in self.entries.values():
            if entry.state is State.PENDING or billing_customer not in (None, entry.billing_customer):
                continue
            if not since <= entry.timestamp < until:
                continue
            key = (entry.billing_customer, hour_floor(entry.timestamp))
            current = window(*key)
            if entry.state is State.SENT:
                windows[key] = msgspec.structs.replace(current, sent_units=current.sent_units + entry.units)
            elif (
                record := self.parked.get(entry.event_id)
            ) is not None and record.reason is ParkReason.BILLER_REJECTED:
                # Only what the biller rejected is owed to it; an entry parked too_old never reached it.
                windows[key] = msgspec.structs.replace(current, rejected_units=current.rejected_units + entry.units)
        for fix in self.fixes.values():
            if billing_customer not in (None, fix.billing_customer) or not since <= fix.window_start < until:
                continue
            key = (fix.billing_customer, fix.window_start)
            current = window(*key)
            windows[key] = with_correction(current, fix)
        return counted(windows)

    async def record_correction(self, correction: Correction) -> bool:
        if correction.identifier in self.fixes:
            return False
        self.fixes[correction.identifier] = correction
        return True

    async def corrections(self, since: int | None = None, until: int | None = None) -> list[Correction]:
        found = [
            fix
            for fix in self.fixes.values()
            if (since is None or fix.window_start >= since) and (until is None or fix.window_start < until)
        ]
        return sorted(found, key=lambda fix: (fix.window_start, fix.billing_customer, fix.recorded_at))


class MemoryCustomers(CustomerStore):
    def __init__(self, mapping: dict[str, str] | None = None) -> None:
        self.mapping = dict(mapping or {})

    async def get(self, ringside_id: str) -> str | None:
        return self.mapping.get(ringside_id)

    async def set(self, ringside_id: str, billing_id: str) -> None:
        self.mapping[ringside_id] = billing_id

    async def set_many(self, pairs: Sequence[tuple[str, str]]) -> None:
        self.mapping.update(pairs)

    async def delete(self, ringside_id: str) -> bool:
        return self.mapping.pop(ringside_id, None) is not None

    async def list(self, limit: int = 1000) -> list[tuple[str, str]]:
        return sorted(self.mapping.items())[:limit]


class MemoryBiller(BillingSink, BillerTotals):
    """The local ledger biller, in memory: records meter events instead of sending them, once per identifier."""

    name = "memory"

    def __init__(self) -> None:
        self.events: dict[str, MeterEvent] = {}

    async def send(self, event: MeterEvent) -> Delivery:
        if event.identifier in self.events:
            return Delivery.ALREADY_SENT
        self.events[event.identifier] = event
        return Delivery.SENT

    async def hourly_units(self, billing_customer: str, start: int, end: int) -> dict[int, int]:
        held: dict[int, int] = {}
        for event in self.events.values():
            if event.customer == billing_customer and start <= event.timestamp < end:
                window = hour_floor(event.timestamp)
                held[window] = held.get(window, 0) + event.value
        return held

    async def close(self) -> None:
        return None
