"""Fixtures for the service tests, which run on the in-memory adapters."""

from __future__ import annotations

import pytest

from gateway.adapters.memory import MemoryLedger


@pytest.fixture
def ledger() -> MemoryLedger:
    return MemoryLedger()
