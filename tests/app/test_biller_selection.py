"""GATEWAY_BILLER: the settings that select a biller and the container wiring each one (the only place that changes).

Also the one rule that follows the biller outside the container: an event's `stripe_customer_id` metadata names a
billing customer only for a biller whose ids are Stripe's; with Lago the customer store alone maps customers.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.adapters.clock import FrozenClock
from gateway.adapters.disabled_portal import DisabledBillingPortal
from gateway.adapters.lago.portal import LagoBillingPortal
from gateway.adapters.lago.sink import LagoBillingSink
from gateway.adapters.memory import MemoryBiller, MemoryCustomers
from gateway.adapters.ringside.customers import RingsideCustomerLookup
from gateway.adapters.stripe.portal import StripeBillingPortal
from gateway.adapters.stripe.sink import StripeBillingSink
from gateway.app.container import build_container
from gateway.app.environment import load_settings
from gateway.app.settings_checks import SettingsError
from gateway.service.ingest import Status
from tests.builders import encode, event, settings

LAGO = {"lago": {"api_key": "lago_key_for_tests", "metric_code": "ringside_units"}}
STRIPE_KEY = {"api_key": "sk_test_x"}


def sink_and_portal(**overrides: Any) -> tuple[object, object]:
    container = build_container(settings(**overrides))
    return container.billing_sink(), container.billing_portal()


def test_without_a_biller_setting_stripe_key_selects_stripe_as_before() -> None:
    sink, portal = sink_and_portal(stripe=STRIPE_KEY)

    assert isinstance(sink, StripeBillingSink)
    assert isinstance(portal, StripeBillingPortal)


def test_without_a_biller_setting_or_stripe_key_the_local_ledger_bills_as_before() -> None:
    sink, portal = sink_and_portal()

    assert isinstance(sink, MemoryBiller)
    assert isinstance(portal, DisabledBillingPortal)


def test_gateway_biller_lago_selects_lagos_sink_and_portal_even_with_a_stripe_key() -> None:
    sink, portal = sink_and_portal(biller="lago", stripe=STRIPE_KEY, **LAGO)

    assert isinstance(sink, LagoBillingSink)
    assert isinstance(portal, LagoBillingPortal)


def test_gateway_biller_ledger_keeps_events_local_even_with_a_stripe_key() -> None:
    sink, portal = sink_and_portal(biller="ledger", stripe=STRIPE_KEY)

    assert isinstance(sink, MemoryBiller)
    assert isinstance(portal, DisabledBillingPortal)


def test_lago_settings_come_from_the_environment_with_the_key_masked() -> None:
    loaded = load_settings(
        {
            "GATEWAY_BILLER": "lago",
            "LAGO_API_KEY": "lago_secret_value",
            "LAGO_API_URL": "https://api.eu.getlago.com",
            "LAGO_METRIC_CODE": "ringside_units",
            "LAGO_UNITS_PROPERTY": "micro_cents",
            "GATEWAY_LAGO_MAX_RPS": "50",
        }
    )

    assert loaded.selected_biller() == "lago"
    assert loaded.lago.api_key is not None and loaded.lago.api_key.reveal() == "lago_secret_value"
    assert "lago_secret_value" not in repr(loaded)
    assert (loaded.lago.api_url, loaded.lago.metric_code, loaded.lago.units_property) == (
        "https://api.eu.getlago.com",
        "ringside_units",
        "micro_cents",
    )
    assert build_container(loaded).dispatcher()._config.max_rps == 50


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"GATEWAY_BILLER": "paddle"}, "GATEWAY_BILLER"),
        ({"GATEWAY_BILLER": "stripe"}, "STRIPE_API_KEY"),
        ({"GATEWAY_BILLER": "lago", "LAGO_METRIC_CODE": "m"}, "LAGO_API_KEY"),
        ({"GATEWAY_BILLER": "lago", "LAGO_API_KEY": "k"}, "LAGO_METRIC_CODE"),
        ({"GATEWAY_BILLER": "lago", "LAGO_API_KEY": "k", "LAGO_METRIC_CODE": "m", "LAGO_API_URL": "x"}, "LAGO_API_URL"),
    ],
)
def test_an_incomplete_biller_setting_is_refused_naming_the_variable(environ: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        load_settings(environ)


async def test_with_lago_an_events_stripe_id_is_ignored_and_the_store_maps_the_customer(clock: FrozenClock) -> None:
    container = build_container(settings(biller="lago", **LAGO))
    await container.customers().set("cust_ringside_1", "sub_LAGO_1")
    body = encode(event("evt_LAGO", customer="cust_ringside_1", stripe_customer="cus_STRIPE1"))

    outcome = await container.ingest().process(body, int(clock.now()), clock.now())

    assert (outcome.status, outcome.customer) == (Status.ACCEPTED, "sub_LAGO_1")


async def test_with_lago_an_event_only_its_stripe_id_maps_is_parked_unknown_customer(clock: FrozenClock) -> None:
    container = build_container(settings(biller="lago", **LAGO))
    body = encode(event("evt_UNMAPPED", customer="cust_nobody", stripe_customer="cus_STRIPE1"))

    outcome = await container.ingest().process(body, int(clock.now()), clock.now())

    assert outcome.status is Status.PARKED
    assert outcome.reason is not None and outcome.reason.value == "unknown_customer"


async def test_with_stripe_the_events_stripe_id_still_wins(clock: FrozenClock) -> None:
    container = build_container(settings(stripe=STRIPE_KEY))
    await container.customers().set("cust_ringside_1", "cus_FROM_STORE")
    body = encode(event("evt_STRIPE", customer="cust_ringside_1", stripe_customer="cus_ON_EVENT"))

    outcome = await container.ingest().process(body, int(clock.now()), clock.now())

    assert outcome.customer == "cus_ON_EVENT"


def test_ringsides_customer_api_maps_customers_only_for_a_biller_that_takes_stripe_ids() -> None:
    with_stripe = build_container(settings(stripe=STRIPE_KEY, ringside_api_key="rs_key"))
    with_lago = build_container(settings(biller="lago", ringside_api_key="rs_key", **LAGO))

    assert isinstance(with_stripe.customer_resolver(), RingsideCustomerLookup)
    # Its customers' metadata holds Stripe ids, which name no Lago subscription: the store alone maps them.
    assert isinstance(with_lago.customer_resolver(), MemoryCustomers)
