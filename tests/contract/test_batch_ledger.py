"""The BatchLedger contract: `mark_sent_many` is `mark_sent` for many ids in one step.

Run against every ledger that has it.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.domain.ledger import Claim, State
from gateway.domain.ports import BatchLedger
from gateway.domain.units import Rounding

NOW = 1_800_000_000.0


@pytest.fixture(params=["memory_ledger", "sqlite_ledger", "redis_ledger", "postgres_ledger"])
def ledger(request: pytest.FixtureRequest) -> BatchLedger:
    store = request.getfixturevalue(request.param)
    assert isinstance(store, BatchLedger)
    return store


async def record(ledger: BatchLedger, event_id: str, exact_units: Decimal = Decimal(1)) -> None:
    claim = Claim(
        event_id=event_id,
        event_type="chat.completion.finished",
        billing_customer="cus_A",
        ringside_customer=None,
        cost_usd=exact_units.scaleb(-5),
        exact_units=exact_units,
        timestamp=1_799_999_990,
    )
    assert (await ledger.record(claim, Rounding.CARRY, NOW)).created


async def test_mark_sent_many_marks_each_listed_pending_entry_sent(ledger: BatchLedger) -> None:
    for event_id in ("evt_A", "evt_B", "evt_C"):
        await record(ledger, event_id)
    await ledger.lease_due(NOW, 10, 30)

    await ledger.mark_sent_many(["evt_A", "evt_C"], NOW + 1)

    a, b, c = [await ledger.get(event_id) for event_id in ("evt_A", "evt_B", "evt_C")]
    assert a is not None and b is not None and c is not None
    assert (a.state, a.sent_at, c.state, c.sent_at) == (State.SENT, NOW + 1, State.SENT, NOW + 1)
    assert (b.state, b.sent_at) == (State.PENDING, None)
    stats = await ledger.stats()
    assert (stats.pending, stats.sent, stats.units_sent) == (1, 2, 2)


async def test_mark_sent_many_counts_entries_of_zero_units_exactly(ledger: BatchLedger) -> None:
    # The dispatcher marks zero-unit entries sent in one batch, without a call to the biller.
    await record(ledger, "evt_ZERO_1", Decimal("0.25"))
    await record(ledger, "evt_ZERO_2", Decimal("0.25"))

    await ledger.mark_sent_many(["evt_ZERO_1", "evt_ZERO_2"], NOW + 1)

    stats = await ledger.stats()
    assert (stats.pending, stats.sent, stats.units_sent, stats.units_pending) == (0, 2, 0, 0)


async def test_mark_sent_many_leaves_entries_that_are_not_pending_and_unknown_ids_alone(ledger: BatchLedger) -> None:
    await record(ledger, "evt_SENT")
    await record(ledger, "evt_REJECTED")
    await ledger.mark_sent("evt_SENT", NOW)
    await ledger.mark_rejected("evt_REJECTED", "No such customer", NOW)

    await ledger.mark_sent_many(["evt_SENT", "evt_REJECTED", "evt_UNKNOWN"], NOW + 5)

    sent, rejected = await ledger.get("evt_SENT"), await ledger.get("evt_REJECTED")
    assert sent is not None and sent.sent_at == NOW
    assert rejected is not None and rejected.state is State.PARKED
    assert await ledger.get("evt_UNKNOWN") is None


async def test_marked_entries_are_never_leased_again(ledger: BatchLedger) -> None:
    for event_id in ("evt_A", "evt_B"):
        await record(ledger, event_id)
    await ledger.lease_due(NOW, 10, 30)

    await ledger.mark_sent_many(["evt_A", "evt_B"], NOW)

    assert await ledger.lease_due(NOW + 60, 10, 30) == []


async def test_mark_sent_many_of_nothing_changes_nothing(ledger: BatchLedger) -> None:
    await record(ledger, "evt_A")

    await ledger.mark_sent_many([], NOW)

    assert (await ledger.stats()).pending == 1
