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

from gateway.adapters.clock import SystemClock
from gateway.adapters.memory import MemoryLedger
from gateway.adapters.redis import RedisDurability, RedisNotDurable, connect
from gateway.app.container import build_container
from gateway.app.server import create_app
from gateway.service.sweep import Sweep
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


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


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
        with pytest.raises(BaseException) as raised:  # Litestar's test client wraps it in an ExceptionGroup
            async with AsyncTestClient(refused):
                pass
        refusals = _leaves(raised.value)
        assert [type(exc) for exc in refusals] == [RedisNotDurable]
        assert "appendonly yes" in str(refusals[0])

        allowed = build_container(settings(store=server.url, redis={"allow_volatile": True}))
        async with AsyncTestClient(create_app(allowed, run_dispatcher=False)) as client:
            ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["store"] == "ok"


def test_allow_volatile_is_read_from_the_environment() -> None:
    from gateway.app.environment import load_settings

    assert load_settings({"GATEWAY_REDIS_ALLOW_VOLATILE": "true"}).redis.allow_volatile is True
    assert load_settings({}).redis.allow_volatile is False


async def test_readyz_is_503_with_the_reason_once_redis_restarted_without_aof(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        container = build_container(settings(store=server.url))
        async with AsyncTestClient(create_app(container, run_dispatcher=False)) as client:
            assert (await client.get("/readyz")).status_code == 200

            _restart_without_aof(server)
            ready = await client.get("/readyz")

            assert ready.status_code == 503
            assert ready.json()["status"] == "not_ready"
            assert ready.json()["checks"]["store"].startswith("not durable: Redis has no AOF persistence")
            assert "appendonly yes" in ready.json()["checks"]["store"]

            _set(server, "appendonly", "yes")
            assert (await client.get("/readyz")).status_code == 200


async def test_the_sweep_logs_once_when_redis_restarted_without_aof_and_once_when_it_is_durable_again(
    tmp_path: Path,
) -> None:
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        client = connect(server.url)
        sweep = Sweep(MemoryLedger(), SystemClock(), durability=RedisDurability(client))
        try:
            with captured_logs() as logs:
                await sweep.run_once()
                _restart_without_aof(server)
                await sweep.run_once()
                await sweep.run_once()
                problem = sweep.durability_problem
                _set(server, "appendonly", "yes")
                await sweep.run_once()
        finally:
            await client.aclose()

    assert problem is not None and "appendonly yes" in problem
    assert sweep.durability_problem is None
    events = [line for line in logs.lines() if line["event"].startswith("store.")]
    assert [line["event"] for line in events] == ["store.not_durable", "store.durable"]
    assert events[0]["message"] == problem


def _restart_without_aof(server: RedisServer) -> None:
    server.stop()
    server.appendonly = False
    server.start()


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
