"""`gateway demo` end to end: its printed totals against the ledger and the local biller's meter events, and a run
on a "fresh machine" (a subprocess with no gateway variable, no account, an empty working directory)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from gateway.adapters.sqlite import SqliteBiller, SqliteDatabase, SqliteLedger
from gateway.domain.ledger import CustomerUsage, LedgerStats
from gateway.domain.ports import MeterEvent
from tests.app.cli_runner import cli_env, gateway

pytestmark = pytest.mark.slow


def ledger_of(database: Path) -> tuple[LedgerStats, list[CustomerUsage], list[MeterEvent]]:
    async def read() -> tuple[LedgerStats, list[CustomerUsage], list[MeterEvent]]:
        db = SqliteDatabase(database)
        try:
            ledger = SqliteLedger(db)
            return await ledger.stats(), await ledger.usage(), await SqliteBiller(db).events()
        finally:
            db.close()

    return asyncio.run(read())


def test_demo_bills_each_event_once_and_prints_what_the_ledger_holds(tmp_path: Path) -> None:
    database = tmp_path / "demo.db"

    result = gateway(
        "demo", "--events", "160", "--customers", "3", "--seed", "5", "--db", str(database), "--json", env=cli_env()
    )

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    stats, usage, events = ledger_of(database)
    assert report["problems"] == []
    assert (stats.pending, stats.parked, stats.sent) == (0, 0, 160)
    printed = {row["customer"]: (row["events"], row["units"]) for row in report["billed"]}
    assert printed == {row.billing_customer: (row.events, row.units_sent) for row in usage}
    assert all(row["units"] == row["expected_units"] for row in report["billed"])
    billed: dict[str, int] = defaultdict(int)
    for meter_event in events:
        billed[meter_event.customer] += meter_event.value
    assert billed == {customer: units for customer, (_, units) in printed.items() if units}
    assert report["total_units"] == sum(billed.values())
    assert len({e.identifier for e in events}) == len(events)
    simulation = report["simulation"]
    assert simulation["forged"] > 0 and simulation["forged_refused"] == simulation["forged"]
    assert simulation["duplicate"] > 0 and simulation["parked"] == report["replayed"] > 0
    assert "cus_sim_late" in printed


def test_demo_refuses_to_reuse_an_existing_database(tmp_path: Path) -> None:
    database = tmp_path / "demo.db"
    database.write_text("")

    result = gateway("demo", "--db", str(database), env=cli_env())

    assert result.exit_code == 1
    assert "already exists" in result.stderr


def test_demo_runs_on_a_fresh_machine_with_no_environment(tmp_path: Path) -> None:
    """Only PATH and HOME: no secret, no store, no Stripe key; nothing may be left in the working directory."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}

    completed = subprocess.run(
        [sys.executable, "-m", "gateway.app.cli", "demo", "--events", "80"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "nothing is sent to Stripe" in completed.stdout
    assert "billed exactly once" in completed.stdout
    assert "total" in completed.stdout
    assert list(tmp_path.iterdir()) == []
