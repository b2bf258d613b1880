"""Logging, configured once per process: every line structured, timestamped in UTC, and scrubbed of secrets.

One pipeline for everything. The gateway's app and adapters log through structlog; the service layer
(`gateway.service.logs`), uvicorn, Litestar, httpx and the rest log through the standard library, the service's
fields spread into the line by `add_service_fields`. Both go through the same processors (context, level, logger
name, timestamp, exceptions, `redact`, the renderer) to the one root handler's stream: JSON lines in production
(`GATEWAY_LOG_FORMAT=json`, or `auto` when stderr is not a terminal), a readable console format on a terminal.
Standard-library records are rendered by that handler's `structlog.stdlib.ProcessorFormatter`; structlog's lines are
rendered by structlog itself and written to the handler's stream under the handler's lock (`_HandlerLogger`), which
spares the webhook's line per delivery two LogRecords. A line never leaves the process unrendered, so no library's
own format appears.

Invariants:
- The request id bound by `RequestIdMiddleware` (structlog contextvars) is on every line logged while a request is
  handled, whoever logs it (`merge_contextvars` runs for stdlib records too).
- `redact` is the last step before rendering, after tracebacks have been turned into text or dicts, so a secret
  cannot reach a line in a field name, a value, a message, an exception message or a traceback. It blanks the
  values of secret-named keys at any depth, and in every string: the literal values of the configured secrets
  (`register_secrets`), Stripe-style keys, `whsec_` secrets, bearer and basic credentials, JWTs, `v1=` signatures,
  `key=value` / `"key": "value"` pairs whose key names a credential, and passwords in URLs.
- Tracebacks never show local variables (`show_locals=False`): a frame's locals could hold anything.

Why loggers are not cached (`cache_logger_on_first_use=False`): a cached logger keeps the level filter of the
configuration it first saw, so a second `configure_logging` (tests, `gateway` subcommands) would be ignored by
module-level loggers. Not caching costs one small object per call, next to a ledger write per delivery.

Cost (the webhook writes one line per delivery, so this is on the hot path): redaction first runs a cheap
prefilter over all of a line's strings at once: plain substring tests for the registered secrets and for the
fixed text every credential pattern needs (`whsec_`, `eyj`, `bearer`, `v1=`, `://`, `token`, ...; lower-cased, so
ASCII only: non-ASCII text goes to the combined regex, whose IGNORECASE folds more than `str.lower` does). Only a
hit runs the substitutions, per value, exactly as before. The line is rendered by msgspec.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, Literal, TextIO

import msgspec
import structlog
from structlog.tracebacks import ExceptionDictTransformer

from gateway.app.log_handler import BatchedStream, close_on_sigterm, release
from gateway.service.logs import FIELDS

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


_ENCODER = msgspec.json.Encoder()


def _dumps(obj: Any, default: Callable[[Any], Any]) -> str:
    """json.dumps for JSONRenderer, by msgspec (several times faster). What msgspec refuses (a dict key that is not
    a string or a number) goes to json.dumps, as before."""
    try:
        return _ENCODER.encode(obj).decode()
    except (TypeError, msgspec.EncodeError):
        return json.dumps(obj, default=default)


# Loggers of libraries whose INFO lines are noise here (httpx logs every Stripe call) or that install handlers of
# their own; they all propagate to the root handler.
_QUIET_BELOW_DEBUG = ("httpx", "httpcore", "hpack")
# The Stripe SDK logs whole request and response bodies at DEBUG (portal session URLs among them): never below INFO.
_NEVER_DEBUG = ("stripe",)
_ADOPTED = ("uvicorn", "uvicorn.error", "uvicorn.access", "litestar", "asyncio")
_HANDLER_NAME = "gateway"


def add_service_fields(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A processor for standard-library records: the fields a service-layer line carries (`gateway.service.logs`)
    become the line's own, in the order and with the precedence structlog gives keyword arguments (fields first,
    `event` over a field of that name)."""
    fields = getattr(event_dict.get("_record"), FIELDS, None)
    if not fields:
        return event_dict
    return {**fields, **event_dict}


_current_second: tuple[int, str] = (-1, "")


def utc_timestamp(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A processor: `timestamp` as structlog's TimeStamper(fmt="iso", utc=True) writes it (datetime.isoformat with
    "Z": microseconds unless there are none), without a datetime per line. The date and time of the current second
    are formatted once a second, a fraction of structlog's stamper's cost (docs/performance.md, "The log lines")."""
    global _current_second
    second, micro = divmod(time.time_ns() // 1000, 1_000_000)
    current = _current_second
    if current[0] != second:
        current = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        _current_second = current  # one tuple: a thread sees the old second's pair or the new one, never a mix
    event_dict["timestamp"] = f"{current[1]}.{micro:06d}Z" if micro else f"{current[1]}Z"
    return event_dict


def configure_logging(
    log_format: str = "auto", level: str = "info", *, stream: TextIO | None = None, flush_ms: int = 0
) -> None:
    """Route structlog and the standard library through one formatter writing to `stream` (stderr by default).

    `flush_ms` above 0 writes the lines in batches, at most that late (gateway.app.log_handler), as the long-running
    processes do. Idempotent: calling it again replaces the handler it installed before (and only that one).
    """
    stream = stream or sys.stderr
    is_tty = hasattr(stream, "isatty") and stream.isatty()
    if flush_ms > 0:
        stream = BatchedStream(stream, flush_ms / 1000)  # type: ignore[assignment]  # a TextIO for the handler
        close_on_sigterm()
    as_json = log_format == "json" or (log_format == "auto" and not is_tty)
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        utc_timestamp,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if as_json
        else structlog.dev.ConsoleRenderer(colors=is_tty)
    )
    final: list[structlog.types.Processor] = [
        # show_locals=False: a traceback's local variables could hold a secret.
        structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
        if as_json
        else structlog.processors.format_exc_info,
        redact,
        renderer,
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[add_service_fields, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.set_name(_HANDLER_NAME)

    root = logging.getLogger()
    for previous in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(previous)
        release(getattr(previous, "stream", None))
    root.addHandler(handler)
    root.setLevel(numeric_level)
    for name in _ADOPTED:
        adopted = logging.getLogger(name)
        adopted.handlers.clear()
        adopted.propagate = True
        adopted.setLevel(logging.NOTSET)
    for name in _QUIET_BELOW_DEBUG:
        logging.getLogger(name).setLevel(logging.DEBUG if numeric_level <= logging.DEBUG else logging.WARNING)
    for name in _NEVER_DEBUG:
        logging.getLogger(name).setLevel(logging.INFO if numeric_level <= logging.DEBUG else logging.WARNING)

    # The gateway's own lines take the same processors straight to the handler's stream, under the handler's lock:
    # the same line as through the standard library, without its two LogRecords per line.
    global _hot
    _hot = _HotLines(handler if as_json else None, numeric_level)
    structlog.configure(
        processors=[*shared, *final],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=_HandlerLoggerFactory(handler),
        cache_logger_on_first_use=False,
    )


def reset_logging() -> None:
    """Undo configure_logging: its root handler removed, structlog's defaults back, hot lines through structlog."""
    global _hot
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(handler)
        release(getattr(handler, "stream", None))
    root.setLevel(logging.WARNING)
    structlog.reset_defaults()
    _hot = _HotLines(None, logging.NOTSET)


class _HandlerLogger:
    """What structlog's bound loggers write their rendered lines to: the root handler's stream, as the handler
    itself writes (one line, its terminator, a flush, under its lock), so the lines of structlog and of the
    standard library never interleave. Level filtering is the bound logger's (make_filtering_bound_logger)."""

    __slots__ = ("_handler", "name")

    def __init__(self, handler: logging.StreamHandler[TextIO], name: str) -> None:
        self._handler = handler
        self.name = name

    def msg(self, message: str) -> None:
        handler = self._handler
        with handler.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            try:
                handler.stream.write(message + handler.terminator)
                handler.flush()
            except Exception:
                # As StreamHandler.emit does: a broken stream must not break the request that logs.
                handler.handleError(logging.makeLogRecord({"msg": message, "name": self.name}))

    debug = info = warning = warn = error = err = critical = fatal = exception = failure = msg


class _HandlerLoggerFactory:
    def __init__(self, handler: logging.StreamHandler[TextIO]) -> None:
        self._handler = handler

    def __call__(self, *args: Any) -> _HandlerLogger:
        return _HandlerLogger(self._handler, str(args[0]) if args else "gateway")


class _HotLines:
    """Where `hot_line` writes: the JSON handler's stream (lines at `level` or above), or, for the console format,
    structlog's own pipeline."""

    __slots__ = ("handler", "level")

    def __init__(self, handler: logging.StreamHandler[TextIO] | None, level: int) -> None:
        self.handler = handler
        self.level = level


_hot = _HotLines(None, logging.NOTSET)
_LEVELS = {"info": logging.INFO, "warning": logging.WARNING}


def hot_line(level: Literal["info", "warning"], logger: str, event: str, fields: dict[str, Any]) -> None:
    """Log `event` exactly as `structlog.get_logger(logger).<level>(event, **fields)` does, for the hot path.

    The webhook logs one line per delivery (INFO; WARNING for a refused one), where structlog's general machinery (a
    bound logger made per call, the processor chain called through its wrappers) is a large share of a request
    (docs/performance.md, "The log lines"); this takes the same steps in the same order (context variables, level,
    logger name, UTC timestamp, `redact`, the msgspec renderer) and writes as `_HandlerLogger` does, for a fraction
    of the cost. The line is byte for byte the pipeline's (tests/app/test_logging.py compares them). `fields` is
    consumed.
    """
    hot = _hot
    if _LEVELS[level] < hot.level:
        return
    handler = hot.handler
    if handler is None:
        getattr(structlog.get_logger(logger), level)(event, **fields)
        return
    fields["event"] = event
    structlog.contextvars.merge_contextvars(None, level, fields)
    fields["level"] = level
    fields["logger"] = logger
    line = _dumps(redact(None, level, utc_timestamp(None, level, fields)), repr)
    with handler.lock:  # type: ignore[union-attr]  # created by Handler.__init__
        try:
            handler.stream.write(line + handler.terminator)
            handler.flush()
        except Exception:
            handler.handleError(logging.makeLogRecord({"msg": line, "name": logger}))
