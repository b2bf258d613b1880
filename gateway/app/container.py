"""The composition root: the one place (with gateway/app/biller_adapters.py, which builds each biller's adapters from
its settings) that names concrete adapters and wires them to the ports.

`GATEWAY_STORE` picks the stores (memory, SQLite, Redis, PostgreSQL) and `GATEWAY_BILLER` the biller and its portal
(Stripe, Lago, or the local ledger biller that records meter events in the store instead of sending them; unset,
Stripe when `STRIPE_API_KEY` is set). The selectors pick by the biller's profile (gateway/app/billers.py): a new
biller is a profile and its entries in the `billing_sink` and `billing_portal` selectors.
Tests build a Container with settings of their own and override providers as they need
(`container.ledger.override(...)`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import msgspec
import structlog
from dependency_injector import containers, providers

from gateway.adapters.clock import SystemClock
from gateway.adapters.disabled_portal import DisabledBillingPortal
from gateway.adapters.memory import MemoryBiller, MemoryCustomers, MemoryLedger
from gateway.adapters.postgres import (
    PostgresBiller,
    PostgresCustomers,
    PostgresDatabase,
    PostgresDurability,
    PostgresLedger,
)
from gateway.adapters.redis import (
    RedisBiller,
    RedisCustomers,
    RedisDurability,
    RedisLedger,
    connect,
    refuse_if_volatile,
)
from gateway.adapters.ringside.customers import RingsideCustomerLookup
from gateway.adapters.sqlite import SqliteBiller, SqliteCustomers, SqliteDatabase, SqliteLedger
from gateway.app import biller_adapters
from gateway.app.metrics import PrometheusMetrics
from gateway.app.redaction import register_secrets
from gateway.app.secret import Secret
from gateway.app.settings import Settings
from gateway.domain.errors import PortalNotConfigured, StoreUnavailable
from gateway.domain.portal import ReturnUrlPolicy
from gateway.domain.ports import CustomerStore
from gateway.domain.signature import SignatureVerifier
from gateway.service.dispatcher import DispatchConfig, Dispatcher
from gateway.service.feedback import ReportHandler, ReportPoller
from gateway.service.ingest import Ingest
from gateway.service.portal import PortalSessions
from gateway.service.reconcile import Reconciler, Repairer
from gateway.service.replay import Replayer
from gateway.service.sweep import Sweep

log = structlog.get_logger("gateway.store")


def store_kind(settings: Settings) -> str:
    """memory, sqlite, redis (redis:// or rediss://) or postgres (postgresql:// or postgres://)."""
    scheme = settings.store.split(":", 1)[0]
    return {"rediss": "redis", "postgresql": "postgres"}.get(scheme, scheme)


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


def totals_kind(settings: Settings) -> str:
    """The `biller_totals` selector's key: the biller's own hourly totals, or `none` (Lago has none)."""
    return settings.biller_profile().totals or "none"


def sink_kind(settings: Settings) -> str:
    """The `billing_sink` selector's key, from the biller's profile."""
    return settings.biller_profile().sink(settings)


def portal_kind(settings: Settings) -> str:
    """The customer portal follows the biller: Stripe's or Lago's; none for the ledger biller (503, see the adapter)."""
    return settings.biller_profile().portal


def _customer_source(settings: Settings) -> str:
    """The `customer_resolver` selector's key: Ringside's customer API (cached in the store) or the store alone.

    Ringside's customer API names Stripe customers: only a biller whose profile takes those ids uses it.
    """
    takes_ids = settings.biller_profile().names_billing_ids
    return "ringside" if settings.ringside_api_key is not None and takes_ids else "store"


def _return_url_policy(settings: Settings) -> ReturnUrlPolicy:
    try:
        return settings.return_url_policy()
    except ValueError as exc:
        raise PortalNotConfigured(f"the billing portal has no usable return URL: {exc}") from None


def _dispatch_config(settings: Settings) -> DispatchConfig:
    return DispatchConfig(
        batch=settings.dispatch_batch,
        concurrency=settings.dispatch_concurrency,
        max_concurrency=settings.dispatch_max_concurrency,
        lease_s=settings.dispatch_lease_s,
        poll_s=settings.dispatch_poll_s,
        max_rps=settings.biller_profile().max_rps(settings),
        retry_base_s=settings.retry_base_s,
        retry_max_s=settings.retry_max_s,
        max_event_age_s=settings.biller_profile().max_event_age_s,
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
    _redis_prefix = settings.provided.redis.prefix
    # One asyncpg pool per process, shared by the PostgreSQL adapters; made on first use, closed by
    # close_store_clients.
    postgres = providers.Singleton(PostgresDatabase, settings.provided.store)

    ledger = providers.Selector(
        _store_kind,
        memory=providers.Singleton(MemoryLedger),
        sqlite=providers.Singleton(SqliteLedger, sqlite),
        redis=providers.Singleton(
            RedisLedger, redis, prefix=_redis_prefix, dedupe_ttl_s=settings.provided.redis.dedupe_ttl_s
        ),
        postgres=providers.Singleton(PostgresLedger, postgres),
    )
    # What the sweep and /readyz re-check while the process runs: Redis's and PostgreSQL's settings can lose data.
    store_durability = providers.Selector(
        _store_kind,
        memory=providers.Object(None),
        sqlite=providers.Object(None),
        redis=providers.Singleton(RedisDurability, redis, allow_volatile=settings.provided.redis.allow_volatile),
        postgres=providers.Singleton(PostgresDurability, postgres),
    )
    customers = providers.Selector(
        _store_kind,
        memory=providers.Singleton(MemoryCustomers),
        sqlite=providers.Singleton(SqliteCustomers, sqlite),
        redis=providers.Singleton(RedisCustomers, redis, prefix=_redis_prefix),
        postgres=providers.Singleton(PostgresCustomers, postgres),
    )
    # Ingest, replay and the portal resolve customers through Ringside's customer API when RINGSIDE_API_KEY is
    # set and the biller takes the Stripe ids it holds; operator commands read and write the store.
    customer_resolver = providers.Selector(
        providers.Callable(_customer_source, settings),
        ringside=providers.Singleton(_ringside_lookup, customers, settings),
        store=customers,
    )
    billing_sink = providers.Selector(
        providers.Callable(sink_kind, settings),
        stripe_v1=providers.Singleton(biller_adapters.stripe_sink, settings),
        stripe_stream=providers.Singleton(biller_adapters.stripe_stream_sink, settings),
        lago=providers.Singleton(biller_adapters.lago_sink, settings),
        # The local ledger biller lives in the selected store.
        ledger=providers.Selector(
            _store_kind,
            memory=providers.Singleton(MemoryBiller),
            sqlite=providers.Singleton(SqliteBiller, sqlite),
            redis=providers.Singleton(RedisBiller, redis, prefix=_redis_prefix),
            postgres=providers.Singleton(PostgresBiller, postgres),
        ),
    )

    # The biller's own totals per customer and hour (`gateway reconcile`); the local ledger biller is its own.
    biller_totals = providers.Selector(
        providers.Callable(totals_kind, settings),
        stripe=providers.Singleton(biller_adapters.stripe_totals, settings),
        ledger=billing_sink,
        none=providers.Object(None),
    )
    # Stripe's meter error reports (only with the Stripe biller; settings refuse the variables otherwise).
    biller_reports = providers.Singleton(biller_adapters.stripe_reports, settings)
    stripe_verifier = providers.Singleton(biller_adapters.stripe_verifier, settings)

    billing_portal = providers.Selector(
        providers.Callable(portal_kind, settings),
        stripe=providers.Singleton(biller_adapters.stripe_portal, settings),
        lago=providers.Singleton(biller_adapters.lago_portal, settings),
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
        identifier=providers.Callable(lambda s: s.biller_profile().meter_identifier, settings),
    )
    sweep = providers.Singleton(
        Sweep,
        ledger=ledger,
        clock=clock,
        metrics=metrics,
        interval_s=settings.provided.sweep_interval_s,
        alert_after_s=settings.provided.pending_alert_s,
        wake=dispatcher.provided.wake,
        durability=store_durability,
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
        stripe_ids_on_events=providers.Callable(lambda s: s.biller_profile().names_billing_ids, settings),
        metrics=metrics,
    )
    report_handler = providers.Singleton(
        ReportHandler,
        ledger=ledger,
        reports=biller_reports,
        clock=clock,
        identifier_of=providers.Callable(lambda s: s.biller_profile().meter_identifier, settings),
    )
    report_poller = providers.Singleton(
        ReportPoller, handler=report_handler, reports=biller_reports, cursor=ledger, clock=clock
    )
    reconciler = providers.Factory(
        Reconciler,
        ledger=ledger,
        biller=biller_totals,
        clock=clock,
        settle_s=settings.provided.reconcile_settle_s,
    )
    repairer = providers.Factory(
        Repairer,
        reconciler=reconciler,
        ledger=ledger,
        sink=billing_sink,
        clock=clock,
        max_age_s=providers.Callable(lambda s: s.biller_profile().max_event_age_s, settings),
    )
    replayer = providers.Factory(Replayer, ingest=ingest, ledger=ledger, customers=customer_resolver, clock=clock)


def build_container(settings: Settings) -> Container:
    """The container for `settings`. Every secret in them is scrubbed from the logs from now on, whatever logs it."""
    register_secrets(_secret_values(settings))
    return Container(settings=settings)


def _secret_values(settings: msgspec.Struct) -> list[str]:
    """Every Secret in the settings and their groups, found by type so that a secret setting added later is covered."""
    values: list[str] = []
    for field in settings.__struct_fields__:
        value = getattr(settings, field)
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, Secret):
                values.append(item.reveal())
            elif isinstance(item, msgspec.Struct):
                values.extend(_secret_values(item))
    return values


async def check_store(container: Container) -> None:
    """Start-up checks of the selected store. A Redis that is down now only warns (it may be up in a second); one
    that could lose acknowledged events raises RedisNotDurable unless GATEWAY_REDIS_ALLOW_VOLATILE is set."""
    settings = container.settings()
    if store_kind(settings) == "redis":
        await refuse_if_volatile(container.redis(), allow_volatile=settings.redis.allow_volatile)
    if store_kind(settings) == "postgres":
        await _open_postgres(container.postgres())


async def _open_postgres(database: PostgresDatabase) -> None:
    """Connect and migrate now, so that the first delivery does not wait for it; a server that is down only warns
    (the pool is made on the next call), and one that could lose acknowledged events is logged (and /readyz says so).
    """
    try:
        await database.pool()
    except StoreUnavailable as exc:
        log.warning("postgres.unavailable", message=exc.message)
        return
    problem = await PostgresDurability(database).problem()
    if problem is not None:
        log.warning("postgres.not_durable", message=problem)


async def check_store_once(settings: Settings) -> None:
    """check_store on a client of its own, closed after, without the warnings (the process's own start-up logs
    them): for a command line that refuses before it starts serving."""
    if store_kind(settings) != "redis":
        return
    client = connect(settings.store)
    try:
        await refuse_if_volatile(client, allow_volatile=settings.redis.allow_volatile, warn=False)
    finally:
        await client.aclose()


async def close_biller_readers(container: Container) -> None:
    """Close the clients that read the biller's side (reports, totals), when this biller has them."""
    profile = container.settings().biller_profile()
    if profile.reports:
        await container.biller_reports().close()
    if profile.totals == "stripe":
        await container.biller_totals().close()


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
    if store_kind(container.settings()) == "postgres":
        await container.postgres().close()
        container.postgres.reset()
