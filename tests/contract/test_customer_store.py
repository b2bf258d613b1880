"""The CustomerStore contract (Ringside customer id -> billing id), run against every adapter.

`ringside_customers` is the store with Ringside's customer API behind its misses; Ringside knows none of these
customers, so it must behave exactly as the store it wraps.

A new adapter joins with one fixture in conftest.py and one name in `params` below.
"""

from __future__ import annotations

import pytest

from gateway.domain.ports import CustomerStore


@pytest.fixture(
    params=["memory_customers", "sqlite_customers", "redis_customers", "postgres_customers", "ringside_customers"]
)
def customers(request: pytest.FixtureRequest) -> CustomerStore:
    store: CustomerStore = request.getfixturevalue(request.param)
    return store


async def test_get_returns_none_when_customer_is_unknown(customers: CustomerStore) -> None:
    assert await customers.get("rs_UNKNOWN") is None


async def test_get_returns_billing_id_when_customer_is_set(customers: CustomerStore) -> None:
    await customers.set("rs_A", "cus_A")

    assert await customers.get("rs_A") == "cus_A"


async def test_set_overwrites_billing_id_when_customer_is_already_mapped(customers: CustomerStore) -> None:
    await customers.set("rs_A", "cus_OLD")

    await customers.set("rs_A", "cus_NEW")

    assert await customers.get("rs_A") == "cus_NEW"
    assert await customers.list() == [("rs_A", "cus_NEW")]


async def test_delete_forgets_customer_and_returns_true_when_customer_is_mapped(customers: CustomerStore) -> None:
    await customers.set("rs_A", "cus_A")
    await customers.set("rs_B", "cus_B")

    assert await customers.delete("rs_A") is True

    assert await customers.get("rs_A") is None
    assert await customers.get("rs_B") == "cus_B"


async def test_delete_returns_false_when_customer_is_unknown(customers: CustomerStore) -> None:
    assert await customers.delete("rs_UNKNOWN") is False


async def test_list_returns_pairs_sorted_by_ringside_id_up_to_limit(customers: CustomerStore) -> None:
    for ringside_id, billing_id in [("rs_C", "cus_3"), ("rs_A", "cus_1"), ("rs_B", "cus_2"), ("rs_é", "cus_4")]:
        await customers.set(ringside_id, billing_id)

    assert await customers.list() == [("rs_A", "cus_1"), ("rs_B", "cus_2"), ("rs_C", "cus_3"), ("rs_é", "cus_4")]
    assert await customers.list(limit=2) == [("rs_A", "cus_1"), ("rs_B", "cus_2")]


async def test_list_is_empty_when_no_customer_is_mapped(customers: CustomerStore) -> None:
    assert await customers.list() == []


async def test_set_many_sets_every_pair_and_overwrites_existing_ones(customers: CustomerStore) -> None:
    await customers.set("rs_A", "cus_OLD")

    await customers.set_many([("rs_A", "cus_A"), ("rs_B", "cus_B"), ("rs_C", "cus_C")])

    assert await customers.list() == [("rs_A", "cus_A"), ("rs_B", "cus_B"), ("rs_C", "cus_C")]


async def test_set_many_keeps_the_last_pair_when_an_id_repeats(customers: CustomerStore) -> None:
    await customers.set_many([("rs_A", "cus_FIRST"), ("rs_A", "cus_LAST")])

    assert await customers.get("rs_A") == "cus_LAST"


async def test_set_many_changes_nothing_when_pairs_are_empty(customers: CustomerStore) -> None:
    await customers.set("rs_A", "cus_A")

    await customers.set_many([])

    assert await customers.list() == [("rs_A", "cus_A")]
