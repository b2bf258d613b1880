"""The dispatcher: pending ledger entries -> the biller, each exactly once.

Rules it keeps (docs/design.md, "Ledger first"; Stripe's rules in docs/billers.md):
- An entry is sent under its stable `identifier`; the biller's "already exists" answer counts as sent, so a crash
  between the biller's acceptance and `mark_sent` costs one extra call, never a double charge.
- At most one call in flight per customer (Stripe: one concurrent call per customer per meter), and the whole
  dispatcher paced to a calls-per-second budget (Stripe: 1,000/s live, 25/s in test mode). As many customers are
  served at once as that budget x the observed latency asks (Little's law, bounded: gateway/service/concurrency.py),
  and rounds overlap: the next is leased while the last one's calls are in flight.
- Transient failures (5xx, 429, timeouts) are retried with exponential backoff and full jitter, never sooner than
  the biller's Retry-After; a 429 also pauses the whole dispatcher for that long. Every wait, the biller's
  included, is capped at `retry_max_s`.
- A biller that refuses the set-up itself (BillerMisconfigured: a v2 stream session refused) fails every call alike:
  the entries are released untouched and the whole dispatcher pauses until it accepts again (gateway/service/pause.py).
- A permanent rejection parks the entry with the biller's message. An entry that stayed pending past the biller's
  window (35 days for Stripe) is parked `too_old` before it is sent, its units kept, since every attempt would fail.
- Entries are leased, so several dispatchers (replicas, `gateway worker`) never send one entry at once, and a
  crashed dispatcher's entries come back when its lease runs out. The store leases a customer to one dispatcher at
  a time, and the round's leases are renewed while it runs (gateway/service/leases.py), so that a customer's queue
  that outlasts a lease is never taken over while its calls are still going out.
- A stopping dispatcher (SIGTERM) finishes the calls in flight, marks them, and releases the leases of the entries
  it had not started, so that another process (or this one, restarted) delivers them at once instead of waiting
  for the leases to expire.
- A biller that takes batches (BatchBillingSink: Stripe's v2 meter event stream) gets up to `max_batch` entries per
  call, whatever their customers (the one-call-per-customer rule is the v1 endpoint's), `concurrency` calls at
  once, each call paced like a v1 call; a round then leases enough entries to fill them all. A batch that fails
  transiently is retried entry by entry (each with its own backoff); a batch refused as a whole is sent again one
  entry per call, so that only an entry refused on its own is parked.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.domain.errors import (
    BillerMisconfigured,
    BillerRateLimited,
    BillerRejected,
    BillerUnavailable,
    StoreUnavailable,
)
from gateway.domain.ledger import Entry, ParkReason, retry_delay, usable_wait
from gateway.domain.policy import past_window, window_days
from gateway.domain.ports import (
    BatchBillingSink,
    BillingSink,
    Clock,
    Delivery,
    DeliveryQueue,
    MeterEvent,
)
from gateway.service.batches import BatchDelivery, ms
from gateway.service.concurrency import (
    BATCH_ROUNDS_IN_FLIGHT,
    BATCH_WAVES,
    ROUNDS_IN_FLIGHT,
    CustomerLocks,
    InFlightSizer,
    Rounds,
    Slots,
)
from gateway.service.leases import LeaseKeeper
from gateway.service.logs import EventLogger
from gateway.service.marks import SentMarks
from gateway.service.metrics import Delivered, Metrics, NoMetrics
from gateway.service.pause import ConfigurationPause

log = EventLogger("gateway.dispatcher")

# How late a paced call may be and keep its slot (at least half an interval): the event loop's timer granularity.
PACER_SLACK_S = 0.002


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    batch: int = 200
    concurrency: int = 16  # v1: the fewest customers in flight (more as latency x max_rps asks); batches: calls
    max_concurrency: int = 1000  # v1: the most customers in flight
    lease_s: float = 30.0
    poll_s: float = 0.5
    max_rps: float = 25.0
    retry_base_s: float = 1.0
    retry_max_s: float = 600.0
    max_event_age_s: int | None = None


class Dispatcher(BatchDelivery):
    def __init__(
        self,
        ledger: DeliveryQueue,
        sink: BillingSink,
        clock: Clock,
        config: DispatchConfig,
        *,
        jitter: Callable[[], float] = random.random,
        metrics: Metrics | None = None,
        identifier: Callable[[str], str] = str,
    ) -> None:
        """`identifier` maps an entry's event id to the biller's identifier for it (the biller's profile gives it)."""
        self._identifier = identifier
        self._ledger = ledger
        self._metrics = metrics or NoMetrics()
        self._sink = sink
        # Decided once: a biller that takes batches is always sent batches.
        self._batch_sink = sink if isinstance(sink, BatchBillingSink) else None
        self._clock = clock
        self._config = config
        self._jitter = jitter
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._paused_until = 0.0
        self._next_slot = 0.0
        self._pacing = asyncio.Lock()
        self._slots = Slots(config.concurrency)
        # v1 sizes its customers in flight from max_rps and the latency it observes; batches keep `concurrency`.
        self._sizer = (
            None
            if self._batch_sink is not None
            else InFlightSizer(config.max_rps, floor=config.concurrency, ceiling=config.max_concurrency)
        )
        self._customers = CustomerLocks()
        self._marks = SentMarks(ledger, clock)  # v1's marks, one store step per group (gateway/service/marks.py)
        self._refused = ConfigurationPause(self._metrics, base_s=config.retry_base_s, max_s=config.retry_max_s)

    @property
    def slots(self) -> Slots:
        """The calls in flight: v1 customers served at once (`limit` sized by Little's law, `held`, `peak`)."""
        return self._slots

    def wake(self) -> None:
        """Called by ingest after a record: deliver now instead of at the next poll."""
        self._wakeup.set()

    def stop(self) -> None:
        """Ask `run` to end: calls in flight finish and are marked; entries not started yet are released."""
        self._stopping = True
        self._wakeup.set()

    async def run(self) -> None:
        """Deliver until stopped. Store or biller outages are waited out; nothing here ends the loop but stop()."""
        log.info("dispatcher.started", biller=self._sink.name, max_rps=self._config.max_rps)
        # The next round is leased while the last one's calls are in flight, so no call waits for a whole round.
        rounds = Rounds(self._round_guarded, BATCH_ROUNDS_IN_FLIGHT if self._batch_sink else ROUNDS_IN_FLIGHT)
        try:
            while not self._stopping:
                await rounds.room()
                leased_at = self._clock.now()  # no later than the store's lease: the keeper errs on the safe side
                entries = await self._guarded(self._lease_round())
                if entries:
                    rounds.start(entries, leased_at)
                if self._stopping:
                    continue
                if not entries or (self._batch_sink is not None and len(entries) < self._round_limit()):
                    # Nothing due, or a batch round that drained the queue: entries gather until a round ends (or the
                    # poll) instead of going a handful per round, each round a lease, a call and a mark. (A v1 lease
                    # is held to free customers anyway; a batch lease is not, docs/performance.md.)
                    await self._idle()
            await rounds.drain()
        finally:
            await rounds.cancel()  # run() itself cancelled: each round releases what it had not marked
        log.info("dispatcher.stopped")

    async def _guarded(self, step: Awaitable[list[Entry] | None]) -> list[Entry]:
        """A round's step, its failure logged and waited out: nothing ends `run` but stop()."""
        try:
            return await step or []
        except StoreUnavailable as exc:
            log.warning("dispatcher.store_unavailable", error=exc.message)
        except Exception:
            log.exception("dispatcher.crashed_round")
        return []

    async def _round_guarded(self, entries: list[Entry], leased_at: float) -> None:
        try:
            await self._guarded(self._deliver_round(entries, leased_at))
        finally:
            # Its customers are free again: a lease that found them all held waits for this, not for the next poll.
            self._wakeup.set()

    async def _idle(self) -> None:
        timeout = max(self._config.poll_s, self._paused_until - self._clock.now())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        self._wakeup.clear()

    async def run_once(self) -> int:
        """One round: lease what is due, deliver it customer by customer. Returns how many entries were handled."""
        leased_at = self._clock.now()
        leased = await self._lease_round()
        await self._deliver_round(leased, leased_at)
        return len(leased)

    async def _lease_round(self) -> list[Entry]:
        """Lease enough due entries to fill every slot (none while a 429 pauses the dispatcher)."""
        now = self._clock.now()
        if now < self._paused_until:
            return []
        # A batch biller has no per-customer rule (Stripe's v2 stream takes any customers' events in any call), so
        # its rounds hold entries, not customers: the next round need not wait for this one's customers to be marked.
        hold_customers = self._batch_sink is None
        return await self._ledger.lease_due(
            now, self._round_limit(), self._config.lease_s, hold_customers=hold_customers
        )

    def _round_limit(self) -> int:
        """How many entries a round leases at most: enough to fill every slot."""
        limit = max(self._config.batch, self._slots.limit)
        if self._batch_sink is not None:
            # Calls for several waves of the slots, so that a round's tail (last calls, marks) comes once per several
            # waves; one wave a round measured the same since rounds stopped holding customers (docs/performance.md).
            limit = max(limit, self._batch_sink.max_batch * self._config.concurrency * BATCH_WAVES)
        return limit

    async def _deliver_round(self, leased: list[Entry], leased_at: float) -> None:
        if not leased:
            return
        entries = await self._park_too_old(leased, self._clock.now())
        ids = [entry.event_id for entry in entries]
        # Renewed while the round runs, so that a slow customer's queue is never handed to another dispatcher.
        keeper = LeaseKeeper(self._ledger, self._clock, ids, leased_at=leased_at, lease_s=self._config.lease_s)
        async with keeper as leases:
            if self._batch_sink is not None:
                await self._dispatch_batches(self._batch_sink, entries, leases)
                return
            by_customer: dict[str, list[Entry]] = defaultdict(list)
            for entry in entries:
                by_customer[entry.billing_customer].append(entry)
            await asyncio.gather(*(self._serve(customer, queue, leases) for customer, queue in by_customer.items()))

    async def _park_too_old(self, entries: list[Entry], now: float) -> list[Entry]:
        """Park (too_old, units kept) the entries past the biller's window, which it would refuse on every attempt;
        return the others. Zero-unit entries are never sent, so they are left to be marked sent."""
        max_age_s = self._config.max_event_age_s
        stale = [e for e in entries if e.units != 0 and past_window(e.timestamp, now, max_age_s)]
        if not stale:
            return entries
        message = f"event is older than the biller's {window_days(max_age_s)}-day window: it stayed pending too long"
        try:
            await asyncio.gather(*(self._ledger.mark_too_old(entry.event_id, message, now) for entry in stale))
        except BaseException:
            await self._release(entries)  # the others are not started: give them back rather than wait out the lease
            raise
        for entry in stale:
            self._metrics.dispatched(Delivered.PARKED, 0)
            self._metrics.parked(ParkReason.TOO_OLD.value)
            log.warning(
                "dispatch.too_old",
                event_id=entry.event_id,
                customer=entry.billing_customer,
                units=entry.units,
                outcome="parked",
                age_s=round(now - entry.timestamp),
            )
        parked = {entry.event_id for entry in stale}
        return [entry for entry in entries if entry.event_id not in parked]

    async def _serve(self, customer: str, queue: list[Entry], leases: LeaseKeeper) -> None:
        """One customer's entries, strictly one after another; stop at the first transient failure.

        Invariant: each entry of `queue` leaves here marked (sent, retry or parked) or with its lease released,
        whatever ends the queue: a transient failure, stop(), an error, or the task being cancelled.
        """
        marked = 0
        try:
            # The customer first: a round's entry waiting behind another round's call for it holds no slot.
            async with self._customers.hold(customer), self._slots:
                for entry in queue:
                    if self._stopping or not leases.holds() or self._refused.active(self._clock.now()):
                        break
                    delivered = await self._deliver(entry)
                    if delivered is None:
                        break  # the biller refuses the set-up: the rest of the queue is released untouched
                    marked += 1
                    if not delivered:
                        break
        finally:
            await self._release(queue[marked:])

    async def _release(self, entries: list[Entry]) -> None:
        if not entries:
            return
        try:
            await self._ledger.release([e.event_id for e in entries])
            if self._stopping:
                log.info("dispatcher.leases_released", entries=len(entries))
        except StoreUnavailable as exc:
            # The leases run out by themselves; releasing only spares the next dispatcher the wait.
            log.warning("dispatcher.release_failed", entries=len(entries), error=exc.message)

    async def _deliver(self, entry: Entry) -> bool | None:
        """Deliver one entry; False when the biller failed transiently (the customer's queue waits), None when the
        biller refused the set-up (the entry is left as it was, and the dispatcher pauses)."""
        bound = log.bind(event_id=entry.event_id, customer=entry.billing_customer, units=entry.units)
        if entry.units == 0:
            # Nothing to bill (a tiny cost whose fraction is carried): no call, and the entry is done.
            await self._marks.mark(entry.event_id)
            self._metrics.dispatched(Delivered.ZERO_UNITS, 0)
            bound.info("dispatch.delivered", outcome="zero_units", biller=self._sink.name, latency_ms=0.0)
            return True
        await self._pace()
        started = time.perf_counter()
        event = MeterEvent(
            identifier=self._identifier(entry.event_id),
            customer=entry.billing_customer,
            value=entry.units,
            timestamp=entry.timestamp,
        )
        try:
            delivery = await self._sink.send(event)
        except BillerRejected as exc:
            self._metrics.biller_call(time.perf_counter() - started, "rejected")
            await self._ledger.mark_rejected(entry.event_id, exc.message, self._clock.now())
            self._metrics.dispatched(Delivered.PARKED, 0)
            self._metrics.parked(ParkReason.BILLER_REJECTED.value)
            bound.warning("dispatch.rejected", outcome="parked", error=exc.message, latency_ms=ms(started))
            self._occupied(started)
            return True
        except BillerMisconfigured as exc:
            self._metrics.biller_call(time.perf_counter() - started, exc.cause)
            self._pause_refused(exc, 1)
            return None
        except BillerUnavailable as exc:
            self._metrics.biller_call(time.perf_counter() - started, exc.cause)
            await self._retry_later(entry, exc, bound)
            self._metrics.dispatched(Delivered.RETRY, 0)
            self._occupied(started)
            return False
        self._metrics.biller_call(time.perf_counter() - started)
        self._refused.resumed(self._sink.name)
        await self._marks.mark(entry.event_id)
        outcome = Delivered.SENT if delivery is Delivery.SENT else Delivered.ALREADY_SENT
        self._metrics.dispatched(outcome, entry.units)
        bound.info("dispatch.delivered", outcome=outcome.value, biller=self._sink.name, latency_ms=ms(started))
        self._occupied(started)
        return True

    def _occupied(self, started: float) -> None:
        """A v1 entry done: its slot was held from the call to the mark (the pacer's wait aside, or the rate it sets
        would feed back into more slots); size the customers in flight from that."""
        if self._sizer is not None:
            self._slots.limit = self._sizer.observe(time.perf_counter() - started)

    async def _retry_later(self, entry: Entry, exc: BillerUnavailable, bound: EventLogger) -> None:
        now = self._clock.now()
        delay = self._retry_delay(entry, exc, now)
        await self._ledger.mark_retry(entry.event_id, now + delay, f"{exc.cause}: {exc.message}")
        bound.warning(
            "dispatch.retry_scheduled",
            outcome="retry",
            cause=exc.cause,
            attempts=entry.attempts + 1,
            retry_in_s=round(delay, 3),
            error=exc.message,
        )

    def _pause_refused(self, exc: BillerMisconfigured, entries: int) -> None:
        """Pause the whole dispatcher: every call would be refused alike until the operator fixes the set-up."""
        until = self._refused.refused(exc, self._clock.now(), self._sink.name, entries)
        self._paused_until = max(self._paused_until, until)

    def _retry_delay(self, entry: Entry, exc: BillerUnavailable, now: float) -> float:
        """The entry's next backoff; a 429 also pauses the whole dispatcher (it speaks for the whole account)."""
        if isinstance(exc, BillerRateLimited):
            pause = min(usable_wait(exc.retry_after_s) or self._config.retry_base_s, self._config.retry_max_s)
            self._paused_until = max(self._paused_until, now + pause)
            # A stored pause is never infinite: it would stop every delivery for good.
            assert math.isfinite(self._paused_until), f"dispatcher pause must be finite ({pause!r})"
        return retry_delay(
            entry.attempts,
            base_s=self._config.retry_base_s,
            cap_s=self._config.retry_max_s,
            jitter=self._jitter(),
            retry_after_s=exc.retry_after_s,
        )

    async def _pace(self) -> None:
        """Calls go out on a schedule of one per 1/max_rps across all customers, one caller at a time.

        A caller that wakes a little late keeps its slot, so the average rate stays max_rps; one that is more than
        half an interval (and PACER_SLACK_S) behind restarts the schedule from now, so lost time is never made up in
        a burst: no second holds more than max_rps + 2 calls (+ 3 at 1,000/s). The slack is the event loop's timer
        granularity (uvloop: 1 ms): at 1,000/s every sleep overshot half an interval, and restarting each time held
        the rate near 800/s. A token bucket would let out at once every caller whose slot passed while the event
        loop was busy (docs/performance.md, "The dispatcher").
        """
        interval = 1.0 / self._config.max_rps
        async with self._pacing:
            now = time.monotonic()
            if now < self._next_slot:
                await asyncio.sleep(self._next_slot - now)
                now = time.monotonic()
            self._next_slot = max(self._next_slot + interval, now + interval - max(interval / 2, PACER_SLACK_S))
