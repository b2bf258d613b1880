"""End to end: `gateway serve` on SQLite (and once on Redis) in front of the fake Stripe, which answers every meter
event and drops the ones for 2 customers it does not know. Its error report comes back (by the signed event
destination, or by polling); `gateway reconcile`, `gateway customers import` and `set`, `gateway parked replay` and
`gateway reconcile --repair` close the loop as an operator would, each from the environment alone, sharing only the
store with the serving process.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from click.testing import CliRunner, Result

from gateway.adapters.postgres import PostgresDatabase, PostgresLedger
from gateway.adapters.redis import RedisLedger
from gateway.adapters.sqlite import SqliteDatabase, SqliteLedger
from gateway.app.cli import main
from gateway.domain.ports import Ledger
from tests.app.cli_runner import cli_env
from tests.builders import SECRET, event
from tests.e2e.process import GatewayProcess, deliver_like_ringside
from tests.fakes.stripe_server import FAKE_API_KEY, FakeStripe
from tests.postgres_fixtures import POSTGRES_URL, create_schema, drop_schema, with_schema
from tests.redis_fixtures import REDIS_URL, open_test_redis
from tests.service.stripe_loop import HOUR, create_meter, hours_ago

pytestmark = pytest.mark.slow

EVENTS = 1000
CUSTOMERS = 10
UNKNOWN = {8, 9}  # rs_8 and rs_9 are mapped to Stripe ids Stripe does not know
WINDOWS = 3
WHSEC = "whsec_e2e_destination"
REPORT_CODE = "meter_event_customer_not_found"


def _events(base: int) -> list[dict[str, Any]]:
    rng = random.Random(15)
    return [
        event(
            f"evt_rc_{n:04d}",
            cost=str(Decimal(rng.randint(1, 3_000_000)) / Decimal(10**8)),  # beyond unit precision: carries matter
            customer=f"rs_{n % CUSTOMERS}",
            stripe_customer=None,
            created=base + (n % WINDOWS) * HOUR + n,
        )
        for n in range(EVENTS)
    ]


def _cli(env: dict[str, str], *args: str) -> Result:
    """One operator command, in a thread of this process (a subprocess per command would cost a second of imports
    each); it builds its own container from `env` and shares nothing with the serving process but the store."""
    return CliRunner(env=cli_env(**env)).invoke(main, list(args), catch_exceptions=False)


async def _command(env: dict[str, str], *args: str) -> Result:
    return await asyncio.to_thread(_cli, env, *args)


async def _states(ledger: Ledger) -> dict[str, set[tuple[str, str | None]]]:
    """Billing customer -> {(state, parked reason and Stripe's code)} of the entries, read through the ledger port."""
    found: dict[str, set[tuple[str, str | None]]] = defaultdict(set)
    for n in range(EVENTS):
        entry = await ledger.get(f"evt_rc_{n:04d}")
        assert entry is not None
        record = await ledger.get_parked(entry.event_id)
        parked = None if record is None else f"{record.reason.value} {record.message.split(':')[0]}"
        found[entry.billing_customer].add((entry.state.value, parked))
    return found


async def _until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 90.0) -> None:
    # A liveness bound, not a timing check: generous, so that a loaded CI machine does not fail it.
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


@dataclass
class Store:
    env: dict[str, str]
    ledger: Ledger


@pytest.fixture
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """The gateway's store (`GATEWAY_STORE` and friends) and the test's own handle on it."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'gateway.db'}"
        database = SqliteDatabase.from_url(url)
        yield Store({"GATEWAY_STORE": url}, SqliteLedger(database))
        database.close()
        return
    if request.param == "postgres":
        schema = await create_schema()
        url = with_schema(POSTGRES_URL, schema)
        pool = PostgresDatabase(url, max_connections=2)
        try:
            yield Store({"GATEWAY_STORE": url}, PostgresLedger(pool))
        finally:
            await pool.close()
            await drop_schema(schema)
        return
    client = await open_test_redis()
    prefix = f"test:{uuid.uuid4().hex}:"
    # The shared test Redis runs without persistence: allowed here, as in the replica tests.
    env = {"GATEWAY_STORE": REDIS_URL, "GATEWAY_REDIS_PREFIX": prefix, "GATEWAY_REDIS_ALLOW_VOLATILE": "true"}
    try:
        yield Store(env, RedisLedger(client, prefix=prefix))
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.mark.parametrize(
    ("api", "delivery", "store"),
    # Polling and the destination hand the handler the same notification whichever API sent the events: polling
    # runs with the stream (v1's cost here is its one call in flight per customer, seconds on a loaded box).
    [
        ("v2_stream", "webhook", "sqlite"),
        ("v2_stream", "polling", "sqlite"),
        ("v1", "webhook", "sqlite"),
        ("v2_stream", "polling", "redis"),
        ("v2_stream", "polling", "postgres"),
    ],
    ids=[
        "v2_stream-webhook",
        "v2_stream-polling",
        "v1-webhook",
        "v2_stream-polling-redis",
        "v2_stream-polling-postgres",
    ],
    indirect=["store"],
)
async def test_stripe_report_reconcile_replay_and_repair_close_the_loop(
    tmp_path: Path, api: str, delivery: str, store: Store
) -> None:
    base = hours_ago(WINDOWS + 1)
    events = _events(base)
    ledger = store.ledger
    period = ["--since", str(base), "--until", str(base + WINDOWS * HOUR)]

    with FakeStripe(api_key=FAKE_API_KEY) as stripe:
        create_meter(stripe)
        stripe.known_customers = {f"cus_{n}" for n in range(CUSTOMERS) if n not in UNKNOWN}
        stripe.known_customers |= {f"cus_{n}_real" for n in UNKNOWN}
        stripe.asynchronous_validation = True
        env = {
            "RINGSIDE_WEBHOOK_SECRETS": SECRET,
            **store.env,
            "STRIPE_API_KEY": FAKE_API_KEY,
            "STRIPE_API_BASE": stripe.url,
            "GATEWAY_STRIPE_API": api,
            "GATEWAY_STRIPE_MAX_RPS": "5000",
            "GATEWAY_RECONCILE_SETTLE_S": "0",
            "GATEWAY_DISPATCH_POLL_S": "0.1",  # replayed entries are picked up by polling: no wake crosses processes
            **({"STRIPE_WEBHOOK_SECRET": WHSEC} if delivery == "webhook" else {"GATEWAY_STRIPE_EVENTS_POLL_S": "0.2"}),
        }
        mapped = [f"rs_{n},cus_{n}" for n in range(CUSTOMERS)]
        (tmp_path / "customers.csv").write_text("ringside_id,stripe_id\n" + "\n".join(mapped) + "\n")
        assert (await _command(env, "customers", "import", str(tmp_path / "customers.csv"))).exit_code == 0
        gateway = GatewayProcess(env, tmp_path / "gateway.log").start()
        try:
            stripe.feedback.destination(f"{gateway.url}/webhooks/stripe", WHSEC)
            await _deliver(gateway, events)
            await _until(lambda: _counts(ledger, sent=EVENTS))
            assert len(stripe.meter_events) == EVENTS - EVENTS * len(UNKNOWN) // CUSTOMERS  # the rest dropped

            # Stripe's report comes back: every entry of the 2 unknown customers is parked with Stripe's code.
            report = stripe.feedback.emit_report()
            assert report is not None
            if delivery == "webhook":
                assert stripe.feedback.wait_for_deliveries(1, timeout_s=30.0) == [(report["id"], 200)]
            await _until(lambda: _counts(ledger, sent=EVENTS - 200, parked=200))
            assert await _states(ledger) == {
                f"cus_{n}": {("parked", f"biller_rejected {REPORT_CODE}")} if n in UNKNOWN else {("sent", None)}
                for n in range(CUSTOMERS)
            }
            if delivery == "polling":
                # A restart resumes from the durable cursor and applies nothing twice.
                gateway.terminate()
                gateway.start()
                await asyncio.sleep(1.0)
            assert gateway.logs().count("feedback.report event_id=") == 1

            # Reconcile names exactly the unknown customers' windows missing, every other window a match.
            found = await _command(env, "reconcile", *period, "--json")
            assert found.exit_code == 1, found.stderr
            verdicts = {
                (r["billing_customer"], r["window_start"]): r["verdict"] for r in json.loads(found.stdout)["rows"]
            }
            assert verdicts == {
                (f"cus_{n}", base + w * HOUR): "missing_at_biller" if n in UNKNOWN else "match"
                for n in range(CUSTOMERS)
                for w in range(WINDOWS)
            }

            # Mapped to real Stripe customers and replayed: reconcile matches, Stripe holds the floor of each spend.
            for n in UNKNOWN:
                assert (await _command(env, "customers", "set", f"rs_{n}", f"cus_{n}_real")).exit_code == 0
            replayed = await _command(env, "parked", "replay", "--all", "--reason", "biller_rejected", "--json")
            assert replayed.exit_code == 0, replayed.stderr
            await asyncio.to_thread(stripe.wait_for_meter_events, EVENTS, 90.0)
            await _until(lambda: _counts(ledger, sent=EVENTS))
            matched = await _command(env, "reconcile", *period)
            assert matched.exit_code == 0, matched.stdout + matched.stderr
            assert {c: stripe.total_value(c) for c in _exact_spend(events)} == {
                customer: int(spend) for customer, spend in _exact_spend(events).items()
            }

            # A loss no report names: Stripe silently drops two of cus_3's events. Repair carries it, once.
            with stripe._lock:
                lost = [e for e in stripe.meter_events if e["customer"] == "cus_3" and e["timestamp"] < base + HOUR]
                for item in lost[:2]:
                    stripe.meter_events.remove(item)
            missing = await _command(env, "reconcile", *period, "--json")
            assert missing.exit_code == 1
            rows = json.loads(missing.stdout)["rows"]
            assert [(r["billing_customer"], r["verdict"]) for r in rows if r["verdict"] != "match"] == [
                ("cus_3", "missing_at_biller")
            ]
            repaired = await _command(env, "reconcile", *period, "--repair")
            assert repaired.exit_code == 0, repaired.stdout + repaired.stderr
            assert "Repair: sent" in repaired.stdout and "reconcile.repaired" in repaired.stderr
            held = len(stripe.meter_events)
            again = await _command(env, "reconcile", *period, "--repair")
            assert again.exit_code == 0 and "Repair: nothing to send." in again.stdout
            assert len(stripe.meter_events) == held
            stats = json.loads((await _command(env, "ledger", "stats", "--since", str(base), "--json")).stdout)
            assert [(c["billing_customer"], c["window_start"]) for c in stats["corrections"]] == [("cus_3", base)]
        finally:
            gateway.terminate()
        assert stripe.invalid_requests == []


async def _counts(ledger: Ledger, *, sent: int, parked: int = 0) -> bool:
    stats = await ledger.stats()
    return (stats.sent, stats.parked) == (sent, parked)


async def _deliver(gateway: GatewayProcess, events: list[dict[str, Any]]) -> None:
    bodies = [msgspec.json.encode(e) for e in events]
    gate = asyncio.Semaphore(32)
    async with httpx.AsyncClient(timeout=10) as client:

        async def send(body: bytes) -> None:
            async with gate:
                response = await deliver_like_ringside(client, gateway.url, body, SECRET)
                assert response.json()["status"] == "accepted"

        await asyncio.gather(*(send(body) for body in bodies))


def _exact_spend(events: list[dict[str, Any]]) -> dict[str, Decimal]:
    """Stripe customer (as mapped at the end) -> the exact units its events cost."""
    spend: dict[str, Decimal] = defaultdict(Decimal)
    for body in events:
        n = int(body["data"]["customer"]["id"].removeprefix("rs_"))
        customer = f"cus_{n}_real" if n in UNKNOWN else f"cus_{n}"
        spend[customer] += Decimal(body["data"]["cost_usd"]) * 100_000
    return spend
