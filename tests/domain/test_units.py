"""Specification of dollars -> integer meter units (docs/design.md, "Units").

`units = cost_usd * units_per_usd` in exact decimal arithmetic; under `carry` each customer's sub-unit remainder
is carried into its next event, so the units billed always equal floor(exact total): nothing invented or lost.
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Iterable
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.units import ZERO, Rounding, decimal_places, exact_units, settle

SCALES = [1, 100, 100_000, 1_000_000]
# The oracle's own arithmetic: wide enough for every cost below, and it refuses to round silently.
ORACLE = decimal.Context(prec=500, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow])

costs = st.integers(min_value=0, max_value=12).flatmap(
    lambda places: st.decimals(min_value=0, max_value=1000, places=places, allow_nan=False, allow_infinity=False)
)
scales = st.sampled_from(SCALES)
carries = st.decimals(min_value=0, max_value=Decimal("0.999999999999"), places=12)


def settle_all(amounts: Iterable[Decimal], scale: int) -> tuple[list[int], Decimal]:
    """One customer's events, settled in order under CARRY from a zero carry."""
    carry = ZERO
    units: list[int] = []
    for cost in amounts:
        billed, carry = settle(exact_units(cost, scale), carry, Rounding.CARRY)
        units.append(billed)
    return units, carry


# -- properties ------------------------------------------------------------------------------------------------


@given(amounts=st.lists(costs, max_size=40), scale=scales)
def test_carry_bills_exactly_the_floor_of_the_exact_total_when_events_accumulate(
    amounts: list[Decimal], scale: int
) -> None:
    # Arrange
    exact_total = ORACLE.multiply(sum(amounts, ZERO), Decimal(scale))

    # Act
    units, carry = settle_all(amounts, scale)

    # Assert: no unit invented, none lost, and the carry is the exact remainder.
    assert sum(units) == math.floor(exact_total)
    assert 0 <= carry < 1
    assert carry == ORACLE.subtract(exact_total, Decimal(sum(units)))


@given(amounts=st.lists(costs, min_size=1, max_size=40), scale=scales)
def test_carry_never_bills_negative_units_when_any_event_is_settled(amounts: list[Decimal], scale: int) -> None:
    # Act
    units, _ = settle_all(amounts, scale)

    # Assert
    assert all(billed >= 0 for billed in units)


@given(amounts=st.lists(costs, min_size=1, max_size=40), scale=scales)
def test_carry_stays_below_one_unit_when_checked_after_every_event(amounts: list[Decimal], scale: int) -> None:
    # Arrange
    carry = ZERO

    for cost in amounts:
        # Act
        _, carry = settle(exact_units(cost, scale), carry, Rounding.CARRY)

        # Assert
        assert 0 <= carry < 1


@pytest.mark.parametrize(
    ("rounding", "mode"),
    [
        (Rounding.HALF_EVEN, decimal.ROUND_HALF_EVEN),
        (Rounding.UP, decimal.ROUND_UP),
        (Rounding.DOWN, decimal.ROUND_DOWN),
    ],
    ids=["half_even", "up", "down"],
)
@given(cost=costs, scale=scales, carry=carries)
def test_per_event_rounding_matches_decimal_quantize_when_carry_is_not_used(
    rounding: Rounding, mode: str, cost: Decimal, scale: int, carry: Decimal
) -> None:
    # Arrange
    exact = ORACLE.multiply(cost, Decimal(scale))
    expected = int(exact.quantize(Decimal(1), rounding=mode, context=decimal.Context(prec=500)))

    # Act
    units, carry_after = settle(exact_units(cost, scale), carry, rounding)

    # Assert: each event stands alone, and the carry is left as it was.
    assert units == expected
    assert units >= 0
    assert carry_after == carry


@given(cost=costs, scale=scales)
def test_exact_units_never_rounds_when_converting_any_cost(cost: Decimal, scale: int) -> None:
    # Act
    exact = exact_units(cost, scale)

    # Assert
    assert exact == ORACLE.multiply(cost, Decimal(scale))
    assert ORACLE.divide(exact, Decimal(scale)) == cost


# -- examples --------------------------------------------------------------------------------------------------


def test_exact_units_keeps_every_digit_when_the_cost_came_from_a_float_literal() -> None:
    # Arrange: the exact binary value of the float 0.1, as a JSON number may carry it.
    cost = Decimal("0.1000000000000000055511151231257827")

    # Act
    exact = exact_units(cost, 100_000)

    # Assert
    assert exact == Decimal("10000.000000000000555111512312578270")


def test_exact_units_raises_rather_than_rounds_when_the_product_exceeds_its_precision() -> None:
    # Arrange: 250 significant digits, far beyond anything the policy lets through.
    cost = Decimal("0." + "1" * 250)

    # Act / Assert
    with pytest.raises(decimal.Inexact):
        exact_units(cost, 100_000)


def test_tutorial_cost_converts_to_whole_units_when_using_the_default_scale() -> None:
    # Act
    units, carry = settle(exact_units(Decimal("0.0125"), 100_000), ZERO, Rounding.CARRY)

    # Assert: one unit is $0.00001.
    assert (units, carry) == (1250, ZERO)


def test_carry_bills_one_unit_on_the_third_event_when_each_is_four_tenths_of_a_unit() -> None:
    # Arrange: $0.000004 is 0.4 units at 100,000 units per dollar.
    amounts = [Decimal("0.000004")] * 3

    # Act
    units, carry = settle_all(amounts, 100_000)

    # Assert
    assert units == [0, 0, 1]
    assert carry == Decimal("0.2")


def test_carry_bills_nothing_when_an_event_is_below_one_unit_and_nothing_was_carried() -> None:
    # Act
    units, carry = settle(Decimal("0.999999"), ZERO, Rounding.CARRY)

    # Assert
    assert (units, carry) == (0, Decimal("0.999999"))


def test_carry_bills_a_unit_when_the_remainder_completes_one() -> None:
    # Act
    units, carry = settle(Decimal("0.25"), Decimal("0.75"), Rounding.CARRY)

    # Assert
    assert (units, carry) == (1, ZERO)


@pytest.mark.parametrize(
    ("exact", "expected"),
    [(Decimal("0.5"), 0), (Decimal("1.5"), 2), (Decimal("2.5"), 2), (Decimal("2.5000001"), 3), (Decimal("7"), 7)],
    ids=["0.5 -> 0", "1.5 -> 2", "2.5 -> 2", "just over a half -> up", "whole"],
)
def test_half_even_rounds_halves_to_the_even_unit_when_settling(exact: Decimal, expected: int) -> None:
    assert settle(exact, ZERO, Rounding.HALF_EVEN) == (expected, ZERO)


def test_up_bills_a_whole_unit_when_any_fraction_remains() -> None:
    assert settle(Decimal("0.0000001"), ZERO, Rounding.UP) == (1, ZERO)


def test_down_drops_the_fraction_when_settling() -> None:
    assert settle(Decimal("0.9999999"), ZERO, Rounding.DOWN) == (0, ZERO)


@pytest.mark.parametrize(
    ("value", "places"),
    [("1", 0), ("1.50", 2), ("0.0125", 4), ("1E+3", 0), ("1E-41", 41), ("1000", 0)],
    ids=["integer", "trailing zero counts", "tutorial cost", "positive exponent", "tiny exponent", "thousand"],
)
def test_decimal_places_counts_digits_after_the_point_when_given_a_decimal(value: str, places: int) -> None:
    assert decimal_places(Decimal(value)) == places
