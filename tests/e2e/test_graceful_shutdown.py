"""SIGTERM under load: in-flight requests finish, the dispatcher hands its leases back, a restart delivers at once.

Leases are long here (120 s) on purpose: if the stopping gateway kept its leases, the restarted one could not touch
those entries for two minutes, and the test's deadline (well under that) would fail.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from pathlib import Path

import httpx
import msgspec
import pytest

from tests.builders import SECRET, event
from tests.e2e.process import GatewayProcess, deliver_like_ringside
from tests.fakes.stripe_server import FAKE_API_KEY, FakeStripe

pytestmark = pytest.mark.slow

EVENTS = 300
LEASE_S = 120


def _leased_pending(database: Path) -> int:
    """Pending entries some process still holds a lease on (leases are a column of the SQLite ledger)."""
    with sqlite3.connect(database) as db:
        row = db.execute(
            "SELECT COUNT(*) FROM entries WHERE state = 'pending' AND leased_until > ?", (time.time(),)
        ).fetchone()
    return int(row[0])


def _pending(database: Path) -> int:
    with sqlite3.connect(database) as db:
        return int(db.execute("SELECT COUNT(*) FROM entries WHERE state = 'pending'").fetchone()[0])


async def test_sigterm_releases_leases_so_a_restart_delivers_the_backlog_at_once(tmp_path: Path) -> None:
    database = tmp_path / "gateway.db"
    bodies = [msgspec.json.encode(event(f"evt_term_{n:03}", stripe_customer=f"cus_{n % 7}")) for n in range(EVENTS)]
    with FakeStripe(api_key=FAKE_API_KEY) as stripe:
        stripe.latency_s = 0.02  # Stripe answers slower than Ringside delivers: a backlog builds up
        env = {
            "RINGSIDE_WEBHOOK_SECRETS": SECRET,
            "GATEWAY_STORE": f"sqlite:///{database}",
            "STRIPE_API_KEY": FAKE_API_KEY,
            "STRIPE_API_BASE": stripe.url,
            "GATEWAY_STRIPE_MAX_RPS": "60",
            "GATEWAY_DISPATCH_LEASE_S": str(LEASE_S),
        }
        gateway = GatewayProcess(env, tmp_path / "gateway.log").start()
        statuses: list[str] = []
        half_done = asyncio.Event()
        async with httpx.AsyncClient(timeout=10) as client:
            limit = asyncio.Semaphore(16)

            async def send(body: bytes) -> None:
                async with limit:
                    response = await deliver_like_ringside(client, gateway.url, body, SECRET, backoff_s=0.1)
                    statuses.append(response.json()["status"])
                    if len(statuses) >= EVENTS // 2:
                        half_done.set()

            sending = [asyncio.create_task(send(body)) for body in bodies]
            await half_done.wait()
            # SIGTERM in the middle of the load, with deliveries in flight and the dispatcher mid-batch.
            stopped_at = time.monotonic()
            await asyncio.to_thread(gateway.terminate)
            shutdown_s = time.monotonic() - stopped_at
            exit_code = gateway.process.returncode if gateway.process else None
            sent_before_restart = len(stripe.meter_events)
            leased_after_stop = _leased_pending(database)
            backlog = _pending(database)

            restarted_at = time.monotonic()
            await asyncio.to_thread(gateway.start)
            await asyncio.gather(*sending)
            await asyncio.to_thread(stripe.wait_for_meter_events, EVENTS, 30.0)
            delivered_s = time.monotonic() - restarted_at
            await asyncio.sleep(0.5)
        await asyncio.to_thread(gateway.terminate)

    # uvicorn re-raises the signal once it has shut down gracefully, so the exit status says "terminated by SIGTERM".
    assert exit_code in (0, -signal.SIGTERM) and shutdown_s < 15
    assert backlog > 0, "the test needs a backlog at SIGTERM to mean anything"
    assert leased_after_stop == 0
    assert sent_before_restart < EVENTS
    assert delivered_s < LEASE_S / 4  # nobody waited for a lease to run out
    assert sorted(statuses).count("accepted") == EVENTS and set(statuses) <= {"accepted", "duplicate"}
    assert sorted(e["identifier"] for e in stripe.meter_events) == sorted(f"evt_term_{n:03}" for n in range(EVENTS))
    logs = gateway.logs()
    assert logs.count('"dispatcher.stopped"') == 2 and logs.count('"Finished server process [') == 2
    assert '"dispatcher.stop_timeout"' not in logs
