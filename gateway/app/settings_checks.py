"""The checks load_settings runs on a built Settings tree: ranges, consistency between variables, and the rules
that keep billing safe (a dedupe window covering everything ingest accepts, a PostgreSQL URL whose sslmode is real).
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from gateway.app.billers import Biller

if TYPE_CHECKING:
    from gateway.app.settings import Settings

MIN_DEDUPE_TTL_S = 24 * 3600
MIN_HEADER_BYTES = 8192
# Billers GATEWAY_BILLER may name (each has its profile in gateway/app/billers.py).
BILLERS = tuple(biller.value for biller in Biller)


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def check(settings: Settings) -> None:
    """Refuse settings that are out of range or inconsistent, naming the variable (SettingsError)."""
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
