"""The ledger's records and its state machine: pending -> sent | parked (docs/design.md, "Ledger first").

A Ringside event id is claimed exactly once, either as a ledger entry (billable) or as a parked record (not
billable as it is). Every later delivery of that id is a duplicate. An entry leaves `pending` exactly once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from decimal import Decimal
from enum import StrEnum

import msgspec

from gateway.domain.units import ZERO, Rounding, settle


class State(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    PARKED = "parked"


class ParkReason(StrEnum):
    UNKNOWN_CUSTOMER = "unknown_customer"
    INVALID_PAYLOAD = "invalid_payload"
    TOO_OLD = "too_old"
    BILLER_REJECTED = "biller_rejected"
    UNKNOWN_TYPE = "unknown_type"


# Parked records whose entry is still in the ledger (parked by the dispatcher), which `requeue` puts back to pending.
REQUEUEABLE = frozenset({ParkReason.BILLER_REJECTED, ParkReason.TOO_OLD})


class Claim(msgspec.Struct, frozen=True):
    """A billable event, ready to be recorded. Units are settled by the store, under the customer's carry."""

    event_id: str
    event_type: str
    billing_customer: str
    ringside_customer: str | None
    cost_usd: Decimal
    exact_units: Decimal
    timestamp: int


class Entry(msgspec.Struct, frozen=True):
    """One billable event in the ledger."""

    event_id: str
    event_type: str
    billing_customer: str
    ringside_customer: str | None
    cost_usd: Decimal
    units: int
    timestamp: int
    state: State
    created_at: float
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str | None = None
    sent_at: float | None = None


def pending_entry(claim: Claim, units: int, now: float) -> Entry:
    """The entry a fresh claim becomes: pending, due now, with the units the store settled under the carry."""
    return Entry(
        event_id=claim.event_id,
        event_type=claim.event_type,
        billing_customer=claim.billing_customer,
        ringside_customer=claim.ringside_customer,
        cost_usd=claim.cost_usd,
        units=units,
        timestamp=claim.timestamp,
        state=State.PENDING,
        created_at=now,
        next_attempt_at=now,
    )


class Parked(msgspec.Struct, frozen=True):
    """A signed delivery that could not be billed as it was, kept whole so that an operator can replay it."""

    key: str
    reason: ParkReason
    message: str
    body: bytes
    signed_at: int
    parked_at: float
    event_type: str | None = None
    ringside_customer: str | None = None


class Recorded(msgspec.Struct, frozen=True):
    """What `Ledger.record` did: `created` is False when the id had been claimed before."""

    created: bool
    entry: Entry | None


class LedgerStats(msgspec.Struct, frozen=True):
    pending: int
    sent: int
    parked: int
    oldest_pending_at: float | None
    units_sent: int
    units_pending: int


class CustomerUsage(msgspec.Struct, frozen=True):
    """One billing customer's billable entries over a period (`Ledger.usage`).

    Parked entries are not billed and not counted; `events` counts the pending and sent entries.
    """

    billing_customer: str
    events: int
    units_sent: int
    units_pending: int


def rejected_record(entry: Entry, message: str, now: float) -> Parked:
    """The parked record of an entry the biller refused: the entry itself is the body an operator sees."""
    return entry_record(entry, ParkReason.BILLER_REJECTED, message, now)


def entry_record(entry: Entry, reason: ParkReason, message: str, now: float) -> Parked:
    """The parked record of an entry parked from the ledger (biller_rejected, too_old): the entry is its body."""
    return Parked(
        key=entry.event_id,
        reason=reason,
        message=message,
        body=msgspec.json.encode(entry),
        signed_at=entry.timestamp,
        parked_at=now,
        event_type=entry.event_type,
        ringside_customer=entry.ringside_customer,
    )


def retry_delay(attempts: int, *, base_s: float, cap_s: float, jitter: float, retry_after_s: float | None) -> float:
    """Exponential backoff with full jitter (AWS architecture blog), never sooner than the biller asked, and never
    longer than `cap_s` (GATEWAY_RETRY_MAX_S), whatever the biller asked.

    `jitter` is a number in [0, 1) supplied by the caller, so the rule stays pure and testable. A `retry_after_s`
    that is not a finite, non-negative number is ignored. The result is finite: it becomes a stored next attempt.
    """
    ceiling: float = min(cap_s, base_s * float(2 ** min(attempts, 32)))
    delay = ceiling / 2 + jitter * ceiling / 2
    delay = min(cap_s, max(delay, usable_wait(retry_after_s)))
    assert math.isfinite(delay), f"retry delay must be finite (cap_s={cap_s!r}, base_s={base_s!r})"
    return delay


def usable_wait(seconds: float | None) -> float:
    """A biller's requested wait when it is a finite, non-negative number of seconds; 0 otherwise."""
    return seconds if seconds is not None and math.isfinite(seconds) and seconds > 0 else 0.0


class Settled(msgspec.Struct):
    """What a group of claims comes to against what the store holds: one answer per claim, in order, the entries to
    insert, and the parked keys to remove (replays). The carries passed in are updated in place."""

    recorded: list[Recorded]
    created: list[Entry]
    replaced: list[str]


def sent_within(
    entries: Iterable[Entry], since: float, until: float, billing_customer: str | None = None
) -> list[Entry]:
    """FeedbackLedger.sent_between over entries already read: the sent ones with `since <= sent_at <= until` (of one
    customer, if given), by sent_at then event id."""
    found = [
        entry
        for entry in entries
        if entry.state is State.SENT
        and entry.sent_at is not None
        and since <= entry.sent_at <= until
        and billing_customer in (None, entry.billing_customer)
    ]
    return sorted(found, key=lambda entry: (entry.sent_at or 0.0, entry.event_id))


def settle_claims(
    items: Sequence[tuple[Claim, Rounding, float, str | None]],
    entries: dict[str, Entry],
    parked: set[str],
    carries: dict[str, Decimal],
) -> Settled:
    """Settle `items` (claim, rounding, now, the parked key it replaces) in order against the store's `entries` and
    `parked` keys of those ids and the customers' `carries`: a claimed id is answered `created=False` (a parked one
    without its entry, unless the claim replaces it), a fresh one becomes a pending entry whose units are settled
    under the customer's carry. Later claims in the group see the earlier ones, as if recorded one by one."""
    settled = Settled([], [], [])
    for claim, rounding, now, replaces in items:
        if claim.event_id in entries:
            settled.recorded.append(Recorded(created=False, entry=entries[claim.event_id]))
            continue
        if claim.event_id in parked and claim.event_id != replaces:
            settled.recorded.append(Recorded(created=False, entry=None))
            continue
        units, carries[claim.billing_customer] = settle(
            claim.exact_units, carries.get(claim.billing_customer, ZERO), rounding
        )
        entry = pending_entry(claim, units, now)
        entries[claim.event_id] = entry
        settled.created.append(entry)
        settled.recorded.append(Recorded(created=True, entry=entry))
        if replaces is not None:
            settled.replaced.append(replaces)
            parked.discard(replaces)
    return settled
