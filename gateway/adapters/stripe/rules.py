"""Stripe's limits on a meter event that the gateway keeps before sending one (Stripe docs, meter events API)."""

from __future__ import annotations

import hashlib

# Stripe's meter event `identifier` allows 100 characters; a longer event id maps to a stable digest of itself.
MAX_METER_IDENTIFIER_CHARS = 100
# Stripe accepts meter events up to 35 days old (recording-usage-api); older ones can never be billed there.
MAX_EVENT_AGE_S = 35 * 24 * 3600


def meter_identifier(event_id: str) -> str:
    """Stripe's `identifier` for an event: the id itself, or a stable digest when it is too long for Stripe.

    Idempotent: a digest (67 characters) fits, so applying the rule twice gives the same identifier.
    """
    if len(event_id) <= MAX_METER_IDENTIFIER_CHARS:
        return event_id
    return "rs_" + hashlib.sha256(event_id.encode()).hexdigest()
