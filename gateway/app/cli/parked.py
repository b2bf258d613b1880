"""`gateway parked ...`: list, show and replay parked deliveries."""

from __future__ import annotations

from typing import Any

import click
import msgspec

from gateway.app.cli.common import env_settings, opened, run
from gateway.app.output import emit_json, json_option, progress, table, timestamp
from gateway.domain.ledger import ParkReason


@click.group()
def parked() -> None:
    """Deliveries that were signed but could not be billed as they were, kept whole for replay."""


def _reason(value: str | None) -> Any:
    return None if value is None else ParkReason(value)


_REASONS = click.Choice([reason.value for reason in ParkReason])


@parked.command("list")
@click.option("--reason", type=_REASONS, default=None, help="Only records parked for this reason.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@json_option
def parked_list(reason: str | None, limit: int, as_json: bool) -> None:
    """List parked records, oldest first."""
    from gateway.domain.ledger import Parked

    async def work() -> list[Parked]:
        async with opened(env_settings()) as container:
            records: list[Parked] = await container.ledger().list_parked(_reason(reason), limit)
            return records

    records = run(work())
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
        async with opened(env_settings()) as container:
            found: Parked | None = await container.ledger().get_parked(key)
            return found

    record = run(work())
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
        async with opened(env_settings()) as container:
            result: ReplayResult = await container.replayer().replay(key, restamp=restamp)
            in_ledger = await container.ledger().get(key) is not None
            return result, in_ledger

    if key is not None:
        result, in_ledger = run(one(key))
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
            hint = " (give --restamp)" if result.reason is ParkReason.TOO_OLD else ""
            raise click.ClickException(
                f"{key}: {result.status.value.replace('_', ' ')}: {detail}{result.message}{hint}"
            )
        return

    async def every() -> list[ReplayResult]:
        async with opened(env_settings()) as container:
            replayer = container.replayer()
            keys = await replayer.parked_keys(_reason(reason))
            with progress(len(keys), "Replaying", hidden=as_json or not keys) as bar:
                return await replayer.replay_all(keys, on_each=lambda _: bar.update(1), restamp=restamp)

    results = run(every())
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
