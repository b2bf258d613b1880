"""The metered price `stripe-setup` makes: one meter unit's price in cents, exact to Stripe's 12 decimal places."""

from __future__ import annotations

import decimal
from decimal import Decimal

import msgspec

from gateway.domain.errors import SetupError

# Stripe: `unit_amount_decimal` is "a decimal value in cents ... with at most 12 decimal places" (OpenAPI excerpt).
MAX_PRICE_PLACES = 12

_EXACT = decimal.Context(prec=100, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.DivisionByZero])


def unit_amount_decimal(units_per_usd: int, markup: Decimal) -> Decimal:
    """The price of one meter unit in cents: 100 cents x markup / units per dollar, exactly.

    At 100,000 units per USD and markup 1.3, one unit costs 0.0013 cents. Raises SetupError when the result is not
    a decimal with at most 12 places (Stripe's limit), rather than rounding: a rounded price would bill every
    customer a little more or less than the markup says, on every unit.
    """
    if not markup.is_finite() or markup <= 0:
        raise SetupError(f"the markup must be a positive number, not {markup}")
    if units_per_usd <= 0:
        raise SetupError("GATEWAY_UNITS_PER_USD must be a positive integer")
    try:
        cents = _EXACT.divide(_EXACT.multiply(Decimal(100), markup), Decimal(units_per_usd))
    except decimal.Inexact:
        cents = None
    places = None if cents is None else _places(cents)
    if cents is None or places is None or places > MAX_PRICE_PLACES:
        raise SetupError(
            f"100 cents x markup {markup} / {units_per_usd} units per USD is not a decimal with at most "
            f"{MAX_PRICE_PLACES} places (Stripe's limit for unit_amount_decimal); pick GATEWAY_UNITS_PER_USD and "
            "--markup so that it is (a power of ten for the units works with any markup of a few decimals)"
        )
    return cents.normalize() if places > 0 else cents.quantize(Decimal(1))


def _places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def plain(value: Decimal) -> str:
    """A decimal without exponent: Stripe reads "0.0013", and a person reads it better than "1.3E-3"."""
    return format(value, "f")


class PricePlan(msgspec.Struct, frozen=True):
    """What `stripe-setup` makes sure exists."""

    event_name: str
    currency: str
    units_per_usd: int
    markup: Decimal
    unit_amount_decimal: Decimal

    @property
    def lookup_key(self) -> str:
        return f"ringside_gateway_{self.event_name}_{self.currency}"


def plan_price(event_name: str, currency: str, units_per_usd: int, markup: Decimal) -> PricePlan:
    currency = currency.strip().lower()
    if len(currency) != 3 or not currency.isascii() or not currency.isalpha():
        raise SetupError(f"--currency must be a three-letter ISO code such as usd, not {currency!r}")
    return PricePlan(event_name, currency, units_per_usd, markup, unit_amount_decimal(units_per_usd, markup))
