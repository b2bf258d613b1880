"""Each biller adapter built from its settings group (gateway/app/biller_settings.py), for the container's selectors.

The settings are checked by load_settings before any of these runs, so a required key is present here.
"""

from __future__ import annotations

from typing import Any

from gateway.adapters.lago.portal import LagoBillingPortal
from gateway.adapters.lago.sink import LagoBillingSink
from gateway.adapters.stripe.events import StripeReports
from gateway.adapters.stripe.notifications import StripeNotificationVerifier
from gateway.adapters.stripe.portal import StripeBillingPortal
from gateway.adapters.stripe.sink import StripeBillingSink
from gateway.adapters.stripe.stream import StripeStreamBillingSink
from gateway.adapters.stripe.summaries import StripeMeterTotals
from gateway.app.settings import Settings


def stripe_sink(settings: Settings) -> StripeBillingSink:
    return StripeBillingSink(**_meter_sink_options(settings))


def stripe_stream_sink(settings: Settings) -> StripeStreamBillingSink:
    return StripeStreamBillingSink(**_meter_sink_options(settings))


def _meter_sink_options(settings: Settings) -> dict[str, Any]:
    """What both Stripe meter event sinks (v1 and the v2 stream) are built from."""
    stripe = settings.stripe
    return {
        "api_key": _stripe_key(settings),
        "event_name": stripe.meter_event_name,
        "api_base": stripe.api_base,
        "timeout_s": stripe.timeout_s,
    }


def stripe_reports(settings: Settings) -> StripeReports:
    stripe = settings.stripe
    return StripeReports(_stripe_key(settings), api_base=stripe.api_base, timeout_s=stripe.timeout_s)


def stripe_totals(settings: Settings) -> StripeMeterTotals:
    stripe = settings.stripe
    return StripeMeterTotals(
        _stripe_key(settings),
        event_name=stripe.meter_event_name,
        api_base=stripe.api_base,
        timeout_s=stripe.timeout_s,
    )


def stripe_verifier(settings: Settings) -> StripeNotificationVerifier | None:
    """None when no STRIPE_WEBHOOK_SECRET is set: `POST /webhooks/stripe` then answers 503 (not configured)."""
    secrets_ = [s.reveal() for s in settings.stripe.webhook_secrets]
    return StripeNotificationVerifier(secrets_) if secrets_ else None


def lago_sink(settings: Settings) -> LagoBillingSink:
    lago = settings.lago
    assert lago.api_key is not None and lago.metric_code is not None  # checked by load_settings
    return LagoBillingSink(
        api_key=lago.api_key.reveal(),
        metric_code=lago.metric_code,
        api_url=lago.api_url,
        units_property=lago.units_property,
        timeout_s=lago.timeout_s,
    )


def lago_portal(settings: Settings) -> LagoBillingPortal:
    lago = settings.lago
    assert lago.api_key is not None
    return LagoBillingPortal(api_key=lago.api_key.reveal(), api_url=lago.api_url, timeout_s=lago.timeout_s)


def stripe_portal(settings: Settings) -> StripeBillingPortal:
    stripe = settings.stripe
    return StripeBillingPortal(
        api_key=_stripe_key(settings),
        api_base=stripe.api_base,
        timeout_s=stripe.timeout_s,
        configuration_id=stripe.portal_configuration_id,
    )


def _stripe_key(settings: Settings) -> str:
    key = settings.stripe.api_key
    assert key is not None  # checked by load_settings for the Stripe biller
    return key.reveal()
