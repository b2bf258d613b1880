"""Settings: one frozen tree, built once from the environment (12-factor; names from CONTRACT.md 5).

Nothing else in the code base reads `os.environ`. Secrets are wrapped in `Secret`, whose repr is masked, so a
settings object can be logged or printed without leaking one.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import msgspec

from gateway.domain.policy import BillingPolicy
from gateway.domain.units import Rounding


class Secret:
    """A string that never shows itself in repr, str or logs; `.reveal()` is the one way to read it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every knob of the gateway, with its environment variable and default (documented in README.md)."""

    webhook_secrets: tuple[Secret, ...] = ()
    """RINGSIDE_WEBHOOK_SECRETS: comma-separated; every one is live (rotation). Required by `serve`."""
    signature_tolerance_s: int = 300
    """GATEWAY_SIGNATURE_TOLERANCE_S: allowed clock skew of a delivery's `t`, both directions."""
    max_body_bytes: int = 1_048_576
    """GATEWAY_MAX_BODY_BYTES: larger bodies get 413 before they are read whole."""
    billable_events: frozenset[str] = frozenset({"chat.completion.finished"})
    """GATEWAY_BILLABLE_EVENTS: comma-separated event types that are billed; others are acknowledged."""
    max_event_usd: Decimal = Decimal(1000)
    """GATEWAY_MAX_EVENT_USD: a single event costing more is parked as invalid_payload."""
    units_per_usd: int = 100_000
    """GATEWAY_UNITS_PER_USD: meter units per dollar (100000: one unit is $0.00001)."""
    rounding: Rounding = Rounding.CARRY
    """GATEWAY_ROUNDING: carry | half_even | up | down."""
    store: str = "sqlite:///gateway.db"
    """GATEWAY_STORE: sqlite:///relative.db, sqlite:////absolute.db, redis://host:port/db or memory://."""
    meter_event_name: str = "ringside_spend"
    """GATEWAY_METER_EVENT_NAME: the Stripe meter's event_name."""
    stripe_api_key: Secret | None = None
    """STRIPE_API_KEY: selects the Stripe biller; without it meter events go to the local ledger biller."""
    stripe_api_base: str | None = None
    """STRIPE_API_BASE: another Stripe base URL (a local test server, stripe-mock)."""
    stripe_timeout_s: float = 10.0
    """GATEWAY_STRIPE_TIMEOUT_S: per-call timeout towards Stripe."""
    stripe_max_rps: float | None = None
    """GATEWAY_STRIPE_MAX_RPS: calls per second to Stripe; default 1000 for live keys, 25 for test keys."""
    dispatch_concurrency: int = 16
    """GATEWAY_DISPATCH_CONCURRENCY: customers served at once (one call in flight per customer)."""
    dispatch_batch: int = 200
    """GATEWAY_DISPATCH_BATCH: entries leased per round."""
    dispatch_lease_s: float = 30.0
    """GATEWAY_DISPATCH_LEASE_S: how long a leased entry is reserved; a crashed worker's entries return after it."""
    dispatch_poll_s: float = 0.5
    """GATEWAY_DISPATCH_POLL_S: idle poll interval (new deliveries wake the dispatcher at once)."""
    retry_base_s: float = 1.0
    """GATEWAY_RETRY_BASE_S: first retry delay; doubles per attempt, with jitter."""
    retry_max_s: float = 600.0
    """GATEWAY_RETRY_MAX_S: the longest delay between two attempts."""
    log_format: str = "auto"
    """GATEWAY_LOG_FORMAT: json | console | auto (console on a terminal, JSON otherwise)."""
    log_level: str = "info"
    """GATEWAY_LOG_LEVEL: debug | info | warning | error."""
    host: str = "127.0.0.1"
    """GATEWAY_HOST: address `gateway serve` binds to."""
    port: int = 8000
    """GATEWAY_PORT: port `gateway serve` listens on."""

    def policy(self) -> BillingPolicy:
        return BillingPolicy(
            units_per_usd=self.units_per_usd,
            rounding=self.rounding,
            billable_types=self.billable_events,
            max_event_usd=self.max_event_usd,
        )

    def stripe_rate(self) -> float:
        if self.stripe_max_rps is not None:
            return self.stripe_max_rps
        # Stripe: 1,000 meter event calls/s in live mode; test mode and sandboxes share the basic 25 req/s limit.
        key = self.stripe_api_key.reveal() if self.stripe_api_key else ""
        return 1000.0 if key.startswith(("sk_live_", "rk_live_")) else 25.0


# Environment variable -> settings field. Variables not set keep the field's default.
ENVIRONMENT: Mapping[str, str] = {
    "RINGSIDE_WEBHOOK_SECRETS": "webhook_secrets",
    "GATEWAY_SIGNATURE_TOLERANCE_S": "signature_tolerance_s",
    "GATEWAY_MAX_BODY_BYTES": "max_body_bytes",
    "GATEWAY_BILLABLE_EVENTS": "billable_events",
    "GATEWAY_MAX_EVENT_USD": "max_event_usd",
    "GATEWAY_UNITS_PER_USD": "units_per_usd",
    "GATEWAY_ROUNDING": "rounding",
    "GATEWAY_STORE": "store",
    "GATEWAY_METER_EVENT_NAME": "meter_event_name",
    "STRIPE_API_KEY": "stripe_api_key",
    "STRIPE_API_BASE": "stripe_api_base",
    "GATEWAY_STRIPE_TIMEOUT_S": "stripe_timeout_s",
    "GATEWAY_STRIPE_MAX_RPS": "stripe_max_rps",
    "GATEWAY_DISPATCH_CONCURRENCY": "dispatch_concurrency",
    "GATEWAY_DISPATCH_BATCH": "dispatch_batch",
    "GATEWAY_DISPATCH_LEASE_S": "dispatch_lease_s",
    "GATEWAY_DISPATCH_POLL_S": "dispatch_poll_s",
    "GATEWAY_RETRY_BASE_S": "retry_base_s",
    "GATEWAY_RETRY_MAX_S": "retry_max_s",
    "GATEWAY_LOG_FORMAT": "log_format",
    "GATEWAY_LOG_LEVEL": "log_level",
    "GATEWAY_HOST": "host",
    "GATEWAY_PORT": "port",
}
_LISTS = {"webhook_secrets", "billable_events"}
_SECRETS = {"webhook_secrets", "stripe_api_key"}


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def load_settings(environ: Mapping[str, str], **overrides: Any) -> Settings:
    """Build Settings from an environment mapping; raise SettingsError naming the variable that is wrong."""
    raw: dict[str, Any] = {}
    for variable, field in ENVIRONMENT.items():
        value = environ.get(variable)
        if value is None or value.strip() == "":
            continue
        raw[field] = _split(value) if field in _LISTS else value.strip()
    raw.update(overrides)
    secrets = {field: raw.pop(field) for field in _SECRETS if field in raw}
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(_explain(str(exc))) from None
    wrapped: dict[str, Any] = {}
    if "webhook_secrets" in secrets:
        wrapped["webhook_secrets"] = tuple(
            item if isinstance(item, Secret) else Secret(item) for item in secrets["webhook_secrets"]
        )
    if secrets.get("stripe_api_key") is not None:
        key = secrets["stripe_api_key"]
        wrapped["stripe_api_key"] = key if isinstance(key, Secret) else Secret(key)
    settings = msgspec.structs.replace(settings, **wrapped)
    _check(settings)
    return settings


def _explain(message: str) -> str:
    """Turn msgspec's `at $.units_per_usd` into the environment variable's name."""
    for variable, field in ENVIRONMENT.items():
        if f"$.{field}" in message:
            return f"{variable}: {message.split(' - at ')[0]}"
    return message


def _check(settings: Settings) -> None:
    if settings.units_per_usd <= 0:
        raise SettingsError("GATEWAY_UNITS_PER_USD must be a positive integer")
    if settings.max_event_usd <= 0 or not settings.max_event_usd.is_finite():
        raise SettingsError("GATEWAY_MAX_EVENT_USD must be a positive number")
    if settings.max_event_usd * settings.units_per_usd >= Decimal(10) ** 15:
        # Stripe: a meter event value has at most 15 digits.
        raise SettingsError("GATEWAY_MAX_EVENT_USD x GATEWAY_UNITS_PER_USD must stay below 10^15 (Stripe's limit)")
    if settings.signature_tolerance_s <= 0:
        raise SettingsError("GATEWAY_SIGNATURE_TOLERANCE_S must be positive")
    if settings.log_format not in {"auto", "json", "console"}:
        raise SettingsError("GATEWAY_LOG_FORMAT must be json, console or auto")
    if not settings.store.startswith(("sqlite:///", "redis://", "rediss://", "memory://")):
        raise SettingsError("GATEWAY_STORE must be sqlite:///path.db, redis://host:port/db or memory://")
