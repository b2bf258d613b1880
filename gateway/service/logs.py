"""Structured log lines from the service layer, through the standard library's `logging` only.

`log.info("dispatch.delivered", outcome="sent", units=5)`: the event name is the record's message and the fields
travel on the record as one attribute (`FIELDS`), so a field may have any name, `message` included. The app's
logging set-up (`gateway.app.logging`) spreads that attribute into the line, which then reads exactly as a line
logged with structlog's keyword arguments does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

FIELDS = "gateway_fields"
"""The LogRecord attribute that holds a line's fields (a dict of field name to value)."""


class EventLogger:
    """A named logger whose lines are an event name and key/value fields; `bind` adds fields to every line."""

    __slots__ = ("_bound", "_logger")

    def __init__(self, name: str, bound: Mapping[str, object] | None = None) -> None:
        self._logger = logging.getLogger(name)
        self._bound = dict(bound or {})

    def bind(self, **fields: object) -> EventLogger:
        return EventLogger(self._logger.name, {**self._bound, **fields})

    def is_enabled_for(self, level: int) -> bool:
        return self._logger.isEnabledFor(level)

    def debug(self, event: str, **fields: object) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: object) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: object) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, **fields: object) -> None:
        self._log(logging.ERROR, event, fields)

    def exception(self, event: str, **fields: object) -> None:
        """An error line with the exception being handled."""
        self._log(logging.ERROR, event, fields, exc_info=True)

    def _log(self, level: int, event: str, fields: dict[str, object], *, exc_info: bool = False) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, event, exc_info=exc_info, extra={FIELDS: {**self._bound, **fields}})
