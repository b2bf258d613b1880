"""The dispatcher's batch path (BatchBillingSink: Stripe's v2 meter event stream), mixed into the Dispatcher.

Up to `max_batch` entries per call, whatever their customers (the one-call-per-customer rule is the v1 endpoint's),
`concurrency` calls at once, each paced like a v1 call. A batch that fails transiently is retried entry by entry
(each with its own backoff); a batch refused as a whole is sent again one entry per call, so that only an entry
refused on its own is parked. Invariant, as on the v1 path: every entry leaves marked or with its lease released.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from gateway.domain.errors import BillerMisconfigured, BillerRejected, BillerUnavailable
from gateway.domain.ledger import Entry, ParkReason
from gateway.domain.ports import (
    BatchBillingSink,
    BatchDeliveryQueue,
    BillingSink,
    Clock,
    Delivery,
    DeliveryQueue,
    MeterEvent,
)
from gateway.service.concurrency import Slots
from gateway.service.leases import LeaseKeeper
from gateway.service.logs import EventLogger
from gateway.service.metrics import Delivered, Metrics
from gateway.service.pause import ConfigurationPause

log = EventLogger("gateway.dispatcher")


class BatchDelivery:
    """The batch methods of the Dispatcher, which owns the state below and the hooks it calls."""

    _ledger: DeliveryQueue
    _metrics: Metrics
    _sink: BillingSink
    _clock: Clock
    _identifier: Callable[[str], str]
    _slots: Slots
    _refused: ConfigurationPause
    _stopping: bool

    async def _pace(self) -> None:
        raise NotImplementedError

    async def _release(self, entries: list[Entry]) -> None:
        raise NotImplementedError

    def _retry_delay(self, entry: Entry, exc: BillerUnavailable, now: float) -> float:
        raise NotImplementedError

    def _pause_refused(self, exc: BillerMisconfigured, entries: int) -> None:
        raise NotImplementedError

    async def _dispatch_batches(self, sink: BatchBillingSink, entries: list[Entry], leases: LeaseKeeper) -> None:
        """Zero-unit entries are marked sent at once; the others go out `max_batch` per call, `concurrency` at once."""
        zero = [entry for entry in entries if entry.units == 0]
        billable = [entry for entry in entries if entry.units != 0]
        size = max(1, sink.max_batch)
        chunks = [billable[start : start + size] for start in range(0, len(billable), size)]
        await asyncio.gather(self._mark_zero_units(zero), *(self._send_chunk(sink, chunk, leases) for chunk in chunks))

    async def _mark_zero_units(self, entries: list[Entry]) -> None:
        if not entries:
            return
        await self._mark_sent_all(entries)
        self._metrics.dispatched(Delivered.ZERO_UNITS, 0, entries=len(entries))
        log.info("dispatch.batch_delivered", outcome="zero_units", entries=len(entries), biller=self._sink.name)

    async def _send_chunk(self, sink: BatchBillingSink, chunk: list[Entry], leases: LeaseKeeper) -> None:
        """One batch. Invariant as in `_serve`: every entry leaves marked or released."""
        marked = 0
        try:
            marked = await self._deliver_batch(sink, chunk, leases)
        finally:
            await self._release(chunk[marked:])

    async def _deliver_batch(self, sink: BatchBillingSink, chunk: list[Entry], leases: LeaseKeeper) -> int:
        """Send `chunk` in one call and mark what happened; returns how many entries (from the first) were marked."""
        events = [
            MeterEvent(
                identifier=self._identifier(entry.event_id),
                customer=entry.billing_customer,
                value=entry.units,
                timestamp=entry.timestamp,
            )
            for entry in chunk
        ]
        started = time.perf_counter()
        try:
            # A slot covers the call only: marking the batch, a store write as long as half a call, frees it for the
            # next call (docs/performance.md, "The v2 stream").
            async with self._slots:
                # Checked once the slot is ours: the wait for it may outlast a lease or meet a refused set-up.
                if self._stopping or not leases.holds() or self._refused.active(self._clock.now()):
                    return 0
                await self._pace()
                started = time.perf_counter()
                deliveries = await sink.send_batch(events)
        except BillerRejected as exc:
            self._metrics.biller_call(time.perf_counter() - started, "rejected")
            if len(chunk) > 1:
                # Refused as a whole: one entry per call finds the entry at fault, and only that one is parked.
                log.warning("dispatch.batch_rejected", entries=len(chunk), error=exc.message, latency_ms=ms(started))
                marked = 0
                for entry in chunk:
                    if self._stopping:
                        break
                    done = await self._deliver_batch(sink, [entry], leases)
                    if done == 0:
                        break  # the biller refused the set-up meanwhile: the rest is released untouched
                    marked += done
                return marked
            entry = chunk[0]
            await self._ledger.mark_rejected(entry.event_id, exc.message, self._clock.now())
            self._metrics.dispatched(Delivered.PARKED, 0)
            self._metrics.parked(ParkReason.BILLER_REJECTED.value)
            log.warning(
                "dispatch.rejected",
                event_id=entry.event_id,
                customer=entry.billing_customer,
                units=entry.units,
                outcome="parked",
                error=exc.message,
                latency_ms=ms(started),
            )
            return 1
        except BillerMisconfigured as exc:
            self._metrics.biller_call(time.perf_counter() - started, exc.cause)
            self._pause_refused(exc, len(chunk))
            return 0
        except BillerUnavailable as exc:
            self._metrics.biller_call(time.perf_counter() - started, exc.cause)
            now = self._clock.now()
            error = f"{exc.cause}: {exc.message}"
            await asyncio.gather(
                *(self._ledger.mark_retry(e.event_id, now + self._retry_delay(e, exc, now), error) for e in chunk)
            )
            self._metrics.dispatched(Delivered.RETRY, 0, entries=len(chunk))
            log.warning(
                "dispatch.retry_scheduled", outcome="retry", entries=len(chunk), cause=exc.cause, error=exc.message
            )
            return len(chunk)
        self._metrics.biller_call(time.perf_counter() - started)
        self._refused.resumed(self._sink.name)
        await self._mark_sent_all(chunk)
        # Counted once per call, and a line per entry only at DEBUG: at stream rates, per-entry work here costs more
        # than the call (docs/performance.md, "The dispatcher").
        units = sum(entry.units for entry in chunk)
        sent = sum(delivery is Delivery.SENT for delivery in deliveries)
        sent_units = sum(entry.units for entry, d in zip(chunk, deliveries, strict=True) if d is Delivery.SENT)
        self._metrics.dispatched(Delivered.SENT, sent_units, entries=sent)
        self._metrics.dispatched(Delivered.ALREADY_SENT, units - sent_units, entries=len(chunk) - sent)
        if log.is_enabled_for(logging.DEBUG):
            for entry in chunk:
                log.debug(
                    "dispatch.delivered", event_id=entry.event_id, customer=entry.billing_customer, units=entry.units
                )
        log.info(
            "dispatch.batch_delivered",
            outcome="sent",
            entries=len(chunk),
            sent=sent,
            already_sent=len(chunk) - sent,
            units=units,
            biller=self._sink.name,
            latency_ms=ms(started),
        )
        return len(chunk)

    async def _mark_sent_all(self, entries: list[Entry]) -> None:
        """One step for the whole batch when the queue can (BatchDeliveryQueue), else concurrent marks (which a store
        with group commit, SQLite, still writes in one transaction)."""
        now = self._clock.now()
        if isinstance(self._ledger, BatchDeliveryQueue):
            await self._ledger.mark_sent_many([entry.event_id for entry in entries], now)
        else:
            await asyncio.gather(*(self._ledger.mark_sent(entry.event_id, now) for entry in entries))


def ms(started: float) -> float:
    """Milliseconds since `started` (a perf_counter reading), for a log line."""
    return round((time.perf_counter() - started) * 1000, 2)
