"""The composition root: the one module that names concrete adapters and wires them to the ports.

`GATEWAY_STORE` picks the stores (memory, SQLite, Redis) and `GATEWAY_BILLER` the biller and its portal (Stripe,
Lago, or the local ledger biller that records meter events in the store instead of sending them; unset, Stripe when
`STRIPE_API_KEY` is set). A new biller is one entry in each of the `billing_sink` and `billing_portal` selectors.
Tests build a Container with settings of their own and override providers as they need
(`container.ledger.override(...)`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

from dependency_injector import containers, providers

from gateway.adapters.clock import SystemClock
from gateway.adapters.disabled_portal import DisabledBillingPortal
from gateway.adapters.lago import LagoBillingPortal, LagoBillingSink
from gateway.adapters.memory import MemoryBiller, MemoryCustomers, MemoryLedger
from gateway.adapters.redis import RedisBiller, RedisCustomers, RedisLedger, connect, warn_if_volatile
from gateway.adapters.ringside_customers import RingsideCustomerLookup
from gateway.adapters.sqlite import SqliteBiller, SqliteCustomers, SqliteDatabase, SqliteLedger
from gateway.adapters.stripe_portal import StripeBillingPortal
from gateway.adapters.stripe_sink import StripeBillingSink
from gateway.adapters.stripe_stream import StripeStreamBillingSink
from gateway.app.logging import register_secrets
from gateway.app.metrics import PrometheusMetrics
from gateway.app.settings import Secret, Settings
from gateway.domain.errors import PortalNotConfigured
from gateway.domain.portal import ReturnUrlPolicy
from gateway.domain.ports import BillingSink, CustomerStore
from gateway.domain.signature import SignatureVerifier
from gateway.service.dispatcher import DispatchConfig, Dispatcher
from gateway.service.ingest import Ingest
from gateway.service.portal import PortalSessions
from gateway.service.replay import Replayer
from gateway.service.sweep import Sweep


def store_kind(settings: Settings) -> str:
    return settings.store.split(":", 1)[0].replace("rediss", "redis")


def biller_kind(settings: Settings) -> str:
    """The `billing_sink` selector's key: the selected biller, the local ledger one per store."""
    biller = settings.selected_biller()
    return f"ledger_{store_kind(settings)}" if biller == "ledger" else biller


def _open_sqlite(url: str) -> Iterator[SqliteDatabase]:
    database = SqliteDatabase.from_url(url)
    try:
        yield database
    finally:
        database.close()


def _verifier(settings: Settings) -> SignatureVerifier:
    secrets_ = [s.reveal() for s in settings.webhook_secrets]
    if not secrets_:
        # Operator commands (`gateway parked replay`) build Ingest but never verify a delivery; `serve` refuses to
        # start without a secret. A random secret nobody holds makes any verification here fail closed.
        secrets_ = [secrets.token_urlsafe(32)]
    return SignatureVerifier(secrets_, settings.signature_tolerance_s)


def _stripe_sink(settings: Settings) -> BillingSink:
    assert settings.stripe_api_key is not None
    if settings.stripe_api == "v2_stream":
        return StripeStreamBillingSink(
            api_key=settings.stripe_api_key.reveal(),
            event_name=settings.meter_event_name,
            api_base=settings.stripe_api_base,
            timeout_s=settings.stripe_timeout_s,
        )
    return StripeBillingSink(
        api_key=settings.stripe_api_key.reveal(),
        event_name=settings.meter_event_name,
        api_base=settings.stripe_api_base,
        timeout_s=settings.stripe_timeout_s,
    )


def portal_kind(settings: Settings) -> str:
    """The customer portal follows the biller: Stripe's or Lago's; none for the ledger biller (503, see the adapter)."""
    biller = settings.selected_biller()
    return biller if biller in ("stripe", "lago") else "none"


def _lago_sink(settings: Settings) -> LagoBillingSink:
    assert settings.lago_api_key is not None and settings.lago_metric_code is not None  # checked by load_settings
    return LagoBillingSink(
        api_key=settings.lago_api_key.reveal(),
        metric_code=settings.lago_metric_code,
        api_url=settings.lago_api_url,
        units_property=settings.lago_units_property,
        timeout_s=settings.lago_timeout_s,
    )


def _lago_portal(settings: Settings) -> LagoBillingPortal:
    assert settings.lago_api_key is not None
    return LagoBillingPortal(
        api_key=settings.lago_api_key.reveal(), api_url=settings.lago_api_url, timeout_s=settings.lago_timeout_s
    )


def _biller_takes_stripe_ids(settings: Settings) -> bool:
    """A `stripe_customer_id` (an event's metadata, Ringside's customer API) names a billing customer only for Stripe
    and the ledger biller standing in for it. Lago bills subscriptions: only the customer store maps those."""
    return settings.selected_biller() in ("stripe", "ledger")


def _customer_source(settings: Settings) -> str:
    """The `customer_resolver` selector's key: Ringside's customer API (cached in the store) or the store alone."""
    return "ringside" if settings.ringside_api_key is not None and _biller_takes_stripe_ids(settings) else "store"


def _max_rps(settings: Settings) -> float:
    """The dispatcher's pace: each real biller's rate limit; the local ledger biller is a table insert."""
    kind = biller_kind(settings)
    if kind == "stripe":
        return settings.stripe_rate()
    if kind == "lago":
        return settings.lago_max_rps
    return 10_000.0


def _stripe_portal(settings: Settings) -> StripeBillingPortal:
    assert settings.stripe_api_key is not None
    return StripeBillingPortal(
        api_key=settings.stripe_api_key.reveal(),
        api_base=settings.stripe_api_base,
        timeout_s=settings.stripe_timeout_s,
        configuration_id=settings.portal_configuration_id,
    )


def _return_url_policy(settings: Settings) -> ReturnUrlPolicy:
    try:
        return settings.return_url_policy()
    except ValueError as exc:
        raise PortalNotConfigured(f"the billing portal has no usable return URL: {exc}") from None


def _dispatch_config(settings: Settings) -> DispatchConfig:
    return DispatchConfig(
        batch=settings.dispatch_batch,
        concurrency=settings.dispatch_concurrency,
        lease_s=settings.dispatch_lease_s,
        poll_s=settings.dispatch_poll_s,
        max_rps=_max_rps(settings),
        retry_base_s=settings.retry_base_s,
        retry_max_s=settings.retry_max_s,
    )


def _ringside_lookup(store: CustomerStore, settings: Settings) -> RingsideCustomerLookup:
    assert settings.ringside_api_key is not None
    return RingsideCustomerLookup(
        store, api_key=settings.ringside_api_key.reveal(), api_base=settings.ringside_api_base
    )


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=Settings)
    clock = providers.Singleton(SystemClock)
    # One registry per container: two apps in one process (tests) never share a metric.
    metrics = providers.Singleton(PrometheusMetrics)

    _store_kind = providers.Callable(store_kind, settings)
    sqlite = providers.Resource(_open_sqlite, settings.provided.store)

    # One client (and connection pool) per process, shared by the Redis adapters; closed by close_store_clients.
    redis = providers.Singleton(connect, settings.provided.store)
    _redis_prefix = settings.provided.redis_prefix

    ledger = providers.Selector(
        _store_kind,
        memory=providers.Singleton(MemoryLedger),
        sqlite=providers.Singleton(SqliteLedger, sqlite),
        redis=providers.Singleton(
            RedisLedger, redis, prefix=_redis_prefix, dedupe_ttl_s=settings.provided.dedupe_ttl_s
        ),
    )
    customers = providers.Selector(
        _store_kind,
        memory=providers.Singleton(MemoryCustomers),
        sqlite=providers.Singleton(SqliteCustomers, sqlite),
        redis=providers.Singleton(RedisCustomers, redis, prefix=_redis_prefix),
    )
    # Ingest, replay and the portal resolve customers through Ringside's customer API when RINGSIDE_API_KEY is
    # set (CONTRACT 1) and the biller takes the Stripe ids it holds; operator commands read and write the store.
    customer_resolver = providers.Selector(
        providers.Callable(_customer_source, settings),
        ringside=providers.Singleton(_ringside_lookup, customers, settings),
        store=customers,
    )
    billing_sink = providers.Selector(
        providers.Callable(biller_kind, settings),
        stripe=providers.Singleton(_stripe_sink, settings),
        lago=providers.Singleton(_lago_sink, settings),
        ledger_memory=providers.Singleton(MemoryBiller),
        ledger_sqlite=providers.Singleton(SqliteBiller, sqlite),
        ledger_redis=providers.Singleton(RedisBiller, redis, prefix=_redis_prefix),
    )

    billing_portal = providers.Selector(
        providers.Callable(portal_kind, settings),
        stripe=providers.Singleton(_stripe_portal, settings),
        lago=providers.Singleton(_lago_portal, settings),
        none=providers.Singleton(DisabledBillingPortal),
    )
    portal_sessions = providers.Singleton(
        PortalSessions,
        customers=customer_resolver,
        portal=billing_portal,
        return_urls=providers.Singleton(_return_url_policy, settings),
    )

    dispatcher = providers.Singleton(
        Dispatcher,
        ledger=ledger,
        sink=billing_sink,
        clock=clock,
        config=providers.Callable(_dispatch_config, settings),
        metrics=metrics,
    )
    sweep = providers.Singleton(
        Sweep,
        ledger=ledger,
        clock=clock,
        metrics=metrics,
        interval_s=settings.provided.sweep_interval_s,
        alert_after_s=settings.provided.pending_alert_s,
        wake=dispatcher.provided.wake,
    )
    verifier = providers.Singleton(_verifier, settings)
    policy = providers.Callable(lambda s: s.policy(), settings)
    ingest = providers.Singleton(
        Ingest,
        verifier=verifier,
        ledger=ledger,
        customers=customer_resolver,
        clock=clock,
        policy=policy,
        on_recorded=dispatcher.provided.wake,
        stripe_ids_on_events=providers.Callable(_biller_takes_stripe_ids, settings),
        metrics=metrics,
    )
    replayer = providers.Factory(Replayer, ingest=ingest, ledger=ledger, customers=customer_resolver, clock=clock)


def build_container(settings: Settings) -> Container:
    """The container for `settings`. Every secret in them is scrubbed from the logs from now on, whatever logs it."""
    register_secrets(_secret_values(settings))
    return Container(settings=settings)


def _secret_values(settings: Settings) -> list[str]:
    """Every Secret in the settings, found by type so that a secret setting added later is covered too."""
    values: list[str] = []
    for field in settings.__struct_fields__:
        value = getattr(settings, field)
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, Secret):
                values.append(item.reveal())
    return values


async def check_store(container: Container) -> None:
    """Start-up checks of the selected store. Warnings only: a Redis that is down now may be up in a second."""
    if store_kind(container.settings()) == "redis":
        await warn_if_volatile(container.redis())


async def close_store_clients(container: Container) -> None:
    """Close the Ringside look-up's HTTP client and the Redis client's connections.

    Its close is a coroutine, and dependency-injector's shutdown_resources() (which closes SQLite) is synchronous;
    an async Resource would turn every provider that depends on it into an awaitable. So the client is a Singleton,
    closed here by the app's shutdown, and reset so that a later call builds a fresh one.
    """
    if container.settings().ringside_api_key is not None:
        await container.customer_resolver().close()
    if store_kind(container.settings()) == "redis":
        await container.redis().aclose()
        container.redis.reset()
