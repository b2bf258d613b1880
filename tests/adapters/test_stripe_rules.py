"""Specification of Stripe's rules on a meter event: the identifier that fits Stripe's 100 characters."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.adapters.stripe.rules import MAX_METER_IDENTIFIER_CHARS, meter_identifier
from gateway.domain.event import MAX_EVENT_ID_CHARS

# -- Stripe's meter event identifier ---------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 36, MAX_METER_IDENTIFIER_CHARS], ids=["1", "36", "100"])
def test_meter_identifier_is_the_event_id_when_it_fits_stripes_100_characters(length: int) -> None:
    # Arrange
    event_id = "e" * length

    # Act / Assert
    assert meter_identifier(event_id) == event_id


def test_meter_identifier_is_a_pinned_digest_when_the_event_id_is_longer_than_100_characters() -> None:
    # Arrange
    event_id = "evt_" + "L" * 120

    # Act
    identifier = meter_identifier(event_id)

    # Assert: pinned, because identifiers already sent to Stripe must map the same way after any deploy.
    assert identifier == "rs_0053acb0defbd358995416fc718a19af90410967e7582c25dd0c4e769a31a81a"


def test_meter_identifiers_differ_when_long_event_ids_share_their_first_100_characters() -> None:
    # Arrange
    prefix = "evt_" + "P" * 100

    # Act
    first, second = meter_identifier(prefix + "_A"), meter_identifier(prefix + "_B")

    # Assert: a digest, not a truncation.
    assert first != second


@given(event_id=st.text(st.characters(codec="utf-8"), min_size=1, max_size=MAX_EVENT_ID_CHARS))
def test_meter_identifier_fits_stripe_and_is_stable_when_given_any_event_id(event_id: str) -> None:
    # Act
    identifier = meter_identifier(event_id)

    # Assert
    assert 0 < len(identifier) <= MAX_METER_IDENTIFIER_CHARS
    assert identifier == meter_identifier(event_id)
    if len(event_id) <= MAX_METER_IDENTIFIER_CHARS:
        assert identifier == event_id
