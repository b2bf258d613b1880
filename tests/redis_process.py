"""A redis-server of a test's own, on a free port and in a temporary directory, that the test can stop and restart.

Used where a test must take Redis away (outages, restarts, memory limits) without disturbing the shared server the
other tests use. Under `CI=true` a missing `redis-server` binary fails the test instead of skipping it.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

import pytest
import redis

from tests.e2e.process import free_port
from tests.redis_fixtures import in_ci


class RedisServer:
    """One redis-server process. `stop()` then `start()` brings it back on the same port with the same directory,
    so with `appendonly=True` (AOF, fsync always) every acknowledged write survives the restart."""

    def __init__(self, directory: Path, *, port: int | None = None, appendonly: bool = True) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            message = "redis-server is not installed"
            if in_ci():
                pytest.fail(message)
            pytest.skip(message)
        self.binary = binary
        self.directory = directory
        self.port = port or free_port()
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--save", "",
                "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "always",
                "--maxmemory-policy", "noeviction",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited: {(self.directory / 'redis.log').read_text()}")
                try:
                    if client.ping():
                        return self
                except redis.RedisError:
                    time.sleep(0.02)
        finally:
            client.close()
        raise RuntimeError(f"redis-server did not answer within {timeout_s}s")

    def stop(self) -> None:
        """SIGTERM: Redis finishes its AOF and exits; its clients' connections are cut."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None
