"""`gateway reconcile`: the ledger's sent units against the biller's own totals, per customer and hour; `--repair`.

Exit status: 0 when every judged window matches (settling windows are not judged), 1 on a mismatch, 2 when the
biller (or the store) could not be asked, or the biller offers no totals to reconcile against (Lago). The logic is
gateway/service/reconcile.py; this parses options and prints (docs/reconcile.md).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import click
import msgspec

from gateway.app.cli.common import env_settings, opened
from gateway.app.cli.ledger import instant
from gateway.app.output import emit_json, json_option, table, timestamp
from gateway.domain.reconcile import Reconciliation, RepairResult, Verdict

DEFAULT_LOOKBACK_S = 7 * 86400
EXIT_MISMATCH = 1
EXIT_UNAVAILABLE = 2
EXTRA_ADVICE = (
    "extra_at_biller: the biller holds more than the ledger sent. It is never offset with negative usage. Within "
    "24 hours of Stripe receiving an event, cancel it by identifier with a meter event adjustment "
    "(POST /v1/billing/meter_event_adjustments, type=cancel); after that, credit the customer (a credit note or a "
    "customer balance adjustment). A pending entry whose sending was cut by a crash also shows here until the "
    "dispatcher re-sends it."
)


@click.command()
@click.option("--customer", default=None, help="Only this billing (Stripe) customer.")
@click.option("--since", default=None, help="Period start (ISO date or time, or unix seconds) [7 days ago].")
@click.option("--until", default=None, help="Period end, excluded (ISO date or time, or unix seconds) [now].")
@click.option("--repair", is_flag=True, help="Send one correction per missing_at_biller window, then reconcile.")
@json_option
def reconcile(customer: str | None, since: str | None, until: str | None, repair: bool, as_json: bool) -> None:
    """Compare the ledger with the biller's totals, per customer and hour window; with --repair, carry the missing
    units to the biller. Exit 0: every judged window matches; 1: a mismatch; 2: the biller could not be asked."""
    from gateway.app.logging import configure_logging
    from gateway.domain.errors import BillerError, StoreUnavailable

    now = time.time()
    start = instant(since, "--since") if since else int(now) - DEFAULT_LOOKBACK_S
    end = instant(until, "--until") if until else int(now)
    if start >= end:
        raise click.BadParameter("--since must be before --until", param_hint="--since")
    settings = env_settings()
    # Repairs are logged (customer, window, units) on stderr, in the gateway's log format.
    configure_logging(settings.log_format, "warning" if repair else "error")
    profile = settings.biller_profile()
    if profile.totals is None:
        click.echo(f"Error: cannot reconcile with {profile.biller.value}: {profile.totals_missing}", err=True)
        sys.exit(EXIT_UNAVAILABLE)

    async def work() -> tuple[Reconciliation, RepairResult | None]:
        async with opened(settings) as container:
            repaired = await container.repairer().repair(start, end, customer) if repair else None
            found: Reconciliation = await container.reconciler().reconcile(start, end, customer)
            return found, repaired

    try:
        found, repaired = asyncio.run(work())
    except (BillerError, StoreUnavailable) as exc:
        click.echo(f"Error: could not reconcile: {exc.message}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    if as_json:
        emit_json(_document(found, repaired, settings.reconcile_settle_s))
    else:
        _print(found, repaired)
    sys.exit(0 if found.totals.matched else EXIT_MISMATCH)


def _document(found: Reconciliation, repaired: RepairResult | None, settle_s: float) -> dict[str, Any]:
    document: dict[str, Any] = {
        "since": timestamp(found.since),
        "until": timestamp(found.until),
        "settle_s": settle_s,
        "matched": found.totals.matched,
        "rows": [
            {**msgspec.structs.asdict(row), "window": timestamp(row.window_start), "verdict": row.verdict.value}
            for row in found.rows
        ],
        "totals": msgspec.structs.asdict(found.totals),
    }
    if any(row.verdict is Verdict.EXTRA_AT_BILLER for row in found.rows):
        document["extra_at_biller_advice"] = EXTRA_ADVICE
    if repaired is not None:
        document["repair"] = {
            "sent": [msgspec.structs.asdict(c) for c in repaired.sent],
            "refused": [{**msgspec.structs.asdict(c), "reason": reason} for c, reason in repaired.refused],
            "too_old": [msgspec.structs.asdict(row) for row in repaired.too_old],
        }
    return document


def _print(found: Reconciliation, repaired: RepairResult | None) -> None:
    if repaired is not None:
        _print_repair(repaired)
    click.echo(f"Windows from {timestamp(found.since)} to {timestamp(found.until)} (hours, by event timestamp):")
    if not found.rows:
        click.echo("  (none)")
    else:
        rows: list[tuple[object, ...]] = [
            (
                row.billing_customer,
                timestamp(row.window_start),
                row.ledger_units,
                row.biller_units,
                row.difference,
                row.corrections,
                row.verdict.value,
            )
            for row in found.rows
        ]
        rows.append(("total", "", found.totals.ledger_units, found.totals.biller_units, None, None, ""))
        table(
            ["customer", "window", "ledger", "biller", "difference", "corrections", "verdict"],
            rows,
            right=(2, 3, 4, 5),
        )
    click.echo("")
    for verdict in Verdict:
        windows = found.totals.windows_by_verdict.get(verdict, 0)
        if windows:
            units = found.totals.units_by_verdict.get(verdict, 0)
            click.echo(f"{verdict.value:<18} {windows:>6,} windows  {units:>12,} units apart")
    if any(row.verdict is Verdict.EXTRA_AT_BILLER for row in found.rows):
        click.echo("\n" + EXTRA_ADVICE)
    click.echo("\nmatched" if found.totals.matched else "\nMISMATCH: see the windows above")


def _print_repair(repaired: RepairResult) -> None:
    if not (repaired.sent or repaired.refused or repaired.too_old):
        click.echo("Repair: nothing to send.\n")
        return
    for correction in repaired.sent:
        click.echo(
            f"Repair: sent {correction.units:,} units to {correction.billing_customer} for the window "
            f"{timestamp(correction.window_start)} as {correction.identifier}"
        )
    for correction, reason in repaired.refused:
        click.echo(
            f"Repair: the biller refused {correction.units:,} units for {correction.billing_customer} "
            f"{timestamp(correction.window_start)}: {reason}"
        )
    for row in repaired.too_old:
        click.echo(
            f"Repair: {row.billing_customer} {timestamp(row.window_start)} is too old for the biller to take a "
            "correction; credit or invoice the difference by hand"
        )
    click.echo("")
