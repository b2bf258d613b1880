"""The service layer logs through the standard library (gateway.service.logs); its lines read exactly as the same
call through structlog would write them: the same keys, values and order, the context, the level, the redaction."""

from __future__ import annotations

from typing import Any

import structlog

from gateway.app.redaction import REDACTED
from gateway.service.logs import EventLogger
from tests.log_capture import captured_logs

FIELDS: dict[str, Any] = {"outcome": "retry", "attempts": 2, "retry_in_s": 1.5, "error": "503", "units": None}


def _without_timestamps(lines: list[dict[str, Any]]) -> list[list[tuple[str, Any]]]:
    for line in lines:
        assert line.pop("timestamp").endswith("Z")
    return [list(line.items()) for line in lines]


def test_a_service_line_is_the_structlog_line_but_for_its_timestamp() -> None:
    structlog.contextvars.bind_contextvars(request_id="req-service")
    try:
        with captured_logs() as logs:
            structlog.get_logger("gateway.dispatcher").bind(event_id="evt_1").warning("dispatch.retry", **FIELDS)
            EventLogger("gateway.dispatcher").bind(event_id="evt_1").warning("dispatch.retry", **FIELDS)
    finally:
        structlog.contextvars.clear_contextvars()

    through_structlog, service = _without_timestamps(logs.lines())
    assert service == through_structlog  # the same keys, in the same order
    assert dict(service)["request_id"] == "req-service"


def test_a_field_may_be_named_like_a_log_record_attribute() -> None:
    fields = {"message": "pending entries are not reaching the biller", "name": "n", "args": [1], "pending": 3}
    with captured_logs() as logs:
        structlog.get_logger("gateway.sweep").warning("ledger.pending_stale", **fields)
        EventLogger("gateway.sweep").warning("ledger.pending_stale", **fields)

    through_structlog, service = _without_timestamps(logs.lines())
    assert service == through_structlog


def test_an_exception_line_carries_the_traceback_without_secrets() -> None:
    with captured_logs() as logs:
        try:
            raise RuntimeError("Stripe refused sk_live_51HxYzAbCdEf0123456789")
        except RuntimeError:
            EventLogger("gateway.dispatcher").exception("dispatcher.crashed_round", biller="stripe")

    (line,) = logs.lines()
    assert (line["event"], line["level"], line["logger"], line["biller"]) == (
        "dispatcher.crashed_round",
        "error",
        "gateway.dispatcher",
        "stripe",
    )
    assert line["exception"][0]["exc_type"] == "RuntimeError"
    assert "sk_live_" not in logs.text()


def test_service_fields_are_redacted_like_any_other() -> None:
    with captured_logs() as logs:
        EventLogger("gateway.dispatcher").warning("dispatch.rejected", error="key sk_live_51HxYzAbCdEf0123456789")

    assert logs.lines()[0]["error"] == f"key {REDACTED}"


def test_service_lines_follow_the_level_and_the_format() -> None:
    log = EventLogger("gateway.dispatcher")
    with captured_logs(level="info") as quiet:
        enabled = log.is_enabled_for(10)
        log.debug("dispatch.delivered", event_id="evt_DEBUG")
        log.info("dispatch.batch_delivered", entries=2)
    with captured_logs(log_format="console") as console:
        log.info("dispatcher.started", biller="stripe", max_rps=25.0)

    assert not enabled
    assert [line["event"] for line in quiet.lines()] == ["dispatch.batch_delivered"]
    assert "dispatcher.started" in console.text() and "max_rps" in console.text()
