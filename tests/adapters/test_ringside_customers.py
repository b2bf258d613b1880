"""Ringside's customer API behind the customer store: looked up once, cached, never guessed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from dependency_injector import providers
from litestar.testing import TestClient

from gateway.adapters.clock import FrozenClock
from gateway.adapters.memory import MemoryCustomers
from gateway.adapters.ringside.customers import RingsideCustomerLookup
from gateway.app.container import build_container
from gateway.app.secret import Secret
from gateway.app.server import create_app
from gateway.domain.errors import StoreUnavailable
from tests.builders import encode, event, settings, signed_headers
from tests.fakes.ringside_server import FAKE_RINGSIDE_KEY, FakeRingside


@pytest.fixture
async def lookup(fake_ringside: FakeRingside) -> AsyncIterator[RingsideCustomerLookup]:
    resolver = RingsideCustomerLookup(MemoryCustomers(), api_key=FAKE_RINGSIDE_KEY, api_base=fake_ringside.url)
    yield resolver
    await resolver.close()


def _customer_calls(ringside: FakeRingside) -> list[Any]:
    return [r for r in ringside.requests if r.path.startswith("/v1/customers/")]


async def test_fetches_and_caches_stripe_id_when_store_does_not_know_customer(
    lookup: RingsideCustomerLookup, fake_ringside: FakeRingside
) -> None:
    fake_ringside.customers["cust_NEW"] = {"id": "cust_NEW", "metadata": {"stripe_customer_id": "cus_FROM_RS"}}

    first = await lookup.get("cust_NEW")
    second = await lookup.get("cust_NEW")

    assert first == second == "cus_FROM_RS"
    assert len(_customer_calls(fake_ringside)) == 1
    assert await lookup.list() == [("cust_NEW", "cus_FROM_RS")]


async def test_asks_nobody_when_store_knows_customer(
    lookup: RingsideCustomerLookup, fake_ringside: FakeRingside
) -> None:
    await lookup.set("cust_KNOWN", "cus_KNOWN")

    assert await lookup.get("cust_KNOWN") == "cus_KNOWN"
    assert _customer_calls(fake_ringside) == []


@pytest.mark.parametrize(
    "customer",
    [None, {"id": "cust_X"}, {"id": "cust_X", "metadata": {}}, {"id": "cust_X", "metadata": {"stripe_customer_id": 7}}],
    ids=["unknown to ringside", "no metadata", "empty metadata", "non-string id"],
)
async def test_resolves_to_none_and_caches_nothing_when_ringside_has_no_stripe_id(
    lookup: RingsideCustomerLookup, fake_ringside: FakeRingside, customer: dict[str, Any] | None
) -> None:
    if customer is not None:
        fake_ringside.customers["cust_X"] = customer

    assert await lookup.get("cust_X") is None
    assert await lookup.list() == []


async def test_raises_store_unavailable_when_ringside_is_unreachable(fake_ringside: FakeRingside) -> None:
    url = fake_ringside.url
    fake_ringside.stop()
    lookup = RingsideCustomerLookup(MemoryCustomers(), api_key=FAKE_RINGSIDE_KEY, api_base=url, timeout_s=1)

    with pytest.raises(StoreUnavailable):
        await lookup.get("cust_ANY")
    await lookup.close()


async def test_raises_store_unavailable_when_api_key_is_refused(fake_ringside: FakeRingside) -> None:
    lookup = RingsideCustomerLookup(MemoryCustomers(), api_key="rs_revoked", api_base=fake_ringside.url)

    with pytest.raises(StoreUnavailable):
        await lookup.get("cust_ANY")
    await lookup.close()


def test_webhook_bills_customer_mapped_only_on_ringside_when_api_key_is_set(
    fake_ringside: FakeRingside, clock: FrozenClock
) -> None:
    fake_ringside.customers["cust_RS"] = {"id": "cust_RS", "metadata": {"stripe_customer_id": "cus_VIA_API"}}
    container = build_container(
        settings(ringside_api_key=Secret(FAKE_RINGSIDE_KEY), ringside_api_base=fake_ringside.url)
    )
    container.clock.override(providers.Object(clock))
    body = encode(event("evt_VIA_API", customer="cust_RS", stripe_customer=None))

    with TestClient(create_app(container, run_dispatcher=False)) as client:
        response = client.post(
            "/webhooks/ringside", content=body, headers=signed_headers(body, timestamp=int(clock.now()))
        )

    assert response.json()["status"] == "accepted"
    assert container.ledger().entries["evt_VIA_API"].billing_customer == "cus_VIA_API"
