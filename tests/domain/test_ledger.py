"""Specification of the dispatcher's retry schedule, `retry_delay` (docs/design.md, "Ledger first, then the biller").

Transient failures are retried with exponential backoff and jitter, capped, and never sooner than the biller's
`Retry-After`. The jitter is a number in [0, 1) handed in by the caller, so the rule is pure.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.ledger import retry_delay


def test_delay_doubles_with_each_attempt_when_below_the_cap() -> None:
    # Act
    delays = [retry_delay(n, base_s=1.0, cap_s=10_000.0, jitter=0.0, retry_after_s=None) for n in range(8)]

    # Assert
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]


def test_delay_stops_growing_when_the_cap_is_reached() -> None:
    # Act
    delays = [retry_delay(n, base_s=1.0, cap_s=60.0, jitter=0.0, retry_after_s=None) for n in range(6, 13)]

    # Assert
    assert delays == [30.0] * 7


@pytest.mark.parametrize("attempts", [33, 64, 1_000, 10**9], ids=["33", "64", "1000", "a billion"])
def test_delay_is_within_the_cap_when_attempts_are_huge(attempts: int) -> None:
    # Act
    delay = retry_delay(attempts, base_s=0.5, cap_s=300.0, jitter=0.999, retry_after_s=None)

    # Assert
    assert 150.0 <= delay <= 300.0


def test_delay_honours_retry_after_when_the_biller_asks_for_longer() -> None:
    # Act
    delay = retry_delay(1, base_s=1.0, cap_s=600.0, jitter=0.5, retry_after_s=120.0)

    # Assert
    assert delay == 120.0


@pytest.mark.parametrize("retry_after_s", [120.0, 1e300], ids=["two minutes", "1e300"])
def test_delay_is_capped_when_retry_after_asks_for_longer_than_the_cap(retry_after_s: float) -> None:
    # Act
    delay = retry_delay(1, base_s=1.0, cap_s=60.0, jitter=0.5, retry_after_s=retry_after_s)

    # Assert: GATEWAY_RETRY_MAX_S bounds every wait, the biller's included.
    assert delay == 60.0


@pytest.mark.parametrize(
    "retry_after_s", [math.inf, math.nan, -math.inf, -5.0], ids=["infinity", "nan", "-infinity", "negative"]
)
def test_delay_is_the_backoff_when_retry_after_is_unusable(retry_after_s: float) -> None:
    # Act
    delay = retry_delay(4, base_s=1.0, cap_s=60.0, jitter=0.0, retry_after_s=retry_after_s)

    # Assert
    assert delay == 8.0


def test_delay_keeps_the_backoff_when_retry_after_is_shorter() -> None:
    # Act
    delay = retry_delay(4, base_s=1.0, cap_s=60.0, jitter=0.0, retry_after_s=0.5)

    # Assert
    assert delay == 8.0


def test_delay_spans_half_to_all_of_the_ceiling_when_jitter_spans_zero_to_one() -> None:
    # Act
    low = retry_delay(3, base_s=1.0, cap_s=60.0, jitter=0.0, retry_after_s=None)
    high = retry_delay(3, base_s=1.0, cap_s=60.0, jitter=0.999_999, retry_after_s=None)

    # Assert: the ceiling at attempt 3 is 8 s.
    assert low == 4.0
    assert 7.99 < high <= 8.0


@given(
    attempts=st.integers(min_value=0, max_value=200),
    base_s=st.floats(min_value=0.01, max_value=60.0),
    cap_s=st.floats(min_value=0.01, max_value=3600.0),
    jitter=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    retry_after_s=st.none() | st.floats(min_value=0.0, max_value=86_400.0),
)
def test_delay_lies_between_half_the_ceiling_and_the_ceiling_and_after_retry_after_within_the_cap_when_jittered(
    attempts: int, base_s: float, cap_s: float, jitter: float, retry_after_s: float | None
) -> None:
    # Arrange
    ceiling = min(cap_s, base_s * 2.0 ** min(attempts, 64))

    # Act
    delay = retry_delay(attempts, base_s=base_s, cap_s=cap_s, jitter=jitter, retry_after_s=retry_after_s)

    # Assert
    assert delay >= min(retry_after_s or 0.0, cap_s)
    assert delay >= ceiling / 2
    assert delay <= max(ceiling, min(retry_after_s or 0.0, cap_s))
    assert delay <= cap_s


@given(
    attempts=st.integers(min_value=0, max_value=60),
    jitter=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_delay_never_shrinks_when_attempts_grow_at_equal_jitter(attempts: int, jitter: float) -> None:
    # Act
    before = retry_delay(attempts, base_s=0.5, cap_s=600.0, jitter=jitter, retry_after_s=None)
    after = retry_delay(attempts + 1, base_s=0.5, cap_s=600.0, jitter=jitter, retry_after_s=None)

    # Assert
    assert after >= before
