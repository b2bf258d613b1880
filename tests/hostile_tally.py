"""How many hostile inputs the hostile-input suites sent, per target; reported at the end of every run.

The suites call `tried(target)` once per request actually sent (schemathesis and Hypothesis may generate fewer
examples than asked for). tests/conftest.py prints the tally in pytest's terminal summary, and fails the run when
HOSTILE_MIN_INPUTS is set (CI sets it) and the webhook and portal together got fewer.
"""

from __future__ import annotations

from collections import Counter

WEBHOOK = "webhook"
PORTAL = "portal"
TRIED: Counter[str] = Counter()


def tried(target: str, count: int = 1) -> None:
    TRIED[target] += count


def summary() -> str:
    parts = ", ".join(f"{target} {count:,}" for target, count in sorted(TRIED.items()))
    return f"hostile inputs tried: {parts} (webhook and portal together: {TRIED[WEBHOOK] + TRIED[PORTAL]:,})"
