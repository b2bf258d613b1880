"""The ports: what the domain needs from the outside world, in the domain's own words.

Adapters subclass these explicitly, so the type checker checks each one where it is defined, and every adapter of
a port passes the same contract suite (tests/contract/).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Protocol, runtime_checkable

import msgspec

from gateway.domain.feedback import ErrorReport, Notification, Rejection
from gateway.domain.ledger import Claim, CustomerUsage, Entry, LedgerStats, Parked, ParkReason, Recorded
from gateway.domain.portal import PortalFlow
from gateway.domain.reconcile import Correction, LedgerWindow
from gateway.domain.units import Rounding


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...


class IngestLedger(Protocol):
    """What ingest needs: claim an event id as an entry or as a parked record.

    Every method of every ledger view is atomic. Raises StoreUnavailable when it cannot reach or write its storage;
    then nothing of the call took effect.
    """

    async def record(self, claim: Claim, rounding: Rounding, now: float, *, replaces: str | None = None) -> Recorded:
        """Claim `claim.event_id` and add a pending entry whose units are settled under the customer's carry.

        A second claim of a claimed id (as an entry or as a parked record) returns `created=False` and the existing
        entry (None when it is parked), and changes nothing. With `replaces`, the parked record of that key is
        removed in the same step (an operator's replay).
        """
        ...

    async def park(self, parked: Parked) -> bool:
        """Claim `parked.key` as a parked record. False, changing nothing, when the key is already claimed."""
        ...


class DeliveryQueue(Protocol):
    """What the dispatcher needs: lease pending entries and settle each one's outcome."""

    async def lease_due(self, now: float, limit: int, lease_s: float, *, hold_customers: bool = True) -> list[Entry]:
        """Lease up to `limit` pending entries due by `now`, oldest first, of billing customers none of whose pending
        entries is under a live lease (one whose deadline is after `now`).

        A leased entry is not handed out again until `now + lease_s`, or until it is marked, released or renewed, so
        two dispatchers never send one entry at the same time, and a crashed dispatcher's entries come back. A
        customer with a leased entry is skipped whole, so a customer's entries belong to one dispatcher at a time
        (Stripe v1: one call in flight per customer), whatever entries came due since. With `hold_customers` False
        (a biller with no per-customer rule: Stripe's v2 stream) only the entries under a live lease are skipped, so
        the next lease need not wait for the last one's customers; an entry is still never leased twice.
        """
        ...

    async def renew(self, event_ids: Sequence[str], now: float, lease_s: float) -> list[str]:
        """Move to `now + lease_s` the lease of each of `event_ids` that is pending and still leased at `now`; return
        those ids. An entry whose lease ran out, or that was marked or released, is left alone: it may already be
        another dispatcher's.
        """
        ...

    async def release(self, event_ids: list[str]) -> None:
        """Give leases back without changing anything else."""
        ...

    async def mark_sent(self, event_id: str, now: float) -> None:
        """pending -> sent. A no-op on an entry that is not pending."""
        ...

    async def mark_retry(self, event_id: str, next_attempt_at: float, error: str) -> None:
        """Count a failed attempt and schedule the next one; the entry stays pending."""
        ...

    async def mark_rejected(self, event_id: str, message: str, now: float) -> None:
        """pending -> parked: the biller refused it for good. A parked record (biller_rejected) keeps the message."""
        ...

    async def mark_too_old(self, event_id: str, message: str, now: float) -> None:
        """pending -> parked: the entry is past the biller's window and can never be sent as it is. A parked record
        (too_old) keeps the message; the entry keeps its units. A no-op on an entry that is not pending."""
        ...


@runtime_checkable
class BatchDeliveryQueue(DeliveryQueue, Protocol):
    """A delivery queue that marks many entries sent in one step (SQLite: one statement for a whole
    batch).

    Optional: the dispatcher uses it, when the ledger has it, for what a batch call to the biller delivered, and
    calls `mark_sent` once per entry otherwise.
    """

    async def mark_sent_many(self, event_ids: Sequence[str], now: float) -> None:
        """`mark_sent` for every id, atomically: all of them or none. Ids not pending are left alone."""
        ...


class ParkedRecords(Protocol):
    """What replay and the operator commands need: read entries and parked records, requeue a rejected entry."""

    async def get(self, event_id: str) -> Entry | None: ...

    async def get_parked(self, key: str) -> Parked | None: ...

    async def list_parked(self, reason: ParkReason | None = None, limit: int = 100) -> list[Parked]: ...

    async def requeue(
        self, event_id: str, now: float, *, billing_customer: str | None = None, timestamp: int | None = None
    ) -> Entry | None:
        """Put a parked entry back to pending and remove its parked record, in one step (an operator's replay).

        Only an entry in state parked whose parked record has reason biller_rejected or too_old qualifies. It becomes
        pending, due at `now`, with no attempts and no lease, billed to `billing_customer` and stamped `timestamp`
        when they are given; its units stay as they were settled (the carry is not touched). Returns the requeued
        entry, or None, changing nothing, when there is no such entry: so a second replay of the same id bills
        nothing twice.
        """
        ...


class LedgerReports(Protocol):
    """What the sweep, metrics and reports need: counts and per-customer usage."""

    async def stats(self) -> LedgerStats: ...

    async def usage(self, since: int | None = None, until: int | None = None) -> list[CustomerUsage]:
        """Units per billing customer of the pending and sent entries whose event timestamp lies in [since, until).

        A missing bound is open. Parked entries are not counted. Sorted by billing customer; customers without an
        entry in the period are absent.
        """
        ...


class BillerFeedback(Protocol):
    """What handling a biller's error report needs: find the sent entries it names, park them, once per report."""

    async def get(self, event_id: str) -> Entry | None: ...

    async def sent_between(self, since: float, until: float, billing_customer: str | None = None) -> list[Entry]:
        """The entries in state sent whose `sent_at` lies in [since, until] (of `billing_customer` when given),
        oldest sent first."""
        ...

    async def report_handled(self, report_id: str) -> bool:
        """True when `reject_sent` has claimed `report_id`."""
        ...

    async def reject_sent(self, report_id: str, rejections: Sequence[Rejection], now: float) -> int | None:
        """Claim `report_id` and move each named entry from sent to parked, in one step.

        Each moved entry gets a parked record with reason biller_rejected and the rejection's message (so replay
        requeues it like any rejected entry). Entries not in state sent are left alone. Returns how many entries
        moved, or None, changing nothing, when `report_id` was claimed before: a report is applied once.
        """
        ...


class FeedbackCursor(Protocol):
    """A durable position in the biller's event list, so that polling resumes where it stopped."""

    async def get_cursor(self, name: str) -> float | None: ...

    async def set_cursor(self, name: str, value: float) -> None:
        """Store `value` under `name`; a smaller value than the stored one is ignored (the cursor never moves back)."""
        ...


class ReconcileLedger(Protocol):
    """What reconciliation and repair need: sent units per customer and hour, and the corrections sent."""

    async def sent_windows(self, since: int, until: int, billing_customer: str | None = None) -> list[LedgerWindow]:
        """Per billing customer and per hour window (epoch-aligned, by event timestamp) in [since, until): the units
        of the entries in state sent and of those parked with reason biller_rejected (still owed to the biller), and
        the count, units and latest `recorded_at` of the corrections recorded for the window. Pending entries and
        entries parked too_old (they never reached the biller) are not counted. Windows whose units and corrections
        are all zero are absent. Sorted by customer, then window. `since` and `until` are hour boundaries (a store
        may keep only hourly sums).
        """
        ...

    async def record_correction(self, correction: Correction) -> bool:
        """Record a correction the biller accepted. False, changing nothing, when its identifier is recorded."""
        ...

    async def corrections(self, since: int | None = None, until: int | None = None) -> list[Correction]:
        """The corrections recorded for windows starting in [since, until), oldest window first."""
        ...


class FeedbackLedger(BillerFeedback, FeedbackCursor, ReconcileLedger, Protocol):
    """The ledger's side of closing the loop with the biller; every store has it, so `Ledger` includes it."""


class Ledger(IngestLedger, DeliveryQueue, ParkedRecords, LedgerReports, FeedbackLedger, Protocol):
    """The ledger: claims on event ids, entries and their states, parked deliveries, customers' carries, and the
    biller's feedback (error reports applied, polling cursors, corrections).

    One adapter class per store implements it whole; each use case depends only on the view it uses.
    """

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store can be written now."""
        ...


@runtime_checkable
class BatchLedger(Ledger, BatchDeliveryQueue, Protocol):
    """A ledger whose delivery queue marks many entries sent in one step."""


class StoreDurability(Protocol):
    """Whether the store's own settings let it keep what was acknowledged (a store with nothing to check has none)."""

    async def problem(self) -> str | None:
        """Why the store could lose acknowledged events now, naming the setting to change; None when it could not."""
        ...


class CustomerStore(Protocol):
    """Ringside customer id -> billing (Stripe) customer id."""

    async def get(self, ringside_id: str) -> str | None: ...

    async def set(self, ringside_id: str, billing_id: str) -> None: ...

    async def set_many(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Set every (ringside_id, billing_id) pair in one atomic step: all of them take effect, or none does.

        When a Ringside id appears more than once, its last pair wins.
        """
        ...

    async def delete(self, ringside_id: str) -> bool: ...

    async def list(self, limit: int = 1000) -> list[tuple[str, str]]: ...


class MeterEvent(msgspec.Struct, frozen=True):
    """One usage record for the biller: `identifier` is the end-to-end dedupe key."""

    identifier: str
    customer: str
    value: int
    timestamp: int


class Delivery(StrEnum):
    SENT = "sent"
    ALREADY_SENT = "already_sent"


class BillingSink(Protocol):
    """Where meter events go: Stripe, Lago, or the local ledger biller.

    `send` returns SENT, or ALREADY_SENT when the biller already holds that identifier (which is success). It raises
    BillerRejected for a permanent refusal and BillerUnavailable (or BillerRateLimited) for a transient one.
    """

    name: str

    async def send(self, event: MeterEvent) -> Delivery: ...

    async def close(self) -> None: ...


@runtime_checkable
class BatchBillingSink(BillingSink, Protocol):
    """A biller that takes many meter events per call (Stripe's v2 meter event stream: up to 100 per request).

    `send_batch` takes 1 to `max_batch` events and returns one Delivery per event, in their order. It raises for the
    whole call: BillerUnavailable (or BillerRateLimited) when it failed transiently, so none of the events may be
    taken as delivered; BillerRejected when the request as a whole was refused, and then the dispatcher sends the
    events again one per call, so that only an event that is refused on its own is parked. `send(e)` behaves as
    `send_batch([e])`. The dispatcher finds out by `isinstance(sink, BatchBillingSink)`.
    """

    max_batch: int

    async def send_batch(self, events: Sequence[MeterEvent]) -> list[Delivery]: ...


class BillerTotals(Protocol):
    """The units the biller holds for a customer over a window, per hour (by the meter event's timestamp).

    `hourly_units` takes hour-aligned bounds and returns {window start: units} for the hours in [start, end) where
    the biller holds usage (an hour may be absent or 0 when it holds none). The biller's totals may lag behind what
    it accepted (see `Verdict.SETTLING`). Raises BillerUnavailable when the biller cannot be asked.
    """

    name: str

    async def hourly_units(self, billing_customer: str, start: int, end: int) -> dict[int, int]: ...


class BillerReports(Protocol):
    """The biller's error reports: the full report behind a notification, and the notifications since a time."""

    async def fetch_report(self, event_id: str) -> ErrorReport | None:
        """The report of event `event_id`; None when that event is not an error report. Raises BillerUnavailable."""
        ...

    async def notifications_since(self, created_from: float, types: frozenset[str]) -> list[Notification]:
        """Every event of `types` created at or after `created_from`, oldest first. Raises BillerUnavailable."""
        ...


class BillingPortal(Protocol):
    """A biller's self-service portal (invoices, payment methods, cancellation) for one billing customer.

    `session_url` returns the URL of a new, short-lived portal session for `billing_customer` that sends the user
    back to `return_url` (already vetted by ReturnUrlPolicy), opened on `flow` when one is given. The customer is
    always the one passed in: an adapter never takes it from anywhere else. Raises NoBillingAccount when the biller
    does not know the customer, PortalFlowUnavailable when `flow` cannot apply to it (no subscription to cancel),
    BillerUnavailable when the biller cannot be reached (timeouts, 5xx, 429), BillerRejected for any other refusal,
    and PortalNotConfigured when this deployment has no portal at all.
    """

    name: str

    async def session_url(self, billing_customer: str, return_url: str, flow: PortalFlow | None) -> str: ...

    async def close(self) -> None: ...
