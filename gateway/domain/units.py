"""Dollars to integer meter units, exactly (docs/design.md, "Units").

`exact = cost_usd * units_per_usd` is computed in exact decimal arithmetic. Meter values are integers, so the
fraction is settled by a rounding rule. Under `carry` each customer's sub-unit remainder is carried into its next
event, so the units billed to a customer always equal floor(its exact total): no spend is lost or invented.
"""

from __future__ import annotations

import decimal
from decimal import Decimal
from enum import StrEnum

# Enough digits for any cost we accept (bounded by MAX_COST_PLACES and max_event_usd) plus any carry;
# Inexact is trapped so that a silent rounding can never happen.
_EXACT = decimal.Context(prec=200, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow])
# A cost with more decimal places than this is refused as invalid rather than rounded.
MAX_COST_PLACES = 40
ZERO = Decimal(0)


class Rounding(StrEnum):
    CARRY = "carry"
    HALF_EVEN = "half_even"
    UP = "up"
    DOWN = "down"


_QUANTIZE = {
    Rounding.HALF_EVEN: decimal.ROUND_HALF_EVEN,
    Rounding.UP: decimal.ROUND_CEILING,
    Rounding.DOWN: decimal.ROUND_FLOOR,
}


def exact_units(cost_usd: Decimal, units_per_usd: int) -> Decimal:
    """The cost in (fractional) meter units, with no rounding at all."""
    return _EXACT.multiply(cost_usd, Decimal(units_per_usd))


def settle(exact: Decimal, carry: Decimal, rounding: Rounding) -> tuple[int, Decimal]:
    """Whole units to bill for `exact`, and the customer's carry afterwards.

    Under CARRY: units = floor(carry + exact), new carry = the remainder in [0, 1). Other rules leave carry alone.
    """
    if rounding is Rounding.CARRY:
        total = _EXACT.add(carry, exact)
        units = int(total.to_integral_value(rounding=decimal.ROUND_FLOOR))
        return units, _EXACT.subtract(total, Decimal(units))
    return int(exact.to_integral_value(rounding=_QUANTIZE[rounding])), carry


def decimal_places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0
