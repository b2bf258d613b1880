"""Specification of the biller profiles: what each biller allows, as the gateway wires and checks it."""

from __future__ import annotations

import pytest

from gateway.adapters.memory import MemoryBiller
from gateway.app.billers import Biller, profile
from gateway.app.container import build_container
from gateway.app.customer_file import check_billing_id
from tests.builders import settings
from tests.service.billers import record

LONG_ID = "evt_" + "L" * 120
# Stripe's digest of LONG_ID (pinned in tests/adapters/test_stripe_rules.py).
LONG_ID_DIGEST = "rs_0053acb0defbd358995416fc718a19af90410967e7582c25dd0c4e769a31a81a"
LAGO = {"biller": "lago", "lago": {"api_key": "lago_key_for_tests", "metric_code": "ringside_units"}}
DAY_S = 24 * 3600


@pytest.mark.parametrize("biller", list(Biller))
def test_every_biller_maps_a_long_event_id_to_stripes_digest_as_before(biller: Biller) -> None:
    # Lago's transaction ids and the ledger biller's identifiers were made by this rule: changing it resends events.
    assert profile(biller).meter_identifier(LONG_ID) == LONG_ID_DIGEST
    assert profile(biller).meter_identifier("evt_SHORT") == "evt_SHORT"


@pytest.mark.parametrize(
    "overrides",
    [{"stripe": {"api_key": "sk_test_x"}}, LAGO, {}],
    ids=["stripe", "lago", "ledger"],
)
def test_the_policy_parks_events_older_than_35_days_whatever_the_biller(overrides: dict[str, object]) -> None:
    assert settings(**overrides).policy().max_age_s == 35 * DAY_S


@pytest.mark.parametrize(("biller", "accepted"), [(Biller.STRIPE, False), (Biller.LAGO, True), (Biller.LEDGER, False)])
def test_a_subscription_id_is_a_billing_id_only_for_lago(biller: Biller, accepted: bool) -> None:
    if accepted:
        assert check_billing_id(" sub_pro_42 ", biller) == "sub_pro_42"
    else:
        with pytest.raises(ValueError, match="cus_"):
            check_billing_id("sub_pro_42", biller)


@pytest.mark.parametrize("biller", list(Biller))
def test_a_billing_id_with_a_space_is_refused_by_every_biller(biller: Biller) -> None:
    with pytest.raises(ValueError):
        check_billing_id("cus_A B", biller)


@pytest.mark.parametrize(
    ("overrides", "rps"),
    [
        ({"stripe": {"api_key": "sk_test_x"}}, 25.0),
        ({"stripe": {"api_key": "sk_live_x"}}, 1000.0),
        ({"stripe": {"api_key": "sk_live_x", "max_rps": 7}}, 7.0),
        (LAGO, 500.0),
        ({}, 10_000.0),
    ],
    ids=["stripe-test", "stripe-live", "stripe-set", "lago", "ledger"],
)
def test_the_dispatcher_is_paced_to_the_billers_rate_limit(overrides: dict[str, object], rps: float) -> None:
    assert build_container(settings(**overrides)).dispatcher()._config.max_rps == rps


@pytest.mark.parametrize(
    ("overrides", "remote"), [({"stripe": {"api_key": "sk_test_x"}}, True), (LAGO, True), ({}, False)]
)
def test_only_the_ledger_biller_keeps_meter_events_local(overrides: dict[str, object], remote: bool) -> None:
    assert settings(**overrides).biller_profile().remote is remote


async def test_the_container_sends_the_ledger_biller_stripes_identifier_for_a_long_event_id() -> None:
    container = build_container(settings())
    await record(container.ledger(), LONG_ID, container.clock().now())

    await container.dispatcher().run_once()

    sink = container.billing_sink()
    assert isinstance(sink, MemoryBiller)
    assert list(sink.events) == [LONG_ID_DIGEST]
