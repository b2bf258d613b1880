"""How many calls the dispatcher keeps in flight, and the gates that hold it there.

Little's law: a biller answering in L seconds, called at its rate limit R, has R x L calls in flight. Sixteen
customers in flight at Stripe's live latency (~150 ms) cap v1 near 100 calls/s against the 1,000/s Stripe allows;
R x L (with headroom, bounded) lets the pacer, not the slots, set the rate. The latency is the one the dispatcher
observes, smoothed, so the number follows the biller as it slows down or speeds up (docs/performance.md, "v1").
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager

from gateway.domain.ledger import Entry

# More slots than R x L by this factor: latency jitter and the pacer's own gaps would otherwise leave the rate short.
HEADROOM = 1.25
# Weight of each new latency in the running average: ~20 calls to follow a change, one slow call moves it little.
SMOOTHING = 0.05


def calls_in_flight(
    rate_per_s: float, latency_s: float, *, floor: int, ceiling: int, headroom: float = HEADROOM
) -> int:
    """Calls to keep in flight so that `rate_per_s` calls a second go out when each takes `latency_s`: Little's law
    with `headroom`, never fewer than `floor` nor more than `ceiling` (floor wins if they cross)."""
    if floor < 1:
        raise ValueError(f"floor must be at least 1, not {floor}")
    if not (math.isfinite(rate_per_s) and math.isfinite(latency_s)) or rate_per_s <= 0 or latency_s <= 0:
        return floor
    wanted = math.ceil(rate_per_s * latency_s * headroom)
    return max(floor, min(ceiling, wanted))


class LatencyEstimate:
    """An exponentially weighted mean of observed call latencies (seconds); None until the first observation."""

    def __init__(self, smoothing: float = SMOOTHING) -> None:
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], not {smoothing}")
        self._smoothing = smoothing
        self.mean_s: float | None = None

    def observe(self, latency_s: float) -> None:
        if not math.isfinite(latency_s) or latency_s < 0:
            return
        if self.mean_s is None:
            self.mean_s = latency_s
        else:
            self.mean_s += self._smoothing * (latency_s - self.mean_s)


class InFlightSizer:
    """The dispatcher's number of calls in flight, from its pace (calls/s) and the latency it observes.

    Starts at `floor` (nothing observed yet); `observe` returns the new number after each call.
    """

    def __init__(self, rate_per_s: float, *, floor: int, ceiling: int, smoothing: float = SMOOTHING) -> None:
        self._rate = rate_per_s
        self._floor = floor
        self._ceiling = max(floor, ceiling)
        self.latency = LatencyEstimate(smoothing)
        self.size = floor

    def observe(self, latency_s: float) -> int:
        self.latency.observe(latency_s)
        if self.latency.mean_s is not None:
            self.size = calls_in_flight(self._rate, self.latency.mean_s, floor=self._floor, ceiling=self._ceiling)
        return self.size


class Slots:
    """A semaphore whose limit can change while it is held: raising it lets waiters in at once, lowering it lets
    no one in until enough holders have left. Waiters get in first come, first served."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self._limit = limit
        self.held = 0
        self.peak = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:
        self._limit = max(1, value)
        self._wake()

    async def acquire(self) -> None:
        if self.held < self._limit and not self._waiters:
            self._take()
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # _wake counts the slot as taken before it resolves the future
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted and cancelled in the same step: hand the slot on
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.held -= 1
        self._wake()

    def _take(self) -> None:
        self.held += 1
        self.peak = max(self.peak, self.held)

    def _wake(self) -> None:
        while self._waiters and self.held < self._limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._take()
                waiter.set_result(None)

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *_: object) -> None:
        self.release()


class CustomerLocks:
    """One lock per customer, held while that customer's entries are sent: one call per customer at a time even when
    rounds overlap. A lock is dropped once no one holds or waits for it, so the map stays as small as the work."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    @asynccontextmanager
    async def hold(self, customer: str) -> AsyncIterator[None]:
        lock = self._locks.get(customer)
        if lock is None:
            lock = self._locks[customer] = asyncio.Lock()
        self._users[customer] = self._users.get(customer, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[customer] -= 1
            if self._users[customer] == 0:
                del self._users[customer]
                del self._locks[customer]

    def __len__(self) -> int:
        return len(self._locks)


# Rounds delivering at once: some being sent while the next is leased and queued for the slots it will take. A v1
# round (as many entries as slots) lasts until its slowest call: the pacer's spacing of its calls plus a latency,
# about twice a latency at the full rate, so two rounds in flight fed the slots ~800 of 1,000 calls/s; four keep
# them busy. A batch round waits on the store's lease and marks, each as long as half a call: four keep the slots
# busy too (docs/performance.md).
ROUNDS_IN_FLIGHT = 4
BATCH_ROUNDS_IN_FLIGHT = 4
# Calls a batch round leases for, in units of `concurrency` calls (see Dispatcher._lease_round).
BATCH_WAVES = 4


class Rounds:
    """Rounds of leased entries delivered concurrently, at most `limit` at once, each by `deliver` in a task of
    its own (which must not raise: the dispatcher logs a failed round and carries on)."""

    def __init__(
        self, deliver: Callable[[list[Entry], float], Coroutine[None, None, None]], limit: int = ROUNDS_IN_FLIGHT
    ) -> None:
        self._deliver = deliver
        self._limit = limit
        self._tasks: set[asyncio.Task[None]] = set()

    async def room(self) -> None:
        """Return once fewer than `limit` rounds are in flight."""
        while len(self._tasks) >= self._limit:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)

    def start(self, entries: list[Entry], leased_at: float) -> None:
        task = asyncio.create_task(self._deliver(entries, leased_at))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for every round in flight (stop(): their calls finish and are marked, the rest released)."""
        while self._tasks:
            await asyncio.wait(self._tasks)

    async def cancel(self) -> None:
        """Cancel the rounds in flight and wait until each has released its unmarked entries."""
        for task in self._tasks:
            task.cancel()
        while self._tasks:
            await asyncio.wait(self._tasks)
