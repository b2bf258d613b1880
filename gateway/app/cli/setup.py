"""`gateway stripe-setup` and `gateway ringside-register`: one-time set-up against the operator's accounts."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import click
import msgspec

from gateway.app.cli.common import env_settings
from gateway.app.output import emit_json, json_option, table


@click.command("stripe-setup")
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

    settings = env_settings()
    if settings.stripe.api_key is None:
        raise click.ClickException(
            "STRIPE_API_KEY is not set: stripe-setup creates the meter and the price in your Stripe account "
            "(try a test-mode key, sk_test_..., first)"
        )
    key = settings.stripe.api_key.reveal()
    try:
        stripe = settings.stripe
        plan = plan_price(stripe.meter_event_name, currency, settings.units_per_usd, _decimal(markup, "--markup"))
        client = stripe_client(key, stripe.api_base, stripe.timeout_s)
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


@click.command("ringside-register")
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

    settings = env_settings()
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


def _decimal(value: str, option: str) -> Decimal:
    try:
        return Decimal(value.strip())
    except ArithmeticError:
        raise click.BadParameter(f"{value!r} is not a number", param_hint=option) from None
