"""End to end: two `gateway serve` replicas sharing one store (Redis, PostgreSQL) and one fake Stripe, one of them
SIGKILLed mid-run.

1,000 signed deliveries of 300 events are spread over both replicas, some of them the same event arriving at both at
the same instant; Stripe fails some calls; replica B is killed with SIGKILL (no shutdown hook: its leases stay taken,
whatever it had in flight is cut) and restarted. Whatever the interleaving, Stripe must end with exactly one meter
event per event, with the value the shared ledger settled, per-customer totals equal to the floor of the exact
spend (the carry is shared by the replicas), and nothing left pending.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path

import httpx
import msgspec
import pytest
from redis.asyncio import Redis

from gateway.adapters.postgres import PostgresDatabase, PostgresLedger
from gateway.adapters.redis import RedisLedger
from gateway.domain.ledger import State
from gateway.domain.ports import Ledger
from tests.builders import SECRET, event
from tests.e2e.process import GatewayProcess, deliver_like_ringside
from tests.fakes.stripe_server import FAKE_API_KEY, FakeStripe
from tests.redis_fixtures import REDIS_URL

pytestmark = pytest.mark.slow

EVENTS = 300
CUSTOMERS = 7
SINGLE_DELIVERIES = 650  # each event once, then 350 redeliveries to either replica
SIMULTANEOUS_PAIRS = 175  # the same event to both replicas at the same instant: 1,000 deliveries in all
IN_FLIGHT = 48


@dataclass(frozen=True)
class Shared:
    """A store both replicas share: how they are told about it, the test's own ledger on it, and the warning the
    replicas must log about it (None: nothing to warn about)."""

    environment: dict[str, str]
    ledger: Ledger
    warning: str | None


@pytest.fixture
def redis_shared(redis_client: Redis, redis_prefix: str) -> Shared:
    return Shared(
        # The test Redis runs without AOF: warned, not refused.
        {"GATEWAY_STORE": REDIS_URL, "GATEWAY_REDIS_PREFIX": redis_prefix, "GATEWAY_REDIS_ALLOW_VOLATILE": "true"},
        RedisLedger(redis_client, prefix=redis_prefix),
        '"redis.no_persistence"',
    )


@pytest.fixture
async def postgres_shared(postgres_url: str) -> AsyncIterator[Shared]:
    database = PostgresDatabase(postgres_url, max_connections=2)
    yield Shared({"GATEWAY_STORE": postgres_url}, PostgresLedger(database), None)
    await database.close()


@pytest.fixture(params=["redis_shared", "postgres_shared"])
def shared(request: pytest.FixtureRequest) -> Shared:
    chosen: Shared = request.getfixturevalue(request.param)
    return chosen


def _events(seed: int) -> list[dict[str, object]]:
    """Costs of at least one unit ($0.00001) with digits beyond unit precision, so every event makes one meter event
    and the carry is exercised on every customer."""
    rng = random.Random(seed)
    return [
        event(
            f"evt_replica_{n:03}",
            cost=str(Decimal(rng.randint(1_000, 2_000_000)) / Decimal(10**8)),
            customer=f"cust_{n % CUSTOMERS}",
            stripe_customer=f"cus_REPLICA{n % CUSTOMERS}",
        )
        for n in range(EVENTS)
    ]


def _plan(bodies: list[bytes], seed: int) -> list[tuple[bytes, str]]:
    """(body, "a" | "b" | "both") in a shuffled order; every event is delivered at least once."""
    rng = random.Random(seed)
    singles = list(bodies) + [rng.choice(bodies) for _ in range(SINGLE_DELIVERIES - len(bodies))]
    plan = [(body, rng.choice("ab")) for body in singles]
    plan += [(rng.choice(bodies), "both") for _ in range(SIMULTANEOUS_PAIRS)]
    rng.shuffle(plan)
    return plan


async def test_two_replicas_send_exactly_one_meter_event_per_event_when_one_is_killed_mid_run(
    tmp_path: Path, shared: Shared
) -> None:
    events = _events(seed=11)
    bodies = [msgspec.json.encode(e) for e in events]
    plan = _plan(bodies, seed=5)
    assert sum(2 if target == "both" else 1 for _, target in plan) == 1000
    statuses: dict[str, int] = defaultdict(int)

    with FakeStripe(api_key=FAKE_API_KEY) as stripe:
        stripe.fail_next(4, 500)
        stripe.fail_next(2, 429, retry_after=0.3)
        env = {
            "RINGSIDE_WEBHOOK_SECRETS": SECRET,
            **shared.environment,
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

            async def send(body: bytes, replica: GatewayProcess) -> None:
                response = await deliver_like_ringside(client, replica.url, body, SECRET)
                statuses[response.json()["status"]] += 1

            async def deliver(body: bytes, target: str) -> None:
                async with slots:
                    if target == "both":
                        await asyncio.gather(send(body, replica_a), send(body, replica_b))
                    else:
                        await send(body, replica_a if target == "a" else replica_b)

            first, middle, last = plan[:350], plan[350:650], plan[650:]
            await asyncio.gather(*(deliver(body, target) for body, target in first))
            restart = asyncio.create_task(asyncio.to_thread(_kill_and_restart, replica_b))
            await asyncio.gather(*(deliver(body, target) for body, target in middle))
            await restart
            await asyncio.gather(*(deliver(body, target) for body, target in last))

        received = await asyncio.to_thread(stripe.wait_for_meter_events, EVENTS, 60.0)
        ledger = shared.ledger
        await _wait_until_nothing_is_pending(ledger)
        await asyncio.sleep(1.0)  # anything extra that was going to arrive has had time to
        replica_a.terminate()
        replica_b.terminate()

        assert statuses["accepted"] == EVENTS
        assert statuses["accepted"] + statuses["duplicate"] == 1000
        assert sorted(e["identifier"] for e in stripe.meter_events) == sorted(str(e["id"]) for e in events)
        assert len(stripe.meter_events) == EVENTS == len(received)
        assert stripe.invalid_requests == []

    entries = {str(e["id"]): await ledger.get(str(e["id"])) for e in events}
    assert {entry.state for entry in entries.values() if entry is not None} == {State.SENT}
    assert {event_id: entry.units for event_id, entry in entries.items() if entry} == {
        str(e["identifier"]): e["value"] for e in received
    }
    stats = await ledger.stats()
    assert (stats.pending, stats.sent, stats.parked) == (0, EVENTS, 0)
    _assert_customer_totals_are_floor_of_exact_spend(events, received)
    logs_b = replica_b.logs()
    assert logs_b.count('"gateway.starting"') == 2  # the SIGKILL and restart really happened
    if shared.warning is not None:
        assert shared.warning in replica_a.logs()  # the shared test Redis runs without AOF: allowed, still warned
    assert SECRET not in replica_a.logs() + logs_b


def _kill_and_restart(replica: GatewayProcess) -> None:
    replica.kill()
    replica.start()


async def _wait_until_nothing_is_pending(ledger: Ledger, timeout_s: float = 30.0) -> None:
    for _ in range(int(timeout_s / 0.1)):
        if (await ledger.stats()).pending == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"entries still pending after {timeout_s}s: {await ledger.stats()}")


def _assert_customer_totals_are_floor_of_exact_spend(
    events: list[dict[str, object]], received: list[dict[str, object]]
) -> None:
    exact: dict[str, Decimal] = defaultdict(Decimal)
    for body in events:
        data = body["data"]
        assert isinstance(data, dict)
        exact[data["customer"]["metadata"]["stripe_customer_id"]] += Decimal(data["cost_usd"]) * 100_000
    billed: dict[str, int] = defaultdict(int)
    for item in received:
        billed[str(item["customer"])] += int(str(item["value"]))
    assert billed == {customer: int(total.to_integral_value(ROUND_FLOOR)) for customer, total in exact.items()}
