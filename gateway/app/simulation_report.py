"""What `gateway simulate` reports: the deliveries by answer, and each customer's events as the gateway acknowledged
them, so that both can be checked against the ledger."""

from __future__ import annotations

from decimal import Decimal

import msgspec


class CustomerTotal(msgspec.Struct, frozen=True):
    """One Ringside customer's events as the gateway acknowledged them."""

    ringside_customer: str
    stripe_customer: str | None
    events: int
    accepted: int
    parked: int
    units: int
    spend_usd: Decimal


class SimulationReport(msgspec.Struct, frozen=True):
    url: str
    run_id: str
    events: int
    deliveries: int
    sent: int
    retries: int
    accepted: int
    duplicate: int
    ignored: int
    parked: int
    refused: int
    failed: int
    forged: int
    forged_refused: int
    units: int
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    elapsed_s: float
    parked_reasons: dict[str, int]
    refusals: dict[str, int]
    customers: list[CustomerTotal]
    double_acknowledged: list[str]

    @property
    def problems(self) -> list[str]:
        """What a healthy gateway never does; empty on a good run."""
        problems = []
        if self.failed:
            problems.append(f"{self.failed} deliveries were never acknowledged")
        if self.forged_refused != self.forged:
            problems.append(f"{self.forged - self.forged_refused} forged deliveries were not refused")
        genuine_refused = self.refused - self.forged_refused
        if genuine_refused:
            problems.append(
                f"{genuine_refused} genuine deliveries were refused ({_counts(self.refusals)}): is the simulator's "
                "secret one of the gateway's RINGSIDE_WEBHOOK_SECRETS?"
            )
        if self.double_acknowledged:
            problems.append(f"{len(self.double_acknowledged)} events were accepted more than once")
        return problems


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{count} {name}" for name, count in counter.items())
