"""The optional periodic jobs of a serving process: polling Stripe's error reports from the durable cursor, and
reconciling against the biller with the differences exported as metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from litestar.testing import AsyncTestClient

from gateway.adapters.memory import MemoryBiller, MemoryLedger
from gateway.app.cli.serve import _run_worker
from gateway.app.container import build_container
from gateway.app.server import create_app
from gateway.domain.ledger import State
from gateway.domain.units import Rounding
from tests.builders import claim, settings
from tests.fakes.stripe_server import FAKE_API_KEY, FakeStripe
from tests.log_capture import captured_logs
from tests.service.stripe_loop import HOUR, create_meter, hours_ago


async def _until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_polling_parks_what_a_report_names_and_a_restarted_process_applies_nothing_twice(
    fake_stripe: FakeStripe,
) -> None:
    create_meter(fake_stripe)
    fake_stripe.known_customers = {"cus_known"}
    fake_stripe.asynchronous_validation = True
    container = build_container(
        settings(stripe={"api_key": FAKE_API_KEY, "api_base": fake_stripe.url, "max_rps": 1000, "events_poll_s": 0.1})
    )
    ledger: MemoryLedger = container.ledger()
    for n in range(6):
        billable = claim(f"evt_{n}", customer=("cus_known", "cus_unknown")[n % 2], timestamp=hours_ago(1))
        await ledger.record(billable, Rounding.CARRY, time.time())

    async def parked() -> bool:
        return sum(e.state is State.PARKED for e in ledger.entries.values()) == 3

    async def all_sent() -> bool:
        return all(e.state is State.SENT for e in ledger.entries.values())

    async with AsyncTestClient(create_app(container)) as client:
        container.dispatcher().wake()
        await _until(all_sent)
        assert fake_stripe.feedback.emit_report() is not None
        await _until(parked)
        metrics = (await client.get("/metrics")).text
    assert 'gateway_stripe_reports_total{source="poll",status="applied"} 1.0' in metrics
    assert await ledger.get_cursor("stripe_events") is not None

    # Another process on the same store (a restart): it resumes from the cursor and applies nothing again.
    again = build_container(container.settings())
    again.ledger.override(ledger)
    async with AsyncTestClient(create_app(again)) as client:
        await asyncio.sleep(0.5)
        metrics = (await client.get("/metrics")).text
    assert 'status="applied"' not in metrics
    assert sum(e.state is State.PARKED for e in ledger.entries.values()) == 3


async def test_periodic_reconciliation_exports_the_differences_and_warns_per_mismatched_window() -> None:
    container = build_container(settings(reconcile_interval_s=0.1, reconcile_settle_s=0))
    ledger: MemoryLedger = container.ledger()
    biller: MemoryBiller = container.billing_sink()
    base = hours_ago(3)
    for n in range(4):
        await ledger.record(claim(f"evt_{n}", exact="10", timestamp=base + (n % 2) * HOUR), Rounding.CARRY, 0)

    async def all_sent() -> bool:
        return all(e.state is State.SENT for e in ledger.entries.values())

    def lose_one() -> None:
        lost = next(e for e in biller.events.values() if e.timestamp == base)
        del biller.events[lost.identifier]

    with captured_logs("warning") as logs:
        async with AsyncTestClient(create_app(container)) as client:
            container.dispatcher().wake()
            await _until(all_sent)
            lose_one()

            async def exported() -> bool:
                text: Any = (await client.get("/metrics")).text
                return 'gateway_reconcile_windows{verdict="missing_at_biller"} 1.0' in text

            await _until(exported)
            metrics = (await client.get("/metrics")).text
    assert 'gateway_reconcile_units_difference{verdict="missing_at_biller"} 10.0' in metrics
    assert 'gateway_reconcile_windows{verdict="match"} 1.0' in metrics
    assert "gateway_reconcile_up 1.0" in metrics
    mismatches = [line for line in logs.lines() if line.get("event", "").startswith("reconcile.mismatch")]
    assert mismatches


async def test_the_worker_runs_the_periodic_jobs_and_stops_them_with_the_dispatcher() -> None:
    container = build_container(settings(reconcile_interval_s=0.05, reconcile_settle_s=0))
    metrics = container.metrics()
    worker = asyncio.create_task(_run_worker(container))

    async def reconciled() -> bool:
        return b"gateway_reconcile_up 1.0" in metrics.render()

    await _until(reconciled)
    container.dispatcher().stop()
    await asyncio.wait_for(worker, timeout=10)
