"""What happens to a signed, parsed event: ignore it, park it, or bill it (docs/design.md, "Responses")."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

import msgspec

from gateway.domain.event import Event
from gateway.domain.ledger import ParkReason
from gateway.domain.units import MAX_COST_PLACES, Rounding, decimal_places, exact_units

DAY_S = 24 * 3600


class UnknownTypes(StrEnum):
    """What becomes of a signed event of a type not in `billable_types` that carries a cost."""

    PARK = "park"
    """Parked `unknown_type`, replayable once the type is listed: new billable spend is never dropped unseen."""
    IGNORE = "ignore"
    """Acknowledged as ignored, and forgotten."""


class BillingPolicy(msgspec.Struct, frozen=True):
    """The billing rules of one gateway. `max_age_s` is the selected biller's window (None: it takes any age)."""

    units_per_usd: int = 100_000
    rounding: Rounding = Rounding.CARRY
    billable_types: frozenset[str] = frozenset({"chat.completion.finished"})
    max_event_usd: Decimal = Decimal(1000)
    max_age_s: int | None = None
    unknown_types: UnknownTypes = UnknownTypes.PARK


class Ignore(msgspec.Struct, frozen=True):
    pass


class Park(msgspec.Struct, frozen=True):
    reason: ParkReason
    message: str


class Bill(msgspec.Struct, frozen=True):
    cost_usd: Decimal
    exact_units: Decimal
    timestamp: int


def assess(event: Event, signed_at: int, now: float, policy: BillingPolicy) -> Ignore | Park | Bill:
    """Decide an event's fate from its content alone (the customer is resolved afterwards)."""
    if event.type not in policy.billable_types:
        # A cost of zero has nothing to lose; is_zero() never signals, even on a signalling NaN.
        if policy.unknown_types is UnknownTypes.PARK and event.cost_usd is not None and not event.cost_usd.is_zero():
            return Park(
                ParkReason.UNKNOWN_TYPE,
                f"event type {event.type!r} carries a cost but is not billable (GATEWAY_BILLABLE_EVENTS);"
                " replay it once the type is listed",
            )
        return Ignore()
    cost = event.cost_usd
    if cost is None:
        return Park(ParkReason.INVALID_PAYLOAD, "data.cost_usd (or data.billable_amount_usd) is missing")
    if not cost.is_finite():
        return Park(ParkReason.INVALID_PAYLOAD, "cost must be a finite number")
    if cost < 0:
        return Park(ParkReason.INVALID_PAYLOAD, "cost must not be negative")
    if cost > policy.max_event_usd:
        return Park(ParkReason.INVALID_PAYLOAD, f"cost is above the per-event limit of {policy.max_event_usd} USD")
    if decimal_places(cost) > MAX_COST_PLACES:
        return Park(ParkReason.INVALID_PAYLOAD, f"cost has more than {MAX_COST_PLACES} decimal places")
    # A biller may refuse timestamps ahead of its clock (Stripe: 5 minutes); the signature already bounds the clock,
    # so a creation time in the future is clamped to now rather than refused.
    timestamp = min(event.created if event.created is not None else signed_at, int(now))
    if past_window(timestamp, now, policy.max_age_s):
        return Park(ParkReason.TOO_OLD, f"event is older than the biller's {window_days(policy.max_age_s)}-day window")
    return Bill(cost_usd=cost, exact_units=exact_units(cost, policy.units_per_usd), timestamp=timestamp)


def past_window(timestamp: int, now: float, max_age_s: int | None) -> bool:
    """Whether an event stamped `timestamp` is older than its biller accepts (None: any age): checked at ingest, and
    again before each send, since an entry held pending (an outage, a revoked key) can outlive the window."""
    return max_age_s is not None and now - timestamp > max_age_s


def window_days(max_age_s: int | None) -> str:
    """A biller's window in days, as messages name it ("35")."""
    return "unlimited" if max_age_s is None else f"{max_age_s / DAY_S:g}"
