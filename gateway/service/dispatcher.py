"""The dispatcher: pending ledger entries -> the biller, each exactly once.

Rules it keeps (CONTRACT 2, STRIPE-NOTES):
- An entry is sent under its stable `identifier`; the biller's "already exists" answer counts as sent, so a crash
  between the biller's acceptance and `mark_sent` costs one extra call, never a double charge.
- At most one call in flight per customer (Stripe: one concurrent call per customer per meter), and the whole
  dispatcher paced to a calls-per-second budget (Stripe: 1,000/s live, 25/s in test mode).
- Transient failures (5xx, 429, timeouts) are retried with exponential backoff and full jitter, never sooner than
  the biller's Retry-After; a 429 also pauses the whole dispatcher for that long.
- A permanent rejection parks the entry with the biller's message.
- Entries are leased, so several dispatchers (replicas, `gateway worker`) never send one entry at once, and a
  crashed dispatcher's entries come back when its lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import defaultdict
from collections.abc import Callable

import msgspec
import structlog

from gateway.domain.errors import BillerRateLimited, BillerRejected, BillerUnavailable, StoreUnavailable
from gateway.domain.event import meter_identifier
from gateway.domain.ledger import Entry, retry_delay
from gateway.domain.ports import BillingSink, Clock, DedupeStore, Delivery, MeterEvent

log = structlog.get_logger("gateway.dispatcher")


class DispatchConfig(msgspec.Struct, frozen=True):
    batch: int = 200
    concurrency: int = 16
    lease_s: float = 30.0
    poll_s: float = 0.5
    max_rps: float = 25.0
    retry_base_s: float = 1.0
    retry_max_s: float = 600.0


class Dispatcher:
    def __init__(
        self,
        ledger: DedupeStore,
        sink: BillingSink,
        clock: Clock,
        config: DispatchConfig,
        *,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._ledger = ledger
        self._sink = sink
        self._clock = clock
        self._config = config
        self._jitter = jitter
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._paused_until = 0.0
        self._next_slot = 0.0
        self._slots = asyncio.Semaphore(config.concurrency)

    def wake(self) -> None:
        """Called by ingest after a record: deliver now instead of at the next poll."""
        self._wakeup.set()

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()

    async def run(self) -> None:
        """Deliver until stopped. Store or biller outages are waited out; nothing here ends the loop but stop()."""
        log.info("dispatcher.started", biller=self._sink.name, max_rps=self._config.max_rps)
        while not self._stopping:
            try:
                delivered = await self.run_once()
            except StoreUnavailable as exc:
                log.warning("dispatcher.store_unavailable", error=exc.message)
                delivered = 0
            except Exception:
                log.exception("dispatcher.crashed_round")
                delivered = 0
            if delivered == 0 and not self._stopping:
                await self._idle()
        log.info("dispatcher.stopped")

    async def _idle(self) -> None:
        timeout = max(self._config.poll_s, self._paused_until - self._clock.now())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        self._wakeup.clear()

    async def run_once(self) -> int:
        """One round: lease what is due, deliver it customer by customer. Returns how many entries were handled."""
        now = self._clock.now()
        if now < self._paused_until:
            return 0
        entries = await self._ledger.lease_due(now, self._config.batch, self._config.lease_s)
        if not entries:
            return 0
        by_customer: dict[str, list[Entry]] = defaultdict(list)
        for entry in entries:
            by_customer[entry.billing_customer].append(entry)
        await asyncio.gather(*(self._serve(queue) for queue in by_customer.values()))
        return len(entries)

    async def _serve(self, queue: list[Entry]) -> None:
        """One customer's entries, strictly one after another; stop at the first transient failure."""
        async with self._slots:
            for position, entry in enumerate(queue):
                if self._stopping or not await self._deliver(entry):
                    await self._ledger.release([e.event_id for e in queue[position + 1 :]])
                    return

    async def _deliver(self, entry: Entry) -> bool:
        """Deliver one entry; False when the biller failed transiently (the customer's queue waits)."""
        bound = log.bind(event_id=entry.event_id, customer=entry.billing_customer, units=entry.units)
        if entry.units == 0:
            # Nothing to bill (a tiny cost whose fraction is carried): no call, and the entry is done.
            await self._ledger.mark_sent(entry.event_id, self._clock.now())
            bound.info("dispatch.delivered", outcome="zero_units", biller=self._sink.name, latency_ms=0.0)
            return True
        await self._pace()
        started = time.perf_counter()
        event = MeterEvent(
            identifier=meter_identifier(entry.event_id),
            customer=entry.billing_customer,
            value=entry.units,
            timestamp=entry.timestamp,
        )
        try:
            delivery = await self._sink.send(event)
        except BillerRejected as exc:
            await self._ledger.mark_rejected(entry.event_id, exc.message, self._clock.now())
            bound.warning("dispatch.rejected", outcome="parked", error=exc.message, latency_ms=_ms(started))
            return True
        except BillerUnavailable as exc:
            await self._retry_later(entry, exc, bound)
            return False
        await self._ledger.mark_sent(entry.event_id, self._clock.now())
        outcome = "sent" if delivery is Delivery.SENT else "already_sent"
        bound.info("dispatch.delivered", outcome=outcome, biller=self._sink.name, latency_ms=_ms(started))
        return True

    async def _retry_later(
        self, entry: Entry, exc: BillerUnavailable, bound: structlog.typing.FilteringBoundLogger
    ) -> None:
        now = self._clock.now()
        delay = retry_delay(
            entry.attempts,
            base_s=self._config.retry_base_s,
            cap_s=self._config.retry_max_s,
            jitter=self._jitter(),
            retry_after_s=exc.retry_after_s,
        )
        if isinstance(exc, BillerRateLimited):
            # A 429 speaks for the whole account: everyone waits, not just this customer.
            self._paused_until = max(self._paused_until, now + (exc.retry_after_s or self._config.retry_base_s))
        await self._ledger.mark_retry(entry.event_id, now + delay, f"{exc.cause}: {exc.message}")
        bound.warning(
            "dispatch.retry_scheduled",
            outcome="retry",
            cause=exc.cause,
            attempts=entry.attempts + 1,
            retry_in_s=round(delay, 3),
            error=exc.message,
        )

    async def _pace(self) -> None:
        """A token bucket of one: calls are spaced at least 1/max_rps apart across all customers."""
        interval = 1.0 / self._config.max_rps
        now = time.monotonic()
        slot = max(now, self._next_slot)
        self._next_slot = slot + interval
        if slot > now:
            await asyncio.sleep(slot - now)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
