"""Adapters under contract: one fixture per adapter, named `<technology>_<port>`.

Each suite picks its adapters by fixture name (litestar's tests/unit/test_stores.py pattern), so a new adapter
joins every test of its port with one fixture here and one name in that suite's `params` list.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.adapters.memory import MemoryBiller, MemoryCustomers, MemoryLedger
from gateway.adapters.sqlite import SqliteBiller, SqliteCustomers, SqliteDatabase, SqliteLedger
from gateway.domain.ports import BillingSink, MeterEvent


@dataclass(frozen=True)
class LocalBiller:
    """A local ledger biller and the way to read back what it recorded (an attribute on one, a query on another)."""

    sink: BillingSink
    events: Callable[[], Awaitable[list[MeterEvent]]]


# -- Storage ----------------------------------------------------------------------------------------------------


@pytest.fixture
async def sqlite_database(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    database = SqliteDatabase(tmp_path / "gateway.db")
    await database.open()
    yield database
    database.close()


# -- DedupeStore ------------------------------------------------------------------------------------------------


@pytest.fixture
def memory_ledger() -> MemoryLedger:
    return MemoryLedger()


@pytest.fixture
def sqlite_ledger(sqlite_database: SqliteDatabase) -> SqliteLedger:
    return SqliteLedger(sqlite_database)


# -- CustomerStore ----------------------------------------------------------------------------------------------


@pytest.fixture
def memory_customers() -> MemoryCustomers:
    return MemoryCustomers()


@pytest.fixture
def sqlite_customers(sqlite_database: SqliteDatabase) -> SqliteCustomers:
    return SqliteCustomers(sqlite_database)


# -- Local ledger billers (BillingSink) -------------------------------------------------------------------------


@pytest.fixture
def memory_biller() -> LocalBiller:
    biller = MemoryBiller()

    async def events() -> list[MeterEvent]:
        return list(biller.events.values())

    return LocalBiller(sink=biller, events=events)


@pytest.fixture
def sqlite_biller(sqlite_database: SqliteDatabase) -> LocalBiller:
    biller = SqliteBiller(sqlite_database)
    return LocalBiller(sink=biller, events=biller.events)
