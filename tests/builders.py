"""Builders for test data: signed Ringside deliveries, ledger claims, settings, apps around a container."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from gateway.app.environment import load_settings
from gateway.app.secret import Secret
from gateway.app.settings import Settings
from gateway.domain.ledger import Claim
from gateway.domain.signature import sign

SECRET = "whsec_test_secret_for_tests_only"
OLD_SECRET = "whsec_previous_secret"
BILLABLE = "chat.completion.finished"


def event(
    event_id: str = "evt_1",
    *,
    cost: str | float | int | None = "0.0123",
    customer: str | None = "cust_ringside_1",
    stripe_customer: str | None = "cus_STRIPE1",
    event_type: str = BILLABLE,
    created: int | None = None,
    **data: Any,
) -> dict[str, Any]:
    """A Ringside event as Ringside would send it; `None` leaves a field out."""
    payload: dict[str, Any] = dict(data)
    if cost is not None:
        payload["cost_usd"] = cost
    if customer is not None or stripe_customer is not None:
        payload["customer"] = {"id": customer}
        if stripe_customer is not None:
            payload["customer"]["metadata"] = {"stripe_customer_id": stripe_customer}
    body: dict[str, Any] = {"id": event_id, "type": event_type, "data": payload}
    if created is not None:
        body["created"] = created
    return body


def claim(
    event_id: str,
    *,
    exact: str | Decimal = "1",
    customer: str = "cus_A",
    ringside: str | None = "rs_A",
    cost: str | None = None,
    timestamp: int = 1_799_999_990,
) -> Claim:
    """A billable event worth `exact` meter units (the cost is derived at the default 100000 units per dollar)."""
    return Claim(
        event_id=event_id,
        event_type=BILLABLE,
        billing_customer=customer,
        ringside_customer=ringside,
        cost_usd=Decimal(cost) if cost is not None else Decimal(exact).scaleb(-5),
        exact_units=Decimal(exact),
        timestamp=timestamp,
    )


def encode(body: dict[str, Any] | bytes) -> bytes:
    return body if isinstance(body, bytes) else msgspec.json.encode(body)


def signed_headers(body: bytes, *, secret: str = SECRET, timestamp: int) -> dict[str, str]:
    return {"X-FC-Signature": sign(body, secret, timestamp), "Content-Type": "application/json"}


def settings(**overrides: Any) -> Settings:
    overrides.setdefault("store", "memory://")
    overrides.setdefault("webhook_secrets", [Secret(SECRET), Secret(OLD_SECRET)])
    return load_settings({}, **overrides)


def units(cost: str, scale: int = 100_000) -> int:
    return int(Decimal(cost) * scale)
