"""The environment -> Settings: every variable the gateway reads, and `load_settings`, which builds the tree once
and refuses a wrong value naming its variable (gateway/app/settings_checks.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from gateway.app.secret import Secret
from gateway.app.settings import Settings
from gateway.app.settings_checks import SettingsError, check

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
    check(settings)
    return settings


def _explain(message: str) -> str:
    """Turn msgspec's `at $.units_per_usd` into the environment variable's name."""
    for variable, path in ENVIRONMENT.items():
        if f"$.{path}" in message:
            return f"{variable}: {message.split(' - at ')[0]}"
    return message
