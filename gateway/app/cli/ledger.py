"""`gateway ledger stats`: what the ledger recorded, sent and parked."""

from __future__ import annotations

from typing import Any

import click
import msgspec

from gateway.app.cli.common import env_settings, opened, run
from gateway.app.output import age, emit_json, json_option, table, timestamp, usd


@click.group()
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
    from gateway.domain.reconcile import Correction

    now = time.time()
    start = (
        instant(since, "--since")
        if since
        else int(datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp())
    )
    end = instant(until, "--until") if until else None
    settings = env_settings()

    async def work() -> tuple[LedgerStats, list[CustomerUsage], list[Correction]]:
        async with opened(settings) as container:
            store = container.ledger()
            # The repairs `gateway reconcile --repair` recorded for windows in the period.
            fixes: list[Correction] = await store.corrections(start, end)
            return await store.stats(), await store.usage(start, end), fixes

    stats, usage, fixes = run(work())
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
                "corrections": [{**msgspec.structs.asdict(fix), "usd": usd(fix.units, scale)} for fix in fixes],
            }
        )
        return
    click.echo(f"pending  {stats.pending:,}" + (f" (oldest {age(oldest_age)} old)" if oldest_age is not None else ""))
    click.echo(f"sent     {stats.sent:,}")
    click.echo(f"parked   {stats.parked:,}")
    _print_corrections(fixes, scale)
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


def _print_corrections(fixes: list[Any], scale: int) -> None:
    """The repairs (`gateway reconcile --repair`) for windows in the period, one line each."""
    click.echo(f"repairs  {len(fixes):,}")
    if fixes:
        table(
            ["  customer", "window", "units", "USD", "identifier", "recorded at"],
            [
                (
                    f"  {f.billing_customer}",
                    timestamp(f.window_start),
                    f.units,
                    usd(f.units, scale),
                    f.identifier,
                    timestamp(f.recorded_at),
                )
                for f in fixes
            ],
            right=(2, 3),
        )


def instant(value: str, option: str) -> int:
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
