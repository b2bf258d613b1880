"""The loop closed end to end at the service level: 1,000 events for 10 customers, 2 of them unknown to Stripe.

Stripe (the fake) answers every event and drops the unknown customers' ones; its error report comes back by a
signed notification or by polling; the ledger parks exactly those customers' entries; reconciliation names their
windows missing and every other window a match; repair fixes a loss no report named, once.
"""

from __future__ import annotations

import pytest

from gateway.adapters.stripe.rules import meter_identifier
from gateway.domain.feedback import Handled
from gateway.domain.ledger import ParkReason, State
from gateway.domain.reconcile import Verdict
from gateway.domain.units import Rounding
from gateway.service.feedback import ReportPoller
from gateway.service.reconcile import Reconciler, Repairer
from tests.builders import claim
from tests.fakes.stripe_server import FakeStripe
from tests.service.stripe_loop import DESTINATION_SECRET, HOUR, Destination, Loop, create_meter, hours_ago, stripe_loop

EVENTS = 1000
CUSTOMERS = [f"cus_{n}" for n in range(10)]
UNKNOWN = {"cus_8", "cus_9"}
BASE = hours_ago(6)
WINDOWS = 3
MAX_AGE_S = 35 * 24 * 3600


def event_id(n: int) -> str:
    # The unknown customers' first events have ids too long for Stripe: their samples name a digest.
    return f"evt_{n:04d}" + ("_" + "x" * 120 if n in (8, 9) else "")


async def record_all(loop: Loop) -> None:
    now = loop.clock.now()
    for n in range(EVENTS):
        billable = claim(
            event_id(n),
            exact=str(100 + n % 7),
            customer=CUSTOMERS[n % 10],
            ringside=f"rs_{n % 10}",
            timestamp=BASE + (n % WINDOWS) * HOUR + n,
        )
        await loop.ledger.record(billable, Rounding.CARRY, now)


def states(loop: Loop) -> dict[str, set[State]]:
    found: dict[str, set[State]] = {}
    for entry in loop.ledger.entries.values():
        found.setdefault(entry.billing_customer, set()).add(entry.state)
    return found


@pytest.mark.parametrize(
    ("stream", "delivery"),
    [(True, "webhook"), (True, "polling"), (False, "webhook")],
    ids=["v2_stream-webhook", "v2_stream-polling", "v1-webhook"],
)
async def test_a_report_parks_exactly_the_unknown_customers_and_reconcile_names_their_windows(
    fake_stripe: FakeStripe, stream: bool, delivery: str
) -> None:
    create_meter(fake_stripe)
    fake_stripe.known_customers = set(CUSTOMERS) - UNKNOWN
    fake_stripe.asynchronous_validation = True
    # The report's samples name both unknown customers whatever order the calls arrive in: v1 sends the ten
    # customers' events concurrently, so the first three errors may all be one customer's.
    fake_stripe.feedback.samples_per_code = EVENTS
    async with stripe_loop(fake_stripe, stream=stream) as loop:
        await record_all(loop)
        await loop.dispatch_all()
        assert {e.state for e in loop.ledger.entries.values()} == {State.SENT}  # Stripe said yes to every one

        # Stripe's report arrives: as a signed notification, or found by polling.
        with Destination() as destination:
            fake_stripe.feedback.destination(destination.url + "/webhooks/stripe", DESTINATION_SECRET)
            report = fake_stripe.feedback.emit_report()
            fake_stripe.feedback.wait_for_deliveries(1)
        assert report is not None
        if delivery == "webhook":
            [notification] = loop.notifications(destination)
            results = [await loop.handler.handle(notification)]
        else:
            results = await ReportPoller(loop.handler, loop.reports, loop.ledger, loop.clock).poll_once()

        [result] = results
        assert (result.status, result.errors_by_code) == (Handled.APPLIED, {"meter_event_customer_not_found": 200})
        assert states(loop) == {c: {State.PARKED} if c in UNKNOWN else {State.SENT} for c in CUSTOMERS}
        parked = await loop.ledger.list_parked(limit=EVENTS)
        assert len(parked) == 200
        assert {p.reason for p in parked} == {ParkReason.BILLER_REJECTED}
        assert all(p.message.startswith("meter_event_customer_not_found: ") for p in parked)

        reconciler = Reconciler(loop.ledger, loop.totals, loop.clock, settle_s=0)
        found = await reconciler.reconcile(BASE, BASE + WINDOWS * HOUR)
        verdicts = {(r.billing_customer, r.window_start): r.verdict for r in found.rows}
        assert verdicts == {
            (c, BASE + w * HOUR): Verdict.MISSING_AT_BILLER if c in UNKNOWN else Verdict.MATCH
            for c in CUSTOMERS
            for w in range(WINDOWS)
        }
        assert not found.totals.matched

        # Mapped to real Stripe customers and replayed: every window matches, Stripe holds every unit.
        fake_stripe.known_customers |= {"cus_8_real", "cus_9_real"}
        for record in parked:
            entry = await loop.ledger.get(record.key)
            assert entry is not None
            await loop.ledger.requeue(record.key, loop.clock.now(), billing_customer=entry.billing_customer + "_real")
        await loop.dispatch_all()
        after = await reconciler.reconcile(BASE, BASE + WINDOWS * HOUR)
        assert after.totals.matched
        assert {r.verdict for r in after.rows} == {Verdict.MATCH}
        # The re-sends reused each event's identifier, and Stripe, which had not remembered them, took them.
        resent = {e["identifier"] for e in fake_stripe.meter_events if e["customer"].endswith("_real")}
        assert resent == {meter_identifier(record.key) for record in parked}
        for customer in [*sorted(set(CUSTOMERS) - UNKNOWN), "cus_8_real", "cus_9_real"]:
            owed = sum(e.units for e in loop.ledger.entries.values() if e.billing_customer == customer)
            assert fake_stripe.total_value(customer) == owed


async def test_a_redelivered_or_repolled_report_changes_nothing(fake_stripe: FakeStripe) -> None:
    create_meter(fake_stripe)
    fake_stripe.known_customers = {"cus_0"}
    async with stripe_loop(fake_stripe, stream=True) as loop:
        for n in range(4):
            await loop.ledger.record(claim(f"evt_{n}", customer=f"cus_{n % 2}", timestamp=BASE), Rounding.CARRY, 0)
        await loop.dispatch_all()
        with Destination() as destination:
            fake_stripe.feedback.destination(destination.url, DESTINATION_SECRET)
            fake_stripe.feedback.emit_report()
            fake_stripe.feedback.wait_for_deliveries(1)
        [notification] = loop.notifications(destination)
        first = await loop.handler.handle(notification)
        poller = ReportPoller(loop.handler, loop.reports, loop.ledger, loop.clock)

        again = await loop.handler.handle(notification)
        polled = await poller.poll_once()
        restarted = await ReportPoller(loop.handler, loop.reports, loop.ledger, loop.clock).poll_once()

    assert (first.status, first.parked) == (Handled.APPLIED, 2)
    assert again.status is Handled.DUPLICATE
    assert (polled, restarted) == ([], [])
    assert await loop.ledger.get_cursor("stripe_events") is not None


@pytest.mark.parametrize("stream", [True, False], ids=["v2_stream", "v1"])
async def test_repair_makes_a_silently_lost_window_match_and_a_second_repair_sends_nothing(
    fake_stripe: FakeStripe, stream: bool
) -> None:
    create_meter(fake_stripe)
    async with stripe_loop(fake_stripe, stream=stream) as loop:
        for n in range(30):
            billable = claim(f"evt_{n}", exact="100", customer=f"cus_{n % 3}", timestamp=BASE + (n % 2) * HOUR + n)
            await loop.ledger.record(billable, Rounding.CARRY, loop.clock.now())
        await loop.dispatch_all()
        # Stripe loses two of cus_0's events in the first window, and no report ever says so.
        lost = [e for e in fake_stripe.meter_events if e["customer"] == "cus_0" and e["timestamp"] < BASE + HOUR][:2]
        for event in lost:
            fake_stripe.meter_events.remove(event)
        reconciler = Reconciler(loop.ledger, loop.totals, loop.clock, settle_s=0)
        repairer = Repairer(reconciler, loop.ledger, loop.sink, loop.clock, max_age_s=MAX_AGE_S)

        before = await reconciler.reconcile(BASE, BASE + 2 * HOUR)
        first = await repairer.repair(BASE, BASE + 2 * HOUR)
        after = await reconciler.reconcile(BASE, BASE + 2 * HOUR)
        second = await repairer.repair(BASE, BASE + 2 * HOUR)

    assert [(r.billing_customer, r.window_start, r.difference) for r in before.rows if r.verdict != Verdict.MATCH] == [
        ("cus_0", BASE, 200)
    ]
    [correction] = first.sent
    assert (correction.billing_customer, correction.window_start, correction.units) == ("cus_0", BASE, 200)
    assert BASE <= correction.timestamp < BASE + HOUR
    assert fake_stripe.meter_events[-1]["identifier"] == correction.identifier
    assert {r.verdict for r in after.rows} == {Verdict.MATCH}
    assert (second.sent, second.refused, second.too_old) == ([], [], [])
    assert await loop.ledger.corrections() == [correction]
