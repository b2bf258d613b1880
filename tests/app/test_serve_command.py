"""`gateway serve`: refuses to run unsigned, and `--dev` gives a new user a secret and a working example."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
from click.testing import CliRunner

from gateway.app.cli import main
from gateway.app.cli.serve import _announce
from gateway.app.container import build_container
from gateway.app.environment import load_settings
from gateway.app.secret import Secret
from gateway.domain.signature import sign
from tests.e2e.process import free_port
from tests.log_capture import captured_logs


def test_serve_refuses_to_start_when_no_webhook_secret_is_set() -> None:
    result = CliRunner().invoke(main, ["serve"], env={"RINGSIDE_WEBHOOK_SECRETS": ""})

    assert result.exit_code != 0
    assert "RINGSIDE_WEBHOOK_SECRETS is not set" in result.output


def test_serve_names_the_variable_when_a_setting_is_malformed() -> None:
    result = CliRunner().invoke(main, ["serve"], env={"RINGSIDE_WEBHOOK_SECRETS": "s", "GATEWAY_UNITS_PER_USD": "lots"})

    assert result.exit_code != 0
    assert "GATEWAY_UNITS_PER_USD" in result.output


def test_dev_mode_prints_a_secret_that_signs_accepted_deliveries(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RINGSIDE_", "GATEWAY_", "STRIPE_"))}
    env.update({"GATEWAY_STORE": f"sqlite:///{tmp_path / 'dev.db'}", "GATEWAY_LOG_FORMAT": "json"})
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.app.cli", "serve", "--dev", "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stderr is not None
        banner = ""
        while "curl" not in banner:
            banner += process.stderr.readline()
        secret = re.search(r"export RINGSIDE_WEBHOOK_SECRETS='([^']+)'", banner)
        assert secret is not None
        body = re.search(r"BODY='([^']+)'", banner)
        assert body is not None
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{url}/healthz", timeout=0.5)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        raw = body.group(1).encode()
        response = httpx.post(
            f"{url}/webhooks/ringside",
            content=raw,
            headers={"X-FC-Signature": sign(raw, secret.group(1), int(time.time()))},
        )
    finally:
        process.terminate()
        process.wait(timeout=20)

    assert response.status_code == 200
    assert response.json()["status"] == "accepted"


def test_serve_warns_when_several_workers_would_share_one_sqlite_file(tmp_path: Path) -> None:
    """Measured (docs/performance.md): a second worker on one SQLite file adds no throughput and raises latency."""
    secrets = [Secret("whsec_test_only_not_a_real_secret")]
    sqlite = load_settings({}, store=f"sqlite:///{tmp_path / 'g.db'}", webhook_secrets=secrets)
    redis = load_settings({}, store="redis://127.0.0.1:6379/15", webhook_secrets=secrets)

    with captured_logs() as logs:
        for settings, workers in ((sqlite, 2), (sqlite, 1), (redis, 2)):
            container = build_container(settings)
            _announce(container, settings, workers)
            container.shutdown_resources()

    warned = [line for line in logs.lines() if line["event"] == "gateway.sqlite_workers"]
    assert [line["workers"] for line in warned] == [2]
    assert "redis://" in warned[0]["message"]
