"""What is PostgreSQL's own: several replicas (each its own pool) on one schema, migrations, durability, outages.

The port semantics are in tests/contract/, which runs against PostgreSQL too. "Another replica" is another
PostgresDatabase (its own pool) on the same schema. Tests that take the server away run one of their own
(tests/postgres_process.py); the others use the shared server with a schema of their own.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from decimal import ROUND_FLOOR, Decimal

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from gateway.adapters.postgres import (
    PostgresBiller,
    PostgresCustomers,
    PostgresDatabase,
    PostgresDurability,
    PostgresLedger,
)
from gateway.adapters.postgres.schema import LATEST, MIGRATIONS, migrate
from gateway.app.container import build_container, close_store_clients
from gateway.app.environment import load_settings
from gateway.app.server import create_app
from gateway.app.settings_checks import SettingsError
from gateway.domain.errors import StoreUnavailable
from gateway.domain.ledger import LedgerStats, Parked, ParkReason
from gateway.domain.units import Rounding
from tests.builders import claim, encode, event, settings, signed_headers
from tests.postgres_fixtures import with_schema
from tests.postgres_process import PostgresServer

NOW = 1_800_000_000.0


@pytest.fixture
async def replicas(postgres_url: str) -> AsyncIterator[list[PostgresLedger]]:
    """Two replicas' ledgers: each its own pool, one schema."""
    databases = [PostgresDatabase(postgres_url, max_connections=4) for _ in range(2)]
    yield [PostgresLedger(database) for database in databases]
    for database in databases:
        await database.close()


# -- exactly once across replicas -------------------------------------------------------------------------------


async def test_exactly_one_claim_wins_per_id_and_carries_stay_exact_when_claims_race_over_two_replicas(
    replicas: list[PostgresLedger],
) -> None:
    ids = [f"evt_{n:03d}" for n in range(150)]
    customer_of = {event_id: f"cus_{n % 4}" for n, event_id in enumerate(ids)}
    # Every id delivered three times, to alternating replicas, all at once.
    calls = [
        replicas[(n + copy) % 2].record(
            claim(event_id, exact="0.37", customer=customer_of[event_id]), Rounding.CARRY, NOW
        )
        for copy in range(3)
        for n, event_id in enumerate(ids)
    ]
    results = await asyncio.gather(*calls)

    created = [r.entry for r in results if r.created and r.entry is not None]
    assert sorted(entry.event_id for entry in created) == ids
    units: dict[str, int] = defaultdict(int)
    for entry in created:
        units[entry.billing_customer] += entry.units
    for customer in {customer_of[i] for i in ids}:
        count = sum(1 for i in ids if customer_of[i] == customer)
        # Carry: the units billed are the floor of the exact total, whatever the order the claims were settled in.
        assert units[customer] == int((Decimal("0.37") * count).to_integral_value(ROUND_FLOOR))


async def test_a_park_and_a_record_of_one_id_in_two_replicas_claim_it_once(replicas: list[PostgresLedger]) -> None:
    for n in range(40):
        key = f"evt_BOTH_{n}"
        parked = Parked(
            key=key, reason=ParkReason.UNKNOWN_CUSTOMER, message="?", body=b"{}", signed_at=0, parked_at=NOW
        )
        recorded, was_parked = await asyncio.gather(
            replicas[0].record(claim(key), Rounding.CARRY, NOW), replicas[1].park(parked)
        )
        assert recorded.created != was_parked, key
        assert (await replicas[0].get(key) is None) == was_parked
        assert (await replicas[1].get_parked(key) is None) == recorded.created


async def test_no_id_is_leased_twice_when_two_replicas_lease_concurrently(replicas: list[PostgresLedger]) -> None:
    for index in range(200):
        billable = claim(f"evt_{index:03d}", customer=f"cus_{index}")
        await replicas[0].record(billable, Rounding.CARRY, NOW + index / 1000)

    batches = await asyncio.gather(*(replicas[n % 2].lease_due(NOW + 1, 15, 30.0) for n in range(20)))

    leased = [entry.event_id for batch in batches for entry in batch]
    assert len(leased) == len(set(leased)) == 200
    assert await replicas[1].lease_due(NOW + 29, 500, 30.0) == []


async def test_no_customer_is_leased_by_two_replicas_leasing_concurrently(replicas: list[PostgresLedger]) -> None:
    for index in range(200):
        billable = claim(f"evt_{index:03d}", customer=f"cus_{index % 23}")
        await replicas[0].record(billable, Rounding.CARRY, NOW + index / 1000)

    batches = await asyncio.gather(*(replicas[n % 2].lease_due(NOW + 1, 15, 30.0) for n in range(20)))

    holders = {(entry.billing_customer, n) for n, batch in enumerate(batches) for entry in batch}
    customers = [customer for customer, _ in holders]
    assert len(customers) == len(set(customers)) == 23


async def test_expired_lease_is_taken_over_by_another_replica_and_the_entry_is_sent_once(
    replicas: list[PostgresLedger],
) -> None:
    crashed, survivor = replicas
    for index in range(3):
        await crashed.record(claim(f"evt_TAKEN_{index}", exact="5"), Rounding.CARRY, NOW)
    assert len(await crashed.lease_due(NOW, 10, 30.0)) == 3

    assert await survivor.lease_due(NOW + 29.9, 10, 30.0) == []
    taken_over = await survivor.lease_due(NOW + 30.0, 10, 30.0)
    for entry in taken_over:
        await survivor.mark_sent(entry.event_id, NOW + 31)
        await crashed.mark_sent(entry.event_id, NOW + 32)  # the crashed one comes back late: a no-op

    assert sorted(entry.event_id for entry in taken_over) == ["evt_TAKEN_0", "evt_TAKEN_1", "evt_TAKEN_2"]
    assert await crashed.stats() == LedgerStats(
        pending=0, sent=3, parked=0, oldest_pending_at=None, units_sent=15, units_pending=0
    )


async def test_a_claim_the_server_refuses_fails_alone_and_the_rest_of_its_batch_is_recorded(
    postgres_database: PostgresDatabase,
) -> None:
    ledger = PostgresLedger(postgres_database)
    # PostgreSQL text cannot hold a NUL character: that claim is refused, its batch is written again one by one.
    calls = [ledger.record(claim(f"evt_OK_{n}"), Rounding.CARRY, NOW) for n in range(20)]
    calls.insert(7, ledger.record(claim("evt_\x00BAD"), Rounding.CARRY, NOW))
    results = await asyncio.gather(*calls, return_exceptions=True)

    assert isinstance(results[7], StoreUnavailable)
    assert all(not isinstance(r, BaseException) and r.created for n, r in enumerate(results) if n != 7)
    assert (await ledger.stats()).pending == 20


async def test_group_commit_answers_each_call_alike_with_and_without_it(postgres_url: str) -> None:
    database = PostgresDatabase(postgres_url, max_connections=4)
    try:
        grouped, alone = PostgresLedger(database), PostgresLedger(database, group_commit=False)
        first = await asyncio.gather(*(grouped.record(claim(f"evt_{n}"), Rounding.CARRY, NOW) for n in range(50)))
        again = await asyncio.gather(*(alone.record(claim(f"evt_{n}"), Rounding.CARRY, NOW) for n in range(50)))
    finally:
        await database.close()

    assert all(r.created for r in first) and not any(r.created for r in again)
    assert [r.entry for r in again] == [r.entry for r in first]


# -- schema ---------------------------------------------------------------------------------------------------


async def test_replicas_starting_together_apply_each_migration_once(postgres_url: str) -> None:
    databases = [PostgresDatabase(postgres_url, max_connections=1) for _ in range(6)]
    try:
        await asyncio.gather(*(database.pool() for database in databases))
        rows = await databases[0].read("SELECT version FROM schema_versions ORDER BY version")
    finally:
        for database in databases:
            await database.close()

    assert [row["version"] for row in rows] == [version for version, _, _ in MIGRATIONS]


async def test_a_schema_written_by_a_newer_gateway_is_refused(postgres_database: PostgresDatabase) -> None:
    ledger = PostgresLedger(postgres_database)
    await ledger.ping()
    await postgres_database.run(
        lambda connection: connection.execute(
            "INSERT INTO schema_versions (version, description) VALUES ($1, 'from the future')", LATEST + 1
        )
    )
    newer = PostgresDatabase(postgres_database.url, max_connections=1)
    try:
        with pytest.raises(StoreUnavailable, match=f"schema has version {LATEST + 1}"):
            await PostgresLedger(newer).ping()
    finally:
        await newer.close()


async def test_a_version_1_schema_migrates_to_the_latest_with_its_ledger_intact(postgres_url: str) -> None:
    connection = await asyncpg.connect(postgres_url)
    try:
        assert await migrate(connection, MIGRATIONS[:1]) == [1]
        # What a version-1 gateway wrote: an entry, its customer's carry, a parked record.
        await connection.execute(
            "INSERT INTO entries (event_id, event_type, billing_customer, ringside_customer, cost_usd, units,"
            " timestamp, state, created_at, next_attempt_at) VALUES ('evt_old', 'usage', 'cus_A', 'rs_A', '0.00001',"
            " 1, 1799999990, 'pending', $1, $1)",
            NOW,
        )
        await connection.execute("INSERT INTO carries (billing_customer, carry) VALUES ('cus_A', '0.75')")
        await connection.execute(
            "INSERT INTO parked (key, reason, message, body, signed_at, parked_at)"
            " VALUES ('evt_parked', 'unknown_customer', 'no map', '\\x7b7d', 1799999990, $1)",
            NOW,
        )
    finally:
        await connection.close()
    database = PostgresDatabase(postgres_url, max_connections=2)
    try:
        ledger = PostgresLedger(database)
        again = await ledger.record(claim("evt_old"), Rounding.CARRY, NOW + 1)
        parked_again = await ledger.record(claim("evt_parked"), Rounding.CARRY, NOW + 1)
        fresh = await ledger.record(claim("evt_new", exact="0.5"), Rounding.CARRY, NOW + 1)
        versions = await database.read("SELECT version FROM schema_versions ORDER BY version")
        carry = await database.read("SELECT carry FROM carries WHERE billing_customer = 'cus_A'")
    finally:
        await database.close()

    assert [row["version"] for row in versions] == [version for version, _, _ in MIGRATIONS]
    assert not again.created and again.entry is not None and again.entry.created_at == NOW
    assert not parked_again.created and parked_again.entry is None
    # The carry of version 1 goes on: 0.75 + 0.5 is one unit and 0.25 over.
    assert fresh.created and fresh.entry is not None and fresh.entry.units == 1
    assert Decimal(carry[0]["carry"]) == Decimal("0.25")


# -- durability -----------------------------------------------------------------------------------------------


async def test_durability_has_no_problem_when_synchronous_commit_is_on(postgres_database: PostgresDatabase) -> None:
    assert await PostgresDurability(postgres_database).problem() is None


async def test_durability_names_synchronous_commit_when_it_is_off(postgres_url: str) -> None:
    # A role, a database or a URL can turn it off for the gateway's sessions alone: the check reads the session's.
    database = PostgresDatabase(f"{postgres_url}%20-csynchronous_commit%3Doff", max_connections=1)
    try:
        problem = await PostgresDurability(database).problem()
    finally:
        await database.close()

    assert problem is not None and "synchronous_commit" in problem


# -- outages --------------------------------------------------------------------------------------------------


async def test_store_is_unavailable_while_the_server_is_down_and_the_same_objects_work_after_restart() -> None:
    with PostgresServer() as server:
        database = PostgresDatabase(server.url, max_connections=3)
        ledger, customers = PostgresLedger(database), PostgresCustomers(database)
        biller = PostgresBiller(database)
        try:
            await ledger.record(claim("evt_BEFORE"), Rounding.CARRY, NOW)
            server.stop()
            with pytest.raises(StoreUnavailable):
                await ledger.record(claim("evt_DURING"), Rounding.CARRY, NOW)
            with pytest.raises(StoreUnavailable):
                await customers.get("rs_A")
            with pytest.raises(StoreUnavailable):
                await ledger.ping()
            server.start()
            # Each pooled connection died with the server; the first failure expired them all.
            await ledger.ping()
            assert (await ledger.record(claim("evt_DURING"), Rounding.CARRY, NOW)).created
            assert (await ledger.stats()).pending == 2
            assert await biller.events() == []
        finally:
            await database.close()


async def test_an_exhausted_pool_is_store_unavailable(postgres_url: str) -> None:
    database = PostgresDatabase(postgres_url, max_connections=1, pool_wait_s=0.2)
    try:
        ledger = PostgresLedger(database)
        async with database.connection():
            with pytest.raises(StoreUnavailable, match="pool"):
                await ledger.get("evt_A")
        assert await ledger.get("evt_A") is None
    finally:
        await database.close()


async def test_webhook_gets_503_while_postgres_is_down_and_is_accepted_once_it_is_back() -> None:
    with PostgresServer() as server:
        container = build_container(settings(store=server.url))
        app = create_app(container, run_dispatcher=False)

        async def deliver(client: AsyncTestClient[Litestar], event_id: str) -> tuple[int, object, str | None]:
            body = encode(event(event_id, cost="0.0123", stripe_customer="cus_A"))
            response = await client.post(
                "/webhooks/ringside", content=body, headers=signed_headers(body, timestamp=int(time.time()))
            )
            return response.status_code, response.json(), response.headers.get("retry-after")

        async with AsyncTestClient(app) as client:
            assert (await deliver(client, "evt_BEFORE"))[:2] == (
                200,
                {"status": "accepted", "event_id": "evt_BEFORE", "units": 1230},
            )
            server.stop()
            status, body, retry_after = await deliver(client, "evt_DURING")
            assert (status, retry_after) == (503, "5")
            assert isinstance(body, dict) and body["error"]["code"] == "store_unavailable"
            assert (await client.get("/readyz")).status_code == 503

            server.start()
            assert (await client.get("/readyz")).status_code == 200
            assert (await deliver(client, "evt_DURING"))[:2] == (
                200,
                {"status": "accepted", "event_id": "evt_DURING", "units": 1230},
            )
            assert (await deliver(client, "evt_BEFORE"))[1] == {"status": "duplicate", "event_id": "evt_BEFORE"}
        check = PostgresDatabase(server.url, max_connections=1)
        try:
            assert (await PostgresLedger(check).stats()).pending == 2
        finally:
            await check.close()


# -- wiring -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://gateway:secret@db.internal:5432/billing",
        "postgres://gateway@db.internal/billing?sslmode=verify-full",
        "postgresql://gateway@db.internal:5432/billing?sslmode=require&application_name=gw",
    ],
)
def test_settings_accept_postgresql_urls(url: str) -> None:
    assert load_settings({"GATEWAY_STORE": url}).store == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://db.internal:5432/billing?sslmode=requir", "sslmode"),
        ("postgresql://db.internal:5432", "name a host and a database"),
        ("postgresql:///billing", "name a host and a database"),
        ("mysql://db.internal/billing", "postgresql://"),
    ],
)
def test_settings_refuse_a_postgresql_url_that_cannot_work(url: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings({"GATEWAY_STORE": url})


async def test_container_wires_every_postgres_adapter_to_one_pool(postgres_url: str) -> None:
    container = build_container(settings(store=postgres_url))
    try:
        ledger, customers, biller = container.ledger(), container.customers(), container.billing_sink()
        durability = container.store_durability()
        assert (type(ledger), type(customers), type(biller), type(durability)) == (
            PostgresLedger,
            PostgresCustomers,
            PostgresBiller,
            PostgresDurability,
        )
        await customers.set("rs_WIRED", "cus_WIRED")
        await ledger.record(claim("evt_WIRED"), Rounding.CARRY, NOW)
        assert await durability.problem() is None
        connection = await asyncpg.connect(postgres_url)
        try:
            assert await connection.fetchval("SELECT billing_id FROM customers") == "cus_WIRED"
            assert await connection.fetchval("SELECT state FROM entries WHERE event_id = 'evt_WIRED'") == "pending"
        finally:
            await connection.close()
    finally:
        await close_store_clients(container)


def test_with_schema_puts_the_search_path_in_the_url() -> None:
    assert with_schema("postgresql://h/db", "s1") == "postgresql://h/db?options=-csearch_path%3Ds1"
    assert with_schema("postgresql://h/db?sslmode=disable", "s1").endswith("&options=-csearch_path%3Ds1")
