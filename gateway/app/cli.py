"""The `gateway` command: serve, worker, and the operator commands (CONTRACT 5)."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
from typing import Any

import click
import structlog

from gateway.app.container import Container, build_container
from gateway.app.logging import configure_logging
from gateway.app.settings import Secret, Settings, SettingsError, load_settings

log = structlog.get_logger("gateway.cli")


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(os.environ, **overrides)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ringside-stripe-gateway")
def main() -> None:
    """Ringside -> Stripe billing gateway. Settings come from the environment (see README)."""


@main.command()
@click.option("--host", default=None, help="Bind address [env GATEWAY_HOST, default 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [env GATEWAY_PORT, default 8000].")
@click.option("--dev", is_flag=True, help="Generate a throwaway webhook secret (never in production).")
@click.option("--no-dispatcher", is_flag=True, help="Ingest only; run `gateway worker` elsewhere to deliver.")
def serve(host: str | None, port: int | None, dev: bool, no_dispatcher: bool) -> None:
    """Run the HTTP service, with the dispatcher in-process."""
    import uvicorn

    from gateway.app.http import create_app

    overrides: dict[str, Any] = {}
    if host:
        overrides["host"] = host
    if port:
        overrides["port"] = port
    settings = _settings(**overrides)
    if dev and not settings.webhook_secrets:
        secret = "dev_" + secrets.token_urlsafe(24)
        settings = load_settings(os.environ, **overrides, webhook_secrets=[Secret(secret)])
        _print_dev_banner(secret, settings)
    if not settings.webhook_secrets:
        raise click.ClickException(
            "RINGSIDE_WEBHOOK_SECRETS is not set: the gateway cannot verify deliveries. Set it to the signing "
            "secret Ringside showed when you registered the endpoint, or run `gateway serve --dev` to try it out."
        )
    configure_logging(settings.log_format, settings.log_level)
    container = build_container(settings)
    _announce(container, settings)
    app = create_app(container, run_dispatcher=not no_dispatcher)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=20,
    )
    uvicorn.Server(config).run()


def _announce(container: Container, settings: Settings) -> None:
    biller = container.billing_sink().name
    log.info(
        "gateway.starting",
        host=settings.host,
        port=settings.port,
        store=settings.store.split("?")[0] if settings.store.startswith("sqlite") else settings.store.split("@")[-1],
        biller=biller,
        meter_event_name=settings.meter_event_name,
        units_per_usd=settings.units_per_usd,
        rounding=settings.rounding.value,
    )
    if settings.stripe_api_key is None:
        log.warning(
            "gateway.local_biller",
            message="STRIPE_API_KEY is not set: meter events are recorded in the local ledger, NOT sent to Stripe",
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


@main.command()
def worker() -> None:
    """Run the dispatcher alone (no HTTP), for deployments that scale ingest and delivery apart."""
    settings = _settings()
    configure_logging(settings.log_format, settings.log_level)
    container = build_container(settings)
    _announce(container, settings)
    asyncio.run(_run_worker(container))


async def _run_worker(container: Container) -> None:
    from gateway.app.http import close_container

    dispatcher = container.dispatcher()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, dispatcher.stop)
    try:
        await dispatcher.run()
    finally:
        await close_container(container)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
