"""The sizing rule of the calls in flight (Little's law, bounded) and the gates that hold the dispatcher to it."""

from __future__ import annotations

import asyncio
import math

import pytest

from gateway.service.concurrency import (
    HEADROOM,
    CustomerLocks,
    InFlightSizer,
    LatencyEstimate,
    Slots,
    calls_in_flight,
)


def test_calls_in_flight_is_rate_times_latency_with_headroom() -> None:
    # Stripe live (1,000 calls/s) at 150 ms: 150 calls in flight carry the rate; the headroom adds a quarter.
    assert calls_in_flight(1000, 0.150, floor=16, ceiling=1000) == math.ceil(1000 * 0.150 * HEADROOM)
    assert calls_in_flight(1000, 0.150, floor=16, ceiling=1000, headroom=1.0) == 150


def test_calls_in_flight_never_below_the_floor_nor_above_the_ceiling() -> None:
    assert calls_in_flight(25, 0.150, floor=16, ceiling=1000) == 16  # test mode: 25 calls/s need 5 in flight
    assert calls_in_flight(1000, 5.0, floor=16, ceiling=1000) == 1000  # a biller answering in 5 s
    assert calls_in_flight(1000, 0.150, floor=16, ceiling=8) == 16  # the floor wins when they cross


@pytest.mark.parametrize(("rate", "latency"), [(0, 0.1), (1000, 0), (-5, 0.1), (math.inf, 0.1), (1000, math.nan)])
def test_calls_in_flight_is_the_floor_for_rates_or_latencies_that_say_nothing(rate: float, latency: float) -> None:
    assert calls_in_flight(rate, latency, floor=16, ceiling=1000) == 16


def test_calls_in_flight_refuses_a_floor_below_one() -> None:
    with pytest.raises(ValueError, match="floor"):
        calls_in_flight(1000, 0.1, floor=0, ceiling=10)


def test_latency_estimate_starts_at_the_first_observation_and_moves_by_its_weight() -> None:
    estimate = LatencyEstimate(smoothing=0.5)
    assert estimate.mean_s is None
    estimate.observe(0.100)
    assert estimate.mean_s == pytest.approx(0.100)
    estimate.observe(0.200)
    assert estimate.mean_s == pytest.approx(0.150)
    estimate.observe(math.nan)  # not a latency: ignored
    estimate.observe(-1.0)
    assert estimate.mean_s == pytest.approx(0.150)


def test_sizer_starts_at_the_floor_and_follows_the_latency_up_and_down() -> None:
    sizer = InFlightSizer(1000, floor=16, ceiling=1000, smoothing=1.0)  # no smoothing: each call sets it
    assert sizer.size == 16
    assert sizer.observe(0.150) == calls_in_flight(1000, 0.150, floor=16, ceiling=1000)
    assert sizer.observe(0.400) == calls_in_flight(1000, 0.400, floor=16, ceiling=1000)
    assert sizer.observe(0.005) == 16
    assert sizer.observe(60.0) == 1000


def test_sizer_smooths_one_slow_call() -> None:
    sizer = InFlightSizer(1000, floor=16, ceiling=1000)
    for _ in range(50):
        sizer.observe(0.150)
    steady = sizer.size
    assert sizer.observe(3.0) < 2 * steady  # one 3 s call among 150 ms ones does not multiply the slots


async def test_slots_let_in_up_to_their_limit_and_more_when_it_rises() -> None:
    slots = Slots(2)
    await slots.acquire()
    await slots.acquire()
    third = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    assert not third.done()
    slots.limit = 3
    await asyncio.wait_for(third, 1)
    assert slots.held == 3 and slots.peak == 3


async def test_slots_let_no_one_in_after_the_limit_drops_until_enough_have_left() -> None:
    slots = Slots(3)
    for _ in range(3):
        await slots.acquire()
    slots.limit = 1
    waiter = asyncio.create_task(slots.acquire())
    slots.release()
    slots.release()
    await asyncio.sleep(0)
    assert not waiter.done()  # 1 held, limit 1
    slots.release()
    await asyncio.wait_for(waiter, 1)
    assert slots.held == 1


async def test_slots_waiters_get_in_in_order_and_a_cancelled_waiter_takes_no_slot() -> None:
    slots = Slots(1)
    await slots.acquire()
    order: list[str] = []

    async def take(name: str) -> None:
        async with slots:
            order.append(name)

    first, cancelled, last = (asyncio.create_task(take(n)) for n in ("first", "cancelled", "last"))
    await asyncio.sleep(0)
    cancelled.cancel()
    slots.release()
    await asyncio.wait_for(asyncio.gather(first, last), 1)
    assert order == ["first", "last"]
    assert slots.held == 0


async def test_customer_locks_serialise_one_customer_and_forget_it_when_free() -> None:
    locks = CustomerLocks()
    inside: list[str] = []

    async def hold(customer: str, name: str, gate: asyncio.Event) -> None:
        async with locks.hold(customer):
            inside.append(name)
            await gate.wait()

    gate = asyncio.Event()
    tasks = [
        asyncio.create_task(hold("cus_1", "a1", gate)),
        asyncio.create_task(hold("cus_1", "a2", gate)),
        asyncio.create_task(hold("cus_2", "b1", gate)),
    ]
    await asyncio.sleep(0.01)
    assert sorted(inside) == ["a1", "b1"]  # a2 waits for a1: one at a time per customer
    gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert inside[-1] == "a2"
    assert len(locks) == 0
