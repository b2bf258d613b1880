"""Chaos: many events, each delivered 1 to 4 times in random order over up to 32 connections, while Stripe fails
about one call in five (500, 429, or a hang, some of which Stripe records anyway) and the gateway is SIGKILLed and
restarted twice. Afterwards, read through the gateway's own store adapter:

- Stripe holds exactly one meter event per billable event with units, with the ledger's value, and each customer's
  total is the floor of its exact spend (the carry rule);
- the parked records are exactly the expected ones: unknown customers, invalid costs, customers Stripe refuses;
- nothing is pending, and ignored events left no trace.

Size: CHAOS_EVENTS events (default 2,000: about 30 s per store on a 2-core machine, to keep each run under a
minute; the issue's 5,000 took 66 s on SQLite, 109 s on Redis and 118 s on PostgreSQL on a busy one:
`CHAOS_EVENTS=5000 .venv/bin/pytest tests/e2e/test_chaos.py -s`). The run is reproducible from CHAOS_SEED. Stores
are fixtures: a new store joins with one name in STORES.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from gateway.app.container import Container, build_container
from gateway.app.lifecycle import running
from gateway.domain.ledger import ParkReason, State
from tests.builders import SECRET, event, settings
from tests.e2e.process import GatewayProcess, deliver_like_ringside
from tests.fakes.stripe_server import FAKE_API_KEY, METER_EVENTS, FakeStripe
from tests.redis_fixtures import REDIS_URL

pytestmark = pytest.mark.slow

CHAOS_EVENTS = int(os.environ.get("CHAOS_EVENTS", "2000"))
CHAOS_SEED = int(os.environ.get("CHAOS_SEED", "20261125"))
CONNECTIONS = 32
FAULT_RATE = 0.2
KILLS = 2
STORES = ["sqlite_store", "redis_store", "postgres_store"]


# -- the stores under test -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Store:
    """A store as the gateway is told about it (environment) and as the test opens it (settings overrides)."""

    environment: dict[str, str]
    overrides: dict[str, Any]

    async def open(self) -> Container:
        return build_container(settings(**self.overrides))


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Store:
    url = f"sqlite:///{tmp_path / 'chaos.db'}"
    return Store({"GATEWAY_STORE": url}, {"store": url})


@pytest.fixture
def redis_store(redis_prefix: str) -> Store:
    # redis_prefix: a real Redis (skipped without one, failed under CI=true), keys deleted afterwards. The test
    # Redis runs without AOF, which `gateway serve` refuses unless told to accept it.
    return Store(
        {"GATEWAY_STORE": REDIS_URL, "GATEWAY_REDIS_PREFIX": redis_prefix, "GATEWAY_REDIS_ALLOW_VOLATILE": "true"},
        {"store": REDIS_URL, "redis": {"prefix": redis_prefix, "allow_volatile": True}},
    )


@pytest.fixture
def postgres_store(postgres_url: str) -> Store:
    # postgres_url: a schema of the test's own on the test server (a failure, never a skip, without one).
    return Store({"GATEWAY_STORE": postgres_url}, {"store": postgres_url})


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> Store:
    chosen: Store = request.getfixturevalue(request.param)
    return chosen


# -- a Stripe that misbehaves ------------------------------------------------------------------------------------


class ChaoticStripe(FakeStripe):
    """The fake Stripe, failing about `fault_rate` of the meter event calls at random: 500, 429 or a hang.

    A hang outlasts the gateway's timeout; half of the hung calls are then recorded anyway (Stripe got the event,
    the gateway never heard), the rest are dropped. Faults go through the fake's own queue (fail_next, hang_next).
    """

    def __init__(self, seed: int, fault_rate: float, hang_s: float) -> None:
        super().__init__(api_key=FAKE_API_KEY)
        self.fault_rate = fault_rate
        self.hang_s = hang_s
        self.faults: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._chaos_lock = threading.Lock()

    def _answer(self, request: Any, handler: Any) -> Any:
        if request.path == METER_EVENTS:
            with self._chaos_lock:
                draw, kind, recorded = self._random.random(), self._random.random(), self._random.random() < 0.5
            if draw < self.fault_rate:
                if kind < 0.4:
                    self.fail_next(1, 500)
                    self.faults["500"] += 1
                elif kind < 0.7:
                    self.fail_next(1, 429, retry_after=0.05)
                    self.faults["429"] += 1
                else:
                    self.hang_next(1, self.hang_s, then_process=recorded)
                    self.faults["hang_recorded" if recorded else "hang_dropped"] += 1
        return super()._answer(request, handler)


# -- the scenario ------------------------------------------------------------------------------------------------


@dataclass
class Scenario:
    """The events and what must become of each one."""

    bodies: dict[str, bytes] = field(default_factory=dict)
    billable: dict[str, tuple[str, Decimal]] = field(default_factory=dict)  # id -> (Stripe customer, cost)
    parked: dict[str, ParkReason] = field(default_factory=dict)
    ignored: set[str] = field(default_factory=set)
    mapped: dict[str, str] = field(default_factory=dict)  # Ringside customer -> Stripe customer, in the store
    known: set[str] = field(default_factory=set)  # customers Stripe knows

    def add(self, event_id: str, body: dict[str, Any]) -> None:
        self.bodies[event_id] = msgspec.json.encode(body)


def scenario(events: int, seed: int) -> Scenario:
    rng = random.Random(seed)
    plan = Scenario(mapped={f"cust_mapped_{n}": f"cus_MAPPED{n}" for n in range(5)})
    plan.known = {f"cus_C{n}" for n in range(40)} | set(plan.mapped.values())
    for n in range(events):
        event_id = f"evt_chaos_{n:05}"
        # Beyond unit precision ($0.00000001 .. $0.02), so carries and zero-unit entries occur.
        cost = Decimal(rng.randint(1, 2_000_000)) / Decimal(10**8)
        roll = rng.random()
        if roll < 0.84:
            customer = f"cus_C{rng.randrange(40)}"
            plan.add(event_id, event(event_id, cost=str(cost), customer=f"cust_{customer}", stripe_customer=customer))
            plan.billable[event_id] = (customer, cost)
        elif roll < 0.89:
            ringside = f"cust_mapped_{rng.randrange(5)}"
            plan.add(event_id, event(event_id, cost=str(cost), customer=ringside, stripe_customer=None))
            plan.billable[event_id] = (plan.mapped[ringside], cost)
        elif roll < 0.93:
            plan.add(event_id, event(event_id, cost=str(cost), customer=f"cust_nobody_{n}", stripe_customer=None))
            plan.parked[event_id] = ParkReason.UNKNOWN_CUSTOMER
        elif roll < 0.96:
            bad = rng.choice(["-0.01", "NaN", "Infinity", "1000.01", "1e308", None, "0.1.2"])
            plan.add(event_id, event(event_id, cost=bad))
            plan.parked[event_id] = ParkReason.INVALID_PAYLOAD
        elif roll < 0.98:
            # Mapped on the event, unknown to Stripe: refused for good at dispatch, parked as biller_rejected.
            ghost = f"cus_GHOST{n}"
            plan.add(event_id, event(event_id, cost=str(cost + Decimal("0.01")), stripe_customer=ghost))
            plan.parked[event_id] = ParkReason.BILLER_REJECTED
        else:
            plan.add(event_id, event(event_id, event_type="chat.completion.started", cost=None))
            plan.ignored.add(event_id)
    return plan


def deliveries(plan: Scenario, seed: int) -> list[tuple[str, bytes]]:
    """Each event 1 to 4 times, all shuffled: repeats arrive out of order and, with 32 connections, at once."""
    rng = random.Random(seed + 1)
    sent = [(event_id, body) for event_id, body in plan.bodies.items() for _ in range(rng.randint(1, 4))]
    rng.shuffle(sent)
    return sent


@pytest.fixture
def plan() -> Iterator[Scenario]:
    yield scenario(CHAOS_EVENTS, CHAOS_SEED)


@pytest.fixture
async def prepared(store: Store, plan: Scenario) -> AsyncIterator[Store]:
    async with running(await store.open()) as container:
        for ringside, stripe_id in plan.mapped.items():
            await container.customers().set(ringside, stripe_id)
    yield store


# -- the test ----------------------------------------------------------------------------------------------------


async def test_exactly_one_meter_event_per_billable_event_through_faults_and_kills(
    prepared: Store, plan: Scenario, tmp_path: Path
) -> None:
    started = time.monotonic()
    sent = deliveries(plan, CHAOS_SEED)
    with ChaoticStripe(CHAOS_SEED, FAULT_RATE, hang_s=0.5).start() as stripe:
        stripe.known_customers = plan.known
        env = {
            **prepared.environment,
            "RINGSIDE_WEBHOOK_SECRETS": SECRET,
            "STRIPE_API_KEY": FAKE_API_KEY,
            "STRIPE_API_BASE": stripe.url,
            "GATEWAY_STRIPE_TIMEOUT_S": "0.3",
            "GATEWAY_STRIPE_MAX_RPS": "2000",
            "GATEWAY_DISPATCH_LEASE_S": "2",
            "GATEWAY_RETRY_BASE_S": "0.05",
            "GATEWAY_RETRY_MAX_S": "0.5",
        }
        gateway = GatewayProcess(env, tmp_path / "gateway.log").start()
        answers: dict[str, list[str]] = defaultdict(list)
        progress = asyncio.Condition()
        try:
            async with httpx.AsyncClient(
                timeout=10, limits=httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
            ) as client:
                limit = asyncio.Semaphore(CONNECTIONS)

                async def deliver(event_id: str, body: bytes) -> None:
                    async with limit:
                        response = await deliver_like_ringside(client, gateway.url, body, SECRET, attempts=60)
                    async with progress:
                        answers[event_id].append(response.json()["status"])
                        progress.notify_all()

                async def kill_twice() -> None:
                    for kill in range(1, KILLS + 1):
                        threshold = len(sent) * kill // (KILLS + 1)
                        async with progress:
                            await progress.wait_for(lambda t=threshold: sum(map(len, answers.values())) >= t)
                        await asyncio.to_thread(_kill_and_restart, gateway)

                await asyncio.gather(kill_twice(), *(deliver(event_id, body) for event_id, body in sent))
            ingested_s = time.monotonic() - started
            ledger = await _settled(prepared, timeout_s=90)
            await asyncio.sleep(1.0)  # a hung call recorded late would land now (it must find its identifier taken)
        finally:
            gateway.terminate()
        meter_events = list(stripe.meter_events)
        invalid = list(stripe.invalid_requests)
    elapsed_s = time.monotonic() - started

    # Every delivery was acknowledged, each event at most once as new: a first answer lost to a SIGKILL after the
    # commit makes the redelivery a duplicate, which is the point.
    refused_by_stripe = {k for k, reason in plan.parked.items() if reason is ParkReason.BILLER_REJECTED}
    assert sum(map(len, answers.values())) == len(sent) and set(answers) == set(plan.bodies)
    for event_id, statuses in answers.items():
        if event_id in plan.billable or event_id in refused_by_stripe:  # refused by Stripe later, at dispatch
            first = "accepted"
        elif event_id in plan.parked:
            first = "parked"
        else:
            first = "ignored"
        assert statuses.count(first) <= 1 or first == "ignored", (event_id, statuses)
        assert set(statuses) <= {first, "duplicate"}, (event_id, statuses)
    # A SIGKILL can cut a call to Stripe after its headers: Stripe then sees an empty body. Anything else invalid
    # would be the gateway's fault.
    assert [r.params for r in invalid if r.params] == []

    entries, parked, pending = ledger
    assert pending == 0
    # Billable events: sent, except those Stripe refuses for good; their parked records carry the reason.
    assert {k: e.state for k, e in entries.items()} == {
        **{k: State.SENT for k in plan.billable},
        **{k: State.PARKED for k in refused_by_stripe},
    }
    assert parked == plan.parked
    assert not (set(entries) | set(parked)) & plan.ignored

    # Stripe: exactly one meter event per entry with units, carrying the ledger's value.
    identifiers = [e["identifier"] for e in meter_events]
    assert len(identifiers) == len(set(identifiers))
    expected = {k: e.units for k, e in entries.items() if e.state is State.SENT and e.units > 0}
    assert {e["identifier"]: e["value"] for e in meter_events} == expected
    # Each customer's total is the floor of its exact spend (the carry, docs/design.md), whatever the order of arrival.
    spend: dict[str, Decimal] = defaultdict(Decimal)
    for customer, cost in plan.billable.values():
        spend[customer] += cost * 100_000
    billed: dict[str, int] = defaultdict(int)
    for item in meter_events:
        billed[item["customer"]] += item["value"]
    assert billed == {c: int(total) for c, total in spend.items() if int(total) > 0}

    logs = gateway.logs()
    assert logs.count('"dispatcher.started"') == KILLS + 1
    print(
        f"\nchaos ({prepared.environment['GATEWAY_STORE'].split(':')[0]}): {CHAOS_EVENTS} events, "
        f"{len(sent)} deliveries, {len(meter_events)} meter events, "
        f"faults {dict(stripe.faults)}, {KILLS} SIGKILLs; ingest {ingested_s:.1f}s, total {elapsed_s:.1f}s"
    )


def _kill_and_restart(gateway: GatewayProcess) -> None:
    gateway.kill()
    gateway.start()


async def _settled(store: Store, timeout_s: float) -> tuple[dict[str, Any], dict[str, ParkReason], int]:
    """Wait until nothing is pending, then read every entry and parked record through the store's adapter."""
    async with running(await store.open()) as container:
        ledger = container.ledger()
        deadline = time.monotonic() + timeout_s
        while (stats := await ledger.stats()).pending:
            assert time.monotonic() < deadline, f"{stats.pending} entries still pending after {timeout_s}s"
            await asyncio.sleep(0.2)
        entries = {}
        for n in range(CHAOS_EVENTS):
            entry = await ledger.get(f"evt_chaos_{n:05}")
            if entry is not None:
                entries[entry.event_id] = entry
        parked = {p.key: p.reason for p in await ledger.list_parked(limit=CHAOS_EVENTS + 1)}
        return entries, parked, stats.pending
