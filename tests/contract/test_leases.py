"""The lease contract of the DeliveryQueue port (gateway.domain.ports), run against every ledger adapter.

A customer belongs to one dispatcher at a time: lease_due hands out no entry of a customer with a pending entry
under a live lease, and renew keeps a lease alive while its work runs, and only while it is still live (a lease
that ran out may already be another dispatcher's). A lease that does not hold customers (a batch biller's, with no
per-customer rule) skips only the leased entries themselves. A new adapter joins with one name in `params` below.
"""

from __future__ import annotations

import pytest

from gateway.domain.ports import Ledger
from gateway.domain.units import Rounding
from tests.builders import claim

NOW = 1_800_000_000.0


@pytest.fixture(params=["memory_ledger", "sqlite_ledger", "redis_ledger", "postgres_ledger"])
def ledger(request: pytest.FixtureRequest) -> Ledger:
    store: Ledger = request.getfixturevalue(request.param)
    return store


async def recorded(ledger: Ledger, event_id: str, customer: str, now: float = NOW) -> None:
    result = await ledger.record(claim(event_id, exact="1", customer=customer), Rounding.CARRY, now)
    assert result.created


async def leased_ids(
    ledger: Ledger, now: float, limit: int = 100, lease_s: float = 30.0, *, hold_customers: bool = True
) -> list[str]:
    return [entry.event_id for entry in await ledger.lease_due(now, limit, lease_s, hold_customers=hold_customers)]


# -- one customer, one holder ------------------------------------------------------------------------------------


@pytest.mark.parametrize("first_holds", [True, False], ids=["after_a_lease_holding_it", "after_one_not_holding_it"])
async def test_lease_due_skips_a_customer_while_another_of_its_entries_is_leased(
    ledger: Ledger, first_holds: bool
) -> None:
    await recorded(ledger, "evt_A1", "cus_A")
    # However the entry was leased: a v1 lease holds its customer even against a batch biller's lease.
    assert await leased_ids(ledger, NOW, hold_customers=first_holds) == ["evt_A1"]
    await recorded(ledger, "evt_A2", "cus_A", now=NOW + 1)
    await recorded(ledger, "evt_B1", "cus_B", now=NOW + 1)

    assert await leased_ids(ledger, NOW + 2) == ["evt_B1"]


async def test_lease_due_hands_out_every_due_entry_of_a_free_customer_in_one_call(ledger: Ledger) -> None:
    for index in range(3):
        await recorded(ledger, f"evt_A{index}", "cus_A", now=NOW + index)

    assert await leased_ids(ledger, NOW + 10) == ["evt_A0", "evt_A1", "evt_A2"]


async def test_lease_due_skips_a_customer_when_part_of_its_entries_were_leased_up_to_the_limit(ledger: Ledger) -> None:
    for index in range(4):
        await recorded(ledger, f"evt_A{index}", "cus_A", now=NOW + index)
    await recorded(ledger, "evt_B0", "cus_B", now=NOW + 5)

    assert await leased_ids(ledger, NOW + 10, limit=2) == ["evt_A0", "evt_A1"]
    assert await leased_ids(ledger, NOW + 10, limit=2) == ["evt_B0"]


async def test_lease_due_hands_the_customer_out_again_when_its_leased_entries_are_settled(ledger: Ledger) -> None:
    await recorded(ledger, "evt_SENT", "cus_A")
    await recorded(ledger, "evt_RETRIED", "cus_A", now=NOW + 1)
    await recorded(ledger, "evt_RELEASED", "cus_A", now=NOW + 2)
    await recorded(ledger, "evt_WAITING", "cus_A", now=NOW + 3)
    assert await leased_ids(ledger, NOW + 5, limit=3) == ["evt_SENT", "evt_RETRIED", "evt_RELEASED"]

    await ledger.mark_sent("evt_SENT", NOW + 6)
    await ledger.mark_retry("evt_RETRIED", NOW + 100, "503 from Stripe")
    assert await leased_ids(ledger, NOW + 7) == []
    await ledger.release(["evt_RELEASED"])

    assert await leased_ids(ledger, NOW + 8) == ["evt_RELEASED", "evt_WAITING"]


async def test_lease_due_hands_the_customer_out_again_when_the_lease_runs_out(ledger: Ledger) -> None:
    await recorded(ledger, "evt_A1", "cus_A")
    await ledger.lease_due(NOW, 10, 30.0)
    await recorded(ledger, "evt_A2", "cus_A", now=NOW + 1)

    assert await leased_ids(ledger, NOW + 29.999) == []
    assert await leased_ids(ledger, NOW + 30.0) == ["evt_A1", "evt_A2"]


async def test_a_parked_entry_no_longer_holds_its_customer(ledger: Ledger) -> None:
    await recorded(ledger, "evt_REJECTED", "cus_A")
    await recorded(ledger, "evt_OLD", "cus_B")
    await ledger.lease_due(NOW, 10, 30.0)
    await recorded(ledger, "evt_A2", "cus_A", now=NOW + 1)
    await recorded(ledger, "evt_B2", "cus_B", now=NOW + 1)

    await ledger.mark_rejected("evt_REJECTED", "No such customer", NOW + 2)
    await ledger.mark_too_old("evt_OLD", "older than the biller's window", NOW + 2)

    assert await leased_ids(ledger, NOW + 3) == ["evt_A2", "evt_B2"]


# -- entries, not customers (a batch biller) ------------------------------------------------------------------------


async def test_a_lease_not_holding_customers_takes_the_other_entries_of_a_leased_customer_but_never_a_leased_one(
    ledger: Ledger,
) -> None:
    await recorded(ledger, "evt_A1", "cus_A")
    assert await leased_ids(ledger, NOW, hold_customers=False) == ["evt_A1"]
    await recorded(ledger, "evt_A2", "cus_A", now=NOW + 1)
    await recorded(ledger, "evt_B1", "cus_B", now=NOW + 1)

    assert await leased_ids(ledger, NOW + 2, hold_customers=False) == ["evt_A2", "evt_B1"]
    assert await leased_ids(ledger, NOW + 3, hold_customers=False) == []
    # Once the first lease runs out its entry comes back; the others are still leased.
    assert await leased_ids(ledger, NOW + 30.0, hold_customers=False) == ["evt_A1"]


async def test_a_lease_not_holding_customers_renews_and_settles_like_any_other(ledger: Ledger) -> None:
    for index in range(3):
        await recorded(ledger, f"evt_A{index}", "cus_A", now=NOW + index)
    assert await leased_ids(ledger, NOW + 5, limit=2, hold_customers=False) == ["evt_A0", "evt_A1"]

    assert await ledger.renew(["evt_A0", "evt_A1"], NOW + 20, 30.0) == ["evt_A0", "evt_A1"]
    await ledger.mark_sent("evt_A0", NOW + 21)
    await ledger.release(["evt_A1"])

    assert await leased_ids(ledger, NOW + 22, hold_customers=False) == ["evt_A1", "evt_A2"]
    assert (await ledger.stats()).sent == 1


# -- renew -------------------------------------------------------------------------------------------------------


async def test_renew_keeps_a_live_lease_and_its_customer_past_the_first_deadline(ledger: Ledger) -> None:
    await recorded(ledger, "evt_A1", "cus_A")
    await ledger.lease_due(NOW, 10, 30.0)
    await recorded(ledger, "evt_A2", "cus_A", now=NOW + 1)

    assert await ledger.renew(["evt_A1"], NOW + 20, 30.0) == ["evt_A1"]

    assert await leased_ids(ledger, NOW + 49.999) == []
    assert await leased_ids(ledger, NOW + 50.0) == ["evt_A1", "evt_A2"]


async def test_renew_leaves_alone_a_lease_that_ran_out(ledger: Ledger) -> None:
    await recorded(ledger, "evt_A1", "cus_A")
    await ledger.lease_due(NOW, 10, 30.0)

    assert await ledger.renew(["evt_A1"], NOW + 30.0, 30.0) == []

    assert await leased_ids(ledger, NOW + 31) == ["evt_A1"]


async def test_renew_leaves_alone_settled_released_and_unknown_entries(ledger: Ledger) -> None:
    for event_id in ("evt_SENT", "evt_RETRIED", "evt_RELEASED", "evt_KEPT"):
        await recorded(ledger, event_id, "cus_A")
    await ledger.lease_due(NOW, 10, 30.0)
    await ledger.mark_sent("evt_SENT", NOW + 1)
    await ledger.mark_retry("evt_RETRIED", NOW + 2, "503 from Stripe")
    await ledger.release(["evt_RELEASED"])

    renewed = await ledger.renew(["evt_SENT", "evt_RETRIED", "evt_RELEASED", "evt_KEPT", "evt_UNKNOWN"], NOW + 5, 60.0)

    assert renewed == ["evt_KEPT"]
    assert await ledger.renew([], NOW + 5, 60.0) == []
    # The retried and released entries are not leased again by renew: they stay free once evt_KEPT is settled.
    await ledger.mark_sent("evt_KEPT", NOW + 6)
    assert await leased_ids(ledger, NOW + 7) == ["evt_RELEASED", "evt_RETRIED"]


async def test_renew_changes_nothing_but_the_lease(ledger: Ledger) -> None:
    await recorded(ledger, "evt_A1", "cus_A")
    [before] = await ledger.lease_due(NOW, 10, 30.0)

    await ledger.renew(["evt_A1"], NOW + 10, 30.0)

    assert await ledger.get("evt_A1") == before
    assert (await ledger.stats()).pending == 1
