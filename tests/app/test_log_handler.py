"""Log lines in batches (gateway.app.log_handler): fewer writes, the same lines in the same order, none lost."""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog

from gateway.app.container import build_container
from gateway.app.environment import load_settings
from gateway.app.lifecycle import running
from gateway.app.log_handler import FAILURES_BEFORE_FALLBACK, BatchedStream, flush_logs
from gateway.app.logging import configure_logging, hot_line, reset_logging
from gateway.app.secret import Secret
from gateway.app.settings_checks import SettingsError
from tests.builders import SECRET

LONG_S = 30.0  # an interval no test waits out: lines move only when the test makes them


class CountingStream(io.StringIO):
    """A stream that counts its writes, and fails the first `failures` of them."""

    def __init__(self, failures: int = 0, error: Callable[[], BaseException] = lambda: OSError("disk full")) -> None:
        super().__init__()
        self.writes = 0
        self.failures = failures
        self.error = error

    def write(self, text: str) -> int:
        if self.failures:
            self.failures -= 1
            raise self.error()
        self.writes += 1
        return super().write(text)


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.fixture(autouse=True)
def _reset() -> object:
    yield
    reset_logging()


def test_every_kind_of_line_goes_in_one_write_in_the_order_logged() -> None:
    stream = CountingStream()
    configure_logging("json", "info", stream=stream, flush_ms=int(LONG_S * 1000))  # type: ignore[arg-type]

    for n in range(50):
        hot_line("info", "gateway.http", "webhook.delivery", {"n": n})
        structlog.get_logger("gateway.app").info("structlog.line", n=n)
        logging.getLogger("uvicorn.error").warning("stdlib line %d", n)
    assert stream.getvalue() == ""  # gathered, not written yet

    flush_logs()

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert stream.writes == 1
    assert [(line["event"], line.get("n")) for line in lines[:3]] == [
        ("webhook.delivery", 0),
        ("structlog.line", 0),
        ("stdlib line 0", None),
    ]
    assert len(lines) == 150
    assert [line["n"] for line in lines if line["event"] == "webhook.delivery"] == list(range(50))


def test_the_timer_writes_what_gathered_without_being_asked() -> None:
    stream = CountingStream()
    batched = BatchedStream(stream, 0.02)

    for n in range(100):
        batched.write(f"line {n}\n")

    wait_for(lambda: stream.getvalue().count("\n") == 100)
    assert stream.writes < 100
    assert stream.getvalue().splitlines() == [f"line {n}" for n in range(100)]
    batched.close()


def test_a_full_batch_is_written_before_the_interval_is_out() -> None:
    stream = CountingStream()
    batched = BatchedStream(stream, LONG_S, max_lines=100)

    for n in range(100):
        batched.write(f"line {n}\n")

    wait_for(lambda: stream.getvalue().count("\n") == 100)
    batched.close()


def test_close_writes_what_is_left_and_later_lines_at_once() -> None:
    stream = CountingStream()
    batched = BatchedStream(stream, LONG_S)
    batched.write("before close\n")

    batched.close()
    assert stream.getvalue() == "before close\n"
    batched.write("after close\n")

    assert stream.getvalue() == "before close\nafter close\n"


def test_a_failed_write_keeps_the_batch_in_front_of_newer_lines() -> None:
    stream = CountingStream(failures=FAILURES_BEFORE_FALLBACK - 1)
    fallback = io.StringIO()
    batched = BatchedStream(stream, 0.01, fallback=fallback)

    batched.write("first\n")
    batched.write("second\n")
    wait_for(lambda: stream.failures == 0)
    batched.write("third\n")

    wait_for(lambda: stream.getvalue().count("\n") == 3)
    assert stream.getvalue() == "first\nsecond\nthird\n"
    assert fallback.getvalue() == ""
    batched.close()


def test_a_stream_that_keeps_failing_hands_its_lines_to_the_fallback_in_order() -> None:
    stream = CountingStream(failures=10**9)
    fallback = io.StringIO()
    batched = BatchedStream(stream, 0.01, fallback=fallback)

    for n in range(10):
        batched.write(f"line {n}\n")
    batched.close()

    assert fallback.getvalue().splitlines() == [f"line {n}" for n in range(10)]
    assert batched.dropped == 0


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # it dies on purpose
def test_when_the_writer_thread_dies_no_line_is_lost_and_later_lines_are_written_at_once() -> None:
    # SystemExit, which the writer does not catch, ends its thread in the middle of a batch.
    stream = CountingStream(failures=1, error=lambda: SystemExit("the writer dies"))
    batched = BatchedStream(stream, 0.01)

    batched.write("one\n")
    batched.write("two\n")
    wait_for(lambda: not batched._writer.is_alive())
    batched.write("three\n")

    assert stream.getvalue() == "one\ntwo\nthree\n"
    batched.close()


async def test_a_container_closing_in_running_writes_the_lines_logged_until_then(tmp_path: Path) -> None:
    stream = CountingStream()
    configure_logging("json", "info", stream=stream, flush_ms=int(LONG_S * 1000))  # type: ignore[arg-type]
    settings = load_settings({}, store=f"sqlite:///{tmp_path / 'g.db'}", webhook_secrets=[Secret(SECRET)])

    async with running(build_container(settings)) as container:
        await container.ledger().ping()
        structlog.get_logger("gateway.test").info("inside.the.block")
        assert stream.getvalue() == ""

    assert "inside.the.block" in stream.getvalue()


def test_log_flush_ms_is_a_setting_with_bounds() -> None:
    assert load_settings({}).log_flush_ms == 20
    assert load_settings({"GATEWAY_LOG_FLUSH_MS": "0"}).log_flush_ms == 0
    with pytest.raises(SettingsError, match="GATEWAY_LOG_FLUSH_MS"):
        load_settings({"GATEWAY_LOG_FLUSH_MS": "5000"})


def test_a_sigterm_writes_the_waiting_lines_before_it_ends_the_process() -> None:
    # As uvicorn does after a graceful shutdown: the SIGTERM it caught is raised again, under the handler it found.
    child = (
        "import signal, structlog\n"
        "from gateway.app.logging import configure_logging\n"
        "configure_logging('json', 'info', flush_ms=30000)\n"
        "structlog.get_logger('gateway.test').info('the.last.line')\n"
        "signal.raise_signal(signal.SIGTERM)\n"
        "print('not reached')\n"
    )
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode == -signal.SIGTERM
    assert '"event":"the.last.line"' in done.stderr
    assert "not reached" not in done.stdout
