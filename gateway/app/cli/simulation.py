"""`gateway simulate` and `gateway demo`: Ringside's traffic played against a gateway, or the whole pipeline
locally."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import msgspec

from gateway.app.cli.common import checked_ids, env_settings
from gateway.app.logging import configure_logging
from gateway.app.output import F, emit_json, json_option, progress, table
from gateway.app.settings_checks import SettingsError


def _fraction(name: str, default: float, help_text: str) -> Callable[[F], F]:
    return click.option(name, type=click.FloatRange(0.0, 1.0), default=default, show_default=True, help=help_text)


@click.command()
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

    settings = env_settings()
    if not settings.webhook_secrets:
        raise click.ClickException("RINGSIDE_WEBHOOK_SECRETS is not set: simulate signs with the gateway's secret")
    for stripe_id in stripe_customers:
        checked_ids("rs_sim", stripe_id)
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


@click.command()
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
