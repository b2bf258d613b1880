"""The composition root: the one module that names concrete adapters and wires them to the ports.

`GATEWAY_STORE` picks the stores (memory, SQLite, Redis) and `STRIPE_API_KEY` the biller (Stripe, or the local
ledger biller that records meter events in the store instead of sending them). Tests build a Container with
settings of their own and override providers as they need (`container.ledger.override(...)`).
"""

from __future__ import annotations

from collections.abc import Iterator

from dependency_injector import containers, providers

from gateway.adapters.clock import SystemClock
from gateway.adapters.memory import MemoryBiller, MemoryCustomers, MemoryLedger
from gateway.adapters.sqlite import SqliteBiller, SqliteCustomers, SqliteDatabase, SqliteLedger
from gateway.adapters.stripe_sink import StripeBillingSink
from gateway.app.settings import Settings
from gateway.domain.signature import SignatureVerifier
from gateway.service.dispatcher import DispatchConfig, Dispatcher
from gateway.service.ingest import Ingest


def store_kind(settings: Settings) -> str:
    return settings.store.split(":", 1)[0].replace("rediss", "redis")


def biller_kind(settings: Settings) -> str:
    return "stripe" if settings.stripe_api_key is not None else f"ledger_{store_kind(settings)}"


def _open_sqlite(url: str) -> Iterator[SqliteDatabase]:
    database = SqliteDatabase.from_url(url)
    try:
        yield database
    finally:
        database.close()


def _verifier(settings: Settings) -> SignatureVerifier:
    return SignatureVerifier([s.reveal() for s in settings.webhook_secrets], settings.signature_tolerance_s)


def _stripe_sink(settings: Settings) -> StripeBillingSink:
    assert settings.stripe_api_key is not None
    return StripeBillingSink(
        api_key=settings.stripe_api_key.reveal(),
        event_name=settings.meter_event_name,
        api_base=settings.stripe_api_base,
        timeout_s=settings.stripe_timeout_s,
    )


def _dispatch_config(settings: Settings) -> DispatchConfig:
    return DispatchConfig(
        batch=settings.dispatch_batch,
        concurrency=settings.dispatch_concurrency,
        lease_s=settings.dispatch_lease_s,
        poll_s=settings.dispatch_poll_s,
        # Only Stripe has a rate limit to respect; the local ledger biller is a table insert.
        max_rps=settings.stripe_rate() if biller_kind(settings) == "stripe" else 10_000.0,
        retry_base_s=settings.retry_base_s,
        retry_max_s=settings.retry_max_s,
    )


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=Settings)
    clock = providers.Singleton(SystemClock)

    _store_kind = providers.Callable(store_kind, settings)
    sqlite = providers.Resource(_open_sqlite, settings.provided.store)

    ledger = providers.Selector(
        _store_kind,
        memory=providers.Singleton(MemoryLedger),
        sqlite=providers.Singleton(SqliteLedger, sqlite),
    )
    customers = providers.Selector(
        _store_kind,
        memory=providers.Singleton(MemoryCustomers),
        sqlite=providers.Singleton(SqliteCustomers, sqlite),
    )
    billing_sink = providers.Selector(
        providers.Callable(biller_kind, settings),
        stripe=providers.Singleton(_stripe_sink, settings),
        ledger_memory=providers.Singleton(MemoryBiller),
        ledger_sqlite=providers.Singleton(SqliteBiller, sqlite),
    )

    dispatcher = providers.Singleton(
        Dispatcher,
        ledger=ledger,
        sink=billing_sink,
        clock=clock,
        config=providers.Callable(_dispatch_config, settings),
    )
    verifier = providers.Singleton(_verifier, settings)
    policy = providers.Callable(lambda s: s.policy(), settings)
    ingest = providers.Singleton(
        Ingest,
        verifier=verifier,
        ledger=ledger,
        customers=customers,
        clock=clock,
        policy=policy,
        on_recorded=dispatcher.provided.wake,
    )


def build_container(settings: Settings) -> Container:
    return Container(settings=settings)
