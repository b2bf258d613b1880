"""Settings: one frozen tree, built once from the environment (12-factor; every variable is listed in README.md).

Nothing else in the code base reads `os.environ`. Secrets are wrapped in `Secret`, whose repr is masked, so a
settings object can be logged or printed without leaking one. Each biller and the Redis store have a group of their
own (`settings.stripe`, `settings.lago`, `settings.redis`); the environment variables stay flat.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec

from gateway.app.biller_settings import LagoSettings, StripeSettings
from gateway.app.billers import Biller, BillerProfile, profile
from gateway.app.secret import Secret
from gateway.domain.policy import BillingPolicy, UnknownTypes
from gateway.domain.portal import ReturnUrlPolicy
from gateway.domain.units import Rounding

MIN_DEDUPE_TTL_S = 24 * 3600
MIN_HEADER_BYTES = 8192


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


class RedisSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The Redis store (GATEWAY_STORE=redis://...)."""

    prefix: str = "gw:"
    """GATEWAY_REDIS_PREFIX: prefix of every key the gateway writes in Redis (several gateways can share one Redis)."""
    dedupe_ttl_s: int = 40 * 24 * 3600
    """GATEWAY_DEDUPE_TTL_S: how long Redis remembers a sent event id; at least the oldest event ingest accepts (35
    days) plus the signature tolerance, so that a redelivery the gateway would still accept is a duplicate."""
    allow_volatile: bool = False
    """GATEWAY_REDIS_ALLOW_VOLATILE: let `serve` and `worker` run on a Redis that could lose acknowledged events
    (appendonly no, or an evicting maxmemory-policy); only a warning then. `serve --dev` allows it too."""


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
    unknown_types: UnknownTypes = UnknownTypes.PARK
    """GATEWAY_UNKNOWN_TYPES: park | ignore. An event of another type that carries a cost is parked unknown_type
    (replayable once its type is listed) or, with ignore, acknowledged as ignored; one without a cost is ignored."""
    max_event_usd: Decimal = Decimal(1000)
    """GATEWAY_MAX_EVENT_USD: a single event costing more is parked as invalid_payload."""
    units_per_usd: int = 100_000
    """GATEWAY_UNITS_PER_USD: meter units per dollar (100000: one unit is $0.00001)."""
    rounding: Rounding = Rounding.CARRY
    """GATEWAY_ROUNDING: carry | half_even | up | down."""
    store: str = "sqlite:///gateway.db"
    """GATEWAY_STORE: sqlite:///relative.db, sqlite:////absolute.db, redis://host:port/db,
    postgresql://user:password@host:5432/dbname (or postgres://, with ?sslmode=...) or memory://."""
    biller: str | None = None
    """GATEWAY_BILLER: stripe | lago | ledger. Unset: stripe when STRIPE_API_KEY is set, else ledger (the local
    ledger biller). See `selected_biller`."""
    stripe: StripeSettings = msgspec.field(default_factory=StripeSettings)
    """The Stripe biller's settings (STRIPE_*, GATEWAY_STRIPE_*, GATEWAY_METER_EVENT_NAME, PORTAL_CONFIGURATION_ID)."""
    lago: LagoSettings = msgspec.field(default_factory=LagoSettings)
    """The Lago biller's settings (LAGO_*, GATEWAY_LAGO_*)."""
    redis: RedisSettings = msgspec.field(default_factory=RedisSettings)
    """The Redis store's settings (GATEWAY_REDIS_PREFIX, GATEWAY_DEDUPE_TTL_S)."""
    dispatch_concurrency: int = 16
    """GATEWAY_DISPATCH_CONCURRENCY: customers served at once (one call in flight per customer), at least; more as
    the biller's rate limit x its observed latency asks (Little's law), up to GATEWAY_DISPATCH_MAX_CONCURRENCY."""
    dispatch_max_concurrency: int = 1000
    """GATEWAY_DISPATCH_MAX_CONCURRENCY: the most customers served at once, however slow the biller answers."""
    dispatch_batch: int = 200
    """GATEWAY_DISPATCH_BATCH: entries leased per round."""
    dispatch_lease_s: float = 30.0
    """GATEWAY_DISPATCH_LEASE_S: how long a leased entry is reserved; a crashed worker's entries return after it."""
    dispatch_poll_s: float = 0.5
    """GATEWAY_DISPATCH_POLL_S: idle poll interval (new deliveries wake the dispatcher at once)."""
    retry_base_s: float = 1.0
    """GATEWAY_RETRY_BASE_S: first retry delay; doubles per attempt, with jitter."""
    retry_max_s: float = 600.0
    """GATEWAY_RETRY_MAX_S: the longest delay between two attempts, and the longest pause; a biller's Retry-After
    beyond it is cut to it."""
    pending_alert_s: float = 300.0
    """GATEWAY_PENDING_ALERT_S: the sweep warns (log and metric) while the oldest pending entry is older than this."""
    sweep_interval_s: float = 15.0
    """GATEWAY_SWEEP_INTERVAL_S: how often the sweep measures the ledger's backlog."""
    reconcile_settle_s: float = 3600.0
    """GATEWAY_RECONCILE_SETTLE_S: a window younger than this (or corrected less than this ago) is `settling`, not
    judged: the biller's totals are eventually consistent."""
    reconcile_interval_s: float | None = None
    """GATEWAY_RECONCILE_INTERVAL_S: reconcile the ledger against the biller this often (seconds) in `serve` and
    `worker`, exporting the differences as metrics; unset: never (run `gateway reconcile` instead)."""
    reconcile_lookback_s: float = 172_800.0
    """GATEWAY_RECONCILE_LOOKBACK_S: how far back the periodic reconciliation looks (default two days)."""
    log_format: str = "auto"
    """GATEWAY_LOG_FORMAT: json | console | auto (console on a terminal, JSON otherwise)."""
    log_level: str = "info"
    """GATEWAY_LOG_LEVEL: debug | info | warning | error."""
    log_flush_ms: int = 20
    """GATEWAY_LOG_FLUSH_MS: `serve` and `worker` write their log lines in batches, at most this late (0: each line
    at once). A killed process loses at most this much of its log; a stopped one loses nothing."""
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
            max_age_s=self.biller_profile().max_event_age_s,
            unknown_types=self.unknown_types,
        )

    def return_url_policy(self) -> ReturnUrlPolicy:
        """The portal's return-URL rule; ValueError when PORTAL_RETURN_URL is unset or an entry is not a plain URL."""
        if self.portal_return_url is None:
            raise ValueError("PORTAL_RETURN_URL is not set")
        return ReturnUrlPolicy.build(self.portal_return_url, self.portal_allowed_return_urls)

    def selected_biller(self) -> Biller:
        """The biller meter events go to: GATEWAY_BILLER, else stripe with STRIPE_API_KEY, else the local ledger."""
        if self.biller is not None:
            return Biller(self.biller)
        return Biller.STRIPE if self.stripe.api_key is not None else Biller.LEDGER

    def biller_profile(self) -> BillerProfile:
        """What the selected biller needs and allows (gateway/app/billers.py)."""
        return profile(self.selected_biller())


# Environment variable -> settings field (`group.field` for a nested one). Variables not set keep the default.
ENVIRONMENT: Mapping[str, str] = {
    "RINGSIDE_WEBHOOK_SECRETS": "webhook_secrets",
    "GATEWAY_SIGNATURE_TOLERANCE_S": "signature_tolerance_s",
    "GATEWAY_MAX_BODY_BYTES": "max_body_bytes",
    "GATEWAY_BODY_TIMEOUT_S": "body_timeout_s",
    "GATEWAY_MAX_CONNECTIONS": "max_connections",
    "GATEWAY_MAX_HEADER_BYTES": "max_header_bytes",
    "GATEWAY_BILLABLE_EVENTS": "billable_events",
    "GATEWAY_UNKNOWN_TYPES": "unknown_types",
    "GATEWAY_MAX_EVENT_USD": "max_event_usd",
    "GATEWAY_UNITS_PER_USD": "units_per_usd",
    "GATEWAY_ROUNDING": "rounding",
    "GATEWAY_STORE": "store",
    "GATEWAY_REDIS_PREFIX": "redis.prefix",
    "GATEWAY_DEDUPE_TTL_S": "redis.dedupe_ttl_s",
    "GATEWAY_REDIS_ALLOW_VOLATILE": "redis.allow_volatile",
    "GATEWAY_METER_EVENT_NAME": "stripe.meter_event_name",
    "GATEWAY_BILLER": "biller",
    "STRIPE_API_KEY": "stripe.api_key",
    "STRIPE_API_BASE": "stripe.api_base",
    "GATEWAY_STRIPE_TIMEOUT_S": "stripe.timeout_s",
    "GATEWAY_STRIPE_MAX_RPS": "stripe.max_rps",
    "GATEWAY_STRIPE_API": "stripe.api",
    "LAGO_API_KEY": "lago.api_key",
    "LAGO_API_URL": "lago.api_url",
    "LAGO_METRIC_CODE": "lago.metric_code",
    "LAGO_UNITS_PROPERTY": "lago.units_property",
    "GATEWAY_LAGO_TIMEOUT_S": "lago.timeout_s",
    "GATEWAY_LAGO_MAX_RPS": "lago.max_rps",
    "GATEWAY_DISPATCH_CONCURRENCY": "dispatch_concurrency",
    "GATEWAY_DISPATCH_MAX_CONCURRENCY": "dispatch_max_concurrency",
    "GATEWAY_DISPATCH_BATCH": "dispatch_batch",
    "GATEWAY_DISPATCH_LEASE_S": "dispatch_lease_s",
    "GATEWAY_DISPATCH_POLL_S": "dispatch_poll_s",
    "GATEWAY_RETRY_BASE_S": "retry_base_s",
    "GATEWAY_RETRY_MAX_S": "retry_max_s",
    "GATEWAY_PENDING_ALERT_S": "pending_alert_s",
    "GATEWAY_SWEEP_INTERVAL_S": "sweep_interval_s",
    "STRIPE_WEBHOOK_SECRET": "stripe.webhook_secrets",
    "GATEWAY_STRIPE_EVENTS_POLL_S": "stripe.events_poll_s",
    "GATEWAY_RECONCILE_SETTLE_S": "reconcile_settle_s",
    "GATEWAY_RECONCILE_INTERVAL_S": "reconcile_interval_s",
    "GATEWAY_RECONCILE_LOOKBACK_S": "reconcile_lookback_s",
    "GATEWAY_LOG_FORMAT": "log_format",
    "GATEWAY_LOG_LEVEL": "log_level",
    "GATEWAY_LOG_FLUSH_MS": "log_flush_ms",
    "GATEWAY_HOST": "host",
    "GATEWAY_PORT": "port",
    "RINGSIDE_API_KEY": "ringside_api_key",
    "RINGSIDE_API_BASE": "ringside_api_base",
    "PORTAL_JWT_SECRET": "portal_jwt_secret",
    "PORTAL_RETURN_URL": "portal_return_url",
    "PORTAL_ALLOWED_RETURN_URLS": "portal_allowed_return_urls",
    "PORTAL_CONFIGURATION_ID": "stripe.portal_configuration_id",
    "PORTAL_JWT_LEEWAY_S": "portal_jwt_leeway_s",
    "PORTAL_LINK_TOKEN_MAX_TTL_S": "portal_link_token_max_ttl_s",
    "PORTAL_JWT_MAX_AGE_S": "portal_jwt_max_age_s",
    "PORTAL_JWT_AUDIENCE": "portal_jwt_audience",
    "PORTAL_JWT_ISSUER": "portal_jwt_issuer",
}
_LISTS = {"webhook_secrets", "billable_events", "portal_allowed_return_urls"}
# Billers GATEWAY_BILLER may name (each has its profile in gateway/app/billers.py).
BILLERS = tuple(biller.value for biller in Biller)


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _as_secret(kind: type, value: Any) -> Any:
    """msgspec's hook for `Secret` fields: a plain string is wrapped, a Secret kept."""
    if kind is Secret and isinstance(value, (str, Secret)):
        return value if isinstance(value, Secret) else Secret(value)
    raise NotImplementedError


def load_settings(environ: Mapping[str, str], **overrides: Any) -> Settings:
    """Build Settings from an environment mapping; raise SettingsError naming the variable that is wrong.

    `overrides` replace fields by name; a nested group takes a mapping of its fields (`stripe={"api_key": ...}`),
    merged over what the environment set.
    """
    raw: dict[str, Any] = {}
    for variable, path in ENVIRONMENT.items():
        value = environ.get(variable)
        if value is None or value.strip() == "":
            continue
        group, _, field = path.rpartition(".")
        target = raw.setdefault(group, {}) if group else raw
        target[field] = _split(value) if field in _LISTS else value.strip()
    for name, value in overrides.items():
        raw[name] = {**raw.get(name, {}), **value} if isinstance(value, Mapping) else value
    try:
        settings = msgspec.convert(raw, Settings, strict=False, dec_hook=_as_secret)
    except msgspec.ValidationError as exc:
        raise SettingsError(_explain(str(exc))) from None
    _check(settings)
    return settings


def _explain(message: str) -> str:
    """Turn msgspec's `at $.units_per_usd` into the environment variable's name."""
    for variable, path in ENVIRONMENT.items():
        if f"$.{path}" in message:
            return f"{variable}: {message.split(' - at ')[0]}"
    return message


def _check(settings: Settings) -> None:
    if settings.stripe.api not in {"v1", "v2_stream"}:
        raise SettingsError("GATEWAY_STRIPE_API must be v1 or v2_stream")
    if settings.dispatch_concurrency < 1 or settings.dispatch_max_concurrency < settings.dispatch_concurrency:
        raise SettingsError(
            "GATEWAY_DISPATCH_CONCURRENCY must be at least 1 and GATEWAY_DISPATCH_MAX_CONCURRENCY at least as large"
        )
    if settings.units_per_usd <= 0:
        raise SettingsError("GATEWAY_UNITS_PER_USD must be a positive integer")
    if settings.max_event_usd <= 0 or not settings.max_event_usd.is_finite():
        raise SettingsError("GATEWAY_MAX_EVENT_USD must be a positive number")
    if settings.max_event_usd * settings.units_per_usd >= Decimal(10) ** 15:
        # Stripe: a meter event value has at most 15 digits.
        raise SettingsError("GATEWAY_MAX_EVENT_USD x GATEWAY_UNITS_PER_USD must stay below 10^15 (Stripe's limit)")
    if settings.signature_tolerance_s <= 0:
        raise SettingsError("GATEWAY_SIGNATURE_TOLERANCE_S must be positive")
    # Every wait is capped at the maximum; an infinite one would stall delivery for good.
    if not (math.isfinite(settings.retry_base_s) and settings.retry_base_s > 0):
        raise SettingsError("GATEWAY_RETRY_BASE_S must be a positive, finite number of seconds")
    if not (math.isfinite(settings.retry_max_s) and settings.retry_max_s > 0):
        raise SettingsError("GATEWAY_RETRY_MAX_S must be a positive, finite number of seconds")
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
    if not 0 <= settings.log_flush_ms <= 1000:
        raise SettingsError("GATEWAY_LOG_FLUSH_MS must be 0 (each line at once) to 1000 milliseconds")
    if not settings.store.startswith(
        ("sqlite:///", "redis://", "rediss://", "postgresql://", "postgres://", "memory://")
    ):
        raise SettingsError(
            "GATEWAY_STORE must be sqlite:///path.db, redis://host:port/db, "
            "postgresql://user:password@host:5432/dbname or memory://"
        )
    _check_postgres_url(settings.store)
    if settings.redis.dedupe_ttl_s < MIN_DEDUPE_TTL_S:
        # A redelivery after the claim expired would be billed again: the retention must outlast Ringside's retries.
        raise SettingsError("GATEWAY_DEDUPE_TTL_S must be at least 86400 (one day); the default is 40 days")
    _check_portal(settings)
    _check_biller(settings)
    _check_reconcile(settings)
    max_age_s = settings.policy().max_age_s
    accepted_s = (max_age_s or 0) + settings.signature_tolerance_s
    if max_age_s is not None and settings.redis.dedupe_ttl_s < accepted_s:
        # Ingest still accepts an event this old: a redelivery after its sent id expired would be billed again.
        raise SettingsError(
            f"GATEWAY_DEDUPE_TTL_S must be at least {accepted_s} (the oldest event ingest accepts,"
            f" {max_age_s // 86400} days, plus GATEWAY_SIGNATURE_TOLERANCE_S); the default is 40 days"
        )


_SSL_MODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})


def _check_postgres_url(url: str) -> None:
    """A PostgreSQL URL names a host and a database, and an sslmode libpq knows (a typo must not mean no TLS)."""
    if not url.startswith(("postgresql://", "postgres://")):
        return
    parts = urlsplit(url)
    if not parts.hostname or not parts.path.strip("/"):
        raise SettingsError(
            "GATEWAY_STORE must name a host and a database: postgresql://user:password@host:5432/dbname"
        )
    for mode in parse_qs(parts.query).get("sslmode", []):
        if mode not in _SSL_MODES:
            raise SettingsError(f"GATEWAY_STORE's sslmode must be one of {', '.join(sorted(_SSL_MODES))}")


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
    if settings.biller is not None and settings.biller not in BILLERS:
        raise SettingsError(f"GATEWAY_BILLER must be one of {', '.join(BILLERS)} (got {settings.biller!r})")
    biller = settings.selected_biller()
    if biller is Biller.STRIPE and settings.stripe.api_key is None:
        raise SettingsError("STRIPE_API_KEY is required with GATEWAY_BILLER=stripe")
    if biller is not Biller.LAGO:
        return
    if settings.lago.api_key is None:
        raise SettingsError("LAGO_API_KEY is required with GATEWAY_BILLER=lago")
    if not settings.lago.metric_code:
        # Lago accepts events for an unknown metric code and never bills them: no default could be safe.
        raise SettingsError("LAGO_METRIC_CODE (the billable metric's code) is required with GATEWAY_BILLER=lago")
    if not settings.lago.api_url.startswith(("https://", "http://")):
        raise SettingsError("LAGO_API_URL must be an http(s) URL, e.g. https://api.getlago.com")
    if not settings.lago.units_property:
        raise SettingsError("LAGO_UNITS_PROPERTY must not be empty")
    if settings.lago.timeout_s <= 0 or settings.lago.max_rps <= 0:
        raise SettingsError("GATEWAY_LAGO_TIMEOUT_S and GATEWAY_LAGO_MAX_RPS must be positive")


def _positive(value: float | None) -> bool:
    return value is None or (math.isfinite(value) and value > 0)


def _check_reconcile(settings: Settings) -> None:
    if not (math.isfinite(settings.reconcile_settle_s) and settings.reconcile_settle_s >= 0):
        raise SettingsError("GATEWAY_RECONCILE_SETTLE_S must be a finite number of seconds, 0 or more")
    if not _positive(settings.reconcile_interval_s) or not _positive(settings.reconcile_lookback_s):
        raise SettingsError("GATEWAY_RECONCILE_INTERVAL_S and GATEWAY_RECONCILE_LOOKBACK_S must be positive")
    if not _positive(settings.stripe.events_poll_s):
        raise SettingsError("GATEWAY_STRIPE_EVENTS_POLL_S must be a positive number of seconds")
    stripe_feedback = settings.stripe.webhook_secrets or settings.stripe.events_poll_s is not None
    if stripe_feedback and not settings.biller_profile().reports:
        # Stripe's error reports name meter events Stripe received: with another biller there are none to read.
        raise SettingsError(
            "STRIPE_WEBHOOK_SECRET and GATEWAY_STRIPE_EVENTS_POLL_S need the Stripe biller (STRIPE_API_KEY)"
        )
