"""Ringside's webhook signature: `X-FC-Signature: t=<unix seconds>,v1=<hex>` (docs/design.md, "Signature").

`v1 = hex(HMAC-SHA256(secret, f"{t}." + raw body))`. Several `v1` fields and several live secrets are allowed so
that a secret can be rotated without dropping a delivery. Comparison is constant-time, and the timestamp must lie
within `tolerance_s` of now in both directions (replay protection).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from gateway.domain.errors import (
    InvalidSignature,
    MalformedSignature,
    MissingSignature,
    TimestampOutOfTolerance,
)

HEADER = "X-FC-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300
# A header longer than this is not a signature: refuse before splitting an attacker's megabyte.
_MAX_HEADER_CHARS = 4096


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The header value Ringside would send for `body` at `timestamp`."""
    return f"t={timestamp},{SCHEME}={_digest(secret.encode(), timestamp, body)}"


def _digest(key: bytes, timestamp: int | str, body: bytes) -> str:
    # The signed bytes are the `t` text exactly as sent, then ".", then the body byte for byte (never re-serialised).
    return hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def parse_header(header: str | None) -> tuple[str, list[bytes]]:
    """Split a header into its one timestamp text and candidate signatures; unknown fields are ignored."""
    if header is None or not header.strip():
        raise MissingSignature()
    if len(header) > _MAX_HEADER_CHARS:
        raise MalformedSignature("X-FC-Signature is too long")
    timestamp: str | None = None
    candidates: list[bytes] = []
    for field in header.split(","):
        name, sep, value = field.strip().partition("=")
        if not sep:
            continue
        if name == "t":
            # Only plain ASCII digits: int() would also accept "+1", " 1", "1_0" and non-ASCII digits.
            if not (value.isascii() and value.isdigit()) or len(value) > 12:
                raise MalformedSignature("signature timestamp t must be unix seconds")
            if timestamp is not None:
                # Which `t` was signed would be a guess.
                raise MalformedSignature("X-FC-Signature has more than one t= field")
            timestamp = value
        elif name == SCHEME:
            # Any non-ASCII candidate is wrong anyway; backslashreplace keeps it comparable without raising.
            candidates.append(value.encode("ascii", "backslashreplace"))
    if timestamp is None:
        raise MalformedSignature("X-FC-Signature has no t= field")
    if not candidates:
        raise MalformedSignature("X-FC-Signature has no v1= field")
    return timestamp, candidates


class SignatureVerifier:
    """Verifies deliveries against every live secret. Holds the secrets; never prints them."""

    __slots__ = ("_keyed", "_tolerance_s")

    def __init__(self, secrets: Sequence[str], tolerance_s: int = DEFAULT_TOLERANCE_S) -> None:
        if not secrets:
            raise ValueError("at least one webhook secret is required")
        # One HMAC per secret with its key already absorbed: each delivery copies it instead of keying a new one
        # (about a fifth of the check's cost for a 1 KiB body).
        self._keyed = tuple(hmac.new(secret.encode(), digestmod=hashlib.sha256) for secret in secrets)
        self._tolerance_s = tolerance_s

    def __repr__(self) -> str:
        return f"SignatureVerifier(secrets=<{len(self._keyed)} hidden>, tolerance_s={self._tolerance_s})"

    def screen(self, header: str | None, now: float) -> None:
        """Raise a SignatureError when no body could make `header` valid: missing, malformed, or out of tolerance.

        For the HTTP layer, before it reads a body: a request that cannot be valid is refused without waiting for
        (or buffering) its body. Checking the clock before any HMAC tells a forger the clock, which the `Date` header
        of every response tells anyway; `verify` still checks the signature first.
        """
        text, _ = parse_header(header)
        if abs(now - int(text)) > self._tolerance_s:
            raise TimestampOutOfTolerance()

    def verify(self, header: str | None, body: bytes, now: float) -> int:
        """Return the signed timestamp when some `v1` matches some secret, else raise a SignatureError.

        The signature is checked before the timestamp, so that a forged request learns nothing about the clock.
        """
        text, candidates = parse_header(header)
        signed_prefix = text.encode() + b"."  # the `t` text exactly as sent, then "." (see _digest)
        matched = False
        for keyed in self._keyed:
            mac = keyed.copy()
            mac.update(signed_prefix)
            mac.update(body)
            expected = mac.hexdigest().encode()
            for candidate in candidates:
                # Every comparison runs, so timing does not reveal which secret or field matched.
                matched |= hmac.compare_digest(expected, candidate)
        if not matched:
            raise InvalidSignature()
        timestamp = int(text)
        if abs(now - timestamp) > self._tolerance_s:
            raise TimestampOutOfTolerance()
        return timestamp
