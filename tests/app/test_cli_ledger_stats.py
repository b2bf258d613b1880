"""`gateway ledger stats`: counts, the oldest pending entry's age, units per customer for a period."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.adapters.sqlite import SqliteDatabase, SqliteLedger
from gateway.domain.ledger import Claim, Parked, ParkReason
from gateway.domain.units import Rounding
from tests.app.cli_runner import cli_env, gateway, json_out, sqlite_store

MAY = 1_777_593_600  # 2026-05-01T00:00:00Z
JUNE = 1_780_272_000  # 2026-06-01T00:00:00Z


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "gateway.db"


@pytest.fixture
def env(database: Path) -> dict[str, str | None]:
    return cli_env(GATEWAY_STORE=sqlite_store(database))


def arrange(database: Path, created_at: float) -> None:
    """Five entries over two months and two customers (one sent), one rejected, one parked at ingest."""

    async def work() -> None:
        db = SqliteDatabase(database)
        ledger = SqliteLedger(db)
        entries = [
            ("evt_A_APRIL", "cus_A", MAY - 10, "0.5"),
            ("evt_A_MAY_1", "cus_A", MAY, "0.01"),
            ("evt_A_MAY_2", "cus_A", MAY + 86_400, "0.02"),
            ("evt_B_MAY", "cus_B", JUNE - 1, "1"),
            ("evt_B_JUNE", "cus_B", JUNE, "2"),
            ("evt_B_REJECTED", "cus_B", MAY + 5, "3"),
        ]
        for event_id, customer, timestamp, cost in entries:
            claim = Claim(
                event_id, "chat.completion.finished", customer, None, Decimal(cost), Decimal(cost) * 100_000, timestamp
            )
            await ledger.record(claim, Rounding.CARRY, created_at)
        await ledger.mark_sent("evt_A_MAY_1", created_at + 1)
        await ledger.mark_rejected("evt_B_REJECTED", "No such customer", created_at + 1)
        await ledger.park(Parked("evt_P", ParkReason.UNKNOWN_CUSTOMER, "no mapping", b"{}", MAY, created_at))
        db.close()

    asyncio.run(work())


def test_stats_count_states_and_units_per_customer_in_the_period(env: dict[str, str | None], database: Path) -> None:
    arrange(database, created_at=time.time() - 90)

    result = json_out(
        gateway("ledger", "stats", "--since", "2026-05-01", "--until", "2026-06-01T00:00:00Z", "--json", env=env)
    )

    assert (result["pending"], result["sent"], result["parked"]) == (4, 1, 2)
    assert 89 <= result["oldest_pending_age_s"] < 120
    assert result["period"] == {"since": "2026-05-01T00:00:00Z", "until": "2026-06-01T00:00:00Z"}
    assert result["customers"] == [
        {"billing_customer": "cus_A", "events": 2, "units_sent": 1000, "units_pending": 2000, "usd": "0.03000"},
        {"billing_customer": "cus_B", "events": 1, "units_sent": 0, "units_pending": 100000, "usd": "1.00000"},
    ]


def test_stats_take_unix_seconds_and_print_a_table(env: dict[str, str | None], database: Path) -> None:
    arrange(database, created_at=time.time() - 7200)

    result = gateway("ledger", "stats", "--since", str(MAY), "--until", str(JUNE + 1), env=env)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("pending  4 (oldest 2.0h old)")
    assert any(line.split() == ["cus_B", "2", "0", "300,000", "3.00000"] for line in lines)
    assert any(line.split() == ["total", "4", "1,000", "302,000", "3.03000"] for line in lines)


def test_stats_default_period_is_this_month(env: dict[str, str | None], database: Path) -> None:
    result = json_out(gateway("ledger", "stats", "--json", env=env))

    assert result["period"]["since"].endswith("-01T00:00:00Z")
    assert result["period"]["until"] is None
    assert (result["pending"], result["oldest_pending_age_s"], result["customers"]) == (0, None, [])


def test_stats_refuse_an_unreadable_date(env: dict[str, str | None]) -> None:
    result = gateway("ledger", "stats", "--since", "last tuesday", env=env)

    assert result.exit_code == 2
    assert "--since" in result.stderr
