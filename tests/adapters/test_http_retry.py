"""`Retry-After` as seconds: the one parser every HTTP biller adapter uses."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest

from gateway.adapters.http_retry import delta_seconds, retry_after_seconds


@pytest.mark.parametrize(("value", "seconds"), [("3", 3.0), ("0.5", 0.5), (" 7 ", 7.0), ("0", 0.0), ("1e300", 1e300)])
def test_delta_seconds_are_read_as_seconds_when_finite_and_not_negative(value: str, seconds: float) -> None:
    assert retry_after_seconds(value) == seconds
    assert delta_seconds(value) == seconds


@pytest.mark.parametrize(
    "value", [None, "", "soon", "Sun, 99 Foo 2026 00:00:00 GMT", "-4", "-0.5", "inf", "-inf", "nan", "1e400"]
)
def test_absent_unreadable_negative_or_non_finite_value_is_none(value: str | None) -> None:
    assert retry_after_seconds(value) is None
    assert delta_seconds(value) is None


def test_http_date_is_read_as_seconds_from_now() -> None:
    in_a_minute = formatdate(time.time() + 60, usegmt=True)

    assert 55 <= (retry_after_seconds(in_a_minute) or 0) <= 60
    assert delta_seconds(in_a_minute) is None  # the portal passes on delta-seconds only


def test_http_date_in_the_past_is_zero() -> None:
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
