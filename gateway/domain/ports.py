"""The ports: what the domain needs from the outside world, in the domain's own words.

Adapters subclass these explicitly, so the type checker checks each one where it is defined, and every adapter of
a port passes the same contract suite (tests/contract/).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

import msgspec

from gateway.domain.ledger import Claim, Entry, LedgerStats, Parked, ParkReason, Recorded
from gateway.domain.units import Rounding


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...


class DedupeStore(Protocol):
    """The ledger: claims on event ids, entries and their states, parked deliveries, customers' carries.

    Every method is atomic. Raises StoreUnavailable when it cannot reach or write its storage; then nothing of
    the call took effect.
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

    async def lease_due(self, now: float, limit: int, lease_s: float) -> list[Entry]:
        """Lease up to `limit` pending entries due by `now` and not leased by anyone, oldest first.

        A leased entry is not handed out again until `now + lease_s`, or until it is marked or released, so two
        dispatchers never send one entry at the same time, and a crashed dispatcher's entries come back.
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

    async def get(self, event_id: str) -> Entry | None: ...

    async def get_parked(self, key: str) -> Parked | None: ...

    async def list_parked(self, reason: ParkReason | None = None, limit: int = 100) -> list[Parked]: ...

    async def stats(self) -> LedgerStats: ...

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store can be written now."""
        ...


class CustomerStore(Protocol):
    """Ringside customer id -> billing (Stripe) customer id."""

    async def get(self, ringside_id: str) -> str | None: ...

    async def set(self, ringside_id: str, billing_id: str) -> None: ...

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
