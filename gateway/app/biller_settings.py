"""Each biller's group of settings (`settings.stripe`, `settings.lago`).

Apart from gateway/app/settings.py so that the biller profiles (gateway/app/billers.py) can read a biller's settings
without importing the whole settings tree that is built on them.
"""

from __future__ import annotations

import msgspec

from gateway.app.secret import Secret


class StripeSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The Stripe biller: its key, endpoint, pace, API flavour, meter and portal configuration."""

    api_key: Secret | None = None
    """STRIPE_API_KEY: the Stripe biller's key; without it (and GATEWAY_BILLER unset) meter events go to the local
    ledger biller."""
    api_base: str | None = None
    """STRIPE_API_BASE: another Stripe base URL (a local test server, stripe-mock)."""
    timeout_s: float = 10.0
    """GATEWAY_STRIPE_TIMEOUT_S: per-call timeout towards Stripe."""
    max_rps: float | None = None
    """GATEWAY_STRIPE_MAX_RPS: calls per second to Stripe; default 1000 for live keys, 25 for test keys."""
    api: str = "v1"
    """GATEWAY_STRIPE_API: v1 (one meter event per call, one call in flight per customer) or v2_stream (Stripe's
    high-throughput meter event stream: up to 100 events per call, with a 15-minute session token)."""
    meter_event_name: str = "ringside_spend"
    """GATEWAY_METER_EVENT_NAME: the Stripe meter's event_name."""
    portal_configuration_id: str | None = None
    """PORTAL_CONFIGURATION_ID: a Stripe portal configuration (bpc_...); unset, Stripe's default one is used."""
    webhook_secrets: tuple[Secret, ...] = ()
    """STRIPE_WEBHOOK_SECRET: the signing secret(s) (whsec_...) of the Stripe event destination that posts to
    `POST /webhooks/stripe`, comma-separated; every one is live (rotation). Unset: that route answers 503."""
    events_poll_s: float | None = None
    """GATEWAY_STRIPE_EVENTS_POLL_S: poll Stripe's event list for meter error reports this often (seconds), for
    deployments Stripe cannot reach; unset: no polling."""


class LagoSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The Lago biller: its key, API, billable metric and pace."""

    api_key: Secret | None = None
    """LAGO_API_KEY: the Lago organization's API key. Required with GATEWAY_BILLER=lago."""
    api_url: str = "https://api.getlago.com"
    """LAGO_API_URL: Lago's API origin: https://api.getlago.com (US cloud), https://api.eu.getlago.com (EU cloud), or
    a self-hosted Lago API (e.g. http://localhost:3000)."""
    metric_code: str | None = None
    """LAGO_METRIC_CODE: the `code` of the Lago billable metric the events feed (a sum over LAGO_UNITS_PROPERTY).
    Required with GATEWAY_BILLER=lago."""
    units_property: str = "units"
    """LAGO_UNITS_PROPERTY: the event property carrying the units: the billable metric's `field_name`."""
    timeout_s: float = 10.0
    """GATEWAY_LAGO_TIMEOUT_S: timeout of one event call to Lago, and of one portal request's calls together."""
    max_rps: float = 500.0
    """GATEWAY_LAGO_MAX_RPS: calls per second to Lago; Lago's default limit on event ingestion is 500 requests/s per
    organization (Lago docs, api-reference/rate-limits)."""
