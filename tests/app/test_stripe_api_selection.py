"""GATEWAY_STRIPE_API: v1 (one meter event per call, the default) or v2_stream (Stripe's meter event stream)."""

from __future__ import annotations

import pytest

from gateway.adapters.stripe.sink import StripeBillingSink
from gateway.adapters.stripe.stream import StripeStreamBillingSink
from gateway.app.container import build_container
from gateway.app.environment import load_settings
from gateway.app.settings_checks import SettingsError
from gateway.domain.ports import BatchBillingSink

ENVIRONMENT = {"RINGSIDE_WEBHOOK_SECRETS": "whsec_test", "GATEWAY_STORE": "memory://", "STRIPE_API_KEY": "sk_test_x"}


def test_stripe_biller_sends_one_event_per_v1_call_by_default() -> None:
    sink = build_container(load_settings(ENVIRONMENT)).billing_sink()

    assert isinstance(sink, StripeBillingSink)
    assert not isinstance(sink, BatchBillingSink)


def test_v2_stream_selects_the_stream_sink_which_takes_batches_of_100() -> None:
    settings = load_settings({**ENVIRONMENT, "GATEWAY_STRIPE_API": "v2_stream"})

    sink = build_container(settings).billing_sink()

    assert isinstance(sink, StripeStreamBillingSink)
    assert isinstance(sink, BatchBillingSink) and sink.max_batch == 100


def test_unknown_stripe_api_is_refused_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="GATEWAY_STRIPE_API"):
        load_settings({**ENVIRONMENT, "GATEWAY_STRIPE_API": "v3"})
