"""How the operator commands print: human-readable text by default, one JSON document with `--json`.

Invariant: with `--json`, stdout holds exactly one JSON document and nothing else (progress bars and warnings go
to stderr), so the output can be piped into `jq`.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import click
import msgspec

F = TypeVar("F", bound=Callable[..., Any])

_encoder = msgspec.json.Encoder(decimal_format="string")


def json_option(function: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")(function)


def emit_json(data: Any) -> None:
    click.echo(_encoder.encode(data).decode())


def table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], *, right: Sequence[int] = (), header: bool = True
) -> None:
    """A plain aligned table; columns listed in `right` (numbers) are right-aligned."""
    cells = [[str(h) for h in headers], *[[_cell(value) for value in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells if header else cells[1:]:
        parts = [value.rjust(widths[i]) if i in right else value.ljust(widths[i]) for i, value in enumerate(row)]
        click.echo("  ".join(parts).rstrip())


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def timestamp(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def usd(units: int, units_per_usd: int) -> Decimal:
    """Dollars for `units` at the gateway's scale, with as many places as one unit has (5 at 100,000 per USD)."""
    places = max(2, len(str(units_per_usd)) - 1)
    return (Decimal(units) / Decimal(units_per_usd)).quantize(Decimal(1).scaleb(-places))


def progress(length: int, label: str, *, hidden: bool) -> Any:
    """A click progress bar on stderr (stdout stays clean for --json); `hidden`, or a stderr that is not a terminal
    (CI logs, pipes), drops it altogether."""
    shown = not hidden and sys.stderr.isatty()
    return click.progressbar(length=length, label=label, file=sys.stderr if shown else io.StringIO())
