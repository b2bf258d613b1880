"""One lifecycle for a container's resources, and the long-running processes that hold their container in it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from uvicorn.importer import import_from_string

from gateway.adapters.sqlite import SqliteBiller
from gateway.app.container import build_container
from gateway.app.environment import load_settings
from gateway.app.lifecycle import running
from gateway.app.secret import Secret
from gateway.app.server import app_from_env, ingest_app_from_env, worker_factory
from gateway.app.settings import Settings
from gateway.domain.signature import sign
from gateway.service.ingest import Status
from tests.builders import SECRET, encode, event


def sqlite_settings(database: Path) -> Settings:
    return load_settings({}, store=f"sqlite:///{database}", webhook_secrets=[Secret(SECRET)])


async def test_running_closes_the_database_when_the_block_fails(tmp_path: Path) -> None:
    container = build_container(sqlite_settings(tmp_path / "g.db"))

    with pytest.raises(RuntimeError, match="the command failed"):
        async with running(container) as opened:
            await opened.ledger().ping()
            assert container.sqlite.initialized
            raise RuntimeError("the command failed")

    assert not container.sqlite.initialized


def test_worker_factories_are_the_app_factories_uvicorn_imports() -> None:
    assert import_from_string(worker_factory(run_dispatcher=True)) is app_from_env
    assert import_from_string(worker_factory(run_dispatcher=False)) is ingest_app_from_env


def test_worker_delivers_what_is_pending_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    database = tmp_path / "worker.db"
    body = encode(event("evt_WORKER", cost="0.0123"))

    async def ingest() -> Status:
        async with running(build_container(sqlite_settings(database))) as container:
            outcome = await container.ingest().deliver(sign(body, SECRET, int(time.time())), body)
            return outcome.status

    assert asyncio.run(ingest()) is Status.ACCEPTED
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RINGSIDE_", "GATEWAY_", "STRIPE_"))}
    env.update(
        {"GATEWAY_STORE": f"sqlite:///{database}", "RINGSIDE_WEBHOOK_SECRETS": SECRET, "GATEWAY_BILLER": "ledger"}
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.app.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    async def delivered() -> list[str]:
        async with running(build_container(sqlite_settings(database))) as container:
            return [e.identifier for e in await SqliteBiller(container.sqlite()).events()]

    try:
        deadline = time.monotonic() + 15
        while not (sent := asyncio.run(delivered())) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=20)

    assert len(sent) == 1
    assert returncode == 0
