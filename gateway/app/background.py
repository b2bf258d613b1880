"""The optional periodic jobs of `serve` and `worker`: polling Stripe's error reports, and reconciliation.

- GATEWAY_STRIPE_EVENTS_POLL_S: the ReportPoller reads Stripe's event list from its durable cursor (in the store),
  so a restart resumes there, and each report's claim makes a re-read harmless.
- GATEWAY_RECONCILE_INTERVAL_S: the Reconciler judges the last GATEWAY_RECONCILE_LOOKBACK_S; its totals become
  the `gateway_reconcile_*` gauges and every mismatched window a `reconcile.mismatch` warning. It only reads.

Every process that runs a dispatcher runs them (each replica: harmless, the claims and the reads are idempotent,
at the price of more calls to Stripe). A failing run is logged and counted, and the next one comes anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import structlog

from gateway.app.container import Container
from gateway.domain.errors import BillerError, StoreUnavailable

log = structlog.get_logger("gateway.background")
STOP_TIMEOUT_S = 5.0


class Periodic:
    """Runs `work` every `interval_s` until stopped; the first run at once. An exception never ends the loop."""

    def __init__(self, name: str, interval_s: float, work: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self._interval_s = interval_s
        self._work = work
        self._stopped = asyncio.Event()

    def stop(self) -> None:
        self._stopped.set()

    async def run(self) -> None:
        while not self._stopped.is_set():
            try:
                await self._work()
            except Exception:
                log.exception("background.crashed", job=self.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self._interval_s)


async def poll_reports(container: Container) -> None:
    """One poll of Stripe's error reports; each handled report counted (source `poll`)."""
    metrics = container.metrics()
    try:
        results = await container.report_poller().poll_once()
    except (BillerError, StoreUnavailable) as exc:
        metrics.report_failed("poll", "unavailable")
        log.warning("stripe_events.poll_failed", outcome=exc.code, error=exc.message)
        return
    for result in results:
        metrics.report("poll", result)


async def reconcile_recent(container: Container) -> None:
    """Reconcile the last GATEWAY_RECONCILE_LOOKBACK_S and export the totals."""
    settings = container.settings()
    metrics = container.metrics()
    now = container.clock().now()
    try:
        found = await container.reconciler().reconcile(now - settings.reconcile_lookback_s, now)
    except (BillerError, StoreUnavailable) as exc:
        metrics.reconciled(None, now)
        log.warning("reconcile.failed", outcome=exc.code, error=exc.message)
        return
    metrics.reconciled(found.totals, now)
    log.info(
        "reconcile.done",
        windows=found.totals.windows,
        by_verdict=found.totals.windows_by_verdict,
        matched=found.totals.matched,
    )


def jobs(container: Container) -> list[Periodic]:
    """The periodic jobs the settings switch on."""
    settings = container.settings()
    found = []
    if settings.stripe.events_poll_s is not None:
        found.append(Periodic("stripe_events_poll", settings.stripe.events_poll_s, lambda: poll_reports(container)))
    if settings.reconcile_interval_s is not None:
        if settings.biller_profile().totals is None:
            log.warning("reconcile.unavailable", message=settings.biller_profile().totals_missing)
        else:
            found.append(Periodic("reconcile", settings.reconcile_interval_s, lambda: reconcile_recent(container)))
    return found


@asynccontextmanager
async def background(container: Container) -> AsyncIterator[list[Periodic]]:
    """The periodic jobs running while the block runs, stopped (each given STOP_TIMEOUT_S) when it ends."""
    running = jobs(container)
    tasks = [asyncio.create_task(job.run(), name=job.name) for job in running]
    try:
        yield running
    finally:
        for job in running:
            job.stop()
        for task in tasks:
            try:
                await asyncio.wait_for(task, timeout=STOP_TIMEOUT_S)
            except TimeoutError:
                log.warning("background.stop_timeout", job=task.get_name())
