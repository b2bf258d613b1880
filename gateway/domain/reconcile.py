"""Reconciliation: the ledger's sent units against the biller's own totals, per customer and per hour; and repair.

Windows are hours aligned to the epoch, by the meter event's timestamp (Stripe groups its event summaries so).
A window is judged only once it has settled: the biller's totals are eventually consistent, so a window younger
than the settle time, or one whose correction was recorded less than the settle time ago, is `settling`.

A correction is one meter event that carries a window's missing units to the biller. Its identifier is derived
from the customer, the window and how many corrections the window already has, so a correction re-sent after a
crash is the same event to the biller (which drops a known identifier), while a later loss in the same window gets
a new one. The ledger records each correction sent; the ledger side of a window is its sent entries, which is
what the biller should hold once the correction has arrived.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from enum import StrEnum

import msgspec

HOUR_S = 3600
# A correction must reach the biller while its timestamp is still acceptable there: keep this much time in hand.
REPAIR_MARGIN_S = 3600


class Verdict(StrEnum):
    MATCH = "match"
    MISSING_AT_BILLER = "missing_at_biller"
    EXTRA_AT_BILLER = "extra_at_biller"
    SETTLING = "settling"


def hour_floor(timestamp: float) -> int:
    return int(timestamp) // HOUR_S * HOUR_S


def hour_ceil(timestamp: float) -> int:
    return -(-int(timestamp) // HOUR_S) * HOUR_S


class LedgerWindow(msgspec.Struct, frozen=True):
    """The ledger's side of one customer's hour: units of its sent entries, and the corrections recorded for it."""

    billing_customer: str
    window_start: int
    sent_units: int
    corrections: int = 0
    corrected_units: int = 0
    last_corrected_at: float | None = None


class WindowVerdict(msgspec.Struct, frozen=True):
    """One row of a reconciliation. `difference` is ledger minus biller (positive: units missing at the biller)."""

    billing_customer: str
    window_start: int
    window_end: int
    ledger_units: int
    biller_units: int
    difference: int
    verdict: Verdict
    corrections: int = 0
    corrected_units: int = 0


class ReconcileTotals(msgspec.Struct, frozen=True):
    windows: int
    ledger_units: int
    biller_units: int
    windows_by_verdict: dict[str, int]
    units_by_verdict: dict[str, int]  # |difference| summed per verdict

    @property
    def matched(self) -> bool:
        """True when every judged window matches (settling windows are not judged)."""
        return all(v in (Verdict.MATCH, Verdict.SETTLING) for v in self.windows_by_verdict)


class Correction(msgspec.Struct, frozen=True):
    """A meter event that carries a window's missing units to the biller, and its record in the ledger."""

    identifier: str
    billing_customer: str
    window_start: int
    units: int
    timestamp: int
    recorded_at: float = 0.0


def judge(
    ledger: Iterable[LedgerWindow],
    biller: Mapping[tuple[str, int], int],
    now: float,
    settle_s: float,
) -> list[WindowVerdict]:
    """A verdict for every (customer, window) either side knows, sorted by customer then window.

    `biller` maps (billing customer, window start) to the units the biller holds for that hour.
    """
    mine = {(w.billing_customer, w.window_start): w for w in ledger}
    rows = []
    for key in sorted(set(mine) | set(biller)):
        customer, start = key
        window = mine.get(key) or LedgerWindow(customer, start, 0)
        held = biller.get(key, 0)
        difference = window.sent_units - held
        rows.append(
            WindowVerdict(
                billing_customer=customer,
                window_start=start,
                window_end=start + HOUR_S,
                ledger_units=window.sent_units,
                biller_units=held,
                difference=difference,
                verdict=_verdict(window, difference, now, settle_s),
                corrections=window.corrections,
                corrected_units=window.corrected_units,
            )
        )
    return rows


def _verdict(window: LedgerWindow, difference: int, now: float, settle_s: float) -> Verdict:
    if window.window_start + HOUR_S > now - settle_s:
        return Verdict.SETTLING
    if window.last_corrected_at is not None and window.last_corrected_at > now - settle_s:
        return Verdict.SETTLING  # the biller may not count the correction yet
    if difference > 0:
        return Verdict.MISSING_AT_BILLER
    if difference < 0:
        return Verdict.EXTRA_AT_BILLER
    return Verdict.MATCH


def totals(rows: Iterable[WindowVerdict]) -> ReconcileTotals:
    windows = ledger_units = biller_units = 0
    by_verdict: dict[str, int] = {}
    units: dict[str, int] = {}
    for row in rows:
        windows += 1
        ledger_units += row.ledger_units
        biller_units += row.biller_units
        by_verdict[row.verdict] = by_verdict.get(row.verdict, 0) + 1
        units[row.verdict] = units.get(row.verdict, 0) + abs(row.difference)
    return ReconcileTotals(windows, ledger_units, biller_units, by_verdict, units)


def correction_identifier(billing_customer: str, window_start: int, sequence: int) -> str:
    """Deterministic, at most 100 characters (Stripe's identifier limit), never a Ringside event id."""
    digest = hashlib.sha256(f"{billing_customer}\x00{window_start}\x00{sequence}".encode()).hexdigest()
    return f"fix_{digest[:48]}"


def plan_repairs(rows: Iterable[WindowVerdict], now: float, max_age_s: float) -> list[Correction]:
    """One correction per `missing_at_biller` window whose timestamp the biller still takes (`max_age_s`).

    The correction is stamped at the window's last second, so it lands in that window and stays acceptable longest.
    """
    planned = []
    for row in rows:
        if row.verdict is not Verdict.MISSING_AT_BILLER:
            continue
        timestamp = row.window_end - 1
        if timestamp < now - max_age_s + REPAIR_MARGIN_S:
            continue
        identifier = correction_identifier(row.billing_customer, row.window_start, row.corrections)
        planned.append(Correction(identifier, row.billing_customer, row.window_start, row.difference, timestamp))
    return planned
