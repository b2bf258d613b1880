"""End to end with GATEWAY_BILLER=lago: `gateway serve` on SQLite, a fake Lago, signed deliveries with duplicates.

Exactly one Lago event per Ringside event, billed to the subscription the customer store maps (never to a Stripe id
an event carries), through Lago outages; and the signed-in user's portal URL is the one Lago issued for the
customer that owns their subscription.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import jwt
import msgspec
import pytest

from gateway.adapters.sqlite import SqliteCustomers, SqliteDatabase
from tests.builders import SECRET, event
from tests.e2e.process import GatewayProcess, deliver_like_ringside
from tests.fakes.lago_server import BATCH, FAKE_LAGO_KEY, METRIC_CODE, FakeLago

pytestmark = pytest.mark.slow

EVENTS = 30
DELIVERIES_PER_EVENT = 3
PORTAL_SECRET = "portal-secret-for-the-lago-e2e-test-0123456789"
RETURN_URL = "https://app.example.com/account"
# Ringside customer -> (Lago customer, Lago subscription): the customer store holds the subscription.
ACCOUNTS = {
    "cust_alpha": ("lago_cust_alpha", "sub_alpha_pro"),
    "cust_beta": ("lago_cust_beta", "sub_beta_team"),
    "cust_gamma": ("lago_cust_gamma", "sub_gamma_free"),
}


def _events(seed: int) -> list[dict[str, Any]]:
    """Costs finer than a unit, over three customers; one in three also carries a Stripe id Lago must never see."""
    rng = random.Random(seed)
    customers = sorted(ACCOUNTS)
    bodies = []
    for n in range(EVENTS):
        cost = str(Decimal(rng.randint(1, 2_000_000)) / Decimal(10**8))
        stripe_id = f"cus_STRIPE{n % 3}" if n % 3 == 0 else None
        bodies.append(event(f"evt_lago_{n:03}", cost=cost, customer=customers[n % 3], stripe_customer=stripe_id))
    return bodies


async def _map_customers(database: Path) -> None:
    store = SqliteDatabase.from_url(f"sqlite:///{database}")
    try:
        customers = SqliteCustomers(store)
        await customers.set_many([(ringside, subscription) for ringside, (_, subscription) in ACCOUNTS.items()])
    finally:
        store.close()


def _portal_token(ringside_customer: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": ringside_customer, "iat": now, "exp": now + 120}, PORTAL_SECRET, algorithm="HS256")


async def test_lago_receives_exactly_one_event_per_ringside_event_and_serves_the_portal(tmp_path: Path) -> None:
    events = _events(seed=11)
    database = tmp_path / "gateway.db"
    await _map_customers(database)

    with FakeLago(api_key=FAKE_LAGO_KEY) as lago:
        for lago_customer, subscription in ACCOUNTS.values():
            lago.add_customer(lago_customer, subscriptions=[subscription])
        # The dispatcher sends Lago batches (LagoBillingSink is a BatchBillingSink): outages hit the batch route. The
        # first batch is stored by Lago after the gateway gave up on it, so its retry meets known transaction ids.
        lago.hang_next(1, seconds=0.8, then_process=True, route=BATCH)
        lago.fail_next(2, 503, route=BATCH)
        lago.fail_next(1, 429, rate_limit_reset=1, route=BATCH)
        env = {
            "RINGSIDE_WEBHOOK_SECRETS": SECRET,
            "GATEWAY_STORE": f"sqlite:///{database}",
            "GATEWAY_BILLER": "lago",
            "LAGO_API_KEY": FAKE_LAGO_KEY,
            "LAGO_API_URL": lago.url,
            "LAGO_METRIC_CODE": METRIC_CODE,
            "GATEWAY_LAGO_TIMEOUT_S": "0.5",
            "GATEWAY_RETRY_BASE_S": "0.1",
            "GATEWAY_RETRY_MAX_S": "1",
            "PORTAL_JWT_SECRET": PORTAL_SECRET,
            "PORTAL_RETURN_URL": RETURN_URL,
        }
        gateway = GatewayProcess(env, tmp_path / "gateway.log").start()
        try:
            bodies = [msgspec.json.encode(e) for e in events]
            deliveries = [b for b in bodies for _ in range(DELIVERIES_PER_EVENT)]
            random.Random(5).shuffle(deliveries)
            statuses: dict[str, int] = defaultdict(int)

            async with httpx.AsyncClient(timeout=5) as client:

                async def send(body: bytes) -> None:
                    response = await deliver_like_ringside(client, gateway.url, body, SECRET)
                    statuses[response.json()["status"]] += 1

                # Duplicates both concurrent (one burst) and sequential (a second pass).
                await asyncio.gather(*(send(b) for b in deliveries[: len(deliveries) // 2]))
                await asyncio.gather(*(send(b) for b in deliveries[len(deliveries) // 2 :]))

                await _wait_for_units(lago, sum(_floored_totals(events).values()), 30.0)
                await asyncio.sleep(1.0)  # anything extra that was going to arrive has had time to

                alpha_lago, _ = ACCOUNTS["cust_alpha"]
                posted = await client.post(
                    f"{gateway.url}/api/portal", headers={"Authorization": f"Bearer {_portal_token('cust_alpha')}"}
                )
                redirected = await client.get(
                    f"{gateway.url}/api/portal",
                    headers={"Authorization": f"Bearer {_portal_token('cust_beta')}"},
                    follow_redirects=False,
                )
                nobody = await client.post(
                    f"{gateway.url}/api/portal", headers={"Authorization": f"Bearer {_portal_token('cust_nobody')}"}
                )
                landing = await client.get(posted.json()["url"])
        finally:
            gateway.terminate()

        assert statuses["accepted"] == EVENTS
        assert statuses["duplicate"] == EVENTS * (DELIVERIES_PER_EVENT - 1)
        with sqlite3.connect(database) as db:
            ledger = {row[0]: (row[1], row[2]) for row in db.execute("SELECT event_id, units, state FROM entries")}
        assert {state for _, state in ledger.values()} == {"sent"}
        # One Lago event per entry with units (zero-unit entries are marked sent without a call), with its units.
        sent = {e["transaction_id"]: e["properties"]["units"] for e in lago.events}
        assert len(sent) == len(lago.events)
        assert sent == {event_id: units for event_id, (units, _) in ledger.items() if units}
        statuses_seen = [r.status for r in lago.requests]
        assert [s for s in statuses_seen if s in (429, 503)] == [503, 503, 429]  # the outages were met
        # The 429 pauses the dispatcher for a second, so the late-stored batch is known when its retry comes: Lago's
        # per-position 422, those taken as sent, and the rest resent.
        assert 422 in statuses_seen
        assert lago.invalid_requests == []
        assert lago.error_reports == []  # every event went to a subscription Lago knows
        assert {s: lago.units(s) for s in _floored_totals(events)} == _floored_totals(events)

        assert posted.status_code == 200, posted.text
        assert lago.portal_urls[0] == {"external_customer_id": alpha_lago, "portal_url": posted.json()["url"]}
        assert redirected.status_code == 303
        assert lago.portal_urls[1]["external_customer_id"] == ACCOUNTS["cust_beta"][0]
        assert redirected.headers["Location"] == lago.portal_urls[1]["portal_url"]
        assert nobody.status_code == 404
        assert nobody.json()["error"]["code"] == "no_billing_account"
        assert landing.status_code == 200

    logs = gateway.logs()
    assert '"biller": "lago"' in logs or '"biller":"lago"' in logs
    assert FAKE_LAGO_KEY not in logs
    assert SECRET not in logs


def _floored_totals(events: list[dict[str, Any]]) -> dict[str, int]:
    """Units per Lago subscription: the floor of its exact total, whatever the order events were recorded in."""
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for body in events:
        _, subscription = ACCOUNTS[body["data"]["customer"]["id"]]
        totals[subscription] += Decimal(body["data"]["cost_usd"]) * 100_000
    return {subscription: int(total) for subscription, total in totals.items()}


async def _wait_for_units(lago: FakeLago, units: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while lago.units() < units:
        if time.monotonic() > deadline:
            raise AssertionError(f"Lago holds {lago.units()} units after {timeout_s}s, wanted {units}")
        await asyncio.sleep(0.05)
