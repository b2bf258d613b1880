"""What a Stripe meter event carries, shared by the v1 sink, the v2 stream sink and `stripe-setup`'s meter."""

from __future__ import annotations

from gateway.domain.errors import BillerRejected
from gateway.domain.ports import MeterEvent

DEFAULT_EVENT_NAME = "ringside_spend"
# The payload keys each meter event carries; the meter `stripe-setup` creates reads the same ones.
CUSTOMER_KEY = "stripe_customer_id"
VALUE_KEY = "value"
# Meter event values are whole numbers of at most 15 significant digits (Stripe changelog 2026-04-22.dahlia).
MAX_VALUE_DIGITS = 15


def meter_value(event: MeterEvent) -> str:
    """The event's value as Stripe takes it (a decimal string); BillerRejected when Stripe could never take it."""
    value = str(event.value)
    if event.value < 0 or len(value.lstrip("0")) > MAX_VALUE_DIGITS:
        raise BillerRejected(f"meter event value {value} is not a whole number of at most 15 digits")
    return value
