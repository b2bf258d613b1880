"""BodyDeadlines: a read that outlives its deadline is cut off; nothing else about the read changes."""

from __future__ import annotations

import asyncio

import pytest

from gateway.app.body_deadline import BodyDeadlines, Overdue


async def _after(delay_s: float, value: str) -> str:
    await asyncio.sleep(delay_s)
    return value


async def test_returns_what_the_read_returns_when_it_ends_in_time() -> None:
    deadlines = BodyDeadlines(0.2)

    assert await deadlines.read(_after(0.01, "body")) == "body"


async def test_raises_overdue_once_the_deadline_has_passed() -> None:
    deadlines = BodyDeadlines(0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()

    with pytest.raises(Overdue):
        await deadlines.read(asyncio.Event().wait())

    assert 0.2 <= loop.time() - started < 0.2 * 1.25 + 0.1
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    deadlines = BodyDeadlines(10)
    reading = asyncio.create_task(deadlines.read(asyncio.Event().wait()))
    await asyncio.sleep(0.01)

    reading.cancel()

    with pytest.raises(asyncio.CancelledError):
        await reading


async def test_each_of_many_concurrent_reads_keeps_its_own_deadline() -> None:
    deadlines = BodyDeadlines(0.2)

    results = await asyncio.gather(
        deadlines.read(_after(0.05, "quick")),
        deadlines.read(asyncio.Event().wait()),
        deadlines.read(_after(0.1, "in time")),
        return_exceptions=True,
    )

    assert results[0] == "quick" and results[2] == "in time"
    assert isinstance(results[1], Overdue)
