"""A Redis that could forget acknowledged events: `serve` and `worker` refuse it, naming the setting to change,
unless GATEWAY_REDIS_ALLOW_VOLATILE=true (or `serve --dev`); the sweep re-checks, and /readyz answers 503 with the
reason once a Redis restarted without persistence.

Each test runs a redis-server of its own (tests/redis_process.py): the shared test Redis runs without AOF, and
these tests change its settings and restart it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis
from litestar.testing import AsyncTestClient

from gateway.adapters.redis import RedisNotDurable
from gateway.app.container import build_container
from gateway.app.server import create_app
from tests.app.cli_runner import cli_env, gateway
from tests.builders import settings
from tests.e2e.process import free_port
from tests.log_capture import captured_logs
from tests.redis_process import RedisServer

SECRET = "whsec_test_only_not_a_real_secret"


def _set(server: RedisServer, name: str, value: str) -> None:
    client = redis.Redis(host="127.0.0.1", port=server.port)
    try:
        client.config_set(name, value)
    finally:
        client.close()


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_refuses_to_start_on_a_redis_without_aof_and_names_the_setting(tmp_path: Path, command: str) -> None:
    with RedisServer(tmp_path / "redis", appendonly=False) as server:
        result = gateway(command, env=cli_env(GATEWAY_STORE=server.url, RINGSIDE_WEBHOOK_SECRETS=SECRET))

    assert result.exit_code != 0
    assert "appendonly yes" in result.output
    assert "GATEWAY_REDIS_ALLOW_VOLATILE" in result.output


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_refuses_to_start_on_a_redis_that_evicts_keys_and_names_the_setting(tmp_path: Path, command: str) -> None:
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        _set(server, "maxmemory-policy", "allkeys-lru")
        result = gateway(command, env=cli_env(GATEWAY_STORE=server.url, RINGSIDE_WEBHOOK_SECRETS=SECRET))

    assert result.exit_code != 0
    assert "maxmemory-policy noeviction" in result.output
    assert "appendonly" not in result.output


async def test_the_app_does_not_start_on_a_volatile_redis_unless_allowed(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis", appendonly=False) as server:
        refused = create_app(build_container(settings(store=server.url)), run_dispatcher=False)
        with pytest.raises(RedisNotDurable, match="appendonly yes"):
            async with AsyncTestClient(refused):
                pass

        allowed = build_container(settings(store=server.url, redis={"allow_volatile": True}))
        async with AsyncTestClient(create_app(allowed, run_dispatcher=False)) as client:
            ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["store"] == "ok"


def test_allow_volatile_is_read_from_the_environment() -> None:
    from gateway.app.settings import load_settings

    assert load_settings({"GATEWAY_REDIS_ALLOW_VOLATILE": "true"}).redis.allow_volatile is True
    assert load_settings({}).redis.allow_volatile is False


async def test_readyz_and_the_sweep_report_a_redis_that_restarted_without_aof(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        container = build_container(settings(store=server.url))
        async with AsyncTestClient(create_app(container, run_dispatcher=False)) as client:
            assert (await client.get("/readyz")).status_code == 200

            server.stop()
            server.appendonly = False
            server.start()
            with captured_logs() as logs:
                await container.sweep().run_once()
            ready = await client.get("/readyz")

            assert ready.status_code == 503
            assert ready.json()["status"] == "not_ready"
            assert "appendonly yes" in ready.json()["checks"]["store"]
            lines = [line for line in logs.lines() if line["event"] == "store.not_durable"]
            assert len(lines) == 1 and "appendonly yes" in lines[0]["message"]

            _set(server, "appendonly", "yes")
            await container.sweep().run_once()
            assert (await client.get("/readyz")).status_code == 200


def test_dev_mode_starts_on_a_volatile_redis(tmp_path: Path) -> None:
    port = free_port()
    with RedisServer(tmp_path / "redis", appendonly=False) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RINGSIDE_", "GATEWAY_", "STRIPE_"))}
        env.update({"GATEWAY_STORE": server.url, "GATEWAY_LOG_FORMAT": "json"})
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.app.cli", "serve", "--dev", "--port", str(port)],
            env=env,
            stderr=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        try:
            ready = None
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=0.5)
                    break
                except httpx.HTTPError:
                    time.sleep(0.05)
        finally:
            process.terminate()
            process.wait(timeout=20)
    assert ready is not None and ready.status_code == 200
