"""The billers meter events can go to, and one profile per biller: everything that differs between them.

The container wires adapters by these profiles, the settings validate by them, and the customer file checks its
billing ids with them; nothing else compares biller names.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from gateway.adapters.stripe import rules as stripe_rules
from gateway.app.biller_settings import LagoSettings, StripeSettings


class BillerSettings(Protocol):
    """What a profile reads of the settings: each biller's own group."""

    @property
    def stripe(self) -> StripeSettings: ...

    @property
    def lago(self) -> LagoSettings: ...


MAX_ID_CHARS = 255
# Stripe object ids are a prefix and an alphanumeric tail; `_` is allowed too (test fixtures, some migrations).
_STRIPE_CUSTOMER = re.compile(r"^cus_[A-Za-z0-9_]+$")
# The local ledger biller is a table insert: its pace is the store's, not a remote limit.
_LEDGER_MAX_RPS = 10_000.0


class Biller(StrEnum):
    """GATEWAY_BILLER's values."""

    STRIPE = "stripe"
    LAGO = "lago"
    LEDGER = "ledger"


@dataclass(frozen=True, slots=True)
class BillerProfile:
    """What one biller needs and allows.

    - `check_billing_id`: a billing id as this biller names its customers; ValueError saying what is wrong.
    - `names_billing_ids`: an event's `stripe_customer_id` (its metadata, Ringside's customer API) names the billing
      customer; otherwise only the customer store maps Ringside customers to billing ones.
    - `remote`: meter events leave the gateway (False: the local ledger biller records them instead).
    - `portal`: the container's `billing_portal` key; `sink`: its `billing_sink` key for the given settings.
    - `max_rps`: the dispatcher's pace, the biller's rate limit.
    - `max_event_age_s`: older events are parked as too old; `meter_identifier`: an event id -> the biller's
      identifier for it (its end-to-end dedupe key).
    - `totals`: the container's `biller_totals` key (the biller's own units per customer and hour, for
      `gateway reconcile`), None when the biller offers no such totals (`totals_missing` says what is missing).
    - `reports`: the biller reports what it dropped after answering (Stripe's meter error reports).
    """

    biller: Biller
    check_billing_id: Callable[[str], str]
    names_billing_ids: bool
    remote: bool
    portal: str
    sink: Callable[[BillerSettings], str]
    max_rps: Callable[[BillerSettings], float]
    max_event_age_s: int
    meter_identifier: Callable[[str], str]
    totals: str | None = None
    totals_missing: str = ""
    reports: bool = False


def check_stripe_id(value: str) -> str:
    """A Stripe customer id (`cus_...`); ValueError saying what is wrong."""
    value = value.strip()
    if len(value) > MAX_ID_CHARS or not _STRIPE_CUSTOMER.match(value):
        raise ValueError(f"Stripe customer id {value!r} must look like cus_ followed by letters and digits")
    return value


def _check_any_id(value: str) -> str:
    """Any billing id without spaces (Lago: a subscription's external id)."""
    value = value.strip()
    if not value or len(value) > MAX_ID_CHARS or not value.isprintable() or any(c.isspace() for c in value):
        raise ValueError(f"billing id {value!r} must be 1 to {MAX_ID_CHARS} characters without spaces")
    return value


def _stripe_sink(settings: BillerSettings) -> str:
    return "stripe_stream" if settings.stripe.api == "v2_stream" else "stripe_v1"


def _stripe_rate(settings: BillerSettings) -> float:
    if settings.stripe.max_rps is not None:
        return settings.stripe.max_rps
    # Stripe: 1,000 meter event calls/s in live mode; test mode and sandboxes share the basic 25 req/s limit.
    key = settings.stripe.api_key.reveal() if settings.stripe.api_key else ""
    return 1000.0 if key.startswith(("sk_live_", "rk_live_")) else 25.0


STRIPE = BillerProfile(
    biller=Biller.STRIPE,
    check_billing_id=check_stripe_id,
    names_billing_ids=True,
    remote=True,
    portal="stripe",
    sink=_stripe_sink,
    max_rps=_stripe_rate,
    max_event_age_s=stripe_rules.MAX_EVENT_AGE_S,
    meter_identifier=stripe_rules.meter_identifier,
    totals="stripe",
    reports=True,
)
# Lago bills subscriptions: its customers come from the customer store only. Its identifier (the transaction_id)
# and age window are Stripe's rules, as they were when Lago joined: the transaction ids Lago already holds came
# from them, and a different rule would send those events again.
LAGO = BillerProfile(
    biller=Biller.LAGO,
    check_billing_id=_check_any_id,
    names_billing_ids=False,
    remote=True,
    portal="lago",
    sink=lambda _settings: "lago",
    max_rps=lambda settings: settings.lago.max_rps,
    max_event_age_s=stripe_rules.MAX_EVENT_AGE_S,
    meter_identifier=stripe_rules.meter_identifier,
    # current_usage/past_usage cover whole billing periods; the event list shows what Lago received, not what it
    # bills. Nothing answers billed usage per hour, so no window could be judged (docs/reconcile.md).
    totals_missing="Lago's API has no per-hour usage totals (current_usage and past_usage cover whole billing "
    "periods; its event list shows events received, not billed), so the ledger cannot be reconciled against Lago",
)
# The local ledger biller stands in for Stripe: the same ids, identifiers and window, no portal, no remote limit.
LEDGER = BillerProfile(
    biller=Biller.LEDGER,
    check_billing_id=check_stripe_id,
    names_billing_ids=True,
    remote=False,
    portal="none",
    sink=lambda _settings: "ledger",
    max_rps=lambda _settings: _LEDGER_MAX_RPS,
    max_event_age_s=stripe_rules.MAX_EVENT_AGE_S,
    meter_identifier=stripe_rules.meter_identifier,
    totals="ledger",
)
PROFILES = {profile.biller: profile for profile in (STRIPE, LAGO, LEDGER)}


def profile(biller: Biller) -> BillerProfile:
    return PROFILES[biller]
