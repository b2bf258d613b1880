"""`gateway customers set|get|delete|list|import` on a SQLite store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.adapters.sqlite import SqliteCustomers, SqliteDatabase
from tests.app.cli_runner import cli_env, gateway, json_out, sqlite_store


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "gateway.db"


@pytest.fixture
def env(database: Path) -> dict[str, str | None]:
    return cli_env(GATEWAY_STORE=sqlite_store(database))


def stored(database: Path) -> list[tuple[str, str]]:
    """What another process reading the file sees."""

    async def read() -> list[tuple[str, str]]:
        db = SqliteDatabase(database)
        try:
            return await SqliteCustomers(db).list()
        finally:
            db.close()

    return asyncio.run(read())


def test_set_then_get_list_and_delete_round_trip(env: dict[str, str | None], database: Path) -> None:
    assert gateway("customers", "set", "cust_42", "cus_Q1", env=env).stdout == "cust_42 -> cus_Q1 (new)\n"
    assert gateway("customers", "set", "cust_42", "cus_Q2", env=env).stdout == "cust_42 -> cus_Q2 (was cus_Q1)\n"
    gateway("customers", "set", "cust_7", "cus_A7", env=env)

    assert gateway("customers", "get", "cust_42", env=env).stdout == "cus_Q2\n"
    assert json_out(gateway("customers", "list", "--json", env=env)) == [
        {"ringside_id": "cust_42", "stripe_customer_id": "cus_Q2"},
        {"ringside_id": "cust_7", "stripe_customer_id": "cus_A7"},
    ]
    assert gateway("customers", "delete", "cust_42", env=env).exit_code == 0
    assert stored(database) == [("cust_7", "cus_A7")]


def test_get_fails_with_one_line_when_customer_is_not_mapped(env: dict[str, str | None]) -> None:
    result = gateway("customers", "get", "cust_UNKNOWN", env=env)

    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: no Stripe customer is mapped to cust_UNKNOWN"


def test_delete_fails_when_customer_is_not_mapped(env: dict[str, str | None]) -> None:
    assert gateway("customers", "delete", "cust_UNKNOWN", env=env).exit_code == 1


@pytest.mark.parametrize(("ringside_id", "stripe_id"), [("cust 42", "cus_Q1"), ("cust_42", "Q1"), ("cust_42", "")])
def test_set_refuses_malformed_ids_and_stores_nothing(
    env: dict[str, str | None], database: Path, ringside_id: str, stripe_id: str
) -> None:
    result = gateway("customers", "set", ringside_id, stripe_id, env=env)

    assert result.exit_code == 1
    assert stored(database) == []


def test_import_maps_every_row_of_a_valid_file(env: dict[str, str | None], database: Path, tmp_path: Path) -> None:
    csv_file = tmp_path / "customers.csv"
    csv_file.write_text(
        "\ufeffringside_id,stripe_customer_id\n"
        "# exported from the CRM\n"
        "cust_1,cus_A1\n"
        "\n"
        " cust_2 , cus_A2 ,\n"
        '"cust_3","cus_A3"\n'
        "cust_1,cus_A1\n",
        encoding="utf-8",
    )

    result = gateway("customers", "import", str(csv_file), env=env)

    assert result.exit_code == 0, result.output
    assert "Imported 3 mappings" in result.stdout
    assert stored(database) == [("cust_1", "cus_A1"), ("cust_2", "cus_A2"), ("cust_3", "cus_A3")]


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("cust_4,not_a_stripe_id", "line 4: Stripe customer id 'not_a_stripe_id'"),
        ("cust_4", "line 4: expected 2 columns"),
        ("cust_4,cus_A4,extra", "line 4: expected 2 columns"),
        ("cust_1,cus_OTHER", "line 4: cust_1 is mapped to cus_A1 on line 1 and to cus_OTHER here"),
    ],
)
def test_import_names_the_bad_line_and_imports_nothing(
    env: dict[str, str | None], database: Path, tmp_path: Path, bad_line: str, message: str
) -> None:
    gateway("customers", "set", "cust_0", "cus_BEFORE", env=env)
    csv_file = tmp_path / "customers.csv"
    csv_file.write_text(f"cust_1,cus_A1\ncust_2,cus_A2\ncust_3,cus_A3\n{bad_line}\ncust_5,cus_A5\n")

    result = gateway("customers", "import", str(csv_file), env=env)

    assert result.exit_code == 1
    assert message in result.stderr
    assert "nothing was imported" in result.stderr
    assert stored(database) == [("cust_0", "cus_BEFORE")]


def test_import_reports_json_when_asked(env: dict[str, str | None], tmp_path: Path) -> None:
    csv_file = tmp_path / "customers.csv"
    csv_file.write_text("cust_1,cus_A1\ncust_2,cus_A2\n")

    assert json_out(gateway("customers", "import", str(csv_file), "--json", env=env)) == {
        "file": str(csv_file),
        "imported": 2,
    }


def test_maps_lago_subscription_ids_when_lago_is_the_biller(database: Path) -> None:
    env = cli_env(
        GATEWAY_STORE=sqlite_store(database),
        GATEWAY_BILLER="lago",
        LAGO_API_KEY="lago_key",
        LAGO_METRIC_CODE="ringside_spend",
    )
    csv_file = database.parent / "subscriptions.csv"
    csv_file.write_text("ringside_id,billing_id\ncust_9,sub_2024_acme\n")

    assert gateway("customers", "set", "cust_8", "sub-8", env=env).exit_code == 0
    assert gateway("customers", "import", str(csv_file), env=env).exit_code == 0
    assert stored(database) == [("cust_8", "sub-8"), ("cust_9", "sub_2024_acme")]
    assert gateway("customers", "set", "cust_10", "has space", env=env).exit_code == 1
