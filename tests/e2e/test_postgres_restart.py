"""End to end: two `gateway serve` replicas on one PostgreSQL that is restarted mid-run.

The server is a throwaway cluster of the test's own (tests/postgres_process.py), never the shared test server. 600
signed deliveries of 300 events are spread over both replicas while Stripe fails some calls; in the middle the
server stops (fast shutdown: open transactions rolled back, every connection cut) and comes back a second later.
Deliveries meanwhile get 503 store_unavailable and are sent again, as Ringside does; the replicas reconnect by
themselves. Stripe must end with exactly one meter event per event, per-customer totals equal to the floor of the
exact spend (the shared carry), and nothing left pending.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path

import httpx
import msgspec
import pytest

from gateway.adapters.postgres import PostgresDatabase, PostgresLedger
from gateway.domain.ledger import State
from tests.builders import SECRET
from tests.e2e.process import GatewayProcess, deliver_like_ringside
from tests.e2e.test_replicas import (
    EVENTS,
    _assert_customer_totals_are_floor_of_exact_spend,
    _events,
    _wait_until_nothing_is_pending,
)
from tests.fakes.stripe_server import FAKE_API_KEY, FakeStripe
from tests.postgres_process import PostgresServer

pytestmark = pytest.mark.slow

IN_FLIGHT = 32


async def test_every_event_is_billed_once_with_exact_carries_when_postgres_restarts_mid_run(tmp_path: Path) -> None:
    events = _events(seed=17)
    bodies = [msgspec.json.encode(e) for e in events]
    plan = [(body, "ab"[n % 2]) for n, body in enumerate(bodies)] + [
        (body, "ba"[n % 2]) for n, body in enumerate(reversed(bodies))
    ]
    statuses: dict[str, int] = defaultdict(int)
    midway = asyncio.Event()
    readiness_while_down: list[int] = []
    done_after_restart = 0

    with PostgresServer() as server, FakeStripe(api_key=FAKE_API_KEY) as stripe:
        stripe.fail_next(4, 500)
        env = {
            "RINGSIDE_WEBHOOK_SECRETS": SECRET,
            "GATEWAY_STORE": server.url,
            "STRIPE_API_KEY": FAKE_API_KEY,
            "STRIPE_API_BASE": stripe.url,
            "GATEWAY_STRIPE_MAX_RPS": "500",
            "GATEWAY_DISPATCH_LEASE_S": "2",
            "GATEWAY_RETRY_BASE_S": "0.1",
            "GATEWAY_RETRY_MAX_S": "1",
        }
        replica_a = GatewayProcess(env, tmp_path / "replica_a.log").start()
        replica_b = GatewayProcess(env, tmp_path / "replica_b.log").start()
        slots = asyncio.Semaphore(IN_FLIGHT)

        async with httpx.AsyncClient(timeout=5) as client:

            async def deliver(body: bytes, target: str) -> None:
                nonlocal done_after_restart
                replica = replica_a if target == "a" else replica_b
                async with slots:
                    response = await deliver_like_ringside(client, replica.url, body, SECRET, attempts=80)
                statuses[response.json()["status"]] += 1
                if sum(statuses.values()) == len(plan) // 3:
                    midway.set()
                if restarted:
                    done_after_restart += 1

            restarted = False

            async def restart_midway() -> None:
                nonlocal restarted
                await midway.wait()
                await asyncio.to_thread(server.stop, "fast")
                started = time.monotonic()
                for replica in (replica_a, replica_b):
                    readiness_while_down.append((await client.get(f"{replica.url}/readyz")).status_code)
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
                await asyncio.to_thread(server.start)
                restarted = True

            await asyncio.gather(restart_midway(), *(deliver(body, target) for body, target in plan))

        received = await asyncio.to_thread(stripe.wait_for_meter_events, EVENTS, 60.0)
        database = PostgresDatabase(server.url, max_connections=2)
        try:
            ledger = PostgresLedger(database)
            await _wait_until_nothing_is_pending(ledger)
            await asyncio.sleep(1.0)  # anything extra that was going to arrive has had time to
            replica_a.terminate()
            replica_b.terminate()
            entries = {str(e["id"]): await ledger.get(str(e["id"])) for e in events}
            stats = await ledger.stats()
        finally:
            await database.close()

        assert readiness_while_down == [503, 503]
        assert done_after_restart > len(plan) // 3  # the restart came mid-run, not after it
        # A COMMIT that reached the disk just before the server cut its connection is answered 503, not 200 (the
        # answer is lost, never the event): its redelivery is then a duplicate. At most one per delivery in flight.
        assert EVENTS - IN_FLIGHT <= statuses["accepted"] <= EVENTS
        assert statuses["accepted"] + statuses["duplicate"] == len(plan)
        assert sorted(e["identifier"] for e in stripe.meter_events) == sorted(str(e["id"]) for e in events)
        assert len(stripe.meter_events) == EVENTS == len(received)
        assert stripe.invalid_requests == []

    assert {entry.state for entry in entries.values() if entry is not None} == {State.SENT}
    assert {event_id: entry.units for event_id, entry in entries.items() if entry} == {
        str(e["identifier"]): e["value"] for e in received
    }
    assert (stats.pending, stats.sent, stats.parked) == (0, EVENTS, 0)
    _assert_customer_totals_are_floor_of_exact_spend(events, received)
