"""v1 at a slow biller: the dispatcher keeps as many customers in flight as the rate limit x the latency asks.

The biller takes at least 40 ms a call; at 500 calls/s Little's law asks for 20 calls in flight (25 customers served
with the headroom, some of them waiting for the pacer), far above the floor of 2 the dispatcher starts from. No
timing is asserted: a busy machine only makes the calls slower, which asks for more in flight, never fewer, and the
ceiling bounds it.
"""

from __future__ import annotations

import asyncio

from gateway.adapters.clock import FrozenClock
from gateway.adapters.memory import MemoryLedger
from gateway.domain.ledger import State
from gateway.service.concurrency import BATCH_WAVES, calls_in_flight
from gateway.service.dispatcher import DispatchConfig, Dispatcher
from tests.service.billers import BatchBiller, ScriptedBiller, record

LATENCY_S = 0.040
RATE = 500.0
FLOOR, CEILING = 2, 40
CUSTOMERS, PER_CUSTOMER = 60, 6


class SlowBiller(ScriptedBiller):
    """Every call takes at least LATENCY_S, as a remote biller would."""

    async def _call(self) -> None:
        await asyncio.sleep(LATENCY_S)


async def test_keeps_little_law_customers_in_flight_one_call_each(clock: FrozenClock) -> None:
    ledger, biller = MemoryLedger(), SlowBiller()
    for n in range(CUSTOMERS * PER_CUSTOMER):
        await record(ledger, f"evt_{n}", clock.now(), customer=f"cus_{n % CUSTOMERS}")
    # A small round, so that one customer's entries span rounds that overlap.
    config = DispatchConfig(batch=20, concurrency=FLOOR, max_concurrency=CEILING, max_rps=RATE, lease_s=300)
    dispatcher = Dispatcher(ledger, biller, clock, config)
    running = asyncio.create_task(dispatcher.run())
    await _drained(ledger)
    dispatcher.stop()
    await asyncio.wait_for(running, 30)

    wanted = calls_in_flight(RATE, LATENCY_S, floor=FLOOR, ceiling=CEILING)
    assert wanted > 10 * FLOOR
    assert wanted <= dispatcher.slots.peak <= CEILING  # customers served at once
    # The biller saw many calls at once, not the floor's 2 (~20 = 500/s x 40 ms: the pacer lets the rest wait).
    assert 5 * FLOOR <= biller.max_total_in_flight <= CEILING
    assert max(biller.max_in_flight.values()) == 1  # never two calls for one customer, across rounds too
    assert biller.calls == CUSTOMERS * PER_CUSTOMER


async def test_batches_keep_their_configured_calls_in_flight(clock: FrozenClock) -> None:
    # The v2 stream is not sized from the latency: its requests carry 100 events each and `concurrency` of them
    # already exceed what one account sends (docs/performance.md, "The v2 stream").
    ledger, biller = MemoryLedger(), BatchBiller()
    for n in range(60):
        await record(ledger, f"evt_{n}", clock.now(), customer=f"cus_{n % 7}")
    dispatcher = Dispatcher(ledger, biller, clock, DispatchConfig(batch=6, concurrency=3, max_rps=1000))
    running = asyncio.create_task(dispatcher.run())
    await _drained(ledger)
    dispatcher.stop()
    await asyncio.wait_for(running, 30)

    assert biller.max_in_flight <= 3
    assert sorted(i for call in biller.calls for i in call) == sorted(f"evt_{n}" for n in range(60))


async def test_a_round_that_ends_frees_its_customers_for_the_next_lease_at_once(clock: FrozenClock) -> None:
    # One customer, more entries than a round takes: the next lease finds the customer held by the round in flight
    # and comes back empty. The round's end must wake the dispatcher, not the next poll (an hour away here).
    ledger, biller = MemoryLedger(), BatchBiller()
    config = DispatchConfig(batch=2, concurrency=2, max_rps=1_000_000, poll_s=3600)
    per_round = biller.max_batch * config.concurrency * BATCH_WAVES
    for n in range(3 * per_round):
        await record(ledger, f"evt_{n}", clock.now(), customer="cus_only")
    dispatcher = Dispatcher(ledger, biller, clock, config)
    running = asyncio.create_task(dispatcher.run())
    await asyncio.wait_for(_drained(ledger), 30)
    dispatcher.stop()
    await asyncio.wait_for(running, 30)

    assert len(biller.events) == 3 * per_round


async def _drained(ledger: MemoryLedger) -> None:
    """Return once no entry is pending (a minute at most: a liveness bound, not a timing)."""
    for _ in range(6000):
        if not any(entry.state is State.PENDING for entry in ledger.entries.values()):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the dispatcher did not drain the ledger")
