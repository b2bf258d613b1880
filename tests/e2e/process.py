"""Run `gateway serve` as a real subprocess, and deliver to it the way Ringside does (retrying non-2xx)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import httpx

from gateway.domain.signature import sign


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class GatewayProcess:
    """One `gateway serve` process; its logs go to `log_path` (appended across restarts)."""

    def __init__(self, env: Mapping[str, str], log_path: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.env = {**os.environ, **env, "GATEWAY_PORT": str(self.port), "GATEWAY_LOG_FORMAT": "json"}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> GatewayProcess:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.app.cli", "serve"],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}: {self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"gateway did not start in {timeout_s}s: {self.log_path.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, leases stay taken, whatever was in flight is cut."""
        self._stop(signal.SIGKILL)

    def terminate(self) -> None:
        self._stop(signal.SIGTERM)

    def _stop(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)
            self.process.wait(timeout=30)
        if self._log is not None:
            self._log.close()
            self._log = None

    def logs(self) -> str:
        return self.log_path.read_text()


async def deliver_like_ringside(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    secret: str,
    *,
    attempts: int = 40,
    backoff_s: float = 0.05,
) -> httpx.Response:
    """POST a signed delivery; on a non-2xx or a connection error, back off exponentially and send it again."""
    for attempt in range(attempts):
        try:
            headers = {"X-FC-Signature": sign(body, secret, int(time.time())), "Content-Type": "application/json"}
            response = await client.post(f"{url}/webhooks/ringside", content=body, headers=headers)
            if response.is_success:
                return response
        except httpx.HTTPError:
            pass
        await asyncio.sleep(min(backoff_s * 2**attempt, 1.0))
    raise AssertionError(f"delivery never acknowledged after {attempts} attempts")
