"""Log lines written in batches: formatted by whoever logs, written to the stream by one thread, one write() a batch.

Why: the webhook logs a line per delivery, and a write() and flush() per line (a system call, which also lets go
of the interpreter lock and wakes another thread) cost the event loop 11-15 us of CPU a delivery
(docs/performance.md, "The log lines"). Here a line is appended to a list; a writer thread waits until lines
arrive, gathers for `interval_s` (or until `max_lines` wait), then writes them with one write() and one flush().

Invariants:
- Order: lines reach the stream in the order `write` was called (one list, one writer at a time, a batch whose
  write failed goes back in front of newer lines).
- Nothing lost at shutdown: `close()` writes whatever is left on the caller's thread; `flush_logs()` (called by
  the lifecycle's `running()` when a container closes) and interpreter exit (atexit) close or drain every live
  stream, and so does a SIGTERM that would end the process without running atexit (`close_on_sigterm`: uvicorn,
  once it has shut down gracefully, raises the SIGTERM it caught again under the handler it found). A line written
  after `close()` is written at once, on the caller's thread.
- Nothing lost when the writer cannot write: a failed batch is kept and tried again; after
  `FAILURES_BEFORE_FALLBACK` failures in a row it goes to the fallback stream (the process's original stderr)
  instead, so a broken stream neither grows memory without bound nor loses lines silently. Should the writer
  thread die all the same, the next `write` writes on the caller's thread.
A crash of the whole process (SIGKILL, a segfault) loses at most the last `interval_s` of lines.
"""

from __future__ import annotations

import atexit
import signal
import sys
import threading
import weakref
from typing import TextIO

FAILURES_BEFORE_FALLBACK = 3
DEFAULT_MAX_LINES = 2048

_live: weakref.WeakSet[BatchedStream] = weakref.WeakSet()


class BatchedStream:
    """A text stream for a logging handler: `write` queues, the writer thread writes (see the module's docstring)."""

    def __init__(
        self,
        stream: TextIO,
        interval_s: float,
        *,
        max_lines: int = DEFAULT_MAX_LINES,
        fallback: TextIO | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.stream = stream
        self.interval_s = interval_s
        self.max_lines = max_lines
        self._fallback = fallback
        self._lines: list[str] = []
        self._lock = threading.Lock()  # guards _lines
        self._write_lock = threading.Lock()  # one batch at a time reaches the stream, in order
        self._arrived = threading.Event()  # lines are waiting
        self._full = threading.Event()  # max_lines are waiting: write without gathering longer
        self._closed = False
        self._writer_alive = True  # cleared when the writer thread ends, however it ends
        self._failures = 0
        self.dropped = 0  # lines neither the stream nor the fallback would take
        self._writer = threading.Thread(target=self._run, name="gateway-log-writer", daemon=True)
        self._writer.start()
        _live.add(self)

    def write(self, text: str) -> int:
        with self._lock:
            lines = self._lines
            lines.append(text)
            waiting = len(lines)
        if self._closed or not self._writer_alive:
            self.drain()
        elif waiting == 1:
            self._arrived.set()
        elif waiting == self.max_lines:
            self._full.set()
        return len(text)

    def flush(self) -> None:
        """Nothing: a logging handler flushes after every line, and that is the cost this class saves. The writer
        flushes after each batch; `drain()` and `close()` write what is waiting."""

    def isatty(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def drain(self) -> None:
        """Write every line waiting now, on the caller's thread, in order."""
        with self._write_lock:
            with self._lock:
                batch, self._lines = self._lines, []
            if batch:
                try:
                    self._write_batch(batch)
                except BaseException:
                    with self._lock:  # whatever stopped this thread, the batch stays for the next writer
                        self._lines[:0] = batch
                    raise

    def close(self) -> None:
        """Stop the writer and write what is left. Later lines are written at once (see `write`). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._arrived.set()
        self._full.set()
        if self._writer is not threading.current_thread():
            self._writer.join(timeout=5)
        self.drain()
        _live.discard(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def _run(self) -> None:
        try:
            self._write_batches()
        finally:
            self._writer_alive = False
            self.drain()  # a line that raced the flag is not left behind

    def _write_batches(self) -> None:
        while not self._closed:
            self._arrived.wait()
            self._full.wait(self.interval_s)  # gather: the batch is what arrives meanwhile
            self._full.clear()
            self._arrived.clear()  # before the swap: a line appended after it sets the event again
            if self._closed:
                return  # close() drains on its own thread
            try:
                self.drain()
            except Exception:  # the writer must outlive anything a stream raises
                self._arrived.set()
            with self._lock:
                if self._lines:
                    self._arrived.set()  # a failed batch went back: try again after the next interval

    def _write_batch(self, batch: list[str]) -> None:
        """Called with _write_lock held. On failure the batch goes back in front, unless the stream has failed
        FAILURES_BEFORE_FALLBACK times in a row or the writer is closing: then the fallback takes it."""
        text = "".join(batch)
        try:
            self.stream.write(text)
            self.stream.flush()
            self._failures = 0
            return
        except Exception:  # a broken stream must not break the process that logs
            self._failures += 1
        if self._failures < FAILURES_BEFORE_FALLBACK and not self._closed:
            with self._lock:
                self._lines[:0] = batch
            return
        fallback = self._fallback or sys.__stderr__
        try:
            if fallback is None:
                raise OSError("no fallback stream")
            fallback.write(text)
            fallback.flush()
        except Exception:
            self.dropped += len(batch)


def flush_logs() -> None:
    """Write every line waiting in any BatchedStream of this process now (at shutdown, before the process ends)."""
    for stream in list(_live):
        stream.drain()


def release(stream: object) -> None:
    """Close `stream` if it is a BatchedStream (a handler that used it is being replaced)."""
    if isinstance(stream, BatchedStream):
        stream.close()


def close_on_sigterm() -> None:
    """Have SIGTERM write every waiting line before it ends the process, where SIGTERM still has its default
    action (which ends the process without running atexit). A handler someone else installed is left alone, and so
    is a thread other than the main one (only it may set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _close_all_and_terminate)


def _close_all_and_terminate(signum: int, _frame: object) -> None:
    _close_all()
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)  # ends the process as the default action would: same exit status


@atexit.register
def _close_all() -> None:
    for stream in list(_live):
        stream.close()
