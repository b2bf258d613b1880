"""Shared fixtures. Integration fixtures (fake Stripe, Redis) live in their own modules and are imported here."""

from __future__ import annotations

import os

import pytest

from gateway.adapters.clock import FrozenClock
from tests import hostile_tally

pytest_plugins = ["tests.fakes.fixtures", "tests.redis_fixtures", "tests.postgres_fixtures"]


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(1_800_000_000.0)


def _short_of_minimum() -> int | None:
    """HOSTILE_MIN_INPUTS when it is set, the hostile-input suites ran, and they sent fewer; else None."""
    minimum = int(os.environ.get("HOSTILE_MIN_INPUTS", "0"))
    tried = hostile_tally.TRIED[hostile_tally.WEBHOOK] + hostile_tally.TRIED[hostile_tally.PORTAL]
    return minimum if minimum and hostile_tally.TRIED and tried < minimum else None


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if hostile_tally.TRIED:
        terminalreporter.write_sep("-", "hostile input")
        terminalreporter.write_line(hostile_tally.summary())
        minimum = _short_of_minimum()
        if minimum is not None:
            terminalreporter.write_line(f"fewer than HOSTILE_MIN_INPUTS={minimum}: the run fails", red=True)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """With HOSTILE_MIN_INPUTS set (CI), a run whose hostile-input suites sent fewer inputs fails."""
    if _short_of_minimum() is not None and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
