"""The `gateway` command: serve, worker, and the operator commands (CONTRACT 5)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec
import structlog

from gateway.app.container import Container, build_container, check_store, store_kind
from gateway.app.logging import configure_logging
from gateway.app.output import F, age, emit_json, json_option, progress, table, timestamp, usd
from gateway.app.settings import Secret, Settings, SettingsError, load_settings

log = structlog.get_logger("gateway.cli")

# How `gateway serve` runs uvicorn, in one place (bench/bare_app.py serves its baseline with the same options).
UVICORN_OPTIONS: dict[str, Any] = {
    "log_config": None,
    "access_log": False,
    "lifespan": "on",
    "timeout_graceful_shutdown": 20,
}


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
@click.option(
    "--workers", type=click.IntRange(min=1), default=1, help="Worker processes, each with its own dispatcher [1]."
)
def serve(host: str | None, port: int | None, dev: bool, no_dispatcher: bool, workers: int) -> None:
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
    _announce(container, settings, workers)
    if workers > 1:
        # uvicorn starts each worker from an import string and the worker reads its settings from the environment
        # (gateway.app.http.app_from_env), so a generated dev secret must travel there. Leases keep the workers'
        # dispatchers from sending one entry twice, as with replicas.
        container.shutdown_resources()
        if dev:
            os.environ["RINGSIDE_WEBHOOK_SECRETS"] = ",".join(s.reveal() for s in settings.webhook_secrets)
        factory = "ingest_app_from_env" if no_dispatcher else "app_from_env"
        uvicorn.run(
            f"gateway.app.http:{factory}",
            factory=True,
            workers=workers,
            host=settings.host,
            port=settings.port,
            **UVICORN_OPTIONS,
        )
        return
    app = create_app(container, run_dispatcher=not no_dispatcher)
    uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, **UVICORN_OPTIONS)).run()


def _announce(container: Container, settings: Settings, workers: int = 1) -> None:
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
    if settings.selected_biller() == "ledger":
        log.warning(
            "gateway.local_biller",
            message="no biller is selected (STRIPE_API_KEY unset, or GATEWAY_BILLER=ledger): meter events are "
            "recorded in the local ledger, NOT sent to Stripe or Lago",
        )
    if workers > 1 and store_kind(settings) == "sqlite":
        log.warning(
            "gateway.sqlite_workers",
            workers=workers,
            message="the workers share one SQLite file and take turns at its one write lock: a second worker adds no "
            "throughput and raises latency (README, Performance); to scale out, use GATEWAY_STORE=redis://...",
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

    await check_store(container)
    dispatcher = container.dispatcher()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, dispatcher.stop)
    try:
        await dispatcher.run()
    finally:
        await close_container(container)


# -- operator commands (issue 7) --------------------------------------------------------------------------------
# Each takes the same settings as `serve`, prints text (or one JSON document with --json) and exits non-zero with a
# one-line reason on failure. The logic lives in gateway/app/{setup,simulate,demo,customer_file}.py and
# gateway/service/replay.py; what is here is parsing options and printing.

T = TypeVar("T")


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; a store that cannot be reached is a one-line failure, not a traceback."""
    from gateway.domain.errors import GatewayError

    try:
        return asyncio.run(work)
    except GatewayError as exc:
        raise click.ClickException(exc.message) from None


@contextlib.asynccontextmanager
async def _opened(settings: Settings) -> AsyncIterator[Container]:
    """A container for one command, closed (databases, clients) when the command is done."""
    from gateway.app.http import close_container

    container = build_container(settings)
    try:
        yield container
    finally:
        await close_container(container)


@main.command("stripe-setup")
@click.option("--markup", default="1", show_default=True, help="Price multiplier over Ringside's cost (1.3 = +30%).")
@click.option("--currency", default="usd", show_default=True, help="The price's currency (three-letter ISO code).")
@click.option("--dry-run", is_flag=True, help="Look up what exists and say what would be created; create nothing.")
@click.option("--replace-price", is_flag=True, help="When the existing price differs, create a new one for the key.")
@json_option
def stripe_setup(markup: str, currency: str, dry_run: bool, replace_price: bool, as_json: bool) -> None:
    """Find or create the Stripe meter, product and metered price (safe to run twice)."""
    from gateway.adapters.stripe.price_plan import plan_price
    from gateway.adapters.stripe.setup import StripeSetup, stripe_client
    from gateway.app.setup import SetupError

    settings = _settings()
    if settings.stripe_api_key is None:
        raise click.ClickException(
            "STRIPE_API_KEY is not set: stripe-setup creates the meter and the price in your Stripe account "
            "(try a test-mode key, sk_test_..., first)"
        )
    key = settings.stripe_api_key.reveal()
    try:
        plan = plan_price(settings.meter_event_name, currency, settings.units_per_usd, _decimal(markup, "--markup"))
        client = stripe_client(key, settings.stripe_api_base, settings.stripe_timeout_s)
        report = StripeSetup(client, live=key.startswith(("sk_live_", "rk_live_"))).run(
            plan, dry_run=dry_run, replace_price=replace_price
        )
    except SetupError as exc:
        raise click.ClickException(exc.message) from None
    if as_json:
        emit_json({**msgspec.structs.asdict(report), "dry_run": dry_run, "lookup_key": plan.lookup_key})
        return
    click.echo(f"Stripe ({report.mode} mode){', dry run' if dry_run else ''}:")
    table(
        ["kind", "id", "action", "detail"],
        [("  " + r.kind, r.id or "(new)", r.action.replace("_", " "), r.detail) for r in report.resources],
        header=False,
    )
    if report.created_nothing:
        click.echo("Nothing created: the meter, the product and the price already exist.")
    elif dry_run:
        click.echo("Dry run: nothing was created.")
    click.echo("\nSet in the gateway's environment:")
    for name, value in report.environment.items():
        click.echo(f"  {name}={value}")
    if report.price.id:
        click.echo(f"\nSubscribe each customer to price {report.price.id} (lookup key {plan.lookup_key}).")


@main.command("ringside-register")
@click.option("--url", required=True, help="The gateway's public URL (https://host, or the full /webhooks/ringside).")
@click.option(
    "--events",
    "events",
    multiple=True,
    default=["chat.completion.finished"],
    show_default=True,
    help="Event types to subscribe to (repeat, or comma-separate).",
)
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the signing secret to this new file (mode 0600) instead of printing it.",
)
@click.option("--description", default="ringside-stripe-gateway", show_default=True, help="Label shown by Ringside.")
@click.option("--force", is_flag=True, help="Register even if Ringside lists an endpoint for this URL already.")
@json_option
def ringside_register(
    url: str, events: tuple[str, ...], secret_file: Path | None, description: str, force: bool, as_json: bool
) -> None:
    """Register the gateway's webhook URL with Ringside and keep the signing secret it shows once."""
    from gateway.adapters.ringside.registration import RingsideRegistration, ringside_client
    from gateway.app.setup import SetupError, check_secret_file, webhook_url, write_secret_file

    settings = _settings()
    if settings.ringside_api_key is None:
        raise click.ClickException("RINGSIDE_API_KEY is not set: it is the server-side key from Ringside's dashboard")
    subscribed = [name.strip() for value in events for name in value.split(",") if name.strip()]
    try:
        target = webhook_url(url)
        if secret_file is not None:
            check_secret_file(secret_file)
        with ringside_client(settings.ringside_api_key.reveal(), settings.ringside_api_base) as client:
            registration = RingsideRegistration(client)
            existing = None if force else registration.find(target)
            if existing is not None:
                raise SetupError(
                    f"{target} is already registered with Ringside as {existing.id}; its signing secret was shown "
                    "when it was created (rotate it in Ringside's dashboard if lost), or pass --force to add another"
                )
            endpoint, secret = registration.register(target, subscribed, description)
    except SetupError as exc:
        raise click.ClickException(exc.message) from None
    result: dict[str, Any] = msgspec.structs.asdict(endpoint)
    if secret_file is not None:
        try:
            write_secret_file(secret_file, secret)
        except OSError as exc:
            # The endpoint exists now and Ringside will not show this secret again: never drop it on the floor.
            _warn_secret_shown_once()
            click.echo(f"RINGSIDE_WEBHOOK_SECRETS={secret}", err=True)
            raise click.ClickException(f"could not write {secret_file} ({exc.strerror}); the secret is above") from None
        result["secret_file"] = str(secret_file)
    elif as_json:
        result["secret"] = secret
    if as_json:
        if secret_file is None:
            _warn_secret_shown_once()
        emit_json(result)
        return
    click.echo(
        f"Registered {endpoint.url} with Ringside as {endpoint.id} ({', '.join(endpoint.events)}) "
        f"via {endpoint.created_with}."
    )
    rotating = (
        " (append it, comma-separated, to the secrets already live while you rotate)"
        if settings.webhook_secrets
        else ""
    )
    if secret_file is not None:
        click.echo(
            f"Signing secret written to {secret_file} (mode 0600). Put it in the gateway's environment{rotating}:"
        )
        click.echo(f'  RINGSIDE_WEBHOOK_SECRETS="$(cat {secret_file})"')
    else:
        _warn_secret_shown_once()
        click.echo(f"Put the signing secret in the gateway's environment{rotating}:")
        click.echo(f"  RINGSIDE_WEBHOOK_SECRETS={secret}")


def _warn_secret_shown_once() -> None:
    click.secho(
        "WARNING: Ringside shows this signing secret once. Store it now (a secret manager, or rerun with "
        "--secret-file next time); the gateway does not keep it anywhere.",
        fg="yellow",
        err=True,
    )


# -- customers --------------------------------------------------------------------------------------------------


@main.group()
def customers() -> None:
    """Ringside customer id -> Stripe customer id, used when an event does not carry its Stripe id."""


def _ids(ringside_id: str, stripe_id: str | None = None) -> tuple[str, str | None]:
    from gateway.app.customer_file import check_billing_id, check_ringside_id

    biller = _settings().selected_biller()
    try:
        return check_ringside_id(ringside_id), None if stripe_id is None else check_billing_id(stripe_id, biller)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


@customers.command("set")
@click.argument("ringside_id")
@click.argument("stripe_id")
@json_option
def customers_set(ringside_id: str, stripe_id: str, as_json: bool) -> None:
    """Map RINGSIDE_ID to STRIPE_ID (replacing any earlier mapping)."""
    ringside_id, checked = _ids(ringside_id, stripe_id)
    assert checked is not None

    async def work() -> str | None:
        async with _opened(_settings()) as container:
            store = container.customers()
            previous: str | None = await store.get(ringside_id)
            await store.set(ringside_id, checked)
            return previous

    previous = _run(work())
    if as_json:
        emit_json({"ringside_id": ringside_id, "stripe_customer_id": checked, "previous": previous})
    else:
        was = "new" if previous is None else ("unchanged" if previous == checked else f"was {previous}")
        click.echo(f"{ringside_id} -> {checked} ({was})")


@customers.command("get")
@click.argument("ringside_id")
@json_option
def customers_get(ringside_id: str, as_json: bool) -> None:
    """Print the Stripe customer mapped to RINGSIDE_ID."""

    async def work() -> str | None:
        async with _opened(_settings()) as container:
            found: str | None = await container.customers().get(ringside_id)
            return found

    found = _run(work())
    if found is None:
        raise click.ClickException(f"no Stripe customer is mapped to {ringside_id}")
    if as_json:
        emit_json({"ringside_id": ringside_id, "stripe_customer_id": found})
    else:
        click.echo(found)


@customers.command("delete")
@click.argument("ringside_id")
@json_option
def customers_delete(ringside_id: str, as_json: bool) -> None:
    """Forget the mapping of RINGSIDE_ID (its next events park as unknown_customer unless they carry a Stripe id)."""

    async def work() -> bool:
        async with _opened(_settings()) as container:
            deleted: bool = await container.customers().delete(ringside_id)
            return deleted

    if not _run(work()):
        raise click.ClickException(f"no Stripe customer is mapped to {ringside_id}")
    if as_json:
        emit_json({"ringside_id": ringside_id, "deleted": True})
    else:
        click.echo(f"{ringside_id}: deleted")


@customers.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
@json_option
def customers_list(limit: int, as_json: bool) -> None:
    """List mappings, by Ringside id."""

    async def work() -> list[tuple[str, str]]:
        async with _opened(_settings()) as container:
            pairs: list[tuple[str, str]] = await container.customers().list(limit)
            return pairs

    pairs = _run(work())
    if as_json:
        emit_json([{"ringside_id": r, "stripe_customer_id": s} for r, s in pairs])
    elif not pairs:
        click.echo("No customers are mapped.")
    else:
        table(["ringside id", "stripe customer"], pairs)


@customers.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
def customers_import(file: Path, as_json: bool) -> None:
    """Import FILE.csv (ringside_id,stripe_customer_id per line): every row, or none if one is bad."""
    from gateway.app.customer_file import CustomerFileError, read_rows

    try:
        lines = file.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read {file}: {exc}") from None
    pairs: list[tuple[str, str]] = []
    try:
        with progress(len(lines), f"Checking {file.name}", hidden=as_json) as bar:
            last = 0
            for row in read_rows(lines, _settings().selected_biller()):
                pairs.append((row.ringside_id, row.stripe_id))
                bar.update(row.line - last)
                last = row.line
            bar.update(len(lines) - last)
    except CustomerFileError as exc:
        raise click.ClickException(f"{file}: {exc.message}; nothing was imported") from None

    async def work() -> None:
        async with _opened(_settings()) as container:
            # One atomic write: readers never see half a file, and a failure leaves the store as it was.
            await container.customers().set_many(pairs)

    _run(work())
    if as_json:
        emit_json({"file": str(file), "imported": len(pairs)})
    else:
        click.echo(f"Imported {len(pairs)} mappings from {file}.")


# -- parked -----------------------------------------------------------------------------------------------------


@main.group()
def parked() -> None:
    """Deliveries that were signed but could not be billed as they were, kept whole for replay."""


def _reason(value: str | None) -> Any:
    from gateway.domain.ledger import ParkReason

    return None if value is None else ParkReason(value)


_REASONS = click.Choice(["unknown_customer", "invalid_payload", "too_old", "biller_rejected", "unknown_type"])


@parked.command("list")
@click.option("--reason", type=_REASONS, default=None, help="Only records parked for this reason.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@json_option
def parked_list(reason: str | None, limit: int, as_json: bool) -> None:
    """List parked records, oldest first."""
    from gateway.domain.ledger import Parked

    async def work() -> list[Parked]:
        async with _opened(_settings()) as container:
            records: list[Parked] = await container.ledger().list_parked(_reason(reason), limit)
            return records

    records = _run(work())
    if as_json:
        emit_json([_parked_summary(p) for p in records])
    elif not records:
        click.echo("Nothing is parked.")
    else:
        table(
            ["key", "reason", "parked at", "ringside customer", "message"],
            [(p.key, p.reason.value, timestamp(p.parked_at), p.ringside_customer, _short(p.message)) for p in records],
        )


@parked.command("show")
@click.argument("key")
@json_option
def parked_show(key: str, as_json: bool) -> None:
    """Show one parked record, its body included."""
    from gateway.domain.ledger import Parked

    async def work() -> Parked | None:
        async with _opened(_settings()) as container:
            found: Parked | None = await container.ledger().get_parked(key)
            return found

    record = _run(work())
    if record is None:
        raise click.ClickException(f"nothing is parked under {key}")
    body = _body_text(record.body)
    if as_json:
        emit_json({**_parked_summary(record), "signed_at": record.signed_at, "body": body})
        return
    for name, value in [
        ("key", record.key),
        ("reason", record.reason.value),
        ("message", record.message),
        ("parked at", timestamp(record.parked_at)),
        ("signed at", timestamp(record.signed_at)),
        ("event type", record.event_type or "-"),
        ("ringside customer", record.ringside_customer or "-"),
    ]:
        click.echo(f"{name:<18} {value}")
    click.echo("body:")
    click.echo(body)


def _parked_summary(record: Any) -> dict[str, Any]:
    return {
        "key": record.key,
        "reason": record.reason.value,
        "message": record.message,
        "parked_at": timestamp(record.parked_at),
        "event_type": record.event_type,
        "ringside_customer": record.ringside_customer,
    }


def _body_text(body: bytes) -> str:
    """Pretty JSON when the body is JSON, its text when it is UTF-8, else a note and its bytes escaped."""
    try:
        return msgspec.json.format(body.decode(), indent=2)
    except (UnicodeDecodeError, msgspec.DecodeError):
        pass
    try:
        return body.decode()
    except UnicodeDecodeError:
        return f"(not UTF-8, {len(body)} bytes) {body!r}"


def _short(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@parked.command("replay")
@click.argument("key", required=False)
@click.option("--all", "replay_every", is_flag=True, help="Replay every parked record (oldest first).")
@click.option("--reason", type=_REASONS, default=None, help="With --all: only records parked for this reason.")
@click.option(
    "--restamp",
    is_flag=True,
    help="Send too_old records with the current time: the usage lands in the current billing period.",
)
@json_option
def parked_replay(key: str | None, replay_every: bool, reason: str | None, restamp: bool, as_json: bool) -> None:
    """Run parked deliveries through the pipeline again: billed once, or left parked as they were."""
    from gateway.service.replay import ReplayResult, ReplayStatus

    if (key is None) == (not replay_every):
        raise click.UsageError("give one KEY, or --all")
    if reason is not None and not replay_every:
        raise click.UsageError("--reason goes with --all")

    async def one(key: str) -> tuple[ReplayResult, bool]:
        async with _opened(_settings()) as container:
            result: ReplayResult = await container.replayer().replay(key, restamp=restamp)
            in_ledger = await container.ledger().get(key) is not None
            return result, in_ledger

    if key is not None:
        result, in_ledger = _run(one(key))
        if as_json:
            emit_json(result)
        if result.status is ReplayStatus.NOT_PARKED and not in_ledger:
            raise click.ClickException(f"nothing is parked under {key}")
        if result.status is ReplayStatus.BILLED:
            if not as_json:
                click.echo(f"{key}: billed, {result.units} units to {result.customer} (the dispatcher sends it)")
        elif result.status is ReplayStatus.NOT_PARKED:
            if not as_json:
                click.echo(f"{key}: not parked (already replayed); nothing to do")
        else:
            detail = f"{result.reason.value}: " if result.reason else ""
            hint = " (give --restamp)" if result.reason and result.reason.value == "too_old" else ""
            raise click.ClickException(
                f"{key}: {result.status.value.replace('_', ' ')}: {detail}{result.message}{hint}"
            )
        return

    async def every() -> list[ReplayResult]:
        async with _opened(_settings()) as container:
            replayer = container.replayer()
            keys = await replayer.parked_keys(_reason(reason))
            with progress(len(keys), "Replaying", hidden=as_json or not keys) as bar:
                return await replayer.replay_all(keys, on_each=lambda _: bar.update(1), restamp=restamp)

    results = _run(every())
    counts: dict[str, int] = {}
    for result in results:
        label = result.status.value
        if result.status is ReplayStatus.STILL_PARKED and result.reason:
            label = f"still parked ({result.reason.value})"
        counts[label] = counts.get(label, 0) + 1
    if as_json:
        emit_json({"replayed": len(results), "counts": counts, "results": results})
    elif not results:
        click.echo("Nothing is parked.")
    else:
        click.echo(f"Replayed {len(results)}: " + ", ".join(f"{n} {label}" for label, n in sorted(counts.items())))


# -- ledger -----------------------------------------------------------------------------------------------------


@main.group()
def ledger() -> None:
    """The ledger: what was recorded, sent and parked."""


@ledger.command("stats")
@click.option("--since", default=None, help="Period start (ISO date or time, or unix seconds) [start of this month].")
@click.option("--until", default=None, help="Period end, excluded (ISO date or time, or unix seconds) [now].")
@json_option
def ledger_stats(since: str | None, until: str | None, as_json: bool) -> None:
    """Pending, sent and parked counts, the oldest pending entry's age, and units per customer for a period."""
    import time
    from datetime import UTC, datetime

    from gateway.domain.ledger import CustomerUsage, LedgerStats

    now = time.time()
    start = (
        _instant(since, "--since")
        if since
        else int(datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp())
    )
    end = _instant(until, "--until") if until else None
    settings = _settings()

    async def work() -> tuple[LedgerStats, list[CustomerUsage]]:
        async with _opened(settings) as container:
            store = container.ledger()
            return await store.stats(), await store.usage(start, end)

    stats, usage = _run(work())
    oldest_age = None if stats.oldest_pending_at is None else round(now - stats.oldest_pending_at, 3)
    scale = settings.units_per_usd
    if as_json:
        emit_json(
            {
                **msgspec.structs.asdict(stats),
                "oldest_pending_age_s": oldest_age,
                "period": {"since": timestamp(start), "until": timestamp(end) if end else None},
                "units_per_usd": scale,
                "customers": [
                    {**msgspec.structs.asdict(row), "usd": usd(row.units_sent + row.units_pending, scale)}
                    for row in usage
                ],
            }
        )
        return
    click.echo(f"pending  {stats.pending:,}" + (f" (oldest {age(oldest_age)} old)" if oldest_age is not None else ""))
    click.echo(f"sent     {stats.sent:,}")
    click.echo(f"parked   {stats.parked:,}")
    click.echo(f"\nUnits per customer, events from {timestamp(start)} to {timestamp(end) if end else 'now'}:")
    if not usage:
        click.echo("  (none)")
        return
    rows = [
        (u.billing_customer, u.events, u.units_sent, u.units_pending, usd(u.units_sent + u.units_pending, scale))
        for u in usage
    ]
    rows.append(
        (
            "total",
            sum(u.events for u in usage),
            sum(u.units_sent for u in usage),
            sum(u.units_pending for u in usage),
            usd(sum(u.units_sent + u.units_pending for u in usage), scale),
        )
    )
    table(["customer", "events", "units sent", "units pending", "USD"], rows, right=(1, 2, 3, 4))


def _instant(value: str, option: str) -> int:
    """Unix seconds from unix seconds or an ISO 8601 date or time (UTC unless it says otherwise)."""
    from datetime import UTC, datetime

    text = value.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not unix seconds or an ISO date such as 2026-05-01", param_hint=option
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _decimal(value: str, option: str) -> Decimal:
    try:
        return Decimal(value.strip())
    except ArithmeticError:
        raise click.BadParameter(f"{value!r} is not a number", param_hint=option) from None


# -- simulate and demo ------------------------------------------------------------------------------------------


def _fraction(name: str, default: float, help_text: str) -> Callable[[F], F]:
    return click.option(name, type=click.FloatRange(0.0, 1.0), default=default, show_default=True, help=help_text)


@main.command()
@click.option("--url", default=None, help="The gateway (http://host:port or the full webhook URL) [GATEWAY_HOST:PORT].")
@click.option("--events", type=click.IntRange(min=0), default=100, show_default=True, help="Distinct events.")
@click.option("--customers", type=click.IntRange(min=1), default=5, show_default=True, help="Distinct customers.")
@_fraction("--duplicates", 0.1, "Fraction of events Ringside re-emits.")
@_fraction("--bad-signatures", 0.0, "Fraction of extra forged deliveries (each must get 401).")
@_fraction("--unmapped", 0.0, "Fraction of events of a customer with no Stripe id (parked unknown_customer).")
@click.option("--rate", type=click.FloatRange(min=0.0), default=0.0, help="Deliveries per second [0: unpaced].")
@click.option("--concurrency", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--max-attempts", type=click.IntRange(min=1), default=6, show_default=True, help="Per delivery.")
@click.option("--stripe-customer", "stripe_customers", multiple=True, help="Use these Stripe ids (repeat).")
@click.option("--seed", type=int, default=None, help="Make the events and their order reproducible.")
@json_option
def simulate(
    url: str | None,
    events: int,
    customers: int,
    duplicates: float,
    bad_signatures: float,
    unmapped: float,
    rate: float,
    concurrency: int,
    max_attempts: int,
    stripe_customers: tuple[str, ...],
    seed: int | None,
    as_json: bool,
) -> None:
    """Play Ringside against a gateway: signed events, re-emits, retries, forgeries; then print a summary."""
    from gateway.app.simulate import SimulationConfig, Simulator

    settings = _settings()
    if not settings.webhook_secrets:
        raise click.ClickException("RINGSIDE_WEBHOOK_SECRETS is not set: simulate signs with the gateway's secret")
    for stripe_id in stripe_customers:
        _ids("rs_sim", stripe_id)
    config = SimulationConfig(
        url=url or f"http://{settings.host}:{settings.port}",
        events=events,
        customers=customers,
        duplicates=duplicates,
        bad_signatures=bad_signatures,
        unmapped=unmapped,
        rate=rate,
        concurrency=concurrency,
        max_attempts=max_attempts,
        seed=seed,
        stripe_customers=stripe_customers,
    )
    try:
        simulator = Simulator(config, settings.webhook_secrets[0].reveal())
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None

    async def work() -> Any:
        with progress(simulator.deliveries, "Delivering", hidden=as_json) as bar:
            return await simulator.run(on_delivery=lambda: bar.update(1))

    report = asyncio.run(work())
    if as_json:
        emit_json({**msgspec.structs.asdict(report), "problems": report.problems})
    else:
        _print_simulation(report)
    if report.problems:
        raise click.ClickException("; ".join(report.problems))


def _print_simulation(report: Any) -> None:
    click.echo(f"Simulated Ringside against {report.url} (run {report.run_id}, {report.elapsed_s:.2f}s):")
    click.echo(
        f"  events {report.events}, deliveries {report.deliveries}, sent {report.sent} (retries {report.retries})"
    )
    click.echo(
        f"  accepted {report.accepted}, duplicate {report.duplicate}, parked {report.parked}, "
        f"ignored {report.ignored}, refused {report.refused} (forged {report.forged_refused}/{report.forged}), "
        f"failed {report.failed}"
    )
    if report.latency_ms_p50 is not None:
        click.echo(f"  latency p50 {report.latency_ms_p50:.1f} ms, p99 {report.latency_ms_p99:.1f} ms")
    if report.parked_reasons:
        click.echo("  parked: " + ", ".join(f"{n} {reason}" for reason, n in report.parked_reasons.items()))
    click.echo("")
    table(
        ["ringside customer", "stripe customer", "events", "accepted", "parked", "units", "spend USD"],
        [
            (c.ringside_customer, c.stripe_customer, c.events, c.accepted, c.parked, c.units, c.spend_usd)
            for c in report.customers
        ],
        right=(2, 3, 4, 5, 6),
    )


@main.command()
@click.option("--events", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--customers", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Keep the SQLite file here.")
@click.option("--seed", type=int, default=None, help="Make the simulated traffic reproducible.")
@json_option
def demo(events: int, customers: int, db: Path | None, seed: int | None, as_json: bool) -> None:
    """Run the whole pipeline locally (no accounts, nothing sent to Stripe) and print what was billed."""
    from gateway.app.demo import DemoError, run_demo

    configure_logging("console", "error")
    say = (lambda line: None) if as_json else click.echo
    try:
        report = asyncio.run(run_demo(os.environ, events=events, customers=customers, database=db, seed=seed, say=say))
    except (DemoError, SettingsError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        emit_json({**msgspec.structs.asdict(report), "problems": report.problems})
    else:
        click.echo("")
        _print_simulation(report.simulation)
        click.echo(f"\nBilled by the local ledger biller ({report.units_per_usd:,} units per USD):")
        rows = [(b.customer, b.events, b.units, b.usd) for b in report.billed]
        rows.append(("total", sum(b.events for b in report.billed), report.total_units, report.total_usd))
        table(["stripe customer", "events", "units", "USD"], rows, right=(1, 2, 3))
        if report.database:
            click.echo(f"\nThe ledger is kept in {report.database} (GATEWAY_STORE=sqlite:///{report.database}).")
    if report.problems:
        raise click.ClickException("; ".join(report.problems))
    if not as_json:
        click.echo(
            "\nEach event was billed exactly once: units per customer equal the floor of its spend x units per USD, "
            "re-emits were duplicates and every forged delivery was refused."
        )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
