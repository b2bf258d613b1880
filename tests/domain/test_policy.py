"""Specification of `assess`: what a signed, parsed event becomes (docs/design.md, "Event" and "Responses").

Not a billable type: parked `unknown_type` when it carries a cost (unless unknown types are ignored), else ignored.
Billable but not billable as it is: parked, `invalid_payload` or `too_old` (older than the biller's window, given
as `max_age_s`: Stripe's is 35 days). Otherwise: billed, with its exact (unrounded) units and its timestamp.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from gateway.domain.event import Event
from gateway.domain.ledger import ParkReason
from gateway.domain.policy import Bill, BillingPolicy, Ignore, Park, UnknownTypes, assess

NOW = 1_700_000_000
SIGNED_AT = NOW - 5
DAY_S = 24 * 3600
WINDOW_S = 35 * DAY_S
POLICY = BillingPolicy(max_age_s=WINDOW_S)
BILLABLE = "chat.completion.finished"


def event(
    *,
    event_type: str = BILLABLE,
    cost_usd: Decimal | None = Decimal("0.0125"),
    created: int | None = NOW - 60,
) -> Event:
    return Event(
        id="evt_POLICY",
        type=event_type,
        created=created,
        cost_usd=cost_usd,
        ringside_customer="cus_RINGSIDE",
        stripe_customer=None,
    )


# -- ignore ----------------------------------------------------------------------------------------------------


IGNORE_UNKNOWN_TYPES = BillingPolicy(unknown_types=UnknownTypes.IGNORE)


@pytest.mark.parametrize(
    "candidate",
    [
        event(event_type="chat.completion.started"),
        event(event_type="customer.updated", cost_usd=None),
        event(event_type="invoice.created", cost_usd=Decimal("-5")),
        event(event_type="CHAT.COMPLETION.FINISHED"),
    ],
    ids=["other chat event", "no cost", "negative cost", "type differs in case"],
)
def test_event_is_ignored_when_its_type_is_not_billable_and_unknown_types_are_ignored(candidate: Event) -> None:
    # Act
    outcome = assess(candidate, SIGNED_AT, NOW, IGNORE_UNKNOWN_TYPES)

    # Assert: ignored before its content is judged.
    assert outcome == Ignore()


@pytest.mark.parametrize(
    "candidate",
    [event(event_type="customer.updated", cost_usd=None), event(event_type="run.started", cost_usd=Decimal("0.000"))],
    ids=["no cost", "zero cost"],
)
def test_event_is_ignored_when_its_type_is_not_billable_and_it_carries_no_cost(candidate: Event) -> None:
    # Act
    outcome = assess(candidate, SIGNED_AT, NOW, POLICY)

    # Assert: nothing to bill is lost.
    assert outcome == Ignore()


@pytest.mark.parametrize(
    "candidate",
    [
        event(event_type="chat.completion.started"),
        event(event_type="image.generated", cost_usd=Decimal("1E-8")),
        event(event_type="invoice.created", cost_usd=Decimal("-5")),
        event(event_type="run.finished", cost_usd=Decimal("NaN")),
        event(event_type="CHAT.COMPLETION.FINISHED"),
    ],
    ids=["other chat event", "tiny cost", "negative cost", "cost not a number", "type differs in case"],
)
def test_event_is_parked_unknown_type_when_its_type_is_not_billable_and_it_carries_a_cost(candidate: Event) -> None:
    # Act
    outcome = assess(candidate, SIGNED_AT, NOW, POLICY)

    # Assert: kept whole, to be replayed once the type is listed; its cost is judged then.
    assert isinstance(outcome, Park)
    assert outcome.reason is ParkReason.UNKNOWN_TYPE
    assert repr(candidate.type) in outcome.message


def test_configured_types_are_billed_when_the_policy_names_them() -> None:
    # Arrange
    policy = BillingPolicy(billable_types=frozenset({"image.generated"}))

    # Act
    billed = assess(event(event_type="image.generated"), SIGNED_AT, NOW, policy)
    not_listed = assess(event(event_type=BILLABLE), SIGNED_AT, NOW, policy)
    ignored = assess(
        event(event_type=BILLABLE), SIGNED_AT, NOW, msgspec.structs.replace(policy, unknown_types=UnknownTypes.IGNORE)
    )

    # Assert
    assert isinstance(billed, Bill)
    assert isinstance(not_listed, Park) and not_listed.reason is ParkReason.UNKNOWN_TYPE
    assert ignored == Ignore()


# -- park: invalid payload -------------------------------------------------------------------------------------

INVALID_COSTS = {
    "missing": (None, "missing"),
    "negative": (Decimal("-0.01"), "negative"),
    "NaN": (Decimal("NaN"), "finite"),
    "signalling NaN": (Decimal("sNaN"), "finite"),
    "Infinity": (Decimal("Infinity"), "finite"),
    "-Infinity": (Decimal("-Infinity"), "finite"),
    "a cent over the 1000 USD maximum": (Decimal("1000.01"), "limit"),
    "far over the maximum": (Decimal("1E+30"), "limit"),
    "41 decimal places": (Decimal("0." + "0" * 40 + "1"), "decimal places"),
}


@pytest.mark.parametrize(("cost", "fragment"), INVALID_COSTS.values(), ids=INVALID_COSTS.keys())
def test_event_is_parked_as_invalid_payload_when_its_cost_is_not_billable(cost: Decimal | None, fragment: str) -> None:
    # Act
    outcome = assess(event(cost_usd=cost), SIGNED_AT, NOW, POLICY)

    # Assert
    assert isinstance(outcome, Park)
    assert outcome.reason is ParkReason.INVALID_PAYLOAD
    assert fragment in outcome.message


def test_event_is_parked_when_its_cost_exceeds_a_configured_maximum() -> None:
    # Arrange
    policy = BillingPolicy(max_event_usd=Decimal("5"))

    # Act
    outcome = assess(event(cost_usd=Decimal("5.000001")), SIGNED_AT, NOW, policy)

    # Assert
    assert outcome == Park(ParkReason.INVALID_PAYLOAD, "cost is above the per-event limit of 5 USD")


@pytest.mark.parametrize(
    "cost",
    [Decimal("1000"), Decimal("1000.000"), Decimal("0." + "0" * 39 + "1"), Decimal(0)],
    ids=["exactly the maximum", "maximum with trailing zeros", "40 decimal places", "zero"],
)
def test_event_is_billed_when_its_cost_is_on_an_accepted_boundary(cost: Decimal) -> None:
    # Act
    outcome = assess(event(cost_usd=cost), SIGNED_AT, NOW, POLICY)

    # Assert
    assert outcome == Bill(cost_usd=cost, exact_units=cost * 100_000, timestamp=NOW - 60)


# -- park: too old ---------------------------------------------------------------------------------------------


def test_event_is_parked_as_too_old_when_created_more_than_35_days_ago() -> None:
    # Arrange
    created = NOW - 35 * DAY_S - 1

    # Act
    outcome = assess(event(created=created), SIGNED_AT, NOW, POLICY)

    # Assert
    assert isinstance(outcome, Park)
    assert outcome.reason is ParkReason.TOO_OLD
    assert "35-day" in outcome.message


def test_event_is_billed_when_created_exactly_35_days_ago() -> None:
    # Act
    outcome = assess(event(created=NOW - WINDOW_S), SIGNED_AT, NOW, POLICY)

    # Assert
    assert isinstance(outcome, Bill)
    assert outcome.timestamp == NOW - 35 * DAY_S


def test_event_is_parked_as_too_old_when_created_is_absent_and_the_signature_is_older_than_35_days() -> None:
    # Arrange: a replay of a stored delivery, re-assessed long after it was signed.
    signed_at = NOW - 40 * DAY_S

    # Act
    outcome = assess(event(created=None), signed_at, NOW, POLICY)

    # Assert
    assert isinstance(outcome, Park)
    assert outcome.reason is ParkReason.TOO_OLD


def test_event_is_parked_as_too_old_when_created_is_negative() -> None:
    # Act
    outcome = assess(event(created=-1), SIGNED_AT, NOW, POLICY)

    # Assert
    assert isinstance(outcome, Park)
    assert outcome.reason is ParkReason.TOO_OLD


# -- bill ------------------------------------------------------------------------------------------------------


def test_event_is_billed_with_exact_units_when_billable() -> None:
    # Act
    outcome = assess(event(cost_usd=Decimal("0.0000123456789")), SIGNED_AT, NOW, POLICY)

    # Assert: units are not rounded here; the store settles them under the customer's carry.
    assert outcome == Bill(cost_usd=Decimal("0.0000123456789"), exact_units=Decimal("1.23456789"), timestamp=NOW - 60)


def test_event_is_billed_at_the_configured_scale_when_units_per_usd_is_set() -> None:
    # Arrange
    policy = BillingPolicy(units_per_usd=1_000_000)

    # Act
    outcome = assess(event(cost_usd=Decimal("0.0125")), SIGNED_AT, NOW, policy)

    # Assert
    assert isinstance(outcome, Bill)
    assert outcome.exact_units == Decimal(12_500)


def test_timestamp_is_the_signature_time_when_created_is_absent() -> None:
    # Act
    outcome = assess(event(created=None), SIGNED_AT, NOW, POLICY)

    # Assert
    assert isinstance(outcome, Bill)
    assert outcome.timestamp == SIGNED_AT


def test_timestamp_is_clamped_to_now_when_created_is_in_the_future() -> None:
    # Arrange: Stripe refuses meter events more than 5 minutes ahead.
    created = NOW + 3600

    # Act
    outcome = assess(event(created=created), SIGNED_AT, NOW + 0.75, POLICY)

    # Assert
    assert isinstance(outcome, Bill)
    assert outcome.timestamp == NOW


def test_timestamp_is_clamped_to_now_when_created_is_absent_and_the_signature_is_ahead_of_our_clock() -> None:
    # Arrange: within the signature's tolerance, Ringside's clock may run ahead of ours.
    signed_at = NOW + 200

    # Act
    outcome = assess(event(created=None), signed_at, NOW, POLICY)

    # Assert
    assert isinstance(outcome, Bill)
    assert outcome.timestamp == NOW


def test_default_policy_follows_the_contract_when_nothing_is_configured() -> None:
    # Act
    defaults = msgspec.structs.asdict(BillingPolicy())

    # Assert
    assert defaults == {
        "units_per_usd": 100_000,
        "rounding": "carry",
        "billable_types": frozenset({BILLABLE}),
        "max_event_usd": Decimal(1000),
        "max_age_s": None,
        "unknown_types": "park",
    }


def test_event_of_any_age_is_billed_when_the_policy_has_no_window() -> None:
    # Act
    outcome = assess(event(created=NOW - 400 * DAY_S), SIGNED_AT, NOW, BillingPolicy())

    # Assert
    assert isinstance(outcome, Bill)
    assert outcome.timestamp == NOW - 400 * DAY_S


def test_too_old_message_names_the_window_it_was_given() -> None:
    # Act
    outcome = assess(event(created=NOW - 8 * DAY_S), SIGNED_AT, NOW, BillingPolicy(max_age_s=7 * DAY_S))

    # Assert
    assert isinstance(outcome, Park)
    assert outcome.message == "event is older than the biller's 7-day window"
