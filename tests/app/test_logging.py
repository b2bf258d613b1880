"""Logging: every line structured, stdlib loggers included; no secret reaches a line, whatever key or text holds it."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta

import pytest
import structlog

from gateway.app.logging import hot_line, utc_timestamp
from gateway.app.redaction import REDACTED, might_hold_secret, redact, redact_text, register_secrets
from tests.log_capture import captured_logs

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJjdXN0X0FMSUNFIiwiZXhwIjoxODAwMDAwMzAwfQ"
    ".c2lnbmF0dXJlLW9mLXRoZS10b2tlbi1pcy1oZXJl"
)
SIGNATURE = "t=1800000000,v1=" + "5f" * 32

# Credential-shaped text, as it could appear in any message: (text, the part that must disappear).
CREDENTIALS = [
    ("calling Stripe with sk_live_51HxYzAbCdEf0123456789", "sk_live_51HxYzAbCdEf0123456789"),
    ("key rk_test_abcDEF123", "rk_test_abcDEF123"),
    ("secret whsec_test_secret_for_tests_only here", "whsec_test_secret_for_tests_only"),
    (f"Authorization: Bearer {JWT}", JWT),
    (f"token {JWT} in a sentence", JWT),
    ("Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
    (f"X-FC-Signature: {SIGNATURE}", "5f" * 32),
    ("Stripe-Signature: t=1,v1=" + "ab" * 32 + ",v0=" + "cd" * 32, "ab" * 32),
    ("api_key=abc123xyz&other=1", "abc123xyz"),
    ('{"password": "hunter2!"}', "hunter2!"),
    ("client_secret: s3cr3t-value", "s3cr3t-value"),
    ("redis://:p4ssw0rd@redis.internal:6379/0", "p4ssw0rd"),
    ('"url": "https://billing.stripe.com/p/session/test_YWNjdF8xTTEyMw"', "test_YWNjdF8xTTEyMw"),
]


@pytest.mark.parametrize(("text", "secret"), CREDENTIALS)
def test_scrubs_credentials_from_any_text(text: str, secret: str) -> None:
    scrubbed = redact_text(text)

    assert secret not in scrubbed
    assert REDACTED in scrubbed


@pytest.mark.parametrize(("text", "secret"), CREDENTIALS)
def test_the_prefilter_lets_no_credential_through_alone_or_among_other_strings(text: str, secret: str) -> None:
    # The fast path skips the regexes when this says False: it must say True for every credential-shaped text,
    # whatever its case and wherever it sits in the joined strings of a line.
    assert might_hold_secret(text)
    assert might_hold_secret(text.upper()) or REDACTED not in redact_text(text.upper())
    assert might_hold_secret("\x00".join(["evt_1", text, "cus_A"]))
    assert secret not in str(redact(None, "info", {"event": "x", "note": text, "units": 3}))


def test_non_ascii_text_is_checked_by_the_regexes_themselves() -> None:
    # re's IGNORECASE folds more than str.lower does: U+017F (long s) matches "s". Non-ASCII text skips the
    # prefilter.
    assert REDACTED in str(redact(None, "info", {"event": "x", "note": "client_\u017fecret: s3cr3t-value"}))


@pytest.mark.parametrize(
    "key", ["secret", "webhook_secret", "X-FC-Signature", "Authorization", "stripe_api_key", "apiKey", "jwt", "Cookie"]
)
def test_blanks_secret_named_keys_at_any_depth(key: str) -> None:
    event = redact(None, "info", {"event": "x", key: "plain", "nested": {"list": [{key: "plain"}]}})

    assert event[key] == REDACTED
    assert event["nested"] == {"list": [{key: REDACTED}]}


def test_scrubs_registered_secret_values_whatever_their_shape() -> None:
    register_secrets(["an-opaque-webhook-secret-42"])  # what build_container does with every Secret setting

    event = redact(
        None, "info", {"event": "oops an-opaque-webhook-secret-42", "note": ("x", b"an-opaque-webhook-secret-42")}
    )

    assert event == {"event": f"oops {REDACTED}", "note": ["x", REDACTED]}


def test_keeps_ordinary_values_intact() -> None:
    event = {
        "event": "webhook.delivery",
        "event_id": "sha256:" + "ab" * 32,
        "units": 1230,
        "customer": "cus_A",
        "reason": "the bearer token has expired",
    }

    assert redact(None, "info", dict(event)) == event


def test_renders_structlog_and_stdlib_lines_alike_as_json() -> None:
    with captured_logs() as logs:
        structlog.get_logger("gateway.test").info("gateway.line", units=5)
        logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
        logging.getLogger("litestar").warning("a library speaks")

    lines = logs.lines()
    assert [(line["logger"], line["event"], line["level"]) for line in lines] == [
        ("gateway.test", "gateway.line", "info"),
        ("uvicorn.error", "Started server process [42]", "info"),
        ("litestar", "a library speaks", "warning"),
    ]
    assert all(line["timestamp"].endswith("Z") for line in lines)


def test_no_secret_survives_in_exception_messages_or_tracebacks() -> None:
    def fail_with(secret: str) -> None:
        password = secret  # a local variable: tracebacks must never show locals
        raise RuntimeError(f"Stripe refused key {password} with Bearer {JWT}")

    with captured_logs() as logs:
        for logger in (structlog.get_logger("gateway.test"), logging.getLogger("uvicorn.error")):
            try:
                fail_with("sk_live_51HxYzAbCdEf0123456789")
            except RuntimeError:
                logger.exception("it failed")

    text = logs.text()
    assert "sk_live_51HxYzAbCdEf0123456789" not in text
    assert JWT not in text
    assert len(logs.lines()) == 2
    assert all(line["exception"][0]["exc_type"] == "RuntimeError" for line in logs.lines())
    assert all("locals" not in frame for line in logs.lines() for frame in line["exception"][0]["frames"])


def test_scrubs_secrets_in_the_console_format_too() -> None:
    with captured_logs(log_format="console") as logs:
        try:
            raise ValueError(f"bad token {JWT}")
        except ValueError:
            structlog.get_logger("gateway.test").exception("console", api_key="sk_test_abc123")

    assert JWT not in logs.text()
    assert "sk_test_abc123" not in logs.text()
    assert "Traceback" in logs.text()


def test_drops_lines_below_the_configured_level() -> None:
    with captured_logs("warning") as logs:
        structlog.get_logger("gateway.test").info("quiet")
        structlog.get_logger("gateway.test").warning("loud")

    assert [line["event"] for line in logs.lines()] == ["loud"]


DELIVERY = {
    "event_id": "evt_HOT",
    "type": "chat.completion.finished",
    "customer": "cus_A",
    "outcome": "accepted",
    "units": 1230,
    "reason": None,
    "latency_ms": 0.42,
}


def test_the_hot_line_is_the_pipelines_line_but_for_its_timestamp() -> None:
    structlog.contextvars.bind_contextvars(request_id="req-hot")
    try:
        with captured_logs() as logs:
            structlog.get_logger("gateway.http").info("webhook.delivery", **DELIVERY)
            hot_line("info", "gateway.http", "webhook.delivery", dict(DELIVERY))
    finally:
        structlog.contextvars.clear_contextvars()

    through_structlog, hot = logs.lines()
    assert through_structlog.pop("timestamp").endswith("Z") and hot.pop("timestamp").endswith("Z")
    assert list(hot.items()) == list(through_structlog.items())  # the same keys, in the same order
    assert hot["request_id"] == "req-hot"


def test_a_hot_warning_is_the_pipelines_warning_but_for_its_timestamp() -> None:
    refused = {"outcome": "invalid_signature", "latency_ms": 0.03}
    with captured_logs(level="warning") as logs:
        structlog.get_logger("gateway.http").warning("webhook.refused", **refused)
        hot_line("warning", "gateway.http", "webhook.refused", dict(refused))
        hot_line("info", "gateway.http", "webhook.delivery", dict(DELIVERY))  # below the level: not written

    through_structlog, hot = logs.lines()
    assert through_structlog.pop("timestamp").endswith("Z") and hot.pop("timestamp").endswith("Z")
    assert list(hot.items()) == list(through_structlog.items())
    assert hot["level"] == "warning"


def test_the_hot_line_is_scrubbed_like_any_other() -> None:
    with captured_logs() as logs:
        hot_line("info", "gateway.http", "webhook.delivery", {**DELIVERY, "customer": "sk_live_51HxYzAbCdEf0123456789"})

    assert "sk_live_" not in logs.text()
    assert logs.lines()[0]["customer"] == REDACTED


def test_the_hot_line_follows_the_level_and_the_format() -> None:
    with captured_logs(level="warning") as quiet:
        hot_line("info", "gateway.http", "webhook.delivery", dict(DELIVERY))
    with captured_logs(log_format="console") as console:
        hot_line("info", "gateway.http", "webhook.delivery", dict(DELIVERY))

    assert quiet.text() == ""
    assert "webhook.delivery" in console.text() and "evt_HOT" in console.text()


def test_the_timestamp_is_isoformat_in_utc_with_a_z_and_the_current_time() -> None:
    before = datetime.now(UTC)
    stamped = utc_timestamp(None, "info", {})["timestamp"]
    after = datetime.now(UTC)

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", stamped)
    assert before - timedelta(milliseconds=1) <= datetime.fromisoformat(stamped) <= after + timedelta(milliseconds=1)
