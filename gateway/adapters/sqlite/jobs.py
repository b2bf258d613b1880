"""A call waiting for the writer thread, and how its outcome gets back to the event loop of its caller."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# A write that may be run together with the queued writes of the same function: it is given their items, in queue
# order, and answers one result per item, in that order (SqliteDatabase.write_batched).
Batch = Callable[[sqlite3.Connection, list[Any]], list[Any]]


@dataclass(slots=True)
class Job:
    """One call waiting for the writer thread; `future` belongs to `loop` and is settled only through it. A batched
    write has its `batch` function and `item` instead of `work`."""

    work: Callable[[sqlite3.Connection], Any] | None
    write: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    batch: Batch | None = None
    item: Any = None


# (job, succeeded, result or exception)
Settled = tuple[Job, bool, Any]


def answer(settled: list[Settled]) -> None:
    """Hand each outcome to its caller's event loop: one wake-up per loop, not one per job."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Settled]] = {}
    for item in settled:
        by_loop.setdefault(item[0].loop, []).append(item)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, items)


def _settle(items: list[Settled]) -> None:
    """On the caller's loop. A caller that was cancelled meanwhile is skipped (its write stands, as before)."""
    for job, ok, value in items:
        if job.future.done():
            continue
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)
