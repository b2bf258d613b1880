"""Several processes opening one SQLite file that does not exist yet, at the same instant (a fleet's first start).

Each trial hands a fresh path to 2 to 4 worker processes held at a barrier, so that they create the file, switch it
to WAL and migrate it together. Every one of them must open it; the file ends in WAL mode with the schema once.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import sqlite3
from collections.abc import Iterator
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any

import pytest

from gateway.adapters.sqlite import SCHEMA_VERSION, SqliteDatabase

WORKERS = 4
# A race that failed 1 trial in 30 passes 100 trials with probability (29/30)^100, about 3%; that is 300 first
# opens of a file, which take a few seconds.
TRIALS = 100
_barriers: dict[int, Any] = {}


def _hold(barriers: dict[int, Any]) -> None:
    _barriers.update(barriers)


def _open_when_all_arrive(path: str, parties: int) -> str:
    """Open `path` once every party of the trial is at the barrier; "" on success, else the error."""
    _barriers[parties].wait(timeout=30)
    database = SqliteDatabase(path)
    try:
        asyncio.run(database.open())
        return ""
    except Exception as exc:  # reported to the test, which names the failing trial
        return f"{type(exc).__name__}: {exc}"
    finally:
        database.close()


@pytest.fixture(scope="module")
def pool() -> Iterator[Pool]:
    context = multiprocessing.get_context("spawn")  # no copy of this process's threads and open files
    barriers = {parties: context.Barrier(parties) for parties in range(2, WORKERS + 1)}
    with context.Pool(WORKERS, initializer=_hold, initargs=(barriers,)) as workers:
        yield workers


def test_every_process_opens_a_new_file_when_several_create_it_at_once(pool: Pool, tmp_path: Path) -> None:
    failures: list[str] = []
    for trial in range(TRIALS):
        parties = 2 + trial % (WORKERS - 1)
        path = str(tmp_path / f"trial-{trial}.db")

        errors = pool.starmap(_open_when_all_arrive, [(path, parties)] * parties, chunksize=1)

        failures += [f"trial {trial} ({parties} processes): {error}" for error in errors if error]
        with contextlib.closing(sqlite3.connect(path)) as check:
            assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            assert check.execute("SELECT beats FROM heartbeat").fetchall() == [(0,)]
    assert failures == []
