"""SqliteCustomers.set_many is one transaction: a failure on any row leaves the table as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.adapters.sqlite import SqliteCustomers, SqliteDatabase
from gateway.domain.errors import StoreUnavailable


async def test_set_many_writes_nothing_when_a_row_fails_midway(tmp_path: Path) -> None:
    database = SqliteDatabase(tmp_path / "gateway.db")
    customers = SqliteCustomers(database)
    await customers.set("rs_BEFORE", "cus_BEFORE")
    # A constraint that fails on the third row stands for any failure mid-import (disk full, I/O error).
    await database.write(
        lambda connection: connection.execute(
            "CREATE TRIGGER refuse_bad BEFORE INSERT ON customers WHEN NEW.ringside_id = 'rs_BAD'"
            " BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    )

    with pytest.raises(StoreUnavailable):
        await customers.set_many(
            [("rs_1", "cus_1"), ("rs_BEFORE", "cus_CHANGED"), ("rs_BAD", "cus_3"), ("rs_4", "cus_4")]
        )

    assert await customers.list() == [("rs_BEFORE", "cus_BEFORE")]
    database.close()
