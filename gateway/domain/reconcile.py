"""Reconciliation: the ledger's sent units against the biller's own totals, per customer and per hour; and repair.

Windows are hours aligned to the epoch, by the meter event's timestamp (Stripe groups its event summaries so).
A window is judged only once it has settled: the biller's totals are eventually consistent, so a window younger
than the settle time, or one whose correction was recorded less than the settle time ago, is `settling`.

A correction is one meter event that carries a window's missing units to the biller. Its identifier is derived
from the customer, the window and how many corrections the window already has, so a correction re-sent after a
crash is the same event to the biller (which drops a known identifier), while a later loss in the same window gets
a new one. The ledger records each correction sent.

The ledger side of a window is what the biller should hold: its sent entries plus the entries the biller rejected
(parked `biller_rejected`, still owed; a replay sends them). Pending entries are left out: the dispatcher is still
on them. Repair carries only the unexplained loss, sent units the biller does not hold; rejected units are fixed by
replay, and a correction for them would bill them twice once replayed.
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
    """The ledger's side of one customer's hour: units of its sent entries and of its entries the biller rejected,
    and the corrections recorded for it."""

    billing_customer: str
    window_start: int
    sent_units: int
    rejected_units: int = 0
    corrections: int = 0
    corrected_units: int = 0
    last_corrected_at: float | None = None


def with_correction(window: LedgerWindow, fix: Correction) -> LedgerWindow:
    """`window` with one more recorded correction, `fix`, counted in."""
    return msgspec.structs.replace(
        window,
        corrections=window.corrections + 1,
        corrected_units=window.corrected_units + fix.units,
        last_corrected_at=max(fix.recorded_at, window.last_corrected_at or fix.recorded_at),
    )


def counted(windows: Mapping[tuple[str, int], LedgerWindow]) -> list[LedgerWindow]:
    """The windows that hold something (units sent or rejected, or a correction), by customer then window: what
    `ReconcileLedger.sent_windows` returns."""
    return [w for _, w in sorted(windows.items()) if w.sent_units or w.rejected_units or w.corrections]


class WindowVerdict(msgspec.Struct, frozen=True):
    """One row of a reconciliation. `ledger_units` counts sent and rejected entries (`rejected_units` of them);
    `difference` is ledger minus biller (positive: units missing at the biller)."""

    billing_customer: str
    window_start: int
    window_end: int
    ledger_units: int
    biller_units: int
    difference: int
    verdict: Verdict
    rejected_units: int = 0
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
        owed = window.sent_units + window.rejected_units
        difference = owed - held
        rows.append(
            WindowVerdict(
                billing_customer=customer,
                window_start=start,
                window_end=start + HOUR_S,
                ledger_units=owed,
                biller_units=held,
                difference=difference,
                verdict=_verdict(window, difference, now, settle_s),
                rejected_units=window.rejected_units,
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


def unexplained_units(row: WindowVerdict) -> int:
    """Sent units the biller does not hold: the loss no rejection explains, what a repair may carry."""
    return max(0, row.difference - row.rejected_units)


def repairable(row: WindowVerdict, now: float, max_age_s: float) -> bool:
    """A missing window with an unexplained loss whose correction timestamp the biller still takes."""
    return (
        row.verdict is Verdict.MISSING_AT_BILLER
        and unexplained_units(row) > 0
        and row.window_end - 1 >= now - max_age_s + REPAIR_MARGIN_S
    )


def plan_repairs(rows: Iterable[WindowVerdict], now: float, max_age_s: float) -> list[Correction]:
    """One correction per repairable window (`repairable`), for its unexplained units.

    The correction is stamped at the window's last second, so it lands in that window and stays acceptable longest.
    """
    planned = []
    for row in rows:
        if not repairable(row, now, max_age_s):
            continue
        identifier = correction_identifier(row.billing_customer, row.window_start, row.corrections)
        units = unexplained_units(row)
        planned.append(Correction(identifier, row.billing_customer, row.window_start, units, row.window_end - 1))
    return planned


class Reconciliation(msgspec.Struct, frozen=True):
    since: int
    until: int
    rows: list[WindowVerdict]
    totals: ReconcileTotals


class RepairResult(msgspec.Struct, frozen=True):
    """What a repair did: corrections sent and recorded, refused by the biller, and windows too old to repair."""

    sent: list[Correction]
    refused: list[tuple[Correction, str]]
    too_old: list[WindowVerdict]


def recorded_at(correction: Correction, now: float) -> Correction:
    """The correction as the ledger records it once the biller took it."""
    return msgspec.structs.replace(correction, recorded_at=now)
