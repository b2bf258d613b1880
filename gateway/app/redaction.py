"""Scrubbing secrets from log lines: the last processor before rendering (see gateway/app/logging.py).

`redact` blanks the values of secret-named keys at any depth, and in every string: the literal values of the
configured secrets (`register_secrets`), Stripe-style keys, `whsec_` secrets, bearer and basic credentials, JWTs,
`v1=` signatures, `key=value` / `"key": "value"` pairs whose key names a credential, and passwords in URLs. A cheap
prefilter (`might_hold_secret`) lets the common line through untouched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, MutableMapping
from typing import Any

REDACTED = "[redacted]"

# Keys whose values never reach a log line, whoever logs them and at whatever depth.
_SECRET_KEYS = re.compile(
    r"secret|signature|authorization|api[_-]?key|token|password|passwd|cookie|credential|private[_-]?key|jwt",
    re.IGNORECASE,
)
# Credential-shaped text, wherever it appears in a string. Each pattern keeps its harmless prefix (a scheme, a key
# name) in group 1 where it has one, so the line still says what was removed.
_SECRET_VALUES: tuple[tuple[re.Pattern[str], str], ...] = (
    # Stripe API keys (secret, restricted, publishable), live or test, and webhook signing secrets.
    (re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9_]+"), REDACTED),
    (re.compile(r"\bwhsec_[A-Za-z0-9_+/=-]+"), REDACTED),
    # A compact JWS/JWT: base64url('{"...') always starts with "eyJ".
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
    # HTTP credentials (RFC 6750 bearer tokens, RFC 7617 basic).
    # At least 8 characters: "the bearer token has expired" is prose, not a credential.
    (re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE), rf"\1 {REDACTED}"),
    # Webhook signatures: X-FC-Signature and Stripe-Signature carry `v1=<hex>` (and Stripe `v0=`).
    (re.compile(r"\b(v[01]=)[0-9a-fA-F]{8,}"), rf"\1{REDACTED}"),
    # key=value, key: value, "key": "value", where the key names a credential.
    (
        re.compile(
            r"""(\b[\w-]*(?:secret|password|passwd|api[_-]?key|token|authorization|signature|credential)["']?"""
            r"""\s*[:=]\s*["']?)[^\s"',;&}\]]+""",
            re.IGNORECASE,
        ),
        rf"\1{REDACTED}",
    ),
    # user:password@ in URLs (redis://:password@host, https://user:pass@host).
    (re.compile(r"(://[^:/@\s]*:)[^@\s/]+@"), rf"\1{REDACTED}@"),
    # A billing portal session URL opens a customer's billing details to whoever holds it (Stripe: /p/session/...).
    (re.compile(r"(/p/session/)[A-Za-z0-9_-]+"), rf"\1{REDACTED}"),
)
# All of the above in one pass: most strings in a line (ids, names, outcomes) hold none of them, and one search
# that finds nothing is far cheaper than eight substitutions that change nothing.
_ANY_SECRET_VALUE = re.compile(
    "|".join(
        f"(?i:{pattern.pattern})" if pattern.flags & re.IGNORECASE else f"(?:{pattern.pattern})"
        for pattern, _ in _SECRET_VALUES
    )
)
# Text that every match of a pattern above contains, lower-cased: a string holding none of it (and none of the
# registered secrets) cannot match any of them, so it is passed through without running a regex. Keep in step with
# _SECRET_VALUES: pattern 1 needs "_live_"/"_test_", 2 "whsec_", 3 "eyJ", 4 "bearer"/"basic"/"token", 5 "v0="/"v1=",
# 6 one of its key words, 7 "://", 8 "/p/session/". (tests/app/test_logging.py checks every credential against it.)
_SECRET_MARKERS = (
    "_live_",
    "_test_",
    "whsec_",
    "eyj",
    "bearer",
    "basic",
    "token",
    "v0=",
    "v1=",
    "secret",
    "passw",
    "api",
    "authoriz",
    "signature",
    "credential",
    "://",
    "/p/session/",
)
# Secrets shorter than this are not scrubbed literally: they would blank ordinary words in every line. Settings
# refuse such short secrets for anything that matters (PORTAL_JWT_SECRET needs 32 bytes).
_MIN_LITERAL_CHARS = 6
_literal_secrets: set[str] = set()
_literal_pattern: re.Pattern[str] | None = None


def register_secrets(values: Iterable[str]) -> None:
    """Scrub these exact values from every later log line (the webhook secrets, API keys, the JWT secret)."""
    global _literal_pattern
    _literal_secrets.update(v for v in values if len(v) >= _MIN_LITERAL_CHARS)
    if _literal_secrets:
        # Longest first, so that a secret containing another is removed whole.
        alternatives = sorted(_literal_secrets, key=len, reverse=True)
        _literal_pattern = re.compile("|".join(re.escape(v) for v in alternatives))


def might_hold_secret(text: str) -> bool:
    """False only when `text` holds no registered secret and nothing any credential pattern could match.

    A superset test (it may say True for harmless text, never False for a secret); several strings may be checked
    at once, joined by a NUL.
    """
    if _literal_pattern is not None and any(secret in text for secret in _literal_secrets):
        return True
    if text.isascii():
        lowered = text.lower()
        return any(marker in lowered for marker in _SECRET_MARKERS)
    return _ANY_SECRET_VALUE.search(text) is not None


def redact_text(text: str) -> str:
    """`text` with every known secret and every credential-shaped substring replaced by `[redacted]`."""
    if not might_hold_secret(text):
        return text
    if _literal_pattern is not None:
        text = _literal_pattern.sub(REDACTED, text)
    if _ANY_SECRET_VALUE.search(text) is None:
        return text
    for pattern, replacement in _SECRET_VALUES:
        text = pattern.sub(replacement, text)
    return text


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A processor that blanks secret-named keys and credential-shaped substrings, at any depth."""
    if _is_plain(event_dict):
        return event_dict
    return {key: _redact_value(str(key), value) for key, value in event_dict.items()}


def _is_plain(event_dict: MutableMapping[str, Any]) -> bool:
    """The common line, checked in one pass: no secret-named key, only strings, numbers, booleans and None as
    values, and no string that might hold a secret. Such a line needs no change."""
    texts: list[str] = []
    for key, value in event_dict.items():
        if key not in _plain_keys and _is_secret_key(str(key)):
            return False
        kind = type(value)
        if kind is str:
            texts.append(value)
        elif value is None or kind is int or kind is float or kind is bool:
            continue
        elif isinstance(value, str):
            texts.append(value)
        elif not isinstance(value, int | float):
            return False
    return not might_hold_secret("\x00".join(texts))


# Keys repeat from line to line (event_id, units, ...): the ones found harmless are remembered, up to a bound.
_plain_keys: set[str] = set()
_MAX_PLAIN_KEYS = 4096


def _is_secret_key(key: str) -> bool:
    if _SECRET_KEYS.search(key) is not None:
        return True
    if len(_plain_keys) < _MAX_PLAIN_KEYS:
        _plain_keys.add(key)
    return False


def _redact_value(key: str, value: Any) -> Any:
    if _is_secret_key(key):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", "backslashreplace"))
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(key, v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    # Anything else (a Decimal, an exception, an object) becomes text further on: make it text here, so that the
    # text is scrubbed too.
    return redact_text(str(value))
