"""`gateway reconcile [--repair]` on SQLite against the local ledger biller: verdicts, exit codes, one repair."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import pytest

from gateway.adapters.clock import SystemClock
from gateway.adapters.sqlite import SqliteBiller, SqliteDatabase, SqliteLedger
from gateway.app.environment import load_settings
from gateway.app.settings_checks import SettingsError
from gateway.domain.ports import MeterEvent
from gateway.domain.units import Rounding
from gateway.service.dispatcher import DispatchConfig, Dispatcher
from tests.app.cli_runner import cli_env, gateway, json_out, sqlite_store
from tests.builders import claim
from tests.service.stripe_loop import HOUR, hours_ago

BASE = hours_ago(4)


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.db"
    asyncio.run(_arrange(path))
    return path


@pytest.fixture
def env(database: Path) -> dict[str, str | None]:
    return cli_env(GATEWAY_STORE=sqlite_store(database), GATEWAY_BILLER="ledger", GATEWAY_RECONCILE_SETTLE_S="0")


async def _arrange(path: Path) -> None:
    """12 events, 2 customers, 2 hours, all delivered to the local biller; then the biller loses one of cus_A's."""
    db = SqliteDatabase(path)
    ledger, biller = SqliteLedger(db), SqliteBiller(db)
    for n in range(12):
        billable = claim(
            f"evt_{n}", exact="100", customer=("cus_A", "cus_B")[n % 2], timestamp=BASE + (n % 4 // 2) * HOUR
        )
        await ledger.record(billable, Rounding.CARRY, time.time())
    dispatcher = Dispatcher(ledger, biller, SystemClock(), DispatchConfig(max_rps=100_000), jitter=lambda: 0.0)
    while await dispatcher.run_once():
        pass
    db.close()
    with sqlite3.connect(path) as connection:
        connection.execute("DELETE FROM meter_events WHERE identifier = 'evt_0'")


def _period() -> list[str]:
    return ["--since", str(BASE), "--until", str(BASE + 2 * HOUR)]


def test_a_lost_event_is_a_missing_window_and_exit_1(env: dict[str, str | None]) -> None:
    text = gateway("reconcile", *_period(), env=env)
    result = gateway("reconcile", *_period(), "--json", env=env)

    assert text.exit_code == 1, text.output
    assert "missing_at_biller" in text.stdout and "MISMATCH" in text.stdout
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    verdicts = {(row["billing_customer"], row["window_start"]): row["verdict"] for row in document["rows"]}
    assert verdicts == {
        ("cus_A", BASE): "missing_at_biller",
        ("cus_A", BASE + HOUR): "match",
        ("cus_B", BASE): "match",
        ("cus_B", BASE + HOUR): "match",
    }
    assert document["totals"]["units_by_verdict"] == {"missing_at_biller": 100, "match": 0}
    assert document["matched"] is False


def test_customer_option_narrows_to_one_customer(env: dict[str, str | None]) -> None:
    result = gateway("reconcile", *_period(), "--customer", "cus_B", "--json", env=env)
    assert result.exit_code == 0, result.output
    assert {row["billing_customer"] for row in json.loads(result.stdout)["rows"]} == {"cus_B"}


def test_repair_sends_one_correction_and_a_second_repair_sends_nothing(env: dict[str, str | None]) -> None:
    first = gateway("reconcile", *_period(), "--repair", "--json", env=env)
    second = gateway("reconcile", *_period(), "--repair", env=env)
    stats = json_out(gateway("ledger", "stats", "--since", str(BASE), "--json", env=env))

    assert first.exit_code == 0, first.output
    [sent] = json.loads(first.stdout)["repair"]["sent"]
    assert (sent["billing_customer"], sent["window_start"], sent["units"]) == ("cus_A", BASE, 100)
    assert sent["identifier"].startswith("fix_")
    assert second.exit_code == 0, second.output
    assert "Repair: nothing to send." in second.stdout
    assert [(c["identifier"], c["units"]) for c in stats["corrections"]] == [(sent["identifier"], 100)]
    assert "reconcile.repaired" in first.stderr  # every repair is logged


def test_a_biller_without_totals_or_out_of_reach_is_exit_2(env: dict[str, str | None]) -> None:
    lago = {**env, "GATEWAY_BILLER": "lago", "LAGO_API_KEY": "key", "LAGO_METRIC_CODE": "spend"}
    unreachable = {
        **env,
        "GATEWAY_BILLER": "stripe",
        "STRIPE_API_KEY": "sk_test_x",
        "STRIPE_API_BASE": "http://127.0.0.1:9",
        "GATEWAY_STRIPE_TIMEOUT_S": "2",
    }

    without = gateway("reconcile", *_period(), env=lago)
    down = gateway("reconcile", *_period(), env=unreachable)

    assert without.exit_code == 2 and "no per-hour usage totals" in without.stderr
    assert down.exit_code == 2 and "could not reconcile" in down.stderr


def test_extra_at_the_biller_is_reported_with_what_to_do_never_offset(
    env: dict[str, str | None], database: Path
) -> None:
    with sqlite3.connect(database) as connection:
        connection.execute("DELETE FROM meter_events")  # start from a biller that holds exactly the ledger
    asyncio.run(_extra(database))

    repaired = gateway("reconcile", *_period(), "--repair", env=env)

    assert repaired.exit_code == 1
    assert "extra_at_biller" in repaired.stdout and "meter_event_adjustments" in repaired.stdout
    assert "Repair: nothing to send." in repaired.stdout
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM meter_events").fetchone()[0] == 13


async def _extra(path: Path) -> None:
    """The biller holds every entry, plus one event the ledger never sent (another sender's, a lost mark)."""
    db = SqliteDatabase(path)
    biller = SqliteBiller(db)
    for n in range(12):
        value, timestamp = 100, BASE + (n % 4 // 2) * HOUR
        await biller.send(MeterEvent(f"evt_{n}", ("cus_A", "cus_B")[n % 2], value, timestamp))
    await biller.send(MeterEvent("someone_else", "cus_B", 50, BASE + HOUR + 5))
    db.close()


def test_reconcile_settings_are_checked() -> None:
    with pytest.raises(SettingsError, match="GATEWAY_RECONCILE_SETTLE_S"):
        load_settings({"GATEWAY_RECONCILE_SETTLE_S": "-1"})
    with pytest.raises(SettingsError, match="GATEWAY_RECONCILE_INTERVAL_S"):
        load_settings({"GATEWAY_RECONCILE_INTERVAL_S": "0"})
    configured = load_settings({"GATEWAY_RECONCILE_INTERVAL_S": "60", "GATEWAY_RECONCILE_SETTLE_S": "0"})
    assert (configured.reconcile_interval_s, configured.reconcile_settle_s) == (60.0, 0.0)
