"""The sweep: a periodic look at the ledger's backlog, so that a stuck delivery is seen, not just waited out.

Entries never need to be moved back by hand: a lease is a time (`leased_until`), and `lease_due` hands an entry out
again as soon as its lease has run out, so the entries of a crashed or killed dispatcher come back by themselves.
What nobody would notice without the sweep is an entry that stays pending for long (Stripe down for an hour, a
revoked API key, a dispatcher that is not running at all). Every `interval_s` the sweep therefore:

- reads the ledger's stats and publishes them as gauges (pending entries and units, the oldest pending age, parked
  and sent counts), so that `/metrics` stays current even when nobody scrapes it, and alerts can fire;
- logs `ledger.pending_stale` (a warning) while the oldest pending entry is older than `alert_after_s`
  (GATEWAY_PENDING_ALERT_S), and `ledger.pending_recovered` once it is not any more;
- wakes the dispatcher when anything is pending, so that entries whose lease expired (a killed replica's) are
  re-leased now rather than at the dispatcher's next poll;
- re-checks the store's durability settings (a Redis can restart without persistence under a running gateway) and
  logs `store.not_durable` (a warning) when they turn unsafe, `store.durable` once they are safe again.

A failing store is logged and counted (`gateway_ledger_up 0`) and never ends the loop: only `stop()` does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from gateway.domain.errors import StoreUnavailable
from gateway.domain.ledger import LedgerStats
from gateway.domain.ports import Clock, LedgerReports, StoreDurability
from gateway.service.logs import EventLogger
from gateway.service.metrics import Metrics, NoMetrics

log = EventLogger("gateway.sweep")


class Sweep:
    """Measures the ledger every `interval_s`; warns while the oldest pending entry is older than `alert_after_s`.

    Invariants: it only reads the ledger (stats) and never changes an entry; `stale` is True exactly between a
    sweep that found the backlog too old and the next sweep that did not.
    """

    def __init__(
        self,
        ledger: LedgerReports,
        clock: Clock,
        *,
        metrics: Metrics | None = None,
        interval_s: float = 15.0,
        alert_after_s: float = 300.0,
        wake: Callable[[], None] = lambda: None,
        durability: StoreDurability | None = None,
    ) -> None:
        self._ledger = ledger
        self._clock = clock
        self._metrics = metrics or NoMetrics()
        self._interval_s = interval_s
        self._alert_after_s = alert_after_s
        self._wake = wake
        self._durability = durability
        self.durability_problem: str | None = None
        self._stopped = asyncio.Event()
        self.stale = False
        self.last_error: str | None = None

    def stop(self) -> None:
        self._stopped.set()

    async def run(self) -> None:
        """Sweep every `interval_s` until stopped; the first sweep runs at once."""
        while not self._stopped.is_set():
            try:
                await self.run_once()
            except Exception:  # a bug in a sweep must not end the measurements
                log.exception("sweep.crashed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self._interval_s)

    async def measure(self) -> LedgerStats | None:
        """Publish the ledger's stats as gauges (also called at scrape time); None when the store cannot be read."""
        try:
            stats = await self._ledger.stats()
        except StoreUnavailable as exc:
            self._metrics.store_up(False)
            self.last_error = exc.message
            return None
        self._metrics.store_up(True)
        self._metrics.ledger(stats, self._clock.now(), alert_after_s=self._alert_after_s)
        return stats

    async def run_once(self) -> LedgerStats | None:
        """One sweep: measure, warn while the oldest pending entry is too old, wake the dispatcher if anything is
        pending. None when the store cannot be read."""
        await self._check_durability()
        stats = await self.measure()
        if stats is None:
            log.warning("sweep.store_unavailable", error=self.last_error)
            return None
        now = self._clock.now()
        age = None if stats.oldest_pending_at is None else round(now - stats.oldest_pending_at, 3)
        if age is not None and age > self._alert_after_s:
            self.stale = True
            log.warning(
                "ledger.pending_stale",
                pending=stats.pending,
                oldest_pending_age_s=age,
                alert_after_s=self._alert_after_s,
                message="pending entries are not reaching the biller; check the biller's errors and the dispatcher",
            )
        elif self.stale:
            self.stale = False
            log.info("ledger.pending_recovered", pending=stats.pending, oldest_pending_age_s=age)
        if stats.pending:
            self._wake()
        return stats

    async def _check_durability(self) -> None:
        """Log once when the store's settings turn unsafe, and once when they are safe again."""
        if self._durability is None:
            return
        problem = await self._durability.problem()
        if problem is not None and problem != self.durability_problem:
            log.warning("store.not_durable", message=problem)
        elif problem is None and self.durability_problem is not None:
            log.info("store.durable")
        self.durability_problem = problem
