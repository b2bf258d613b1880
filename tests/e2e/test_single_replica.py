"""End to end: `gateway serve` on SQLite with the fake Stripe; duplicates, concurrent repeats, faults, a SIGKILL."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import httpx
import msgspec
import pytest

from gateway.adapters.sqlite import SqliteCustomers, SqliteDatabase
from tests.builders import SECRET, event
from tests.e2e.process import GatewayProcess, deliver_like_ringside
from tests.fakes.stripe_server import FAKE_API_KEY, FakeStripe

pytestmark = pytest.mark.slow

EVENTS = 50
DELIVERIES_PER_EVENT = 4  # 200 deliveries in all


def _scenario(seed: int) -> tuple[list[dict[str, object]], dict[str, str]]:
    """50 events over 5 customers: three carry their Stripe id on the event, two are mapped in the customer store."""
    rng = random.Random(seed)
    mapped = {"cust_store_1": "cus_STORE1", "cust_store_2": "cus_STORE2"}
    events = []
    for n in range(EVENTS):
        cost = str(Decimal(rng.randint(1, 2_000_000)) / Decimal(10**8))  # $0.00000001 .. $0.02, beyond unit precision
        if n % 5 < 3:
            ringside, stripe_id = f"cust_meta_{n % 5}", f"cus_META{n % 5}"
            events.append(event(f"evt_e2e_{n:03}", cost=cost, customer=ringside, stripe_customer=stripe_id))
        else:
            ringside = f"cust_store_{n % 5 - 2}"
            events.append(event(f"evt_e2e_{n:03}", cost=cost, customer=ringside, stripe_customer=None))
    return events, mapped


async def test_stripe_receives_exactly_one_meter_event_per_event_across_a_restart(tmp_path: Path) -> None:
    events, mapped = _scenario(seed=7)
    database = tmp_path / "gateway.db"
    store = SqliteDatabase.from_url(f"sqlite:///{database}")
    customers = SqliteCustomers(store)
    for ringside, stripe_id in mapped.items():
        await customers.set(ringside, stripe_id)
    store.close()

    with FakeStripe(api_key=FAKE_API_KEY) as stripe:
        stripe.fail_next(3, 500)
        stripe.fail_next(2, 429, retry_after=0.3)
        env = {
            "RINGSIDE_WEBHOOK_SECRETS": SECRET,
            "GATEWAY_STORE": f"sqlite:///{database}",
            "STRIPE_API_KEY": FAKE_API_KEY,
            "STRIPE_API_BASE": stripe.url,
            "GATEWAY_STRIPE_MAX_RPS": "500",
            "GATEWAY_DISPATCH_LEASE_S": "2",
            "GATEWAY_RETRY_BASE_S": "0.1",
            "GATEWAY_RETRY_MAX_S": "1",
        }
        gateway = GatewayProcess(env, tmp_path / "gateway.log").start()
        bodies = [msgspec.json.encode(e) for e in events]
        deliveries = [b for b in bodies for _ in range(DELIVERIES_PER_EVENT)]
        random.Random(3).shuffle(deliveries)
        first_half, second_half = deliveries[:100], deliveries[100:]
        statuses: dict[str, int] = defaultdict(int)

        async with httpx.AsyncClient(timeout=5) as client:

            async def send(body: bytes) -> None:
                response = await deliver_like_ringside(client, gateway.url, body, SECRET)
                statuses[response.json()["status"]] += 1

            # Concurrent repeats: each burst holds the same event several times at once.
            await asyncio.gather(*(send(b) for b in first_half[:60]), *(send(bodies[0]) for _ in range(8)))
            restart = asyncio.create_task(asyncio.to_thread(_kill_and_restart, gateway))
            await asyncio.gather(*(send(b) for b in first_half[60:]))
            await restart
            await asyncio.gather(*(send(b) for b in second_half))

        received = await asyncio.to_thread(stripe.wait_for_meter_events, EVENTS, 30.0)
        await asyncio.sleep(1.0)  # anything extra that was going to arrive has had time to
        gateway.terminate()

        assert statuses["accepted"] == EVENTS
        assert sorted(e["identifier"] for e in stripe.meter_events) == sorted(e["id"] for e in events)  # type: ignore[misc]
        assert len(stripe.meter_events) == EVENTS == len(received)
        assert stripe.invalid_requests == []
        assert stripe.max_in_flight_per_customer <= 1

    _assert_values_match_ledger_and_carry(database, events, stripe.meter_events, mapped)
    logs = gateway.logs()
    assert logs.count('"gateway.starting"') == 2  # the restart really happened
    assert SECRET not in logs


def _kill_and_restart(gateway: GatewayProcess) -> None:
    gateway.kill()
    gateway.start()


def _assert_values_match_ledger_and_carry(
    database: Path, events: list[dict[str, object]], received: list[dict[str, object]], mapped: dict[str, str]
) -> None:
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT event_id, units, state FROM entries").fetchall()
    ledger = {event_id: (units, state) for event_id, units, state in rows}
    assert {state for _, state in ledger.values()} == {"sent"}
    sent_values = {e["identifier"]: e["value"] for e in received}
    # Zero-unit entries are marked sent without a call; every other value is what the ledger recorded.
    assert {k: v for k, (v, _) in ledger.items() if v} == sent_values
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for body in events:
        data = body["data"]
        assert isinstance(data, dict)
        customer = data["customer"]
        stripe_id = customer.get("metadata", {}).get("stripe_customer_id") or mapped[customer["id"]]
        totals[stripe_id] += Decimal(data["cost_usd"]) * 100_000
    billed: dict[str, int] = defaultdict(int)
    for item in received:
        billed[str(item["customer"])] += int(str(item["value"]))
    assert billed == {customer: int(total) for customer, total in totals.items()}
