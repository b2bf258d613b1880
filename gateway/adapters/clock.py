"""Clocks: the system's, and a settable one for tests and simulations."""

from __future__ import annotations

import time

from gateway.domain.ports import Clock


class SystemClock(Clock):
    def now(self) -> float:
        return time.time()


class FrozenClock(Clock):
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def set(self, now: float) -> None:
        self._now = now
