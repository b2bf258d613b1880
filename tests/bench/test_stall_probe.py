"""bench/stall_probe.py: what it reports is what the sleeps overran."""

from __future__ import annotations

import time

import pytest

from bench import stall_probe


def test_a_sleep_that_overruns_is_reported_as_the_longest_stall_and_counted_as_lost_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_sleep = time.sleep
    calls = 0

    def sleep_once_for_long(seconds: float) -> None:
        # The fifth sleep overruns by ~25 ms, as if the machine had stopped the process.
        nonlocal calls
        calls += 1
        real_sleep(seconds + (0.025 if calls == 5 else 0.0))

    monkeypatch.setattr(stall_probe.time, "sleep", sleep_once_for_long)

    stalls = stall_probe.watch(0.05)

    # At least the injected overrun (the shared machine may add real ones of its own).
    assert stalls.longest_ms >= 25
    assert stalls.over_10ms >= 1
    assert stalls.lost_ms >= 25


def test_the_probe_process_answers_with_its_stalls() -> None:
    stalls = stall_probe.StallProbe(0.05).result()

    assert stalls is not None
    assert stalls.longest_ms >= 0 and stalls.over_10ms >= 0
