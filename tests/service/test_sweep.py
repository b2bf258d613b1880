"""The sweep: the ledger's backlog as gauges, a warning while the oldest pending entry is too old."""

from __future__ import annotations

import asyncio

from gateway.adapters.clock import FrozenClock
from gateway.adapters.memory import MemoryLedger
from gateway.app.metrics import PrometheusMetrics
from gateway.domain.errors import StoreUnavailable
from gateway.domain.ledger import LedgerStats
from gateway.service.sweep import Sweep
from tests.log_capture import captured_logs
from tests.service.billers import record


class UnreadableLedger(MemoryLedger):
    async def stats(self) -> LedgerStats:
        raise StoreUnavailable("disk I/O error")


def gauge(metrics: PrometheusMetrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


async def test_publishes_backlog_and_stays_quiet_when_nothing_is_old(clock: FrozenClock) -> None:
    ledger, metrics = MemoryLedger(), PrometheusMetrics()
    await record(ledger, "evt_NEW", clock.now())
    clock.advance(10)
    sweep = Sweep(ledger, clock, metrics=metrics, alert_after_s=300)

    with captured_logs() as captured:
        await sweep.run_once()

    assert gauge(metrics, "gateway_ledger_pending_entries") == 1
    assert gauge(metrics, "gateway_ledger_oldest_pending_age_seconds") == 10
    assert gauge(metrics, "gateway_ledger_pending_stale") == 0
    assert gauge(metrics, "gateway_ledger_up") == 1
    assert captured.lines() == []


async def test_warns_and_raises_the_stale_gauge_when_oldest_pending_is_older_than_threshold(
    clock: FrozenClock,
) -> None:
    ledger, metrics = MemoryLedger(), PrometheusMetrics()
    await record(ledger, "evt_STUCK", clock.now())
    clock.advance(301)
    sweep = Sweep(ledger, clock, metrics=metrics, alert_after_s=300)

    with captured_logs() as captured:
        await sweep.run_once()

    assert gauge(metrics, "gateway_ledger_pending_stale") == 1
    assert gauge(metrics, "gateway_ledger_oldest_pending_age_seconds") == 301
    assert [(line["event"], line["level"], line["pending"]) for line in captured.lines()] == [
        ("ledger.pending_stale", "warning", 1)
    ]


async def test_says_recovered_once_the_backlog_is_delivered(clock: FrozenClock) -> None:
    ledger, metrics = MemoryLedger(), PrometheusMetrics()
    await record(ledger, "evt_STUCK", clock.now())
    clock.advance(301)
    sweep = Sweep(ledger, clock, metrics=metrics, alert_after_s=300)
    await sweep.run_once()
    await ledger.mark_sent("evt_STUCK", clock.now())

    with captured_logs() as captured:
        await sweep.run_once()
        await sweep.run_once()

    assert [line["event"] for line in captured.lines()] == ["ledger.pending_recovered"]
    assert gauge(metrics, "gateway_ledger_pending_stale") == 0
    assert gauge(metrics, "gateway_ledger_sent_entries") == 1


async def test_wakes_the_dispatcher_when_anything_is_pending(clock: FrozenClock) -> None:
    ledger, woken = MemoryLedger(), []
    sweep = Sweep(ledger, clock, wake=lambda: woken.append(True))
    await sweep.run_once()
    await record(ledger, "evt_ORPHAN", clock.now())
    await sweep.run_once()

    assert woken == [True]


async def test_reports_the_store_down_and_keeps_going_when_stats_fail(clock: FrozenClock) -> None:
    metrics = PrometheusMetrics()
    sweep = Sweep(UnreadableLedger(), clock, metrics=metrics)

    with captured_logs() as captured:
        assert await sweep.run_once() is None

    assert gauge(metrics, "gateway_ledger_up") == 0
    line = captured.lines()[0]
    assert line["event"] == "sweep.store_unavailable"
    assert "disk I/O error" in line["error"]


async def test_run_sweeps_at_once_and_ends_promptly_when_stopped(clock: FrozenClock) -> None:
    ledger, swept = MemoryLedger(), asyncio.Event()
    await record(ledger, "evt_PENDING", clock.now())
    sweep = Sweep(ledger, clock, interval_s=3600, wake=swept.set)
    running = asyncio.create_task(sweep.run())
    await asyncio.wait_for(swept.wait(), 1)

    sweep.stop()

    await asyncio.wait_for(running, 1)  # an hour-long interval is not waited out
