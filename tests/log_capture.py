"""Capture what the gateway's real logging pipeline writes (gateway.app.logging), as parsed JSON lines."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gateway.app.logging import configure_logging, reset_logging


class CapturedLogs:
    def __init__(self) -> None:
        self.stream = io.StringIO()

    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        """Every line, parsed: a line that is not one JSON object fails the test here."""
        return [json.loads(line) for line in self.text().splitlines()]


@contextmanager
def captured_logs(level: str = "info", log_format: str = "json") -> Iterator[CapturedLogs]:
    """Configure logging into memory for the block, then undo it (root handler removed, structlog reset)."""
    captured = CapturedLogs()
    configure_logging(log_format, level, stream=captured.stream)
    try:
        yield captured
    finally:
        reset_logging()
