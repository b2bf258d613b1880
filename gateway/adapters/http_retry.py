"""An HTTP `Retry-After` value as seconds to wait, shared by the adapters of every biller reached over HTTP."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime


def delta_seconds(value: str | None) -> float | None:
    """A non-negative number of seconds, or None when absent or not a number (negatives count as 0)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP-date (RFC 9110 10.2.3); None if absent or bad."""
    seconds = delta_seconds(value)
    if seconds is not None or not value:
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
