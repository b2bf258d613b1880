"""`gateway stripe-setup`: the meter, product and metered price, found or created, against the fake Stripe."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from gateway.adapters.stripe.price_plan import unit_amount_decimal
from gateway.domain.errors import SetupError
from tests.app.cli_runner import cli_env, gateway, json_out, sqlite_store
from tests.fakes.stripe_server import FAKE_API_KEY, FakeStripe


def stripe_env(fake_stripe: FakeStripe, tmp_path: Path, **values: str) -> dict[str, str | None]:
    defaults = {
        "STRIPE_API_KEY": FAKE_API_KEY,
        "STRIPE_API_BASE": fake_stripe.url,
        "GATEWAY_STORE": sqlite_store(tmp_path / "gateway.db"),
    }
    return cli_env(**{**defaults, **values})


def test_stripe_setup_creates_meter_product_and_metered_price_when_none_exist(
    fake_stripe: FakeStripe, tmp_path: Path
) -> None:
    result = gateway("stripe-setup", "--markup", "1.3", env=stripe_env(fake_stripe, tmp_path))

    assert result.exit_code == 0, result.output
    [meter], [product], [price] = fake_stripe.meters, fake_stripe.products, fake_stripe.prices
    assert meter["event_name"] == "ringside_spend"
    assert meter["default_aggregation"] == {"formula": "sum"}
    assert meter["customer_mapping"] == {"type": "by_id", "event_payload_key": "stripe_customer_id"}
    assert meter["value_settings"] == {"event_payload_key": "value"}
    assert price["product"] == product["id"]
    assert price["unit_amount_decimal"] == "0.0013"
    assert price["billing_scheme"] == "per_unit"
    assert price["currency"] == "usd"
    assert price["recurring"]["meter"] == meter["id"]
    assert (price["recurring"]["usage_type"], price["recurring"]["interval"]) == ("metered", "month")
    assert fake_stripe.invalid_requests == []
    assert "GATEWAY_METER_EVENT_NAME=ringside_spend" in result.stdout
    assert "GATEWAY_UNITS_PER_USD=100000" in result.stdout
    assert price["id"] in result.stdout


def test_stripe_setup_creates_nothing_and_says_so_when_run_twice(fake_stripe: FakeStripe, tmp_path: Path) -> None:
    env = stripe_env(fake_stripe, tmp_path)
    first = json_out(gateway("stripe-setup", "--markup", "1.3", "--json", env=env))

    again = gateway("stripe-setup", "--markup", "1.3", env=env)

    assert again.exit_code == 0, again.output
    assert "Nothing created" in again.stdout
    assert (len(fake_stripe.meters), len(fake_stripe.products), len(fake_stripe.prices)) == (1, 1, 1)
    second = json_out(gateway("stripe-setup", "--markup", "1.3", "--json", env=env))
    assert [second[kind]["action"] for kind in ("meter", "product", "price")] == ["found", "found", "found"]
    assert [second[kind]["id"] for kind in ("meter", "product", "price")] == [
        first[kind]["id"] for kind in ("meter", "product", "price")
    ]
    assert [first[kind]["action"] for kind in ("meter", "product", "price")] == ["created", "created", "created"]
    assert fake_stripe.invalid_requests == []


def test_stripe_setup_creates_nothing_when_dry_run(fake_stripe: FakeStripe, tmp_path: Path) -> None:
    result = json_out(gateway("stripe-setup", "--dry-run", "--json", env=stripe_env(fake_stripe, tmp_path)))

    assert (fake_stripe.meters, fake_stripe.products, fake_stripe.prices) == ([], [], [])
    assert [result[kind]["action"] for kind in ("meter", "product", "price")] == ["would_create"] * 3
    assert [r.method for r in fake_stripe.requests] == ["GET", "GET", "GET"]


def test_stripe_setup_finds_meter_created_by_hand_when_it_fits(fake_stripe: FakeStripe, tmp_path: Path) -> None:
    env = stripe_env(fake_stripe, tmp_path, GATEWAY_METER_EVENT_NAME="acme_spend")
    gateway("stripe-setup", "--dry-run", env=env)  # nothing yet
    json_out(gateway("stripe-setup", "--json", env=env))
    fake_stripe.products.clear()
    fake_stripe.prices.clear()

    result = json_out(gateway("stripe-setup", "--json", env=env))

    assert result["meter"]["action"] == "found"
    assert len(fake_stripe.meters) == 1
    assert fake_stripe.meters[0]["event_name"] == "acme_spend"


def test_stripe_setup_refuses_meter_that_reads_other_payload_keys(fake_stripe: FakeStripe, tmp_path: Path) -> None:
    env = stripe_env(fake_stripe, tmp_path)
    json_out(gateway("stripe-setup", "--json", env=env))
    fake_stripe.meters[0]["customer_mapping"] = {"type": "by_id", "event_payload_key": "customer"}

    result = gateway("stripe-setup", env=env)

    assert result.exit_code == 1
    assert "does not fit the gateway" in result.stderr
    assert "'customer'" in result.stderr


def test_stripe_setup_refuses_to_change_price_without_replace_price(fake_stripe: FakeStripe, tmp_path: Path) -> None:
    env = stripe_env(fake_stripe, tmp_path)
    json_out(gateway("stripe-setup", "--markup", "1.3", "--json", env=env))

    result = gateway("stripe-setup", "--markup", "1.5", env=env)

    assert result.exit_code == 1
    assert "0.0013 cents per unit, not 0.0015" in result.stderr
    assert "--replace-price" in result.stderr
    assert len(fake_stripe.prices) == 1


def test_stripe_setup_moves_lookup_key_to_new_price_when_replace_price(fake_stripe: FakeStripe, tmp_path: Path) -> None:
    env = stripe_env(fake_stripe, tmp_path)
    first = json_out(gateway("stripe-setup", "--markup", "1.3", "--json", env=env))

    replaced = json_out(gateway("stripe-setup", "--markup", "1.5", "--replace-price", "--json", env=env))

    assert replaced["price"]["action"] == "replaced"
    old, new = fake_stripe.prices
    assert (old["id"], old["lookup_key"]) == (first["price"]["id"], None)
    assert (new["id"], new["unit_amount_decimal"]) == (replaced["price"]["id"], "0.0015")
    assert new["lookup_key"] == first["lookup_key"]
    assert (len(fake_stripe.meters), len(fake_stripe.products)) == (1, 1)


def test_stripe_setup_fails_with_one_line_when_api_key_is_missing(tmp_path: Path) -> None:
    result = gateway("stripe-setup", env=cli_env(GATEWAY_STORE=sqlite_store(tmp_path / "gateway.db")))

    assert result.exit_code == 1
    assert "STRIPE_API_KEY is not set" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_stripe_setup_fails_with_one_line_when_stripe_refuses_the_key(fake_stripe: FakeStripe, tmp_path: Path) -> None:
    env = stripe_env(fake_stripe, tmp_path, STRIPE_API_KEY="sk_test_wrong_key_1234")

    result = gateway("stripe-setup", env=env)

    assert result.exit_code == 1
    assert "Stripe refused STRIPE_API_KEY" in result.stderr
    assert "sk_test_wrong_key_1234" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_stripe_setup_prices_at_the_configured_scale(fake_stripe: FakeStripe, tmp_path: Path) -> None:
    env = stripe_env(fake_stripe, tmp_path, GATEWAY_UNITS_PER_USD="1000000", GATEWAY_MAX_EVENT_USD="100")

    json_out(gateway("stripe-setup", "--markup", "1.25", "--currency", "EUR", "--json", env=env))

    [price] = fake_stripe.prices
    assert (price["unit_amount_decimal"], price["currency"]) == ("0.000125", "eur")


# -- the price arithmetic ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("units_per_usd", "markup", "cents"),
    [
        (100_000, "1", "0.001"),
        (100_000, "1.3", "0.0013"),
        (100_000, "1.333", "0.001333"),
        (1_000_000, "1.25", "0.000125"),
        (1_000, "2.5", "0.25"),
        (100, "1", "1"),
        (1, "1", "100"),
        (1, "1.5", "150"),
        (8, "1", "12.5"),
        (10**12, "1", "0.0000000001"),
        (10**14, "1", "0.000000000001"),
    ],
)
def test_unit_amount_is_exact_cents_per_unit(units_per_usd: int, markup: str, cents: str) -> None:
    amount = unit_amount_decimal(units_per_usd, Decimal(markup))

    assert format(amount, "f") == cents
    assert amount * units_per_usd == Decimal(100) * Decimal(markup)


@pytest.mark.parametrize(
    ("units_per_usd", "markup"),
    [
        (3, "1"),  # 33.333... cents: no exact decimal
        (100_000, "1.23456789012"),  # 14 places
        (10**15, "1"),  # 13 places
        (7, "1.3"),
    ],
)
def test_unit_amount_is_refused_when_it_needs_more_than_twelve_places(units_per_usd: int, markup: str) -> None:
    with pytest.raises(SetupError, match="at most 12"):
        unit_amount_decimal(units_per_usd, Decimal(markup))


@pytest.mark.parametrize("markup", ["0", "-1.3", "NaN", "Infinity"])
def test_unit_amount_is_refused_when_markup_is_not_positive(markup: str) -> None:
    with pytest.raises(SetupError, match="positive"):
        unit_amount_decimal(100_000, Decimal(markup))


def test_stripe_setup_refuses_unpriceable_scale_and_creates_nothing(fake_stripe: FakeStripe, tmp_path: Path) -> None:
    result = gateway("stripe-setup", env=stripe_env(fake_stripe, tmp_path, GATEWAY_UNITS_PER_USD="3"))

    assert result.exit_code == 1
    assert "at most 12 places" in result.stderr
    assert fake_stripe.requests == []
