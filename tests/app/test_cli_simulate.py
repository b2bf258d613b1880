"""`gateway simulate` against a running `gateway serve` (a subprocess on SQLite with the local ledger biller): its
printed totals are checked against the ledger and the biller's meter events."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.adapters.sqlite import SqliteBiller, SqliteDatabase, SqliteLedger
from gateway.domain.ledger import CustomerUsage, LedgerStats
from gateway.domain.ports import MeterEvent
from tests.app.cli_runner import cli_env, gateway, sqlite_store
from tests.builders import SECRET
from tests.e2e.process import GatewayProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "gateway.db"


@pytest.fixture
def served(tmp_path: Path, database: Path) -> Iterator[GatewayProcess]:
    env = {"RINGSIDE_WEBHOOK_SECRETS": SECRET, "GATEWAY_STORE": sqlite_store(database), "STRIPE_API_KEY": ""}
    process = GatewayProcess(env, tmp_path / "gateway.log").start()
    yield process
    process.terminate()


def settled(database: Path, timeout_s: float = 20.0) -> tuple[LedgerStats, list[CustomerUsage], list[MeterEvent]]:
    """The ledger once the gateway's dispatcher has sent every pending entry, and the biller's meter events."""

    async def read() -> tuple[LedgerStats, list[CustomerUsage], list[MeterEvent]]:
        db = SqliteDatabase(database)
        try:
            ledger = SqliteLedger(db)
            deadline = time.monotonic() + timeout_s
            # Another process's dispatcher drains the ledger: the file is the only thing to watch.
            while (stats := await ledger.stats()).pending and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            return stats, await ledger.usage(), await SqliteBiller(db).events()
        finally:
            db.close()

    return asyncio.run(read())


def test_simulate_totals_match_the_ledger_and_the_biller(served: GatewayProcess, database: Path) -> None:
    result = gateway(
        "simulate",
        "--url",
        served.url,
        "--events",
        "150",
        "--customers",
        "4",
        "--duplicates",
        "0.4",
        "--bad-signatures",
        "0.08",
        "--unmapped",
        "0.1",
        "--seed",
        "11",
        "--json",
        env=cli_env(RINGSIDE_WEBHOOK_SECRETS=SECRET),
    )

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    stats, usage, events = settled(database)
    assert report["problems"] == []
    assert (report["events"], report["accepted"], report["parked"], report["duplicate"]) == (150, 135, 15, 60)
    assert (report["forged"], report["forged_refused"], report["refused"], report["failed"]) == (12, 12, 12, 0)
    assert report["sent"] == report["deliveries"] == 150 + 60 + 12
    assert report["latency_ms_p50"] <= report["latency_ms_p99"]
    assert (stats.pending, stats.sent, stats.parked) == (0, 135, 15)
    printed = {c["stripe_customer"]: c["units"] for c in report["customers"] if c["stripe_customer"]}
    assert printed == {row.billing_customer: row.units_sent for row in usage}
    billed: dict[str, int] = defaultdict(int)
    for meter_event in events:
        billed[meter_event.customer] += meter_event.value
    assert billed == {customer: units for customer, units in printed.items() if units}
    assert len({e.identifier for e in events}) == len(events)
    assert report["units"] == sum(printed.values())


def test_simulate_prints_a_human_summary(served: GatewayProcess) -> None:
    result = gateway(
        "simulate",
        "--url",
        served.url,
        "--events",
        "20",
        "--duplicates",
        "0.5",
        env=cli_env(RINGSIDE_WEBHOOK_SECRETS=SECRET),
    )

    assert result.exit_code == 0, result.output
    assert "accepted 20, duplicate 10, parked 0" in result.stdout
    assert "latency p50" in result.stdout
    assert "rs_sim_1" in result.stdout


def test_simulate_fails_saying_why_when_the_gateway_refuses_its_secret(served: GatewayProcess) -> None:
    env = cli_env(RINGSIDE_WEBHOOK_SECRETS="whsec_not_the_gateways")

    result = gateway("simulate", "--url", served.url, "--events", "5", "--max-attempts", "2", env=env)

    assert result.exit_code == 1
    assert "5 genuine deliveries were refused (5 invalid_signature)" in result.stderr
    assert "RINGSIDE_WEBHOOK_SECRETS" in result.stderr


def test_simulate_fails_when_the_gateway_cannot_be_reached() -> None:
    env = cli_env(RINGSIDE_WEBHOOK_SECRETS=SECRET)

    result = gateway("simulate", "--url", "http://127.0.0.1:9", "--events", "3", "--max-attempts", "2", env=env)

    assert result.exit_code == 1
    assert "3 deliveries were never acknowledged" in result.stderr


def test_simulate_needs_the_webhook_secret() -> None:
    result = gateway("simulate", "--url", "http://127.0.0.1:9", env=cli_env())

    assert result.exit_code == 1
    assert "RINGSIDE_WEBHOOK_SECRETS is not set" in result.stderr
