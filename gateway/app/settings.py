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
from gateway.domain.portal import ReturnUrlPolicy
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


MIN_DEDUPE_TTL_S = 24 * 3600
MIN_HEADER_BYTES = 8192


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
    body_timeout_s: float = 10.0
    """GATEWAY_BODY_TIMEOUT_S: a webhook body must arrive whole within this, else 408 body_timeout."""
    max_connections: int = 1000
    """GATEWAY_MAX_CONNECTIONS: connections and requests in flight per process; beyond it, new requests get 503."""
    max_header_bytes: int = 16_384
    """GATEWAY_MAX_HEADER_BYTES: the largest request line plus headers; larger is refused 431 and the connection
    closed."""
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
    redis_prefix: str = "gw:"
    """GATEWAY_REDIS_PREFIX: prefix of every key the gateway writes in Redis (several gateways can share one Redis)."""
    dedupe_ttl_s: int = 30 * 24 * 3600
    """GATEWAY_DEDUPE_TTL_S: how long Redis remembers a sent event id; longer than Ringside's retry horizon."""
    meter_event_name: str = "ringside_spend"
    """GATEWAY_METER_EVENT_NAME: the Stripe meter's event_name."""
    biller: str | None = None
    """GATEWAY_BILLER: stripe | lago | ledger. Unset: stripe when STRIPE_API_KEY is set, else ledger (the local
    ledger biller). See `selected_biller`."""
    stripe_api_key: Secret | None = None
    """STRIPE_API_KEY: the Stripe biller's key; without it (and GATEWAY_BILLER unset) meter events go to the local
    ledger biller."""
    stripe_api_base: str | None = None
    """STRIPE_API_BASE: another Stripe base URL (a local test server, stripe-mock)."""
    stripe_timeout_s: float = 10.0
    """GATEWAY_STRIPE_TIMEOUT_S: per-call timeout towards Stripe."""
    stripe_max_rps: float | None = None
    """GATEWAY_STRIPE_MAX_RPS: calls per second to Stripe; default 1000 for live keys, 25 for test keys."""
    stripe_api: str = "v1"
    """GATEWAY_STRIPE_API: v1 (one meter event per call, one call in flight per customer) or v2_stream (Stripe's
    high-throughput meter event stream: up to 100 events per call, with a 15-minute session token)."""
    lago_api_key: Secret | None = None
    """LAGO_API_KEY: the Lago organization's API key. Required with GATEWAY_BILLER=lago."""
    lago_api_url: str = "https://api.getlago.com"
    """LAGO_API_URL: Lago's API origin: https://api.getlago.com (US cloud), https://api.eu.getlago.com (EU cloud), or
    a self-hosted Lago API (e.g. http://localhost:3000)."""
    lago_metric_code: str | None = None
    """LAGO_METRIC_CODE: the `code` of the Lago billable metric the events feed (a sum over LAGO_UNITS_PROPERTY).
    Required with GATEWAY_BILLER=lago."""
    lago_units_property: str = "units"
    """LAGO_UNITS_PROPERTY: the event property carrying the units: the billable metric's `field_name`."""
    lago_timeout_s: float = 10.0
    """GATEWAY_LAGO_TIMEOUT_S: timeout of one event call to Lago, and of one portal request's calls together."""
    lago_max_rps: float = 500.0
    """GATEWAY_LAGO_MAX_RPS: calls per second to Lago; Lago's default limit on event ingestion is 500 requests/s per
    organization (Lago docs, api-reference/rate-limits)."""
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
    pending_alert_s: float = 300.0
    """GATEWAY_PENDING_ALERT_S: the sweep warns (log and metric) while the oldest pending entry is older than this."""
    sweep_interval_s: float = 15.0
    """GATEWAY_SWEEP_INTERVAL_S: how often the sweep measures the ledger's backlog."""
    log_format: str = "auto"
    """GATEWAY_LOG_FORMAT: json | console | auto (console on a terminal, JSON otherwise)."""
    log_level: str = "info"
    """GATEWAY_LOG_LEVEL: debug | info | warning | error."""
    host: str = "127.0.0.1"
    """GATEWAY_HOST: address `gateway serve` binds to."""
    port: int = 8000
    """GATEWAY_PORT: port `gateway serve` listens on."""
    ringside_api_key: Secret | None = None
    """RINGSIDE_API_KEY: Ringside's server-side API key, for `gateway ringside-register` (and customer look-ups)."""
    ringside_api_base: str = "https://api.fightclub.pro"
    """RINGSIDE_API_BASE: Ringside's API (its docs' curl examples call https://api.fightclub.pro/v1/...)."""
    portal_jwt_secret: Secret | None = None
    """PORTAL_JWT_SECRET: HS256 key the host application signs portal tokens with (>= 32 bytes). Unset: the
    portal routes answer 503 portal_not_configured."""
    portal_return_url: str | None = None
    """PORTAL_RETURN_URL: where the portal sends users back by default. Required with PORTAL_JWT_SECRET."""
    portal_allowed_return_urls: tuple[str, ...] = ()
    """PORTAL_ALLOWED_RETURN_URLS: comma-separated origin+path prefixes a request's return_url may fall under."""
    portal_configuration_id: str | None = None
    """PORTAL_CONFIGURATION_ID: a Stripe portal configuration (bpc_...); unset, Stripe's default one is used."""
    portal_jwt_leeway_s: float = 30.0
    """PORTAL_JWT_LEEWAY_S: clock skew allowed on a token's exp, iat and nbf (0 to 300)."""
    portal_link_token_max_ttl_s: int = 300
    """PORTAL_LINK_TOKEN_MAX_TTL_S: a token passed in a URL (GET /api/portal?token=) must expire within this."""
    portal_jwt_max_age_s: int = 86_400
    """PORTAL_JWT_MAX_AGE_S: the longest lifetime (`exp - iat`) of a portal token; a longer-lived one is 401."""
    portal_jwt_audience: str | None = None
    """PORTAL_JWT_AUDIENCE: when set, a portal token must carry this `aud` (recommended)."""
    portal_jwt_issuer: str | None = None
    """PORTAL_JWT_ISSUER: when set, a portal token must carry this `iss` (recommended)."""

    def policy(self) -> BillingPolicy:
        return BillingPolicy(
            units_per_usd=self.units_per_usd,
            rounding=self.rounding,
            billable_types=self.billable_events,
            max_event_usd=self.max_event_usd,
        )

    def return_url_policy(self) -> ReturnUrlPolicy:
        """The portal's return-URL rule; ValueError when PORTAL_RETURN_URL is unset or an entry is not a plain URL."""
        if self.portal_return_url is None:
            raise ValueError("PORTAL_RETURN_URL is not set")
        return ReturnUrlPolicy.build(self.portal_return_url, self.portal_allowed_return_urls)

    def selected_biller(self) -> str:
        """The biller meter events go to: GATEWAY_BILLER, else stripe with STRIPE_API_KEY, else the local ledger."""
        if self.biller is not None:
            return self.biller
        return "stripe" if self.stripe_api_key is not None else "ledger"

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
    "GATEWAY_BODY_TIMEOUT_S": "body_timeout_s",
    "GATEWAY_MAX_CONNECTIONS": "max_connections",
    "GATEWAY_MAX_HEADER_BYTES": "max_header_bytes",
    "GATEWAY_BILLABLE_EVENTS": "billable_events",
    "GATEWAY_MAX_EVENT_USD": "max_event_usd",
    "GATEWAY_UNITS_PER_USD": "units_per_usd",
    "GATEWAY_ROUNDING": "rounding",
    "GATEWAY_STORE": "store",
    "GATEWAY_REDIS_PREFIX": "redis_prefix",
    "GATEWAY_DEDUPE_TTL_S": "dedupe_ttl_s",
    "GATEWAY_METER_EVENT_NAME": "meter_event_name",
    "GATEWAY_BILLER": "biller",
    "STRIPE_API_KEY": "stripe_api_key",
    "STRIPE_API_BASE": "stripe_api_base",
    "GATEWAY_STRIPE_TIMEOUT_S": "stripe_timeout_s",
    "GATEWAY_STRIPE_MAX_RPS": "stripe_max_rps",
    "GATEWAY_STRIPE_API": "stripe_api",
    "LAGO_API_KEY": "lago_api_key",
    "LAGO_API_URL": "lago_api_url",
    "LAGO_METRIC_CODE": "lago_metric_code",
    "LAGO_UNITS_PROPERTY": "lago_units_property",
    "GATEWAY_LAGO_TIMEOUT_S": "lago_timeout_s",
    "GATEWAY_LAGO_MAX_RPS": "lago_max_rps",
    "GATEWAY_DISPATCH_CONCURRENCY": "dispatch_concurrency",
    "GATEWAY_DISPATCH_BATCH": "dispatch_batch",
    "GATEWAY_DISPATCH_LEASE_S": "dispatch_lease_s",
    "GATEWAY_DISPATCH_POLL_S": "dispatch_poll_s",
    "GATEWAY_RETRY_BASE_S": "retry_base_s",
    "GATEWAY_RETRY_MAX_S": "retry_max_s",
    "GATEWAY_PENDING_ALERT_S": "pending_alert_s",
    "GATEWAY_SWEEP_INTERVAL_S": "sweep_interval_s",
    "GATEWAY_LOG_FORMAT": "log_format",
    "GATEWAY_LOG_LEVEL": "log_level",
    "GATEWAY_HOST": "host",
    "GATEWAY_PORT": "port",
    "RINGSIDE_API_KEY": "ringside_api_key",
    "RINGSIDE_API_BASE": "ringside_api_base",
    "PORTAL_JWT_SECRET": "portal_jwt_secret",
    "PORTAL_RETURN_URL": "portal_return_url",
    "PORTAL_ALLOWED_RETURN_URLS": "portal_allowed_return_urls",
    "PORTAL_CONFIGURATION_ID": "portal_configuration_id",
    "PORTAL_JWT_LEEWAY_S": "portal_jwt_leeway_s",
    "PORTAL_LINK_TOKEN_MAX_TTL_S": "portal_link_token_max_ttl_s",
    "PORTAL_JWT_MAX_AGE_S": "portal_jwt_max_age_s",
    "PORTAL_JWT_AUDIENCE": "portal_jwt_audience",
    "PORTAL_JWT_ISSUER": "portal_jwt_issuer",
}
_LISTS = {"webhook_secrets", "billable_events", "portal_allowed_return_urls"}
_SECRETS = {"webhook_secrets", "stripe_api_key", "portal_jwt_secret", "ringside_api_key", "lago_api_key"}
# Billers GATEWAY_BILLER may name (each has its providers in gateway/app/container.py).
BILLERS = ("stripe", "lago", "ledger")


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
    if secrets.get("portal_jwt_secret") is not None:
        key = secrets["portal_jwt_secret"]
        wrapped["portal_jwt_secret"] = key if isinstance(key, Secret) else Secret(key)
    if secrets.get("ringside_api_key") is not None:
        key = secrets["ringside_api_key"]
        wrapped["ringside_api_key"] = key if isinstance(key, Secret) else Secret(key)
    if secrets.get("lago_api_key") is not None:
        key = secrets["lago_api_key"]
        wrapped["lago_api_key"] = key if isinstance(key, Secret) else Secret(key)
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
    if settings.stripe_api not in {"v1", "v2_stream"}:
        raise SettingsError("GATEWAY_STRIPE_API must be v1 or v2_stream")
    if settings.units_per_usd <= 0:
        raise SettingsError("GATEWAY_UNITS_PER_USD must be a positive integer")
    if settings.max_event_usd <= 0 or not settings.max_event_usd.is_finite():
        raise SettingsError("GATEWAY_MAX_EVENT_USD must be a positive number")
    if settings.max_event_usd * settings.units_per_usd >= Decimal(10) ** 15:
        # Stripe: a meter event value has at most 15 digits.
        raise SettingsError("GATEWAY_MAX_EVENT_USD x GATEWAY_UNITS_PER_USD must stay below 10^15 (Stripe's limit)")
    if settings.signature_tolerance_s <= 0:
        raise SettingsError("GATEWAY_SIGNATURE_TOLERANCE_S must be positive")
    if not 0 < settings.body_timeout_s < float("inf"):
        raise SettingsError("GATEWAY_BODY_TIMEOUT_S must be a positive number of seconds")
    if settings.max_connections <= 0:
        raise SettingsError("GATEWAY_MAX_CONNECTIONS must be a positive integer")
    if settings.max_header_bytes < MIN_HEADER_BYTES:
        # A signature header alone may be 4096 characters (gateway.domain.signature).
        raise SettingsError(f"GATEWAY_MAX_HEADER_BYTES must be at least {MIN_HEADER_BYTES}")
    if settings.pending_alert_s <= 0 or settings.sweep_interval_s <= 0:
        raise SettingsError("GATEWAY_PENDING_ALERT_S and GATEWAY_SWEEP_INTERVAL_S must be positive")
    if settings.log_format not in {"auto", "json", "console"}:
        raise SettingsError("GATEWAY_LOG_FORMAT must be json, console or auto")
    if not settings.store.startswith(("sqlite:///", "redis://", "rediss://", "memory://")):
        raise SettingsError("GATEWAY_STORE must be sqlite:///path.db, redis://host:port/db or memory://")
    if settings.dedupe_ttl_s < MIN_DEDUPE_TTL_S:
        # A redelivery after the claim expired would be billed again: the retention must outlast Ringside's retries.
        raise SettingsError("GATEWAY_DEDUPE_TTL_S must be at least 86400 (one day); the default is 30 days")
    _check_portal(settings)
    _check_biller(settings)


def _check_portal(settings: Settings) -> None:
    if not 0 <= settings.portal_jwt_leeway_s <= 300:
        raise SettingsError("PORTAL_JWT_LEEWAY_S must be between 0 and 300 seconds")
    if settings.portal_link_token_max_ttl_s <= 0:
        raise SettingsError("PORTAL_LINK_TOKEN_MAX_TTL_S must be positive")
    if settings.portal_jwt_max_age_s <= 0:
        raise SettingsError("PORTAL_JWT_MAX_AGE_S must be positive")
    if settings.portal_jwt_secret is None:
        return
    # RFC 7518 3.2: an HS256 key must be at least as long as the hash output, 256 bits.
    if len(settings.portal_jwt_secret.reveal().encode()) < 32:
        raise SettingsError("PORTAL_JWT_SECRET must be at least 32 bytes (RFC 7518 3.2)")
    if settings.portal_return_url is None:
        raise SettingsError("PORTAL_RETURN_URL is required when PORTAL_JWT_SECRET is set")
    try:
        settings.return_url_policy()
    except ValueError as exc:
        raise SettingsError(f"PORTAL_RETURN_URL / PORTAL_ALLOWED_RETURN_URLS: {exc}") from None


def _check_biller(settings: Settings) -> None:
    biller = settings.selected_biller()
    if biller not in BILLERS:
        raise SettingsError(f"GATEWAY_BILLER must be one of {', '.join(BILLERS)} (got {biller!r})")
    if biller == "stripe" and settings.stripe_api_key is None:
        raise SettingsError("STRIPE_API_KEY is required with GATEWAY_BILLER=stripe")
    if biller != "lago":
        return
    if settings.lago_api_key is None:
        raise SettingsError("LAGO_API_KEY is required with GATEWAY_BILLER=lago")
    if not settings.lago_metric_code:
        # Lago accepts events for an unknown metric code and never bills them: no default could be safe.
        raise SettingsError("LAGO_METRIC_CODE (the billable metric's code) is required with GATEWAY_BILLER=lago")
    if not settings.lago_api_url.startswith(("https://", "http://")):
        raise SettingsError("LAGO_API_URL must be an http(s) URL, e.g. https://api.getlago.com")
    if not settings.lago_units_property:
        raise SettingsError("LAGO_UNITS_PROPERTY must not be empty")
    if settings.lago_timeout_s <= 0 or settings.lago_max_rps <= 0:
        raise SettingsError("GATEWAY_LAGO_TIMEOUT_S and GATEWAY_LAGO_MAX_RPS must be positive")
