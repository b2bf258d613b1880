"""Settings: one frozen tree, built once from the environment (12-factor; every variable is listed in README.md) by
gateway/app/environment.py, and checked by gateway/app/settings_checks.py.

Nothing else in the code base reads `os.environ`. Secrets are wrapped in `Secret`, whose repr is masked, so a
settings object can be logged or printed without leaking one. Each biller and the Redis store have a group of their
own (`settings.stripe`, `settings.lago`, `settings.redis`); the environment variables stay flat.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from gateway.app.biller_settings import LagoSettings, StripeSettings
from gateway.app.billers import Biller, BillerProfile, profile
from gateway.app.secret import Secret
from gateway.domain.policy import BillingPolicy, UnknownTypes
from gateway.domain.portal import ReturnUrlPolicy
from gateway.domain.units import Rounding


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
