"""Reconcile and repair against the local ledger biller (in memory), on a frozen clock."""

from __future__ import annotations

from gateway.adapters.clock import FrozenClock
from gateway.adapters.memory import MemoryBiller, MemoryLedger
from gateway.domain.ports import MeterEvent
from gateway.domain.reconcile import HOUR_S, Verdict, hour_floor
from gateway.domain.units import Rounding
from gateway.service.reconcile import Reconciler, Repairer
from tests.builders import claim

MAX_AGE_S = 35 * 24 * 3600
SETTLE_S = 3600


async def sent(
    ledger: MemoryLedger, biller: MemoryBiller | None, event_id: str, customer: str, units: int, at: int
) -> None:
    """An entry the ledger marked sent; `biller` holds it too unless None (lost)."""
    await ledger.record(claim(event_id, exact=str(units), customer=customer, timestamp=at), Rounding.CARRY, at)
    await ledger.mark_sent(event_id, at + 1)
    if biller is not None:
        await biller.send(MeterEvent(event_id, customer, units, at))


async def test_verdicts_per_customer_and_hour_with_a_young_window_settling(clock: FrozenClock) -> None:
    ledger, biller = MemoryLedger(), MemoryBiller()
    old = hour_floor(clock.now()) - 5 * HOUR_S
    young = hour_floor(clock.now()) - HOUR_S  # ended less than the settle time ago
    await sent(ledger, biller, "evt_1", "cus_A", 10, old)
    await sent(ledger, None, "evt_2", "cus_B", 7, old)
    await biller.send(MeterEvent("evt_ELSEWHERE", "cus_A", 3, old + HOUR_S))
    await sent(ledger, None, "evt_3", "cus_A", 4, young)

    found = await Reconciler(ledger, biller, clock, settle_s=SETTLE_S).reconcile(old, clock.now(), None)

    assert [(r.billing_customer, r.window_start, r.verdict) for r in found.rows] == [
        ("cus_A", old, Verdict.MATCH),
        ("cus_A", old + HOUR_S, Verdict.EXTRA_AT_BILLER),
        ("cus_A", young, Verdict.SETTLING),
        ("cus_B", old, Verdict.MISSING_AT_BILLER),
    ]
    assert not found.totals.matched
    only_b = await Reconciler(ledger, biller, clock, settle_s=SETTLE_S).reconcile(old, clock.now(), "cus_B")
    assert [r.billing_customer for r in only_b.rows] == ["cus_B"]


async def test_a_repaired_window_settles_then_matches_and_is_never_repaired_twice(clock: FrozenClock) -> None:
    ledger, biller = MemoryLedger(), MemoryBiller()
    old = hour_floor(clock.now()) - 5 * HOUR_S
    await sent(ledger, biller, "evt_1", "cus_A", 10, old)
    await sent(ledger, None, "evt_LOST", "cus_A", 6, old + 5)
    reconciler = Reconciler(ledger, biller, clock, settle_s=SETTLE_S)
    repairer = Repairer(reconciler, ledger, biller, clock, max_age_s=MAX_AGE_S)

    first = await repairer.repair(old, old + HOUR_S)
    right_after = await repairer.repair(old, old + HOUR_S)
    settling = await reconciler.reconcile(old, old + HOUR_S)
    clock.advance(SETTLE_S + 1)
    settled = await reconciler.reconcile(old, old + HOUR_S)
    later = await repairer.repair(old, old + HOUR_S)

    [correction] = first.sent
    assert biller.events[correction.identifier] == MeterEvent(correction.identifier, "cus_A", 6, old + HOUR_S - 1)
    assert right_after.sent == later.sent == []
    assert [r.verdict for r in settling.rows] == [Verdict.SETTLING]
    assert [(r.verdict, r.ledger_units, r.biller_units, r.corrected_units) for r in settled.rows] == [
        (Verdict.MATCH, 16, 16, 6)
    ]


async def test_a_loss_older_than_the_billers_window_is_reported_not_sent(clock: FrozenClock) -> None:
    ledger, biller = MemoryLedger(), MemoryBiller()
    ancient = hour_floor(clock.now() - MAX_AGE_S) - HOUR_S
    await sent(ledger, None, "evt_OLD", "cus_A", 5, ancient)
    repairer = Repairer(Reconciler(ledger, biller, clock), ledger, biller, clock, max_age_s=MAX_AGE_S)

    result = await repairer.repair(ancient, ancient + HOUR_S)

    assert result.sent == [] and biller.events == {}
    assert [(r.billing_customer, r.window_start) for r in result.too_old] == [("cus_A", ancient)]
