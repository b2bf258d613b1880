"""Handling Stripe's events: other types are acknowledged and ignored; polling resumes from its durable cursor."""

from __future__ import annotations

from gateway.adapters.stripe.events import format_time
from gateway.domain.feedback import Handled, Notification
from gateway.domain.ledger import State
from gateway.domain.units import Rounding
from gateway.service.feedback import CURSOR, DEFAULT_OVERLAP_S, ReportPoller
from tests.builders import claim
from tests.fakes.stripe_server import FakeStripe
from tests.service.stripe_loop import create_meter, hours_ago, stripe_loop

BASE = hours_ago(3)


async def test_an_event_of_another_type_is_ignored_without_asking_stripe(fake_stripe: FakeStripe) -> None:
    async with stripe_loop(fake_stripe, stream=True) as loop:
        result = await loop.handler.handle(Notification("evt_test_PING", "v2.core.event_destination.ping", 0.0))

    assert result.status is Handled.IGNORED
    assert fake_stripe.requests == []


async def test_polling_resumes_after_the_cursor_and_handles_each_report_once(fake_stripe: FakeStripe) -> None:
    create_meter(fake_stripe)
    fake_stripe.known_customers = {"cus_KNOWN"}
    async with stripe_loop(fake_stripe, stream=True) as loop:
        for n in range(3):
            await loop.ledger.record(claim(f"evt_{n}", customer="cus_GONE", timestamp=BASE), Rounding.CARRY, 0)
            await loop.dispatch_all()
            fake_stripe.feedback.emit_report()
            if n == 0:
                first = await ReportPoller(loop.handler, loop.reports, loop.ledger, loop.clock).poll_once()
        # A new poller (a restarted process) reads the cursor the first one left.
        cursor = await loop.ledger.get_cursor(CURSOR)
        resumed = await ReportPoller(loop.handler, loop.reports, loop.ledger, loop.clock).poll_once()

    assert [(r.status, r.parked) for r in first] == [(Handled.APPLIED, 1)]
    # The second report's customer error parks every entry sent to cus_GONE in its window: the third finds none.
    assert [(r.status, r.parked) for r in resumed] == [(Handled.APPLIED, 2), (Handled.APPLIED, 0)]
    assert {e.state for e in loop.ledger.entries.values()} == {State.PARKED}
    assert cursor is not None
    last_list = [r for r in fake_stripe.requests if r.path == "/v2/core/events"][-1]
    assert last_list.params["created"] == {"gte": format_time(cursor - DEFAULT_OVERLAP_S)}
