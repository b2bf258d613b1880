"""Reconcile the ledger against the biller's own totals, and repair what the biller is missing.

Invariants:
- Reconciliation only reads: per billing customer and hour window (by the meter event's timestamp), the ledger's
  sent units against the biller's total, judged by `gateway.domain.reconcile.judge`.
- Repair sends one correction per `missing_at_biller` window the biller still accepts, for the sent units the
  biller does not hold (rejected entries are owed too, but replay sends those), and records it in the ledger only
  after the biller took it. A repair interrupted between the two re-sends the same identifier next
  time (the biller drops it as known); a recorded correction keeps its window `settling` until the biller's totals
  can include it, so a second repair sends nothing.
- `extra_at_biller` is reported, never "fixed" with negative usage.
"""

from __future__ import annotations

import logging

from gateway.domain.errors import BillerRejected
from gateway.domain.ports import BillerTotals, BillingSink, Clock, MeterEvent, ReconcileLedger
from gateway.domain.reconcile import (
    Correction,
    Reconciliation,
    RepairResult,
    Verdict,
    hour_ceil,
    hour_floor,
    judge,
    plan_repairs,
    recorded_at,
    totals,
    unexplained_units,
)

log = logging.getLogger("gateway.reconcile")

DEFAULT_SETTLE_S = 3600.0


class Reconciler:
    def __init__(
        self, ledger: ReconcileLedger, biller: BillerTotals, clock: Clock, *, settle_s: float = DEFAULT_SETTLE_S
    ) -> None:
        self._ledger = ledger
        self._biller = biller
        self._clock = clock
        self._settle_s = settle_s

    async def reconcile(self, since: float, until: float, customer: str | None = None) -> Reconciliation:
        """Every window of [since, until), widened to whole hours, for `customer` or every customer in the ledger.

        Raises BillerUnavailable when the biller cannot be asked, StoreUnavailable when the ledger cannot be read.
        """
        start, end = hour_floor(since), hour_ceil(until)
        windows = await self._ledger.sent_windows(start, end, customer)
        customers = sorted({w.billing_customer for w in windows} | ({customer} if customer else set()))
        held: dict[tuple[str, int], int] = {}
        for billing_customer in customers:
            for window_start, units in (await self._biller.hourly_units(billing_customer, start, end)).items():
                if units:
                    held[(billing_customer, window_start)] = units
        rows = judge(windows, held, self._clock.now(), self._settle_s)
        for row in rows:
            if row.verdict in (Verdict.MISSING_AT_BILLER, Verdict.EXTRA_AT_BILLER):
                log.warning(
                    "reconcile.mismatch customer=%s window=%d verdict=%s ledger=%d biller=%d",
                    row.billing_customer,
                    row.window_start,
                    row.verdict,
                    row.ledger_units,
                    row.biller_units,
                )
        return Reconciliation(start, end, rows, totals(rows))


class Repairer:
    def __init__(
        self, reconciler: Reconciler, ledger: ReconcileLedger, sink: BillingSink, clock: Clock, *, max_age_s: float
    ) -> None:
        self._reconciler = reconciler
        self._ledger = ledger
        self._sink = sink
        self._clock = clock
        self._max_age_s = max_age_s  # how old a timestamp the biller still takes (Stripe: 35 days)

    async def repair(self, since: float, until: float, customer: str | None = None) -> RepairResult:
        """Send and record a correction for each repairable missing window.

        Raises BillerUnavailable when the biller cannot be reached: corrections sent before stay recorded.
        """
        found = await self._reconciler.reconcile(since, until, customer)
        now = self._clock.now()
        planned = plan_repairs(found.rows, now, self._max_age_s)
        planned_windows = {(c.billing_customer, c.window_start) for c in planned}
        too_old = [
            row
            for row in found.rows
            if row.verdict is Verdict.MISSING_AT_BILLER
            and unexplained_units(row) > 0
            and (row.billing_customer, row.window_start) not in planned_windows
        ]
        sent: list[Correction] = []
        refused: list[tuple[Correction, str]] = []
        for correction in planned:
            event = MeterEvent(
                correction.identifier, correction.billing_customer, correction.units, correction.timestamp
            )
            try:
                await self._sink.send(event)
            except BillerRejected as exc:
                log.warning(
                    "reconcile.repair_refused customer=%s window=%d units=%d reason=%s",
                    correction.billing_customer,
                    correction.window_start,
                    correction.units,
                    exc.message,
                )
                refused.append((correction, exc.message))
                continue
            recorded = recorded_at(correction, self._clock.now())
            await self._ledger.record_correction(recorded)
            log.warning(
                "reconcile.repaired customer=%s window=%d units=%d identifier=%s",
                correction.billing_customer,
                correction.window_start,
                correction.units,
                correction.identifier,
            )
            sent.append(recorded)
        return RepairResult(sent, refused, too_old)
