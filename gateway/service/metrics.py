"""The metrics port: what the services report about their work, in their own words (docs/operations.md, "Metrics").

The services call these methods on their hot paths, so an adapter must make each one cheap (a counter increment),
must never raise, and must never block. The services do not know which monitoring system listens: the Prometheus
adapter lives in `gateway/app/metrics.py`, and `NoMetrics` is the default for tests and tools that do not care.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from gateway.domain.ledger import LedgerStats


class Delivered(StrEnum):
    """What the dispatcher did with one leased entry."""

    SENT = "sent"
    ALREADY_SENT = "already_sent"  # the biller already held the identifier: success, nothing billed twice
    ZERO_UNITS = "zero_units"  # nothing to bill, marked sent without a call
    PARKED = "parked"  # the biller refused it for good
    RETRY = "retry"  # a transient failure; the entry stays pending


class Metrics(Protocol):
    """Counters and gauges the gateway keeps. Every method is cheap, never raises and never awaits."""

    def delivery(self, outcome: str, code: str = "") -> None:
        """One webhook delivery answered: `outcome` is the response status (accepted, duplicate, ignored, parked)
        or `refused` / `unavailable`; `code` is the park reason or the error code, empty otherwise."""
        ...

    def units_accepted(self, units: int) -> None:
        """Units of a newly recorded ledger entry (what will be billed)."""
        ...

    def parked(self, reason: str) -> None:
        """A delivery or an entry was parked for `reason` (a ParkReason value)."""
        ...

    def dispatched(self, outcome: Delivered, units: int, *, entries: int = 1) -> None:
        """The dispatcher finished with `entries` entries (one, or a batch's) alike; `units`, their sum, counts as
        sent for SENT, ALREADY_SENT and ZERO_UNITS. Zero entries is nothing."""
        ...

    def biller_call(self, seconds: float, error_cause: str | None = None) -> None:
        """One call to the biller took `seconds`; `error_cause` is BillerUnavailable.cause when it failed
        transiently, `rejected` when it was refused for good, None when it succeeded."""
        ...

    def ledger(self, stats: LedgerStats, now: float, *, alert_after_s: float | None = None) -> None:
        """The ledger's state as read at `now`: pending entries, the oldest one's age, parked and sent counts."""
        ...

    def store_up(self, up: bool) -> None:
        """Whether the last read of the ledger's state succeeded."""
        ...

    def dispatcher_paused(self, reason: str, paused: bool) -> None:
        """Whether the dispatcher is paused for `reason` (`biller_configuration`: the biller refuses the set-up)."""
        ...


class NoMetrics(Metrics):
    """Keeps nothing. The default, so that the services need no monitoring system to run."""

    def delivery(self, outcome: str, code: str = "") -> None:
        return None

    def units_accepted(self, units: int) -> None:
        return None

    def parked(self, reason: str) -> None:
        return None

    def dispatched(self, outcome: Delivered, units: int, *, entries: int = 1) -> None:
        return None

    def biller_call(self, seconds: float, error_cause: str | None = None) -> None:
        return None

    def ledger(self, stats: LedgerStats, now: float, *, alert_after_s: float | None = None) -> None:
        return None

    def store_up(self, up: bool) -> None:
        return None

    def dispatcher_paused(self, reason: str, paused: bool) -> None:
        return None
