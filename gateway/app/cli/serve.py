"""`gateway serve` and `gateway worker`: the long-running processes."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from typing import Any

import click
import msgspec
import structlog

from gateway.adapters.redis import RedisNotDurable
from gateway.app.cli.common import env_settings
from gateway.app.container import Container, build_container, check_store_once, store_kind
from gateway.app.environment import load_settings
from gateway.app.lifecycle import running
from gateway.app.logging import configure_logging
from gateway.app.secret import Secret
from gateway.app.settings import Settings

log = structlog.get_logger("gateway.cli")


@click.command()
@click.option("--host", default=None, help="Bind address [env GATEWAY_HOST, default 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [env GATEWAY_PORT, default 8000].")
@click.option("--dev", is_flag=True, help="Generate a throwaway webhook secret (never in production).")
@click.option("--no-dispatcher", is_flag=True, help="Ingest only; run `gateway worker` elsewhere to deliver.")
@click.option(
    "--workers", type=click.IntRange(min=1), default=1, help="Worker processes, each with its own dispatcher [1]."
)
def serve(host: str | None, port: int | None, dev: bool, no_dispatcher: bool, workers: int) -> None:
    """Run the HTTP service, with the dispatcher in-process."""
    import uvicorn

    from gateway.app.server import UVICORN_OPTIONS, create_app, server_config, server_limits, worker_factory

    overrides: dict[str, Any] = {}
    if host:
        overrides["host"] = host
    if port:
        overrides["port"] = port
    settings = env_settings(**overrides)
    if dev and not settings.webhook_secrets:
        secret = "dev_" + secrets.token_urlsafe(24)
        settings = load_settings(os.environ, **overrides, webhook_secrets=[Secret(secret)])
        _print_dev_banner(secret, settings)
    if dev:
        # Trying it out on a Redis without persistence is fine: warned, not refused.
        settings = msgspec.structs.replace(settings, redis=msgspec.structs.replace(settings.redis, allow_volatile=True))
    if not settings.webhook_secrets:
        raise click.ClickException(
            "RINGSIDE_WEBHOOK_SECRETS is not set: the gateway cannot verify deliveries. Set it to the signing "
            "secret Ringside showed when you registered the endpoint, or run `gateway serve --dev` to try it out."
        )
    configure_logging(settings.log_format, settings.log_level, flush_ms=settings.log_flush_ms)
    _refuse_a_volatile_store(settings)
    container = build_container(settings)
    _announce(container, settings, workers)
    if workers > 1:
        # uvicorn starts each worker from an import string and the worker reads its settings from the environment
        # (gateway.app.server.app_from_env), so a generated dev secret must travel there. Leases keep the workers'
        # dispatchers from sending one entry twice, as with replicas.
        container.shutdown_resources()
        if dev:
            os.environ["RINGSIDE_WEBHOOK_SECRETS"] = ",".join(s.reveal() for s in settings.webhook_secrets)
            os.environ["GATEWAY_REDIS_ALLOW_VOLATILE"] = "true"
        uvicorn.run(
            worker_factory(run_dispatcher=not no_dispatcher),
            factory=True,
            workers=workers,
            host=settings.host,
            port=settings.port,
            **UVICORN_OPTIONS,
            **server_limits(settings),
        )
        return
    app = create_app(container, run_dispatcher=not no_dispatcher)
    uvicorn.Server(server_config(app, host=settings.host, port=settings.port, **server_limits(settings))).run()


def _refuse_a_volatile_store(settings: Settings) -> None:
    """A store that could lose acknowledged events stops the process here, with the setting to change."""
    try:
        asyncio.run(check_store_once(settings))
    except RedisNotDurable as exc:
        raise click.ClickException(str(exc)) from None


def _announce(container: Container, settings: Settings, workers: int = 1) -> None:
    biller = container.billing_sink().name
    log.info(
        "gateway.starting",
        host=settings.host,
        port=settings.port,
        store=settings.store.split("?")[0] if settings.store.startswith("sqlite") else settings.store.split("@")[-1],
        biller=biller,
        meter_event_name=settings.stripe.meter_event_name,
        units_per_usd=settings.units_per_usd,
        rounding=settings.rounding.value,
    )
    if not settings.biller_profile().remote:
        log.warning(
            "gateway.local_biller",
            message="no biller is selected (STRIPE_API_KEY unset, or GATEWAY_BILLER=ledger): meter events are "
            "recorded in the local ledger, NOT sent to Stripe or Lago",
        )
    if settings.biller_profile().reports and not (settings.stripe.webhook_secrets or settings.stripe.events_poll_s):
        log.warning(
            "stripe.reports_off",
            message="neither STRIPE_WEBHOOK_SECRET nor GATEWAY_STRIPE_EVENTS_POLL_S is set: meter events Stripe "
            "answers and then drops (an unknown customer, say) are never parked; see docs/reconcile.md",
        )
    if workers > 1 and store_kind(settings) == "sqlite":
        log.warning(
            "gateway.sqlite_workers",
            workers=workers,
            message="the workers share one SQLite file and take turns at its one write lock: a second worker adds no "
            "throughput and raises latency (docs/performance.md); to scale out, use GATEWAY_STORE=redis://...",
        )


def _print_dev_banner(secret: str, settings: Settings) -> None:
    url = f"http://{settings.host}:{settings.port}/webhooks/ringside"
    banner = "\n  DEV MODE: a throwaway webhook secret was generated (shown once, not stored):\n"
    click.secho(banner, fg="yellow", err=True)
    click.echo(f"    export RINGSIDE_WEBHOOK_SECRETS='{secret}'\n", err=True)
    click.echo("  Send a signed delivery from another terminal:\n", err=True)
    click.echo(
        f"""    SECRET='{secret}'
    BODY='{{"id":"evt_demo_1","type":"chat.completion.finished","data":{{"cost_usd":"0.0123","customer":{{"id":"cust_demo","metadata":{{"stripe_customer_id":"cus_demo"}}}}}}}}'
    T=$(date +%s); SIG=$(printf '%s.%s' "$T" "$BODY" | openssl dgst -sha256 -hmac "$SECRET" -r | cut -d' ' -f1)
    curl -s {url} -H "X-FC-Signature: t=$T,v1=$SIG" -H 'Content-Type: application/json' -d "$BODY"
""",
        err=True,
    )


@click.command()
def worker() -> None:
    """Run the dispatcher alone (no HTTP), for deployments that scale ingest and delivery apart."""
    settings = env_settings()
    configure_logging(settings.log_format, settings.log_level, flush_ms=settings.log_flush_ms)
    container = build_container(settings)
    _announce(container, settings)
    try:
        asyncio.run(_run_worker(container))
    except RedisNotDurable as exc:
        raise click.ClickException(str(exc)) from None


async def _run_worker(container: Container) -> None:
    from gateway.app.background import background

    async with running(container, checked=True), background(container):
        dispatcher = container.dispatcher()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, dispatcher.stop)
        await dispatcher.run()
