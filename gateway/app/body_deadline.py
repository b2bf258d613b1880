"""A deadline on reading request bodies, kept by one watcher task rather than a timer per request.

`asyncio.timeout` arms and disarms a timer for every request: 5 to 7 us each, as much as a tenth of the webhook's
own work (docs/notes/app.md). Here a read registers its deadline in a dict (~0.1 us) and one watcher per event loop
wakes a few times per deadline, cancelling the reads that are overdue; a read is thus cut off between `timeout_s`
and `timeout_s` plus a quarter of it (at most a second) after it started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class Overdue(Exception):
    """The awaited read outlived its deadline and was cancelled."""


class BodyDeadlines:
    """Runs reads under a deadline of `timeout_s` each.

    Invariant: `read` either returns what its awaitable returned, raises what it raised, or raises Overdue after the
    deadline passed; a cancellation that does not come from the watcher passes through untouched.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._tick_s = min(1.0, timeout_s / 4)
        self._deadlines: dict[asyncio.Task[object], float] = {}
        self._overdue: set[asyncio.Task[object]] = set()
        self._watcher: asyncio.Task[None] | None = None

    async def read(self, reading: Awaitable[T]) -> T:
        task = asyncio.current_task()
        assert task is not None  # an ASGI handler always runs in a task
        loop = task.get_loop()
        self._deadlines[task] = loop.time() + self.timeout_s
        watcher = self._watcher
        if watcher is None or watcher.done() or watcher.get_loop() is not loop:
            self._watcher = loop.create_task(self._watch(loop), name="body-deadlines")
        try:
            return await reading
        except asyncio.CancelledError:
            if task in self._overdue:
                task.uncancel()
                raise Overdue() from None
            raise
        finally:
            del self._deadlines[task]
            self._overdue.discard(task)

    async def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._deadlines:
            await asyncio.sleep(self._tick_s)
            now = loop.time()
            for task, deadline in list(self._deadlines.items()):
                if deadline <= now and task not in self._overdue:
                    self._overdue.add(task)
                    task.cancel()
