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
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any, Literal, TextIO

import msgspec
import structlog
from structlog.tracebacks import ExceptionDictTransformer

from gateway.app.log_handler import BatchedStream, close_on_sigterm, release
from gateway.app.redaction import redact
from gateway.service.logs import FIELDS

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
