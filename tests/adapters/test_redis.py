"""What is Redis's own: several clients (replicas) on one server, leases across them, retention, outages, memory.

The port semantics are in tests/contract/, which runs against Redis too. "Another replica" is played by another
client (its own connection pool) with its own adapter objects on the same key prefix. Tests that take Redis away
run a redis-server of their own (tests/redis_process.py); the others use the shared server with a fresh prefix.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any, get_args

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from redis.asyncio.connection import Connection, SSLConnection
from redis.exceptions import DataError

from gateway.adapters.redis import (
    DEFAULT_DEDUPE_TTL_S,
    MAX_CONNECTIONS,
    RedisBiller,
    RedisCustomers,
    RedisLedger,
    connect,
    durability_warnings,
)
from gateway.adapters.redis.scripts import ANCHOR, ScriptName, source
from gateway.app.container import build_container, close_store_clients
from gateway.app.environment import load_settings
from gateway.app.server import create_app
from gateway.app.settings_checks import SettingsError
from gateway.domain.errors import BillerUnavailable, StoreUnavailable
from gateway.domain.ledger import Entry, LedgerStats, Parked, ParkReason, State
from gateway.domain.ports import MeterEvent
from gateway.domain.units import Rounding
from tests.builders import claim, encode, event, settings, signed_headers
from tests.redis_fixtures import REDIS_URL, open_test_redis
from tests.redis_process import RedisServer

NOW = 1_800_000_000.0


@pytest.fixture
async def second_client() -> AsyncIterator[Redis]:
    """A second client with its own connection pool: another replica, as far as Redis can tell."""
    client = await open_test_redis()
    yield client
    await client.aclose()


@pytest.fixture
def ledgers(redis_client: Redis, second_client: Redis, redis_prefix: str) -> tuple[RedisLedger, RedisLedger]:
    return RedisLedger(redis_client, prefix=redis_prefix), RedisLedger(second_client, prefix=redis_prefix)


# -- atomicity across replicas ----------------------------------------------------------------------------------


@pytest.fixture(params=[1, MAX_CONNECTIONS], ids=["one_connection_each", "pooled"])
async def racing_ledgers(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[list[RedisLedger]]:
    """Two replicas' ledgers: with one connection each (exactly two connections in all), or with full pools."""
    # redis_prefix needs redis_client, which skips (fails under CI) when no Redis answers.
    clients = [connect(REDIS_URL, max_connections=request.param) for _ in range(2)]
    yield [RedisLedger(client, prefix=redis_prefix) for client in clients]
    for client in clients:
        await client.aclose()


async def test_exactly_one_claim_wins_per_id_and_carries_stay_exact_when_500_claims_race_over_two_clients(
    racing_ledgers: list[RedisLedger], redis_client: Redis, redis_prefix: str
) -> None:
    ledgers = racing_ledgers
    # 50 ids over 5 customers, each worth a fraction with 22 decimal places; each id claimed 10 times, alternately
    # through either client, all at once.
    event_ids = [f"evt_RACE_{index:02d}" for index in range(50)]
    exact_of = {
        event_id: Decimal(f"{index}.{index:02d}00000000000000000007") for index, event_id in enumerate(event_ids)
    }
    customer_of = {event_id: f"cus_{index % 5}" for index, event_id in enumerate(event_ids)}
    attempts = [(ledgers[n % 2], event_id) for n in range(10) for event_id in event_ids]

    results = await asyncio.gather(
        *(
            ledger.record(
                claim(event_id, exact=str(exact_of[event_id]), customer=customer_of[event_id]), Rounding.CARRY, NOW
            )
            for ledger, event_id in attempts
        )
    )

    winners = [result.entry for result in results if result.created and result.entry is not None]
    assert len(results) == 500
    assert sorted(entry.event_id for entry in winners) == event_ids
    stored = {event_id: await ledgers[1].get(event_id) for event_id in event_ids}
    assert all(result.entry == stored[result.entry.event_id] for result in results if result.entry is not None)
    exact_total: dict[str, Decimal] = defaultdict(Decimal)
    units_total: dict[str, int] = defaultdict(int)
    for entry in winners:
        exact_total[entry.billing_customer] += exact_of[entry.event_id]
        units_total[entry.billing_customer] += entry.units
    for customer, total in exact_total.items():
        floor = int(total.to_integral_value(rounding=ROUND_FLOOR))
        assert units_total[customer] == floor
        carry = await redis_client.get(f"{redis_prefix}c:{customer}")
        assert isinstance(carry, bytes) and Decimal(carry.decode()) == total - floor
    assert (await ledgers[0].stats()).units_pending == sum(units_total.values())


async def test_a_carry_remembered_by_one_replica_is_never_trusted_after_another_replica_moved_it(
    ledgers: tuple[RedisLedger, RedisLedger], redis_client: Redis, redis_prefix: str
) -> None:
    # A records first and remembers the carry it wrote (its hint, sent instead of a GET); B then moves the carry;
    # A's next record must settle from B's carry, not from its own stale one.
    first, second = ledgers
    a1 = await first.record(claim("evt_HINT_1", exact="0.6"), Rounding.CARRY, NOW)
    b1 = await second.record(claim("evt_HINT_2", exact="0.7"), Rounding.CARRY, NOW)
    a2 = await first.record(claim("evt_HINT_3", exact="0.8"), Rounding.CARRY, NOW)
    assert await redis_client.get(f"{redis_prefix}c:cus_A") == b"0.1"  # 0.7 + 0.6 - 1 + 0.8 - 1, not 0.6 + 0.8 - 1
    await redis_client.delete(f"{redis_prefix}c:cus_A")  # the carry gone behind A's back: settled from zero again
    a3 = await first.record(claim("evt_HINT_4", exact="0.9"), Rounding.CARRY, NOW)

    assert [r.entry.units if r.entry else None for r in (a1, b1, a2, a3)] == [0, 1, 1, 0]
    assert await redis_client.get(f"{redis_prefix}c:cus_A") == b"0.9"


async def test_mark_sent_many_decides_afresh_when_another_replica_changes_an_entry_between_read_and_write(
    ledgers: tuple[RedisLedger, RedisLedger], redis_client: Redis
) -> None:
    first, second = ledgers
    for event_id in ("evt_MANY_1", "evt_MANY_2", "evt_MANY_3"):
        await first.record(claim(event_id, exact="2"), Rounding.CARRY, NOW)
    read_entries = redis_client.mget
    reads = 0

    async def read_then_be_overtaken(*args: object, **kwargs: object) -> object:
        # Between the first read and its script: another replica retries one entry and sends another.
        nonlocal reads
        reads += 1
        blobs = await read_entries(*args, **kwargs)
        if reads == 1:
            await second.mark_retry("evt_MANY_2", NOW + 60, "biller_unavailable: 503")
            await second.mark_sent("evt_MANY_3", NOW + 1)
        return blobs

    redis_client.mget = read_then_be_overtaken  # type: ignore[method-assign]
    try:
        await first.mark_sent_many(["evt_MANY_1", "evt_MANY_2", "evt_MANY_3"], NOW + 2)
    finally:
        del redis_client.mget

    entries = [await first.get(event_id) for event_id in ("evt_MANY_1", "evt_MANY_2", "evt_MANY_3")]
    assert [(e.state, e.sent_at) for e in entries if e] == [
        (State.SENT, NOW + 2),
        (State.SENT, NOW + 2),  # still pending after the retry, so sent now, its attempt kept
        (State.SENT, NOW + 1),  # sent by the other replica: left alone, counted once
    ]
    assert entries[1] is not None and entries[1].attempts == 1
    assert reads == 2
    stats = await first.stats()
    assert (stats.sent, stats.pending, stats.units_sent, stats.units_pending) == (3, 0, 6, 0)


async def test_mark_sent_many_expects_the_leased_bytes_without_reading_and_decides_afresh_when_they_changed(
    ledgers: tuple[RedisLedger, RedisLedger], redis_client: Redis
) -> None:
    first, second = ledgers
    ids = ["evt_LEASED_1", "evt_LEASED_2", "evt_LEASED_3"]
    for event_id in ids:
        await first.record(claim(event_id, exact="2"), Rounding.CARRY, NOW)
    assert [entry.event_id for entry in await first.lease_due(NOW, 10, 30.0)] == ids
    read_entries = redis_client.mget
    reads = 0

    async def counted(*args: object, **kwargs: object) -> object:
        nonlocal reads
        reads += 1
        return await read_entries(*args, **kwargs)

    redis_client.mget = counted  # type: ignore[method-assign]
    try:
        await first.mark_sent_many(ids[:1], NOW + 1)  # as leased: no read before the script
        assert reads == 0
        # After the lease, another replica retries one entry and sends another: the bytes leased are stale.
        await second.mark_retry("evt_LEASED_2", NOW + 60, "biller_unavailable: 503")
        await second.mark_sent("evt_LEASED_3", NOW + 1)
        await first.mark_sent_many(ids[1:], NOW + 2)
    finally:
        del redis_client.mget

    assert reads == 1  # the script refused the stale bytes; both entries read again
    entries = [await first.get(event_id) for event_id in ids]
    assert [(e.state, e.sent_at, e.attempts) for e in entries if e] == [
        (State.SENT, NOW + 1, 0),
        (State.SENT, NOW + 2, 1),  # still pending after the retry, so sent now, its attempt kept
        (State.SENT, NOW + 1, 0),  # sent by the other replica: left alone, counted once
    ]
    stats = await first.stats()
    assert (stats.sent, stats.pending, stats.units_sent, stats.units_pending) == (3, 0, 6, 0)


# -- queue encoding ---------------------------------------------------------------------------------------------


def test_every_script_loads_from_the_package_and_the_queue_scripts_anchor_with_the_same_member() -> None:
    """The scripts ship as lua/*.lua package resources; the prelude's ANCHOR is the Python one, NUL written as \\0."""
    names = get_args(ScriptName)
    anchoring = {name for name in names if "local function anchor(key)" in source(name)}
    assert all(source(name).strip() for name in names)
    assert anchoring == {"record_many", "lease", "release", "mark_retry", "requeue"}
    lua_anchor = "'" + ANCHOR.replace("\x00", "\\0") + "'"
    assert all(f"local ANCHOR = {lua_anchor}" in source(name) for name in anchoring)


async def test_queues_stay_skiplists_and_their_anchor_is_never_leased_counted_or_oldest(
    redis_client: Redis, redis_prefix: str
) -> None:
    """A small sorted set is a listpack, where ZADD walks the whole list (figures: docs/performance.md, "The Redis
    store"): the anchor keeps every queue a skiplist through records, leases, releases, retries and an emptied
    queue."""
    ledger = RedisLedger(redis_client, prefix=redis_prefix)
    queues = [f"{redis_prefix}q:due", f"{redis_prefix}q:leased", f"{redis_prefix}q:age"]
    await ledger.record(claim("evt_Q_1", exact="3"), Rounding.CARRY, NOW)
    await ledger.record(claim("evt_Q_2", exact="4"), Rounding.CARRY, NOW + 1)
    leased = await ledger.lease_due(NOW + 5, 10, 30.0)
    assert [entry.event_id for entry in leased] == ["evt_Q_1", "evt_Q_2"]
    await ledger.release(["evt_Q_2"])
    await ledger.mark_retry("evt_Q_1", NOW + 60, "biller_unavailable: 503")
    assert [await redis_client.object("encoding", key) for key in queues] == [b"skiplist"] * 3
    assert await redis_client.zscore(queues[0], ANCHOR) == float("inf")
    stats = await ledger.stats()
    assert (stats.pending, stats.oldest_pending_at) == (2, NOW)

    # Leased up to any time, the anchor is never due; sent, every queue is empty but for it, and still a skiplist.
    assert {entry.event_id for entry in await ledger.lease_due(1e300, 10, 30.0)} == {"evt_Q_1", "evt_Q_2"}
    await ledger.mark_sent_many(["evt_Q_1", "evt_Q_2"], NOW + 61)
    assert await ledger.lease_due(1e300, 10, 30.0) == []
    stats = await ledger.stats()
    assert (stats.pending, stats.oldest_pending_at, stats.sent) == (0, None, 2)
    assert [await redis_client.zrange(key, 0, -1) for key in queues] == [[ANCHOR.encode()]] * 3
    assert [await redis_client.object("encoding", key) for key in queues] == [b"skiplist"] * 3


# -- leases across replicas -------------------------------------------------------------------------------------


async def test_no_id_is_leased_twice_when_two_replicas_lease_concurrently(
    ledgers: tuple[RedisLedger, RedisLedger],
) -> None:
    for index in range(200):
        billable = claim(f"evt_{index:03d}", customer=f"cus_{index}")
        await ledgers[0].record(billable, Rounding.CARRY, NOW + index / 1000)

    batches = await asyncio.gather(*(ledgers[n % 2].lease_due(NOW + 1, 15, 30.0) for n in range(20)))

    leased = [entry.event_id for batch in batches for entry in batch]
    assert len(leased) == len(set(leased)) == 200
    assert await ledgers[1].lease_due(NOW + 29, 500, 30.0) == []


async def test_no_customer_is_leased_by_two_replicas_leasing_concurrently(
    ledgers: tuple[RedisLedger, RedisLedger],
) -> None:
    for index in range(200):
        billable = claim(f"evt_{index:03d}", customer=f"cus_{index % 23}")
        await ledgers[0].record(billable, Rounding.CARRY, NOW + index / 1000)

    batches = await asyncio.gather(*(ledgers[n % 2].lease_due(NOW + 1, 15, 30.0) for n in range(20)))

    holders = {(entry.billing_customer, n) for n, batch in enumerate(batches) for entry in batch}
    customers = [customer for customer, _ in holders]
    assert len(customers) == len(set(customers)) == 23


async def test_expired_lease_is_taken_over_by_another_replica_and_the_entry_is_sent_once(
    ledgers: tuple[RedisLedger, RedisLedger],
) -> None:
    crashed, survivor = ledgers
    for index in range(3):
        await crashed.record(claim(f"evt_TAKEN_{index}", exact="5"), Rounding.CARRY, NOW)
    assert len(await crashed.lease_due(NOW, 10, 30.0)) == 3

    assert await survivor.lease_due(NOW + 29.9, 10, 30.0) == []
    taken_over = await survivor.lease_due(NOW + 30.0, 10, 30.0)
    for entry in taken_over:
        await survivor.mark_sent(entry.event_id, NOW + 31)
        await crashed.mark_sent(entry.event_id, NOW + 32)  # the crashed one comes back late: a no-op

    assert sorted(entry.event_id for entry in taken_over) == ["evt_TAKEN_0", "evt_TAKEN_1", "evt_TAKEN_2"]
    sent = await survivor.get("evt_TAKEN_0")
    assert sent is not None and (sent.state, sent.sent_at) == (State.SENT, NOW + 31)
    assert await crashed.stats() == LedgerStats(
        pending=0, sent=3, parked=0, oldest_pending_at=None, units_sent=15, units_pending=0
    )


async def test_lease_keeps_retry_order_when_an_expired_lease_comes_back(
    ledgers: tuple[RedisLedger, RedisLedger],
) -> None:
    first, second = ledgers
    await first.record(claim("evt_OLD"), Rounding.CARRY, NOW)
    await first.record(claim("evt_NEW"), Rounding.CARRY, NOW + 5)
    await first.lease_due(NOW, 1, 10.0)  # leases evt_OLD until NOW + 10

    assert [entry.event_id for entry in await second.lease_due(NOW + 10, 10, 30.0)] == ["evt_OLD", "evt_NEW"]


# -- counters ---------------------------------------------------------------------------------------------------


async def test_counters_stay_exact_when_entries_of_zero_units_are_sent_or_rejected(
    redis_client: Redis, redis_prefix: str
) -> None:
    # A tiny cost settles to 0 units (its fraction is carried) and is marked sent without a call: a common case.
    ledger = RedisLedger(redis_client, prefix=redis_prefix)
    await ledger.record(claim("evt_ZERO_SENT", exact="0.4"), Rounding.CARRY, NOW)
    await ledger.record(claim("evt_ZERO_REJECTED", exact="0.4"), Rounding.CARRY, NOW)
    await ledger.record(claim("evt_LARGE", exact="999999999999999"), Rounding.DOWN, NOW)

    await ledger.mark_sent("evt_ZERO_SENT", NOW + 1)
    await ledger.mark_rejected("evt_ZERO_REJECTED", "No such customer", NOW + 1)
    await ledger.mark_sent("evt_LARGE", NOW + 1)

    sent = await ledger.get("evt_ZERO_SENT")
    assert sent is not None and (sent.state, sent.units) == (State.SENT, 0)
    assert await ledger.stats() == LedgerStats(
        pending=0, sent=2, parked=1, oldest_pending_at=None, units_sent=999_999_999_999_999, units_pending=0
    )


# -- retention --------------------------------------------------------------------------------------------------


async def test_sent_entry_expires_after_dedupe_ttl_while_pending_and_parked_never_expire(
    redis_client: Redis, redis_prefix: str
) -> None:
    ledger = RedisLedger(redis_client, prefix=redis_prefix, dedupe_ttl_s=7 * 24 * 3600)
    await ledger.record(claim("evt_SENT"), Rounding.CARRY, NOW)
    await ledger.record(claim("evt_PENDING"), Rounding.CARRY, NOW)
    await ledger.record(claim("evt_REJECTED"), Rounding.CARRY, NOW)
    await ledger.park(Parked("evt_PARKED", ParkReason.UNKNOWN_CUSTOMER, "no customer", b"{}", 1, NOW))

    await ledger.mark_sent("evt_SENT", NOW + 1)
    await ledger.mark_rejected("evt_REJECTED", "No such customer", NOW + 1)

    assert 7 * 24 * 3600 - 60 < await redis_client.ttl(f"{redis_prefix}e:evt_SENT") <= 7 * 24 * 3600
    for key in ("e:evt_PENDING", "e:evt_REJECTED", "p:evt_REJECTED", "p:evt_PARKED", "c:cus_A"):
        assert await redis_client.ttl(f"{redis_prefix}{key}") == -1, key


def test_default_dedupe_ttl_outlasts_the_35_day_window() -> None:
    assert DEFAULT_DEDUPE_TTL_S == 40 * 24 * 3600


async def test_redelivery_is_a_duplicate_until_the_claim_expires(redis_client: Redis, redis_prefix: str) -> None:
    ledger = RedisLedger(redis_client, prefix=redis_prefix)
    await ledger.record(claim("evt_EXPIRING"), Rounding.CARRY, NOW)
    await ledger.mark_sent("evt_EXPIRING", NOW)
    assert not (await ledger.record(claim("evt_EXPIRING"), Rounding.CARRY, NOW + 1)).created

    await redis_client.delete(f"{redis_prefix}e:evt_EXPIRING")  # what the TTL does once it runs out

    assert (await ledger.record(claim("evt_EXPIRING"), Rounding.CARRY, NOW + 2)).created
    assert (await ledger.stats()).sent == 1  # counters are cumulative: the expired entry stays counted


# -- isolation and encoding -------------------------------------------------------------------------------------


async def test_prefixes_isolate_two_gateways_sharing_one_redis(redis_client: Redis, redis_prefix: str) -> None:
    # Glob characters in a prefix must not let one gateway's SCAN (usage) see the other's keys.
    one = RedisLedger(redis_client, prefix=f"{redis_prefix}a*[x]:")
    other = RedisLedger(redis_client, prefix=f"{redis_prefix}ab:")
    await one.record(claim("evt_SHARED", exact="3", customer="cus_ONE"), Rounding.CARRY, NOW)
    await other.record(claim("evt_SHARED", exact="4", customer="cus_OTHER"), Rounding.CARRY, NOW)

    assert [(u.billing_customer, u.units_pending) for u in await one.usage()] == [("cus_ONE", 3)]
    assert [(u.billing_customer, u.units_pending) for u in await other.usage()] == [("cus_OTHER", 4)]
    assert [e.event_id for e in await other.lease_due(NOW, 10, 30.0)] == ["evt_SHARED"]
    assert [e.event_id for e in await one.lease_due(NOW, 10, 30.0)] == ["evt_SHARED"]


async def test_entry_is_stored_as_msgpack_with_decimal_strings(redis_client: Redis, redis_prefix: str) -> None:
    ledger = RedisLedger(redis_client, prefix=redis_prefix)
    await ledger.record(claim("evt_STORED", exact="1234.5"), Rounding.CARRY, NOW)

    raw = await redis_client.get(f"{redis_prefix}e:evt_STORED")

    assert isinstance(raw, bytes)
    stored = msgspec.msgpack.decode(raw)
    assert (stored["cost_usd"], stored["units"], stored["state"]) == ("0.012345", 1234, "pending")
    assert msgspec.msgpack.decode(raw, type=Entry) == await ledger.get("evt_STORED")
    assert await redis_client.get(f"{redis_prefix}c:cus_A") == b"0.5"


# -- durability warning -----------------------------------------------------------------------------------------


async def test_durability_warns_when_redis_has_no_aof(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis", appendonly=False) as server:
        client = connect(server.url)
        try:
            warnings = await durability_warnings(client)
        finally:
            await client.aclose()

    assert [warning.event for warning in warnings] == ["redis.no_persistence"]
    assert "acknowledged events could be lost" in warnings[0].message


async def test_durability_warns_when_redis_may_evict_keys(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        client = connect(server.url)
        try:
            assert await durability_warnings(client) == []
            await client.config_set("maxmemory-policy", "allkeys-lru")
            warnings = await durability_warnings(client)
        finally:
            await client.aclose()

    assert [warning.event for warning in warnings] == ["redis.eviction_enabled"]


async def test_durability_check_warns_and_does_not_raise_when_redis_is_down() -> None:
    client = connect("redis://127.0.0.1:1/0")
    try:
        warnings = await durability_warnings(client)
    finally:
        await client.aclose()

    assert [warning.event for warning in warnings] == ["redis.durability_unknown"]


# -- outages ----------------------------------------------------------------------------------------------------


async def test_store_is_unavailable_while_redis_is_down_and_the_same_objects_work_after_restart(
    tmp_path: Path,
) -> None:
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        client = connect(server.url)
        ledger = RedisLedger(client, prefix="gw:")
        customers = RedisCustomers(client, prefix="gw:")
        biller = RedisBiller(client, prefix="gw:")
        try:
            assert (await ledger.record(claim("evt_BEFORE", exact="0.6"), Rounding.CARRY, NOW)).created
            await customers.set("rs_A", "cus_A")

            server.stop()
            with pytest.raises(StoreUnavailable):
                await ledger.record(claim("evt_DURING", exact="0.6"), Rounding.CARRY, NOW + 1)
            with pytest.raises(StoreUnavailable):
                await ledger.ping()
            with pytest.raises(StoreUnavailable):
                await ledger.lease_due(NOW + 1, 10, 30.0)
            with pytest.raises(StoreUnavailable):
                await customers.get("rs_A")
            with pytest.raises(BillerUnavailable):
                await biller.send(MeterEvent("evt_BEFORE", "cus_A", 0, 1))

            server.start()
            await ledger.ping()
            during = await ledger.record(claim("evt_DURING", exact="0.6"), Rounding.CARRY, NOW + 2)
            assert during.created and during.entry is not None
            assert during.entry.units == 1  # 0.6 carried from evt_BEFORE (which survived) + 0.6
            before = await ledger.get("evt_BEFORE")
            assert before is not None and before.units == 0
            assert await customers.get("rs_A") == "cus_A"
            assert (await ledger.stats()).pending == 2
        finally:
            await client.aclose()


async def test_record_writes_nothing_when_redis_refuses_writes_for_lack_of_memory(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis", appendonly=False) as server:
        client = connect(server.url)
        ledger = RedisLedger(client, prefix="gw:")
        try:
            assert (await ledger.record(claim("evt_FIRST", exact="0.7"), Rounding.CARRY, NOW)).created
            used = int((await client.info("memory"))["used_memory"])
            await client.config_set("maxmemory", used // 2)  # over the limit: every write that could grow is refused

            with pytest.raises(StoreUnavailable, match="maxmemory"):
                await ledger.record(claim("evt_REFUSED", exact="0.7"), Rounding.CARRY, NOW + 1)
            with pytest.raises(StoreUnavailable):
                await ledger.ping()

            await client.config_set("maxmemory", 0)
            assert await ledger.get("evt_REFUSED") is None
            assert await client.get("gw:c:cus_A") == b"0.7"
            retried = await ledger.record(claim("evt_REFUSED", exact="0.7"), Rounding.CARRY, NOW + 2)
            assert retried.created and retried.entry is not None and retried.entry.units == 1
        finally:
            await client.aclose()


async def test_webhook_gets_503_while_redis_is_down_and_is_accepted_once_it_is_back(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        container = build_container(settings(store=server.url, redis={"prefix": "gw:"}))
        app = create_app(container, run_dispatcher=False)

        async def deliver(
            client: AsyncTestClient[Litestar], event_id: str
        ) -> tuple[int, dict[str, object], str | None]:
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
            assert body["error"] == {"code": "store_unavailable", "message": body["error"]["message"]}  # type: ignore[index]
            assert (await client.get("/readyz")).status_code == 503

            server.start()
            assert (await client.get("/readyz")).status_code == 200
            assert (await deliver(client, "evt_DURING"))[:2] == (
                200,
                {"status": "accepted", "event_id": "evt_DURING", "units": 1230},
            )
            assert (await deliver(client, "evt_BEFORE"))[1] == {"status": "duplicate", "event_id": "evt_BEFORE"}
        # Shutdown closed the container's client; a fresh one sees both events, each recorded once.
        check = connect(server.url)
        try:
            assert (await RedisLedger(check, prefix="gw:").stats()).pending == 2
        finally:
            await check.aclose()


# -- wiring -----------------------------------------------------------------------------------------------------


def test_settings_read_redis_prefix_and_dedupe_ttl_from_the_environment() -> None:
    loaded = load_settings(
        {"GATEWAY_STORE": "redis://cache:6379/2", "GATEWAY_REDIS_PREFIX": "billing:", "GATEWAY_DEDUPE_TTL_S": "4320000"}
    )

    assert loaded.store == "redis://cache:6379/2"
    assert (loaded.redis.prefix, loaded.redis.dedupe_ttl_s) == ("billing:", 4320000)
    assert (load_settings({}).redis.prefix, load_settings({}).redis.dedupe_ttl_s) == ("gw:", DEFAULT_DEDUPE_TTL_S)


def test_settings_refuse_a_dedupe_ttl_shorter_than_a_day() -> None:
    with pytest.raises(SettingsError, match="GATEWAY_DEDUPE_TTL_S"):
        load_settings({"GATEWAY_DEDUPE_TTL_S": "3600"})


async def test_container_wires_every_redis_adapter_to_one_client_when_store_is_a_redis_url(
    redis_client: Redis, redis_prefix: str
) -> None:
    container = build_container(settings(store=REDIS_URL, redis={"prefix": redis_prefix}))
    try:
        ledger, customers, biller = container.ledger(), container.customers(), container.billing_sink()
        assert (type(ledger), type(customers), type(biller)) == (RedisLedger, RedisCustomers, RedisBiller)
        assert biller.name == "ledger"

        await customers.set("rs_WIRED", "cus_WIRED")
        await ledger.record(claim("evt_WIRED"), Rounding.CARRY, NOW)

        assert await redis_client.hget(f"{redis_prefix}customers", "rs_WIRED") == b"cus_WIRED"
        assert await redis_client.exists(f"{redis_prefix}e:evt_WIRED") == 1
    finally:
        await close_store_clients(container)


@pytest.mark.parametrize(
    ("url", "transport"), [("redis://127.0.0.1:6379/0", Connection), ("rediss://127.0.0.1:6380/0", SSLConnection)]
)
async def test_commands_are_packed_by_hiredis_into_the_bytes_redis_py_would_send(
    url: str, transport: type[Connection]
) -> None:
    client = connect(url)  # no I/O until a command
    try:
        connection_class = client.connection_pool.connection_class
        fast, plain = connection_class(), transport()
        commands: list[tuple[Any, ...]] = [
            ("EVALSHA", "ab" * 20, 2, "gw:q:due", "gw:e:évt", b"\x00\xffmsgpack", 1.5, 1_800_000_000.123456, -3),
            ("CLIENT SETNAME", "ringside-gateway"),  # a command name of two words
            ("GET", memoryview(b"gw:c:cus_A")),
        ]

        assert issubclass(connection_class, transport) and connection_class is not transport
        for command in commands:
            assert b"".join(fast.pack_command(*command)) == b"".join(plain.pack_command(*command))
        with pytest.raises(DataError):
            fast.pack_command("SET", "gw:k", None)
    finally:
        await client.aclose()


async def test_a_replay_among_redeliveries_of_its_id_is_the_one_record_that_creates_the_entry(
    redis_client: Redis, redis_prefix: str
) -> None:
    ledger = RedisLedger(redis_client, prefix=redis_prefix)
    await ledger.park(Parked("evt_P", ParkReason.UNKNOWN_CUSTOMER, "no mapping", b"{}", 1_799_999_990, 1.0))

    # Made together, they go to Redis in one batch (a redelivery that meets the parked record is a duplicate).
    results = await asyncio.gather(
        ledger.record(claim("evt_P"), Rounding.CARRY, NOW),
        ledger.record(claim("evt_P"), Rounding.CARRY, NOW, replaces="evt_P"),
        ledger.record(claim("evt_P"), Rounding.CARRY, NOW),
    )

    assert [r.created for r in results] == [False, True, False]
    assert all(r.entry in (None, results[1].entry) for r in results)
    assert await ledger.get("evt_P") == results[1].entry
    assert await ledger.get_parked("evt_P") is None
    assert await ledger.list_parked(ParkReason.UNKNOWN_CUSTOMER) == []
