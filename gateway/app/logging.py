"""structlog, configured once: contextvars, UTC ISO time, redaction, JSON in production, console on a terminal."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from structlog.tracebacks import ExceptionDictTransformer

# Keys whose values never reach a log line, whoever logs them.
_SECRET_KEYS = re.compile(
    r"(secret|signature|authorization|api[_-]?key|token|password|cookie|x-fc-signature)", re.IGNORECASE
)
# Values that look like credentials, wherever they appear in a string.
_SECRET_VALUES = re.compile(
    r"(sk|rk|pk|whsec)_(live|test)_[A-Za-z0-9]+|Bearer\s+[A-Za-z0-9._~+/=-]+|v1=[0-9a-fA-F]{16,}"
)
REDACTED = "[redacted]"


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A processor that blanks secret-named keys and credential-shaped substrings, at any depth."""
    return {key: _redact_value(key, value) for key, value in event_dict.items()}


def _redact_value(key: str, value: Any) -> Any:
    if _SECRET_KEYS.search(key):
        return REDACTED
    if isinstance(value, str):
        return _SECRET_VALUES.sub(REDACTED, value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(key, v) for v in value]
    return value


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    as_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # show_locals=False: a traceback's local variables could hold a secret.
        structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
        if as_json
        else structlog.processors.format_exc_info,
        redact,
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
