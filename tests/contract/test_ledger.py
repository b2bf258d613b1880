"""The Ledger contract (gateway.domain.ports), run against every ledger adapter.

MemoryLedger is the reference semantics; every durable ledger must pass the same suite. A new adapter joins with
one fixture in conftest.py and one name in `params` below.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from decimal import ROUND_FLOOR, Decimal

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.domain.ledger import CustomerUsage, Entry, LedgerStats, Parked, ParkReason, Recorded, State
from gateway.domain.ports import Ledger
from gateway.domain.units import Rounding
from tests.builders import claim

NOW = 1_800_000_000.0
BILLABLE = "chat.completion.finished"


@pytest.fixture(params=["memory_ledger", "sqlite_ledger", "redis_ledger", "postgres_ledger"])
def ledger(request: pytest.FixtureRequest) -> Ledger:
    store: Ledger = request.getfixturevalue(request.param)
    return store


def parked(
    key: str,
    *,
    reason: ParkReason = ParkReason.UNKNOWN_CUSTOMER,
    parked_at: float = NOW,
    body: bytes = b'{"id":"evt_PARKED","type":"chat.completion.finished","data":{}}',
    message: str = "no Stripe customer is mapped to rs_A",
) -> Parked:
    return Parked(
        key=key,
        reason=reason,
        message=message,
        body=body,
        signed_at=1_799_999_995,
        parked_at=parked_at,
        event_type=BILLABLE,
        ringside_customer="rs_A",
    )


async def record(
    ledger: Ledger,
    event_id: str,
    *,
    exact: str = "1",
    customer: str = "cus_A",
    now: float = NOW,
    rounding: Rounding = Rounding.CARRY,
    replaces: str | None = None,
) -> Recorded:
    return await ledger.record(claim(event_id, exact=exact, customer=customer), rounding, now, replaces=replaces)


async def recorded_entry(
    ledger: Ledger,
    event_id: str,
    *,
    exact: str = "1",
    customer: str = "cus_A",
    now: float = NOW,
    rounding: Rounding = Rounding.CARRY,
) -> Entry:
    """Record a new id and return its entry (the arrange step of most tests)."""
    result = await record(ledger, event_id, exact=exact, customer=customer, now=now, rounding=rounding)
    assert result.created and result.entry is not None
    return result.entry


async def leased_ids(ledger: Ledger, now: float, limit: int = 100, lease_s: float = 30.0) -> list[str]:
    return [entry.event_id for entry in await ledger.lease_due(now, limit, lease_s)]


# -- record -----------------------------------------------------------------------------------------------------


async def test_record_creates_pending_entry_with_settled_units_when_id_is_new(ledger: Ledger) -> None:
    new_claim = claim("evt_NEW", exact="1234.5", cost="0.012345", customer="cus_A", ringside="rs_A")

    result = await ledger.record(new_claim, Rounding.CARRY, NOW)

    expected = Entry(
        event_id="evt_NEW",
        event_type=BILLABLE,
        billing_customer="cus_A",
        ringside_customer="rs_A",
        cost_usd=Decimal("0.012345"),
        units=1234,
        timestamp=1_799_999_990,
        state=State.PENDING,
        created_at=NOW,
        attempts=0,
        next_attempt_at=NOW,
        last_error=None,
        sent_at=None,
    )
    assert result == Recorded(created=True, entry=expected)
    assert await ledger.get("evt_NEW") == expected


async def test_record_keeps_no_ringside_customer_when_claim_has_none(ledger: Ledger) -> None:
    await ledger.record(claim("evt_NO_RINGSIDE", ringside=None), Rounding.CARRY, NOW)

    entry = await ledger.get("evt_NO_RINGSIDE")

    assert entry is not None and entry.ringside_customer is None


async def test_record_returns_existing_entry_and_changes_nothing_when_id_is_already_recorded(
    ledger: Ledger,
) -> None:
    first = await recorded_entry(ledger, "evt_DUPLICATE", exact="0.6")

    again = await record(ledger, "evt_DUPLICATE", exact="5", now=NOW + 10)

    assert again == Recorded(created=False, entry=first)
    assert await ledger.get("evt_DUPLICATE") == first
    # The carry is untouched: 0.6 + 0.4 makes one unit; had the duplicate settled, it would be 5.6 + 0.4 = 6.
    following = await recorded_entry(ledger, "evt_FOLLOWING", exact="0.4")
    assert following.units == 1


async def test_record_returns_current_entry_when_id_was_already_sent(ledger: Ledger) -> None:
    await recorded_entry(ledger, "evt_DUPLICATE")
    await ledger.mark_sent("evt_DUPLICATE", NOW + 1)

    again = await record(ledger, "evt_DUPLICATE", now=NOW + 2)

    assert not again.created
    assert again.entry is not None and again.entry.state is State.SENT


async def test_record_returns_rejected_entry_when_biller_rejected_the_id(ledger: Ledger) -> None:
    await recorded_entry(ledger, "evt_REJECTED")
    await ledger.mark_rejected("evt_REJECTED", "No such customer: 'cus_A'", NOW + 1)

    again = await record(ledger, "evt_REJECTED", now=NOW + 2)

    assert not again.created
    assert again.entry is not None and again.entry.state is State.PARKED


async def test_record_returns_no_entry_and_changes_nothing_when_id_is_parked(ledger: Ledger) -> None:
    original = parked("evt_PARKED")
    await ledger.park(original)

    result = await record(ledger, "evt_PARKED", exact="0.6")

    assert result == Recorded(created=False, entry=None)
    assert await ledger.get("evt_PARKED") is None
    assert await ledger.get_parked("evt_PARKED") == original
    following = await recorded_entry(ledger, "evt_FOLLOWING", exact="0.6")
    assert following.units == 0  # no carry was taken by the refused claim


async def test_record_removes_parked_record_when_it_replaces_the_same_key(ledger: Ledger) -> None:
    await ledger.park(parked("evt_PARKED"))

    result = await record(ledger, "evt_PARKED", exact="7", replaces="evt_PARKED")

    assert result.created and result.entry is not None and result.entry.units == 7
    assert await ledger.get_parked("evt_PARKED") is None
    assert await ledger.get("evt_PARKED") == result.entry
    assert await ledger.list_parked() == []


async def test_record_removes_parked_record_when_it_replaces_another_key(ledger: Ledger) -> None:
    await ledger.park(parked("sha256:0badbody", reason=ParkReason.INVALID_PAYLOAD))

    result = await record(ledger, "evt_FIXED", replaces="sha256:0badbody")

    assert result.created
    assert await ledger.get_parked("sha256:0badbody") is None
    assert await ledger.get("evt_FIXED") == result.entry


async def test_record_is_duplicate_when_id_is_parked_and_replaces_names_another_key(ledger: Ledger) -> None:
    await ledger.park(parked("evt_PARKED"))
    await ledger.park(parked("sha256:0badbody"))

    result = await record(ledger, "evt_PARKED", replaces="sha256:0badbody")

    assert result == Recorded(created=False, entry=None)
    assert await ledger.get_parked("evt_PARKED") is not None
    assert await ledger.get_parked("sha256:0badbody") is not None


async def test_record_keeps_replaced_record_when_id_is_already_an_entry(ledger: Ledger) -> None:
    first = await recorded_entry(ledger, "evt_DUPLICATE")
    await ledger.park(parked("sha256:0badbody"))

    result = await record(ledger, "evt_DUPLICATE", replaces="sha256:0badbody")

    assert result == Recorded(created=False, entry=first)
    assert await ledger.get_parked("sha256:0badbody") is not None


# -- park -------------------------------------------------------------------------------------------------------


async def test_park_claims_key_when_key_is_new(ledger: Ledger) -> None:
    record_ = parked("evt_PARKED")

    assert await ledger.park(record_) is True

    assert await ledger.get_parked("evt_PARKED") == record_
    assert await ledger.get("evt_PARKED") is None


async def test_park_returns_false_when_key_is_an_entry(ledger: Ledger) -> None:
    await recorded_entry(ledger, "evt_RECORDED")

    assert await ledger.park(parked("evt_RECORDED")) is False

    assert await ledger.get_parked("evt_RECORDED") is None


async def test_park_returns_false_and_keeps_first_record_when_key_is_already_parked(ledger: Ledger) -> None:
    first = parked("evt_PARKED", message="first")
    await ledger.park(first)

    assert await ledger.park(parked("evt_PARKED", message="second", parked_at=NOW + 5)) is False

    assert await ledger.get_parked("evt_PARKED") == first


# -- carry and the other rounding rules -------------------------------------------------------------------------

_example_customers = itertools.count()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    exacts=st.lists(
        st.decimals(min_value=0, max_value=100_000, places=7, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=12,
    )
)
async def test_units_sum_to_floor_of_exact_total_when_rounding_is_carry(ledger: Ledger, exacts: list[Decimal]) -> None:
    # The ledger outlives the examples, so each example bills a customer of its own.
    customer = f"cus_EXAMPLE_{next(_example_customers)}"
    units = []
    for index, exact in enumerate(exacts):
        entry = await recorded_entry(ledger, f"evt_{customer}_{index}", exact=str(exact), customer=customer)
        units.append(entry.units)

    assert sum(units) == int(sum(exacts, Decimal(0)).to_integral_value(rounding=ROUND_FLOOR))
    assert all(unit >= 0 for unit in units)


async def test_carry_is_kept_exactly_when_fractions_have_many_digits(ledger: Ledger) -> None:
    # 34 significant digits: a float (or REAL column) would lose the last ones and bill 0 or 2 units.
    first = await recorded_entry(ledger, "evt_1", exact="0.5000000000000000000000000000000001")
    second = await recorded_entry(ledger, "evt_2", exact="0.4999999999999999999999999999999999")
    third = await recorded_entry(ledger, "evt_3", exact="0.9999999999999999999999999999999999")

    assert [first.units, second.units, third.units] == [0, 1, 0]


async def test_carries_are_independent_when_customers_interleave(ledger: Ledger) -> None:
    a1 = await recorded_entry(ledger, "evt_A1", exact="0.6", customer="cus_A")
    b1 = await recorded_entry(ledger, "evt_B1", exact="0.6", customer="cus_B")
    a2 = await recorded_entry(ledger, "evt_A2", exact="0.6", customer="cus_A")
    b2 = await recorded_entry(ledger, "evt_B2", exact="0.3", customer="cus_B")
    b3 = await recorded_entry(ledger, "evt_B3", exact="0.1", customer="cus_B")

    assert [a1.units, a2.units] == [0, 1]
    assert [b1.units, b2.units, b3.units] == [0, 0, 1]


@pytest.mark.parametrize(
    ("rounding", "exact", "units"),
    [
        (Rounding.HALF_EVEN, "2.5", 2),
        (Rounding.HALF_EVEN, "3.5", 4),
        (Rounding.HALF_EVEN, "2.50001", 3),
        (Rounding.UP, "0.00001", 1),
        (Rounding.UP, "2", 2),
        (Rounding.DOWN, "0.99999", 0),
        (Rounding.DOWN, "7", 7),
    ],
)
async def test_units_follow_the_rule_when_rounding_is_not_carry(
    ledger: Ledger, rounding: Rounding, exact: str, units: int
) -> None:
    entry = await recorded_entry(ledger, "evt_ROUNDED", exact=exact, rounding=rounding)

    assert entry.units == units


@pytest.mark.parametrize("rounding", [Rounding.HALF_EVEN, Rounding.UP, Rounding.DOWN])
async def test_carry_is_untouched_when_rounding_is_not_carry(ledger: Ledger, rounding: Rounding) -> None:
    await recorded_entry(ledger, "evt_1", exact="0.5")  # carry 0.5
    await recorded_entry(ledger, "evt_2", exact="1.5", rounding=rounding)

    third = await recorded_entry(ledger, "evt_3", exact="0.5")

    assert third.units == 1  # 0.5 carried over the non-carry event + 0.5


# -- lease_due / release ----------------------------------------------------------------------------------------


async def test_lease_due_returns_only_due_unleased_pending_entries(ledger: Ledger) -> None:
    await recorded_entry(ledger, "evt_DUE")
    await recorded_entry(ledger, "evt_LATER")
    await ledger.mark_retry("evt_LATER", NOW + 60, "503 from Stripe")
    await recorded_entry(ledger, "evt_SENT")
    await ledger.mark_sent("evt_SENT", NOW)
    await recorded_entry(ledger, "evt_REJECTED")
    await ledger.mark_rejected("evt_REJECTED", "No such customer", NOW)
    await recorded_entry(ledger, "evt_FUTURE", now=NOW + 5)

    assert await leased_ids(ledger, NOW + 1) == ["evt_DUE"]
    assert await leased_ids(ledger, NOW + 1) == []


async def test_lease_due_returns_entries_in_due_order_when_several_are_due(ledger: Ledger) -> None:
    await recorded_entry(ledger, "evt_SECOND", now=NOW + 1)
    await recorded_entry(ledger, "evt_FIRST", now=NOW)
    await recorded_entry(ledger, "evt_THIRD", now=NOW + 2)
    await recorded_entry(ledger, "evt_RETRIED", now=NOW - 10)
    await ledger.mark_retry("evt_RETRIED", NOW + 3, "timeout")

    assert await leased_ids(ledger, NOW + 10) == ["evt_FIRST", "evt_SECOND", "evt_THIRD", "evt_RETRIED"]


async def test_lease_due_returns_at_most_limit_entries_when_more_are_due(ledger: Ledger) -> None:
    for index in range(5):  # one customer each: a customer with a leased entry is not leased again
        await recorded_entry(ledger, f"evt_{index}", now=NOW + index, customer=f"cus_{index}")

    assert await leased_ids(ledger, NOW + 10, limit=2) == ["evt_0", "evt_1"]
    assert await leased_ids(ledger, NOW + 10, limit=2) == ["evt_2", "evt_3"]
    assert await leased_ids(ledger, NOW + 10, limit=2) == ["evt_4"]
    assert await leased_ids(ledger, NOW + 10, limit=0) == []


async def test_lease_due_returns_the_entry_as_recorded(ledger: Ledger) -> None:
    entry = await recorded_entry(ledger, "evt_DUE", exact="42")

    assert await ledger.lease_due(NOW, 10, 30.0) == [entry]


async def test_lease_due_skips_leased_entry_until_lease_expires(ledger: Ledger) -> None:
    await recorded_entry(ledger, "evt_LEASED")
    assert await leased_ids(ledger, NOW, lease_s=30.0) == ["evt_LEASED"]

    assert await leased_ids(ledger, NOW + 29.999) == []
    assert await leased_ids(ledger, NOW + 30.0) == ["evt_LEASED"]


async def test_lease_due_returns_entry_again_when_lease_is_released(ledger: Ledger) -> None:
    await recorded_entry(ledger, "evt_RELEASED")
    await recorded_entry(ledger, "evt_KEPT", customer="cus_B")
    await ledger.lease_due(NOW, 10, 30.0)

    await ledger.release(["evt_RELEASED", "evt_UNKNOWN"])

    assert await leased_ids(ledger, NOW + 1) == ["evt_RELEASED"]


async def test_release_changes_nothing_else_when_entry_is_leased(ledger: Ledger) -> None:
    before = await recorded_entry(ledger, "evt_RELEASED")
    await ledger.lease_due(NOW, 10, 30.0)

    await ledger.release(["evt_RELEASED"])
    await ledger.release([])

    assert await ledger.get("evt_RELEASED") == before


async def test_lease_due_returns_entry_again_when_its_retry_is_due(ledger: Ledger) -> None:
    await recorded_entry(ledger, "evt_RETRIED")
    await ledger.lease_due(NOW, 10, 300.0)

    await ledger.mark_retry("evt_RETRIED", NOW + 5, "503 from Stripe")

    assert await leased_ids(ledger, NOW + 4) == []
    leased = await ledger.lease_due(NOW + 5, 10, 30.0)
    assert [(entry.event_id, entry.attempts) for entry in leased] == [("evt_RETRIED", 1)]


async def test_lease_due_never_returns_entry_again_when_it_was_sent(ledger: Ledger) -> None:
    await recorded_entry(ledger, "evt_SENT")
    await ledger.lease_due(NOW, 10, 30.0)

    await ledger.mark_sent("evt_SENT", NOW + 1)

    assert await leased_ids(ledger, NOW + 1_000) == []


# -- mark_sent / mark_retry / mark_rejected ---------------------------------------------------------------------


async def test_mark_sent_moves_entry_to_sent_when_it_is_pending(ledger: Ledger) -> None:
    entry = await recorded_entry(ledger, "evt_SENT", exact="12")

    await ledger.mark_sent("evt_SENT", NOW + 3)

    assert await ledger.get("evt_SENT") == msgspec.structs.replace(entry, state=State.SENT, sent_at=NOW + 3)


async def test_mark_retry_counts_attempt_and_schedules_next_when_entry_is_pending(ledger: Ledger) -> None:
    entry = await recorded_entry(ledger, "evt_RETRIED")

    await ledger.mark_retry("evt_RETRIED", NOW + 2, "503 from Stripe")
    await ledger.mark_retry("evt_RETRIED", NOW + 6, "timeout")

    assert await ledger.get("evt_RETRIED") == msgspec.structs.replace(
        entry, attempts=2, next_attempt_at=NOW + 6, last_error="timeout"
    )


@pytest.mark.parametrize(
    ("mark", "reason", "other"),
    [
        ("mark_rejected", ParkReason.BILLER_REJECTED, ParkReason.TOO_OLD),
        ("mark_too_old", ParkReason.TOO_OLD, ParkReason.BILLER_REJECTED),
    ],
)
async def test_marking_a_pending_entry_rejected_or_too_old_parks_it_with_its_units_and_the_message(
    ledger: Ledger, mark: str, reason: ParkReason, other: ParkReason
) -> None:
    await recorded_entry(ledger, "evt_PARKED", exact="9")
    await ledger.lease_due(NOW, 10, 30.0)
    message = "No such customer: 'cus_A'" if reason is ParkReason.BILLER_REJECTED else "past the 35-day window"

    await getattr(ledger, mark)("evt_PARKED", message, NOW + 4)

    entry = await ledger.get("evt_PARKED")
    assert entry is not None
    assert (entry.state, entry.last_error, entry.units) == (State.PARKED, message, 9)
    record_ = await ledger.get_parked("evt_PARKED")
    assert record_ is not None
    assert (record_.key, record_.reason, record_.message, record_.parked_at) == ("evt_PARKED", reason, message, NOW + 4)
    assert (record_.event_type, record_.ringside_customer, record_.signed_at) == (BILLABLE, "rs_A", entry.timestamp)
    assert msgspec.json.decode(record_.body, type=Entry) == entry
    assert await ledger.list_parked(reason) == [record_]
    assert await ledger.list_parked(other) == []
    assert await ledger.stats() == LedgerStats(0, 0, 1, None, 0, 0)
    assert await leased_ids(ledger, NOW + 3600) == []
    assert await ledger.usage() == []


async def test_record_returns_the_too_old_entry_when_the_id_was_parked_past_the_window(ledger: Ledger) -> None:
    await recorded_entry(ledger, "evt_STALE", exact="9")
    await ledger.mark_too_old("evt_STALE", "past the window", NOW + 1)
    parked_entry = await ledger.get("evt_STALE")

    again = await record(ledger, "evt_STALE", exact="9")

    assert again == Recorded(created=False, entry=parked_entry)


@pytest.mark.parametrize("final", [State.SENT, State.PARKED])
async def test_mark_too_old_changes_nothing_when_entry_is_not_pending(ledger: Ledger, final: State) -> None:
    await recorded_entry(ledger, "evt_DONE")
    if final is State.SENT:
        await ledger.mark_sent("evt_DONE", NOW + 1)
    else:
        await ledger.mark_rejected("evt_DONE", "rejected", NOW + 1)
    entry = await ledger.get("evt_DONE")
    record_ = await ledger.get_parked("evt_DONE")

    await ledger.mark_too_old("evt_DONE", "late", NOW + 2)
    await ledger.mark_too_old("evt_UNKNOWN", "late", NOW + 2)

    assert await ledger.get("evt_DONE") == entry
    assert await ledger.get_parked("evt_DONE") == record_
    assert await ledger.get("evt_UNKNOWN") is None
    assert await ledger.get_parked("evt_UNKNOWN") is None


@pytest.mark.parametrize("final", [State.SENT, State.PARKED])
async def test_marks_change_nothing_when_entry_is_not_pending(ledger: Ledger, final: State) -> None:
    await recorded_entry(ledger, "evt_DONE")
    if final is State.SENT:
        await ledger.mark_sent("evt_DONE", NOW + 1)
    else:
        await ledger.mark_rejected("evt_DONE", "rejected", NOW + 1)
    entry = await ledger.get("evt_DONE")
    record_ = await ledger.get_parked("evt_DONE")

    await ledger.mark_sent("evt_DONE", NOW + 2)
    await ledger.mark_retry("evt_DONE", NOW + 3, "late failure")
    await ledger.mark_rejected("evt_DONE", "late rejection", NOW + 4)

    assert await ledger.get("evt_DONE") == entry
    assert await ledger.get_parked("evt_DONE") == record_


async def test_marks_change_nothing_when_entry_is_unknown(ledger: Ledger) -> None:
    await ledger.mark_sent("evt_UNKNOWN", NOW)
    await ledger.mark_retry("evt_UNKNOWN", NOW + 1, "timeout")
    await ledger.mark_rejected("evt_UNKNOWN", "rejected", NOW)

    assert await ledger.get("evt_UNKNOWN") is None
    assert await ledger.get_parked("evt_UNKNOWN") is None
    assert await ledger.stats() == LedgerStats(0, 0, 0, None, 0, 0)


# -- reads ------------------------------------------------------------------------------------------------------


async def test_get_returns_none_when_id_is_unknown(ledger: Ledger) -> None:
    assert await ledger.get("evt_UNKNOWN") is None
    assert await ledger.get_parked("evt_UNKNOWN") is None


async def test_list_parked_orders_by_parked_at_and_filters_by_reason(ledger: Ledger) -> None:
    late = parked("evt_LATE", parked_at=NOW + 20, reason=ParkReason.TOO_OLD)
    early = parked("evt_EARLY", parked_at=NOW)
    middle = parked("sha256:0badbody", parked_at=NOW + 10, reason=ParkReason.INVALID_PAYLOAD)
    last = parked("evt_LAST", parked_at=NOW + 30)
    for record_ in (late, early, middle, last):
        await ledger.park(record_)

    assert await ledger.list_parked() == [early, middle, late, last]
    assert await ledger.list_parked(limit=2) == [early, middle]
    assert await ledger.list_parked(ParkReason.UNKNOWN_CUSTOMER) == [early, last]
    assert await ledger.list_parked(ParkReason.UNKNOWN_CUSTOMER, limit=1) == [early]
    assert await ledger.list_parked(ParkReason.BILLER_REJECTED) == []


async def test_stats_are_empty_when_ledger_is_empty(ledger: Ledger) -> None:
    assert await ledger.stats() == LedgerStats(
        pending=0, sent=0, parked=0, oldest_pending_at=None, units_sent=0, units_pending=0
    )


async def test_stats_count_states_units_and_oldest_pending(ledger: Ledger) -> None:
    await recorded_entry(ledger, "evt_PENDING_NEW", exact="4", now=NOW + 1)
    await recorded_entry(ledger, "evt_PENDING_OLD", exact="3", now=NOW)
    await recorded_entry(ledger, "evt_SENT", exact="5", now=NOW - 100)
    await ledger.mark_sent("evt_SENT", NOW)
    await recorded_entry(ledger, "evt_REJECTED", exact="7", now=NOW - 50)
    await ledger.mark_rejected("evt_REJECTED", "No such customer", NOW)
    await ledger.park(parked("evt_PARKED"))

    assert await ledger.stats() == LedgerStats(
        pending=2, sent=1, parked=2, oldest_pending_at=NOW, units_sent=5, units_pending=7
    )


async def test_ping_returns_when_store_is_writable(ledger: Ledger) -> None:
    await ledger.ping()  # raises StoreUnavailable otherwise


async def test_cost_round_trips_exactly_when_it_has_many_digits(ledger: Ledger) -> None:
    cost = Decimal("0.1000000000000000055511151231257827")  # the float 0.1, written out in full
    await ledger.record(claim("evt_PRECISE", exact="10000.00000000000555", cost=str(cost)), Rounding.CARRY, NOW)

    entry = await ledger.get("evt_PRECISE")

    assert entry is not None
    assert entry.cost_usd == cost
    assert str(entry.cost_usd) == "0.1000000000000000055511151231257827"
    assert entry.units == 10000


@pytest.mark.parametrize("cost", ["0", "0.00", "1E+2", "1000.000000000000000000000000000000000001"])
async def test_cost_keeps_its_written_form_when_stored(ledger: Ledger, cost: str) -> None:
    await ledger.record(claim("evt_COST", cost=cost), Rounding.CARRY, NOW)

    entry = await ledger.get("evt_COST")

    assert entry is not None and str(entry.cost_usd) == str(Decimal(cost))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b'{"id":"evt_UTF8","data":{"note":"caf\xc3\xa9"}}',
        b"\xff\xfe\x00\x80 not UTF-8 \xc3\x28",
        bytes(range(256)),
    ],
)
async def test_parked_body_round_trips_byte_for_byte(ledger: Ledger, body: bytes) -> None:
    await ledger.park(parked("sha256:body", body=body))

    record_ = await ledger.get_parked("sha256:body")

    assert record_ is not None and record_.body == body
    assert [p.body for p in await ledger.list_parked()] == [body]


# -- concurrency ------------------------------------------------------------------------------------------------


async def test_each_id_is_created_once_when_deliveries_race(ledger: Ledger) -> None:
    event_ids = [f"evt_RACE_{index:02d}" for index in range(50)]
    customer_of = {event_id: f"cus_{index % 5}" for index, event_id in enumerate(event_ids)}

    results = await asyncio.gather(
        *(
            record(ledger, event_id, exact="0.37", customer=customer_of[event_id])
            for _ in range(10)
            for event_id in event_ids
        )
    )

    created = {result.entry.event_id: result.entry for result in results if result.created and result.entry}
    assert sorted(created) == event_ids
    assert sum(result.created for result in results) == 50
    assert all(result.entry == created[result.entry.event_id] for result in results if result.entry)
    units_by_customer: dict[str, int] = defaultdict(int)
    for entry in created.values():
        units_by_customer[entry.billing_customer] += entry.units
    # Ten events of 0.37 units per customer: floor(3.7) = 3 units each, whatever the interleaving.
    assert units_by_customer == {f"cus_{index}": 3 for index in range(5)}
    assert (await ledger.stats()).units_pending == 15


# -- requeue (an operator's replay of a biller-rejected entry) --------------------------------------------------


async def rejected_entry(ledger: Ledger, event_id: str, *, exact: str = "9", customer: str = "cus_A") -> Entry:
    await recorded_entry(ledger, event_id, exact=exact, customer=customer)
    await ledger.lease_due(NOW, 10, 30.0)
    await ledger.mark_retry(event_id, NOW + 1, "503 from Stripe")
    await ledger.mark_rejected(event_id, "No such customer: 'cus_A'", NOW + 2)
    entry = await ledger.get(event_id)
    assert entry is not None and entry.state is State.PARKED
    return entry


async def test_requeue_puts_rejected_entry_back_to_pending_and_removes_its_record(ledger: Ledger) -> None:
    rejected = await rejected_entry(ledger, "evt_REJECTED")

    requeued = await ledger.requeue("evt_REJECTED", NOW + 10)

    expected = msgspec.structs.replace(rejected, state=State.PENDING, attempts=0, next_attempt_at=NOW + 10)
    assert requeued == expected
    assert await ledger.get("evt_REJECTED") == expected
    assert await ledger.get_parked("evt_REJECTED") is None
    assert await leased_ids(ledger, NOW + 10) == ["evt_REJECTED"]


async def test_requeue_bills_another_customer_when_one_is_given(ledger: Ledger) -> None:
    await rejected_entry(ledger, "evt_REJECTED", exact="9", customer="cus_WRONG")

    requeued = await ledger.requeue("evt_REJECTED", NOW + 10, billing_customer="cus_RIGHT")

    assert requeued is not None
    assert (requeued.billing_customer, requeued.units) == ("cus_RIGHT", 9)
    assert await ledger.usage() == [CustomerUsage("cus_RIGHT", events=1, units_sent=0, units_pending=9)]


async def test_requeue_changes_nothing_the_second_time(ledger: Ledger) -> None:
    await rejected_entry(ledger, "evt_REJECTED")
    first = await ledger.requeue("evt_REJECTED", NOW + 10)

    again = await ledger.requeue("evt_REJECTED", NOW + 20, billing_customer="cus_OTHER")

    assert again is None
    assert await ledger.get("evt_REJECTED") == first


async def test_requeue_returns_none_when_entry_is_pending_or_sent(ledger: Ledger) -> None:
    pending = await recorded_entry(ledger, "evt_PENDING")
    await recorded_entry(ledger, "evt_SENT")
    await ledger.mark_sent("evt_SENT", NOW + 1)
    sent = await ledger.get("evt_SENT")

    assert await ledger.requeue("evt_PENDING", NOW + 10) is None
    assert await ledger.requeue("evt_SENT", NOW + 10) is None

    assert await ledger.get("evt_PENDING") == pending
    assert await ledger.get("evt_SENT") == sent


async def test_requeue_returns_none_and_keeps_record_when_it_was_parked_at_ingest(ledger: Ledger) -> None:
    record_ = parked("evt_PARKED", reason=ParkReason.UNKNOWN_CUSTOMER)
    await ledger.park(record_)

    assert await ledger.requeue("evt_PARKED", NOW + 10) is None
    assert await ledger.requeue("evt_UNKNOWN", NOW + 10) is None

    assert await ledger.get_parked("evt_PARKED") == record_
    assert await ledger.get("evt_PARKED") is None


async def test_requeue_requeues_once_when_replays_race(ledger: Ledger) -> None:
    await rejected_entry(ledger, "evt_RACE")

    results = await asyncio.gather(*(ledger.requeue("evt_RACE", NOW + 10) for _ in range(10)))

    assert sum(result is not None for result in results) == 1


async def too_old_entry(ledger: Ledger, event_id: str, *, exact: str = "9") -> Entry:
    await recorded_entry(ledger, event_id, exact=exact)
    await ledger.lease_due(NOW, 10, 30.0)
    await ledger.mark_too_old(event_id, "past the biller's window", NOW + 2)
    entry = await ledger.get(event_id)
    assert entry is not None and entry.state is State.PARKED
    return entry


async def test_requeue_restamps_a_too_old_entry_when_a_timestamp_is_given(ledger: Ledger) -> None:
    stale = await too_old_entry(ledger, "evt_STALE")
    restamped_at = int(NOW) + 10

    requeued = await ledger.requeue("evt_STALE", NOW + 10, timestamp=restamped_at)

    expected = msgspec.structs.replace(
        stale, state=State.PENDING, attempts=0, next_attempt_at=NOW + 10, timestamp=restamped_at
    )
    assert requeued == expected
    assert await ledger.get("evt_STALE") == expected
    assert await ledger.get_parked("evt_STALE") is None
    assert await leased_ids(ledger, NOW + 10) == ["evt_STALE"]
    assert await ledger.usage(since=restamped_at) == [CustomerUsage("cus_A", events=1, units_sent=0, units_pending=9)]


async def test_requeue_keeps_the_timestamp_of_a_rejected_entry_when_none_is_given(ledger: Ledger) -> None:
    rejected = await rejected_entry(ledger, "evt_REJECTED")

    requeued = await ledger.requeue("evt_REJECTED", NOW + 10)

    assert requeued is not None
    assert requeued.timestamp == rejected.timestamp


async def test_requeue_requeues_a_too_old_entry_once_when_replays_race(ledger: Ledger) -> None:
    await too_old_entry(ledger, "evt_RACE")

    results = await asyncio.gather(*(ledger.requeue("evt_RACE", NOW + 10, timestamp=int(NOW) + 10) for _ in range(10)))

    assert sum(result is not None for result in results) == 1
    stats = await ledger.stats()
    assert (stats.pending, stats.parked, stats.units_pending) == (1, 0, 9)


async def test_requeued_entry_can_be_sent_and_then_counts_as_sent(ledger: Ledger) -> None:
    await rejected_entry(ledger, "evt_REJECTED", exact="9")
    await ledger.requeue("evt_REJECTED", NOW + 10)

    await ledger.mark_sent("evt_REJECTED", NOW + 11)

    stats = await ledger.stats()
    assert (stats.pending, stats.sent, stats.parked, stats.units_sent) == (0, 1, 0, 9)


# -- usage (units per customer over a period) -------------------------------------------------------------------


async def recorded_at(ledger: Ledger, event_id: str, *, timestamp: int, exact: str, customer: str) -> None:
    new_claim = msgspec.structs.replace(claim(event_id, exact=exact, customer=customer), timestamp=timestamp)
    result = await ledger.record(new_claim, Rounding.DOWN, NOW)
    assert result.created


async def test_usage_is_empty_when_ledger_is_empty(ledger: Ledger) -> None:
    assert await ledger.usage() == []


async def test_usage_sums_sent_and_pending_units_per_customer_and_skips_parked(ledger: Ledger) -> None:
    await recorded_at(ledger, "evt_A_SENT", timestamp=1000, exact="5", customer="cus_A")
    await ledger.mark_sent("evt_A_SENT", NOW)
    await recorded_at(ledger, "evt_A_PENDING", timestamp=1001, exact="7", customer="cus_A")
    await recorded_at(ledger, "evt_B_SENT", timestamp=1002, exact="11", customer="cus_B")
    await ledger.mark_sent("evt_B_SENT", NOW)
    await recorded_at(ledger, "evt_B_REJECTED", timestamp=1003, exact="13", customer="cus_B")
    await ledger.mark_rejected("evt_B_REJECTED", "No such customer", NOW)
    await ledger.park(parked("evt_PARKED"))

    assert await ledger.usage() == [
        CustomerUsage("cus_A", events=2, units_sent=5, units_pending=7),
        CustomerUsage("cus_B", events=1, units_sent=11, units_pending=0),
    ]


async def test_usage_counts_event_timestamps_in_half_open_period(ledger: Ledger) -> None:
    for timestamp, exact in [(999, "1"), (1000, "2"), (1500, "4"), (1999, "8"), (2000, "16")]:
        await recorded_at(ledger, f"evt_{timestamp}", timestamp=timestamp, exact=exact, customer="cus_A")

    assert await ledger.usage(since=1000, until=2000) == [CustomerUsage("cus_A", 3, 0, 14)]
    assert await ledger.usage(since=1500) == [CustomerUsage("cus_A", 3, 0, 28)]
    assert await ledger.usage(until=1000) == [CustomerUsage("cus_A", 1, 0, 1)]
    assert await ledger.usage(since=3000) == []
