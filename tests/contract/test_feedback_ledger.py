"""The FeedbackLedger contract: the ledger's side of error reports, the polling cursor, reconciliation, corrections.

Every store that implements FeedbackLedger joins `params` below.
"""

from __future__ import annotations

from typing import Protocol

import pytest

from gateway.domain.feedback import Rejection
from gateway.domain.ledger import ParkReason, State
from gateway.domain.ports import BatchLedger, FeedbackLedger
from gateway.domain.reconcile import HOUR_S, Correction, LedgerWindow
from gateway.domain.units import Rounding
from tests.builders import claim

NOW = 1_800_000_000.0
HOUR = 1_799_996_400  # an hour boundary before NOW


class Store(BatchLedger, FeedbackLedger, Protocol):
    """A ledger that closes the loop with the biller (every store marks batches sent, too)."""


@pytest.fixture(params=["memory_ledger", "sqlite_ledger", "redis_ledger", "postgres_ledger"])
def ledger(request: pytest.FixtureRequest) -> Store:
    store: Store = request.getfixturevalue(request.param)
    return store


async def sent(
    ledger: Store, event_id: str, *, customer: str = "cus_A", units: int = 10, at: int = HOUR, sent_at: float = NOW
) -> None:
    await ledger.record(claim(event_id, exact=str(units), customer=customer, timestamp=at), Rounding.CARRY, NOW - 60)
    await ledger.mark_sent(event_id, sent_at)


async def test_sent_between_lists_the_sent_entries_whose_sent_time_is_in_range(ledger: Store) -> None:
    await sent(ledger, "evt_EARLY", sent_at=NOW - 100)
    await sent(ledger, "evt_IN_B", customer="cus_B", sent_at=NOW + 10)
    await sent(ledger, "evt_IN_A", sent_at=NOW)
    await ledger.record(claim("evt_PENDING"), Rounding.CARRY, NOW)

    everyone = await ledger.sent_between(NOW - 1, NOW + 10)
    only_a = await ledger.sent_between(NOW - 1, NOW + 10, "cus_A")

    assert [e.event_id for e in everyone] == ["evt_IN_A", "evt_IN_B"]
    assert [e.event_id for e in only_a] == ["evt_IN_A"]


async def test_reject_sent_parks_the_named_sent_entries_as_biller_rejected(ledger: Store) -> None:
    await sent(ledger, "evt_LOST")
    await ledger.record(claim("evt_PENDING"), Rounding.CARRY, NOW)
    message = "meter_event_customer_not_found: No customer found with id cus_A."

    moved = await ledger.reject_sent(
        "evt_test_REPORT", [Rejection("evt_LOST", message), Rejection("evt_PENDING", message)], NOW + 5
    )

    assert moved == 1
    lost = await ledger.get("evt_LOST")
    record = await ledger.get_parked("evt_LOST")
    assert lost is not None and lost.state is State.PARKED
    assert record is not None and (record.reason, record.message) == (ParkReason.BILLER_REJECTED, message)
    pending = await ledger.get("evt_PENDING")
    assert pending is not None and pending.state is State.PENDING
    assert await ledger.get_parked("evt_PENDING") is None


async def test_a_report_is_applied_once(ledger: Store) -> None:
    await sent(ledger, "evt_1")
    await sent(ledger, "evt_2")
    await ledger.reject_sent("evt_test_REPORT", [Rejection("evt_1", "code: gone")], NOW)

    again = await ledger.reject_sent("evt_test_REPORT", [Rejection("evt_2", "code: gone")], NOW)

    assert again is None
    assert await ledger.report_handled("evt_test_REPORT")
    assert not await ledger.report_handled("evt_test_OTHER")
    second = await ledger.get("evt_2")
    assert second is not None and second.state is State.SENT


async def test_an_entry_rejected_by_a_report_is_requeued_by_replay(ledger: Store) -> None:
    await sent(ledger, "evt_LOST")
    await ledger.reject_sent("evt_test_REPORT", [Rejection("evt_LOST", "code: gone")], NOW)

    requeued = await ledger.requeue("evt_LOST", NOW + 1, billing_customer="cus_FIXED")

    assert requeued is not None and (requeued.state, requeued.billing_customer) == (State.PENDING, "cus_FIXED")
    assert await ledger.get_parked("evt_LOST") is None


async def test_cursor_is_kept_and_never_moves_back(ledger: Store) -> None:
    assert await ledger.get_cursor("stripe_events") is None

    await ledger.set_cursor("stripe_events", NOW)
    await ledger.set_cursor("stripe_events", NOW - 100)

    assert await ledger.get_cursor("stripe_events") == NOW
    assert await ledger.get_cursor("other") is None


async def test_sent_windows_sum_sent_units_per_customer_and_hour_of_the_event_timestamp(ledger: Store) -> None:
    await sent(ledger, "evt_1", units=10, at=HOUR)
    await sent(ledger, "evt_2", units=5, at=HOUR + HOUR_S - 1)
    await sent(ledger, "evt_3", units=7, at=HOUR + HOUR_S)
    await sent(ledger, "evt_4", customer="cus_B", units=3, at=HOUR)
    await sent(ledger, "evt_OUTSIDE", units=100, at=HOUR + 2 * HOUR_S)
    await ledger.record(claim("evt_PENDING", exact="50", timestamp=HOUR), Rounding.CARRY, NOW)

    windows = await ledger.sent_windows(HOUR, HOUR + 2 * HOUR_S)
    only_b = await ledger.sent_windows(HOUR, HOUR + 2 * HOUR_S, "cus_B")

    assert windows == [
        LedgerWindow("cus_A", HOUR, 15),
        LedgerWindow("cus_A", HOUR + HOUR_S, 7),
        LedgerWindow("cus_B", HOUR, 3),
    ]
    assert only_b == [LedgerWindow("cus_B", HOUR, 3)]


async def test_corrections_are_recorded_once_and_counted_in_their_window(ledger: Store) -> None:
    await sent(ledger, "evt_1", units=10, at=HOUR)
    first = Correction("fix_1", "cus_A", HOUR, 4, HOUR + HOUR_S - 1, recorded_at=NOW)
    later = Correction("fix_2", "cus_C", HOUR, 2, HOUR + HOUR_S - 1, recorded_at=NOW + 1)

    assert await ledger.record_correction(first)
    assert not await ledger.record_correction(first)
    assert await ledger.record_correction(later)

    assert await ledger.sent_windows(HOUR, HOUR + HOUR_S) == [
        LedgerWindow("cus_A", HOUR, 10, corrections=1, corrected_units=4, last_corrected_at=NOW),
        LedgerWindow("cus_C", HOUR, 0, corrections=1, corrected_units=2, last_corrected_at=NOW + 1),
    ]
    assert await ledger.corrections(HOUR, HOUR + HOUR_S) == [first, later]
    assert await ledger.corrections(HOUR + HOUR_S) == []


async def test_entries_the_biller_rejected_count_as_rejected_units_of_their_window(ledger: Store) -> None:
    await sent(ledger, "evt_KEPT", units=10, at=HOUR)
    await sent(ledger, "evt_LOST", units=4, at=HOUR)
    await ledger.reject_sent("evt_test_REPORT", [Rejection("evt_LOST", "code: gone")], NOW)

    assert await ledger.sent_windows(HOUR, HOUR + HOUR_S) == [LedgerWindow("cus_A", HOUR, 10, rejected_units=4)]


async def test_entries_rejected_by_a_report_leave_the_sent_figures_of_stats(ledger: Store) -> None:
    await sent(ledger, "evt_KEPT", units=10)
    await sent(ledger, "evt_LOST", units=4)

    await ledger.reject_sent("evt_test_REPORT", [Rejection("evt_LOST", "code: gone")], NOW)

    stats = await ledger.stats()
    assert (stats.sent, stats.units_sent, stats.parked) == (1, 10, 1)


async def test_windows_follow_rejection_replay_and_resend_of_an_entry(ledger: Store) -> None:
    await sent(ledger, "evt_LOST", units=4, at=HOUR)
    await ledger.record(claim("evt_REFUSED", exact="3", timestamp=HOUR), Rounding.CARRY, NOW)
    await ledger.mark_rejected("evt_REFUSED", "resource_missing: no such customer", NOW)
    await ledger.reject_sent("evt_test_REPORT", [Rejection("evt_LOST", "code: gone")], NOW)
    assert await ledger.sent_windows(HOUR, HOUR + 2 * HOUR_S) == [LedgerWindow("cus_A", HOUR, 0, rejected_units=7)]

    await ledger.requeue("evt_LOST", NOW + 1, billing_customer="cus_B", timestamp=HOUR + HOUR_S)
    assert await ledger.sent_windows(HOUR, HOUR + 2 * HOUR_S) == [LedgerWindow("cus_A", HOUR, 0, rejected_units=3)]

    await ledger.mark_sent("evt_LOST", NOW + 2)
    assert await ledger.sent_windows(HOUR, HOUR + 2 * HOUR_S) == [
        LedgerWindow("cus_A", HOUR, 0, rejected_units=3),
        LedgerWindow("cus_B", HOUR + HOUR_S, 4),
    ]


async def test_entries_parked_too_old_never_reached_the_biller_and_are_not_counted(ledger: Store) -> None:
    await ledger.record(claim("evt_OLD", exact="5", timestamp=HOUR), Rounding.CARRY, NOW)
    await ledger.mark_too_old("evt_OLD", "timestamp too far in the past", NOW)

    assert await ledger.sent_windows(HOUR, HOUR + HOUR_S) == []


async def test_a_batch_marked_sent_counts_in_its_windows_and_in_sent_between(ledger: Store) -> None:
    for event_id, customer in [("evt_1", "cus_A"), ("evt_2", "cus_A"), ("evt_3", "cus_B")]:
        await ledger.record(claim(event_id, exact="2", customer=customer, timestamp=HOUR), Rounding.CARRY, NOW)

    await ledger.mark_sent_many(["evt_1", "evt_2", "evt_3", "evt_1"], NOW)

    assert await ledger.sent_windows(HOUR, HOUR + HOUR_S) == [
        LedgerWindow("cus_A", HOUR, 4),
        LedgerWindow("cus_B", HOUR, 2),
    ]
    assert [e.event_id for e in await ledger.sent_between(NOW, NOW, "cus_A")] == ["evt_1", "evt_2"]
