"""What is Redis's own in the biller's feedback: retention of its keys, replicas racing, counters outliving entries.

The port semantics are in tests/contract/test_feedback_ledger.py, which runs against Redis too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.adapters.redis import RedisLedger
from gateway.domain.feedback import Rejection
from gateway.domain.reconcile import LedgerWindow
from gateway.domain.units import Rounding
from tests.builders import claim
from tests.redis_fixtures import open_test_redis

NOW = 1_800_000_000.0
HOUR = 1_799_996_400
TTL = 7 * 24 * 3600


@pytest.fixture
async def second_client() -> AsyncIterator[Redis]:
    client = await open_test_redis()
    yield client
    await client.aclose()


async def sent(ledger: RedisLedger, event_id: str, *, units: int = 10, sent_at: float = NOW) -> None:
    await ledger.record(claim(event_id, exact=str(units), timestamp=HOUR), Rounding.CARRY, NOW - 60)
    await ledger.mark_sent(event_id, sent_at)


async def test_a_rejected_entry_and_its_record_never_expire_while_the_report_claim_and_counters_do(
    redis_client: Redis, redis_prefix: str
) -> None:
    ledger = RedisLedger(redis_client, prefix=redis_prefix, dedupe_ttl_s=TTL)
    await sent(ledger, "evt_LOST")
    assert 0 < await redis_client.ttl(f"{redis_prefix}e:evt_LOST") <= TTL

    await ledger.reject_sent("evt_test_REPORT", [Rejection("evt_LOST", "code: gone")], NOW)

    for key in ("e:evt_LOST", "p:evt_LOST", "cursors", "fixes", "ix:fixes", "ix:hours"):
        assert await redis_client.ttl(f"{redis_prefix}{key}") in (-1, -2), key  # persistent (or not created)
    for key in ("fr:evt_test_REPORT", f"h:{HOUR}"):
        assert TTL - 60 < await redis_client.ttl(f"{redis_prefix}{key}") <= TTL, key
    assert await redis_client.zscore(f"{redis_prefix}ix:sent", "evt_LOST") is None


async def test_the_sent_index_forgets_ids_whose_entries_have_expired(redis_client: Redis, redis_prefix: str) -> None:
    ledger = RedisLedger(redis_client, prefix=redis_prefix, dedupe_ttl_s=TTL)
    await sent(ledger, "evt_OLD", sent_at=NOW)
    await sent(ledger, "evt_NEW", sent_at=NOW + TTL + 1)

    assert await redis_client.zrange(f"{redis_prefix}ix:sent", 0, -1) == [b"evt_NEW"]


async def test_a_replay_after_its_hour_counter_expired_leaves_no_negative_window(
    redis_client: Redis, redis_prefix: str
) -> None:
    ledger = RedisLedger(redis_client, prefix=redis_prefix)
    await sent(ledger, "evt_LOST", units=4)
    await ledger.reject_sent("evt_test_REPORT", [Rejection("evt_LOST", "code: gone")], NOW)
    await redis_client.delete(f"{redis_prefix}h:{HOUR}")  # as if it had expired, the parked entry kept

    await ledger.requeue("evt_LOST", NOW + 1)

    assert await redis_client.hgetall(f"{redis_prefix}h:{HOUR}") == {}
    assert await ledger.sent_windows(HOUR, HOUR + 3600) == []
    await ledger.mark_sent("evt_LOST", NOW + 2)
    assert await ledger.sent_windows(HOUR, HOUR + 3600) == [LedgerWindow("cus_A", HOUR, 4)]


async def test_a_report_applied_by_two_replicas_at_once_moves_each_entry_once(
    redis_client: Redis, second_client: Redis, redis_prefix: str
) -> None:
    ledgers = [RedisLedger(client, prefix=redis_prefix) for client in (redis_client, second_client)]
    for n in range(20):
        await sent(ledgers[0], f"evt_{n}", units=n + 1)
    rejections = [Rejection(f"evt_{n}", "code: gone") for n in range(20)]

    outcomes = await asyncio.gather(*(ledger.reject_sent("evt_test_REPORT", rejections, NOW) for ledger in ledgers))

    assert sorted(outcomes, key=str) == [20, None]
    stats = await ledgers[1].stats()
    assert (stats.sent, stats.units_sent, stats.parked) == (0, 0, 20)
    assert await ledgers[1].sent_windows(HOUR, HOUR + 3600) == [LedgerWindow("cus_A", HOUR, 0, rejected_units=210)]


async def test_reject_sent_decides_afresh_when_another_replica_changes_an_entry_between_read_and_write(
    redis_client: Redis, second_client: Redis, redis_prefix: str
) -> None:
    first, second = (RedisLedger(client, prefix=redis_prefix) for client in (redis_client, second_client))
    await sent(first, "evt_1", units=1)
    await sent(first, "evt_2", units=2)
    await sent(first, "evt_3", units=3)
    read_entries = redis_client.mget
    reads = 0

    async def read_then_be_overtaken(*args: object, **kwargs: object) -> object:
        # Between the first read and its script, another replica applies another report naming evt_2.
        nonlocal reads
        reads += 1
        blobs = await read_entries(*args, **kwargs)
        if reads == 1:
            await second.reject_sent("evt_test_OTHER", [Rejection("evt_2", "code: other")], NOW)
        return blobs

    redis_client.mget = read_then_be_overtaken  # type: ignore[method-assign]
    try:
        moved = await first.reject_sent("evt_test_REPORT", [Rejection(f"evt_{n}", "code: gone") for n in (1, 2)], NOW)
    finally:
        del redis_client.mget

    assert (moved, reads) == (1, 2)
    record = await first.get_parked("evt_2")
    assert record is not None and record.message == "code: other"
    stats = await first.stats()
    assert (stats.sent, stats.units_sent, stats.parked) == (1, 3, 2)
    assert await first.sent_windows(HOUR, HOUR + 3600) == [LedgerWindow("cus_A", HOUR, 3, rejected_units=3)]
