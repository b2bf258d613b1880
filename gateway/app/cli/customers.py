"""`gateway customers ...`: the Ringside -> Stripe customer mapping."""

from __future__ import annotations

from pathlib import Path

import click

from gateway.app.cli.common import checked_ids, env_settings, opened, run
from gateway.app.output import emit_json, json_option, progress, table


@click.group()
def customers() -> None:
    """Ringside customer id -> Stripe customer id, used when an event does not carry its Stripe id."""


@customers.command("set")
@click.argument("ringside_id")
@click.argument("stripe_id")
@json_option
def customers_set(ringside_id: str, stripe_id: str, as_json: bool) -> None:
    """Map RINGSIDE_ID to STRIPE_ID (replacing any earlier mapping)."""
    ringside_id, checked = checked_ids(ringside_id, stripe_id)
    assert checked is not None

    async def work() -> str | None:
        async with opened(env_settings()) as container:
            store = container.customers()
            previous: str | None = await store.get(ringside_id)
            await store.set(ringside_id, checked)
            return previous

    previous = run(work())
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
        async with opened(env_settings()) as container:
            found: str | None = await container.customers().get(ringside_id)
            return found

    found = run(work())
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
        async with opened(env_settings()) as container:
            deleted: bool = await container.customers().delete(ringside_id)
            return deleted

    if not run(work()):
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
        async with opened(env_settings()) as container:
            pairs: list[tuple[str, str]] = await container.customers().list(limit)
            return pairs

    pairs = run(work())
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
            for row in read_rows(lines, env_settings().selected_biller()):
                pairs.append((row.ringside_id, row.stripe_id))
                bar.update(row.line - last)
                last = row.line
            bar.update(len(lines) - last)
    except CustomerFileError as exc:
        raise click.ClickException(f"{file}: {exc.message}; nothing was imported") from None

    async def work() -> None:
        async with opened(env_settings()) as container:
            # One atomic write: readers never see half a file, and a failure leaves the store as it was.
            await container.customers().set_many(pairs)

    run(work())
    if as_json:
        emit_json({"file": str(file), "imported": len(pairs)})
    else:
        click.echo(f"Imported {len(pairs)} mappings from {file}.")
