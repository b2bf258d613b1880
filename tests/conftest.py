"""Shared fixtures. Integration fixtures (fake Stripe, Redis) live in their own modules and are imported here."""

from __future__ import annotations

import pytest

from gateway.adapters.clock import FrozenClock

pytest_plugins = ["tests.fakes.fixtures", "tests.redis_fixtures"]


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(1_800_000_000.0)
