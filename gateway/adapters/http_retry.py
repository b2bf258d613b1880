"""An HTTP `Retry-After` value as seconds to wait, shared by the adapters of every biller reached over HTTP."""

from __future__ import annotations

import math
import time
from email.utils import parsedate_to_datetime


def delta_seconds(value: str | None) -> float | None:
    """A finite, non-negative number of seconds, or None when absent or anything else.

    `inf`, `nan`, `1e400` (a float overflows to inf) and negative values are ignored rather than trusted: one of
    them stored as a pause or a next attempt would stall delivery for good.
    """
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


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
