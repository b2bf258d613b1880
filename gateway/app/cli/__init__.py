"""The `gateway` command: serve, worker, and the operator commands, one module per group of commands."""

from __future__ import annotations

import click

from gateway.app.cli.customers import customers
from gateway.app.cli.db import db
from gateway.app.cli.ledger import ledger
from gateway.app.cli.parked import parked
from gateway.app.cli.reconcile import reconcile
from gateway.app.cli.serve import serve, worker
from gateway.app.cli.setup import ringside_register, stripe_setup
from gateway.app.cli.simulation import demo, simulate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ringside-stripe-gateway")
def main() -> None:
    """Ringside -> Stripe billing gateway. Settings come from the environment (see README)."""


for _command in (
    serve,
    worker,
    stripe_setup,
    ringside_register,
    customers,
    parked,
    ledger,
    reconcile,
    db,
    simulate,
    demo,
):
    main.add_command(_command)
