"""Stripe's signed event notifications: `Stripe-Signature: t=<unix seconds>,v1=<hex>` over the raw body.

Verified by the official SDK's event-notification parsing (`StripeClient.parse_event_notification`: HMAC-SHA256 of
"<t>.<body>" with the destination's `whsec_` secret, Stripe's 300 s tolerance) against every configured secret, so
a secret can be rotated without dropping a delivery. A failure raises the same SignatureError codes as the Ringside
webhook; nothing of the body is trusted before one secret verifies it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import stripe

from gateway.adapters.stripe.events import parse_time
from gateway.domain.errors import (
    InvalidSignature,
    MalformedSignature,
    MissingSignature,
    SignatureError,
    TimestampOutOfTolerance,
)
from gateway.domain.feedback import Notification

HEADER = "Stripe-Signature"
DEFAULT_TOLERANCE_S = 300  # the SDK's and Stripe's default


class StripeNotificationVerifier:
    """Checks a notification's signature against every live secret and returns what it announces. Holds the
    secrets; never prints them. Does no I/O."""

    __slots__ = ("_client", "_secrets", "_tolerance_s")

    def __init__(self, secrets: Sequence[str], *, tolerance_s: int = DEFAULT_TOLERANCE_S) -> None:
        if not secrets:
            raise ValueError("at least one Stripe webhook secret is required")
        self._secrets = tuple(secrets)
        self._tolerance_s = tolerance_s
        # Parsing needs a client; it makes no call, so the key is never used.
        self._client = stripe.StripeClient("sk_unused_for_parsing")

    def __repr__(self) -> str:
        return f"StripeNotificationVerifier(secrets=<{len(self._secrets)} hidden>, tolerance_s={self._tolerance_s})"

    def verify(self, body: bytes, header: str | None) -> Notification:
        """The notification in `body` when some secret verifies `header`; else a SignatureError."""
        if header is None or not header.strip():
            raise MissingSignature(f"{HEADER} header is missing")
        failures: list[SignatureError] = []
        for secret in self._secrets:
            try:
                parsed = self._client.parse_event_notification(body, header, secret, self._tolerance_s)
            except stripe.SignatureVerificationError as exc:
                failures.append(_signature_error(str(exc)))
                continue
            except (ValueError, KeyError, TypeError, AttributeError):
                # Signed, but not a thin event (a snapshot event, say): the handler ignores it by type, answered 200
                # so that Stripe does not retry it for days.
                return _loose_notification(body)
            return Notification(parsed.id, parsed.type, parse_time(parsed.created))
        # A secret whose signature matched but whose timestamp is stale says more than a mismatch does.
        stale = [f for f in failures if isinstance(f, TimestampOutOfTolerance)]
        raise (stale or failures)[0]


def _loose_notification(body: bytes) -> Notification:
    """What a verified body that the SDK does not parse as a thin event says of itself: its id and type if any."""
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    fields = document if isinstance(document, dict) else {}
    event_id, event_type = fields.get("id"), fields.get("type")
    return Notification(
        event_id if isinstance(event_id, str) else "", event_type if isinstance(event_type, str) else "", 0.0
    )


def _signature_error(message: str) -> SignatureError:
    if message.startswith("Unable to extract"):
        return MalformedSignature(f"{HEADER} must look like t=<unix seconds>,v1=<hex>")
    if message.startswith("No signatures found with expected scheme"):
        return MalformedSignature(f"{HEADER} has no v1= field")
    if message.startswith("Timestamp outside the tolerance zone"):
        return TimestampOutOfTolerance()
    return InvalidSignature(f"no v1 signature in {HEADER} matches a configured secret")
