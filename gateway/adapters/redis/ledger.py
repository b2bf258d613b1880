"""The ledger in Redis: claims, the delivery queue, parked records and reports, shared by every replica."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import msgspec
from redis.asyncio import Redis
from redis.typing import EncodableT

from gateway.adapters.redis import scripts
from gateway.adapters.redis.codec import decode_entry, decode_parked, encode, glob_escape, members, raw
from gateway.adapters.redis.errors import MAX_CONFLICTS, store_errors
from gateway.adapters.redis.feedback import RedisFeedback
from gateway.adapters.redis.keys import DEFAULT_PREFIX, Keys
from gateway.adapters.redis.recording import RecordBatcher
from gateway.domain.errors import StoreUnavailable
from gateway.domain.ledger import (
    REQUEUEABLE,
    Claim,
    CustomerUsage,
    Entry,
    LedgerStats,
    Parked,
    ParkReason,
    Recorded,
    State,
    entry_record,
)
from gateway.domain.ports import BatchLedger
from gateway.domain.reconcile import hour_floor
from gateway.domain.units import Rounding

# Longer than the oldest event ingest accepts (35 days) plus the signature tolerance, so that a late redelivery of a
# sent event is still a duplicate. Stripe's own identifier de-duplication only lasts "at least 24 hours"
# (docs/billers.md), so ours must outlive every redelivery the gateway would still accept.
DEFAULT_DEDUPE_TTL_S: Final = 40 * 24 * 3600
# lease_due looks at no more than max(this, 4 x limit) due ids per call: customers under another dispatcher's lease
# are skipped, and a large backlog of theirs must not turn one lease step into a long stop of the whole server.
LEASE_SCAN_MIN: Final = 1000
# Leased entries whose bytes a ledger remembers (see RedisLedger._leased); past this many it forgets them all.
LEASED_BLOBS: Final = 100_000


class RedisLedger(BatchLedger, RedisFeedback):
    """The ledger in Redis, with MemoryLedger's semantics, shared by every replica.

    Invariants: an id is claimed by at most one entry or one parked record (a biller-rejected entry keeps its entry
    and gains a parked record of the same key); each method is one atomic server-side step; a pending id is in
    exactly one of q:due and q:leased, so a lease is held by one dispatcher at a time, and an expired lease is
    taken over by the next lease_due of any replica; a customer with an id in q:leased is not leased again until
    that lease ends, so a customer belongs to one dispatcher at a time; sent entries expire `dedupe_ttl_s` after
    they are sent, pending ones never. lease_due orders by next_attempt_at, then by event id (MemoryLedger: then
    by created_at).
    The biller's feedback is in RedisFeedback.
    """

    def __init__(
        self, client: Redis, *, prefix: str = DEFAULT_PREFIX, dedupe_ttl_s: int = DEFAULT_DEDUPE_TTL_S
    ) -> None:
        if dedupe_ttl_s <= 0:
            raise ValueError("dedupe_ttl_s must be positive")
        self._client = client
        self._keys = Keys(prefix)
        self._ttl_s = int(dedupe_ttl_s)
        self._records = RecordBatcher(client, self._keys)
        # event id -> the bytes lease_due handed out, which a mark expects instead of reading them first (a round trip
        # per batch spared; every script still compares, and an entry that changed is read again).
        self._leased: dict[str, bytes] = {}
        self._park = scripts.register(client, "park")
        self._lease = scripts.register(client, "lease")
        self._release = scripts.register(client, "release")
        self._renew = scripts.register(client, "renew")
        self._mark_sent_many = scripts.register(client, "mark_sent_many")
        self._mark_retry = scripts.register(client, "mark_retry")
        self._mark_rejected = scripts.register(client, "mark_rejected")
        self._requeue = scripts.register(client, "requeue")
        self._register_feedback()

    def __repr__(self) -> str:
        return f"RedisLedger(prefix={self._keys.prefix!r})"

    async def record(self, claim: Claim, rounding: Rounding, now: float, *, replaces: str | None = None) -> Recorded:
        """Group commit (RecordBatcher): records made while a batch is on its way to Redis go in the next one."""
        return await self._records.record(claim, rounding, now, replaces)

    async def park(self, parked: Parked) -> bool:
        keys = self._keys
        with store_errors():
            claimed = await self._park(
                keys=[
                    keys.entry(parked.key),
                    keys.parked(parked.key),
                    keys.parked_index(),
                    keys.parked_index(parked.reason),
                ],
                args=[encode(parked), parked.key, parked.parked_at],
            )
        return bool(claimed)

    async def lease_due(self, now: float, limit: int, lease_s: float, *, hold_customers: bool = True) -> list[Entry]:
        if limit <= 0:
            return []
        keys = self._keys
        with store_errors():
            blobs = await self._lease(
                keys=[keys.due, keys.leased, keys.held],
                args=[now, limit, now + lease_s, keys.entry(""), max(LEASE_SCAN_MIN, limit * 4), int(hold_customers)],
            )
        entries = [decode_entry(blob) for blob in blobs]
        if len(self._leased) + len(entries) > LEASED_BLOBS:
            self._leased.clear()  # leases taken over by another dispatcher are never marked here
        self._leased.update((entry.event_id, raw(blob)) for entry, blob in zip(entries, blobs, strict=True))
        return entries

    async def release(self, event_ids: list[str]) -> None:
        if not event_ids:
            return
        keys = self._keys
        for event_id in event_ids:
            self._leased.pop(event_id, None)
        with store_errors():
            await self._release(keys=[keys.due, keys.leased, keys.held], args=list(event_ids))

    async def renew(self, event_ids: Sequence[str], now: float, lease_s: float) -> list[str]:
        if not event_ids:
            return []
        with store_errors():
            renewed = await self._renew(keys=[self._keys.leased], args=[now, now + lease_s, *event_ids])
        return members(renewed)

    async def mark_sent(self, event_id: str, now: float) -> None:
        await self.mark_sent_many([event_id], now)

    async def mark_sent_many(self, event_ids: Sequence[str], now: float) -> None:
        """mark_sent for the lot in one compare-and-set script (after an MGET of the entries this ledger did not
        lease). An entry changed since it was read or leased makes the script write nothing; then every entry is
        read again and the decision made afresh, as _transition does for one."""
        ids = list(dict.fromkeys(event_ids))
        if not ids:
            return
        keys = self._keys
        leased = {event_id: self._leased.pop(event_id) for event_id in ids if event_id in self._leased}
        with store_errors():
            for _ in range(MAX_CONFLICTS):
                unknown = [event_id for event_id in ids if event_id not in leased]
                blobs: dict[str, bytes | str | None] = dict(leased)
                if unknown:
                    found = await self._client.mget([keys.entry(event_id) for event_id in unknown])
                    blobs.update(zip(unknown, found, strict=True))
                leased = {}  # after a conflict, everything is read again
                entry_keys: list[str] = []
                args: list[EncodableT] = [self._ttl_s, now, now - self._ttl_s, keys.window("")]
                for event_id in ids:
                    read = blobs[event_id]
                    if read is None:
                        continue
                    blob = raw(read)
                    entry = decode_entry(blob)
                    if entry.state is not State.PENDING:
                        continue
                    sent = msgspec.structs.replace(entry, state=State.SENT, sent_at=now)
                    entry_keys.append(keys.entry(event_id))
                    args += [blob, encode(sent), event_id, entry.units, hour_floor(entry.timestamp)]
                    args.append(entry.billing_customer)
                if not entry_keys:
                    return
                changed = await self._mark_sent_many(
                    keys=[
                        keys.due,
                        keys.leased,
                        keys.held,
                        keys.age,
                        keys.stats,
                        keys.sent_index,
                        keys.hours,
                        *entry_keys,
                    ],
                    args=args,
                )
                if not changed:
                    return
        raise StoreUnavailable(f"{len(ids)} entries kept changing; retry later")

    async def mark_retry(self, event_id: str, next_attempt_at: float, error: str) -> None:
        keys = self._keys

        async def commit(blob: bytes, entry: Entry) -> Any:
            retried = msgspec.structs.replace(
                entry, attempts=entry.attempts + 1, next_attempt_at=next_attempt_at, last_error=error
            )
            return await self._mark_retry(
                keys=[keys.entry(event_id), keys.due, keys.leased, keys.held],
                args=[blob, encode(retried), event_id, next_attempt_at],
            )

        await self._transition(event_id, commit)

    async def mark_rejected(self, event_id: str, message: str, now: float) -> None:
        await self._park_entry(event_id, ParkReason.BILLER_REJECTED, message, now)

    async def mark_too_old(self, event_id: str, message: str, now: float) -> None:
        await self._park_entry(event_id, ParkReason.TOO_OLD, message, now)

    async def _park_entry(self, event_id: str, reason: ParkReason, message: str, now: float) -> None:
        keys = self._keys

        async def commit(blob: bytes, entry: Entry) -> Any:
            rejected = msgspec.structs.replace(entry, state=State.PARKED, last_error=message)
            return await self._mark_rejected(
                keys=[
                    keys.entry(event_id),
                    keys.due,
                    keys.leased,
                    keys.held,
                    keys.age,
                    keys.stats,
                    keys.parked(event_id),
                    keys.parked_index(),
                    keys.parked_index(reason),
                    keys.hours,
                    *keys.every_reason_index(),
                ],
                args=[
                    blob,
                    encode(rejected),
                    event_id,
                    -entry.units,
                    encode(entry_record(rejected, reason, message, now)),
                    now,
                    self._ttl_s,
                    keys.window(""),
                    # Only what the biller rejected is owed to it (sent_windows); too_old never reached it.
                    hour_floor(entry.timestamp) if reason is ParkReason.BILLER_REJECTED else "",
                    entry.billing_customer,
                    entry.units,
                ],
            )

        await self._transition(event_id, commit)

    async def requeue(
        self, event_id: str, now: float, *, billing_customer: str | None = None, timestamp: int | None = None
    ) -> Entry | None:
        keys = self._keys
        with store_errors():
            for _ in range(MAX_CONFLICTS):
                entry_blob, parked_blob = await self._client.mget([keys.entry(event_id), keys.parked(event_id)])
                if entry_blob is None or parked_blob is None:
                    return None
                entry = decode_entry(raw(entry_blob))
                reason = decode_parked(raw(parked_blob)).reason
                if entry.state is not State.PARKED or reason not in REQUEUEABLE:
                    return None
                counted = hour_floor(entry.timestamp) if reason is ParkReason.BILLER_REJECTED else ""
                requeued = msgspec.structs.replace(
                    entry,
                    state=State.PENDING,
                    billing_customer=billing_customer or entry.billing_customer,
                    attempts=0,
                    next_attempt_at=now,
                    timestamp=entry.timestamp if timestamp is None else timestamp,
                )
                if await self._requeue(
                    keys=[
                        keys.entry(event_id),
                        keys.parked(event_id),
                        keys.due,
                        keys.age,
                        keys.stats,
                        keys.parked_index(),
                        keys.hours,
                        *keys.every_reason_index(),
                    ],
                    args=[
                        entry_blob,
                        parked_blob,
                        encode(requeued),
                        event_id,
                        now,
                        entry.created_at,
                        entry.units,
                        self._ttl_s,
                        keys.window(""),
                        counted,
                        entry.billing_customer,
                        -entry.units,
                    ],
                ):
                    return requeued
        raise StoreUnavailable(f"entry {event_id!r} kept changing; retry later")

    async def _transition(self, event_id: str, commit: Callable[[bytes, Entry], Awaitable[Any]]) -> None:
        """Change a pending entry by compare-and-set; a no-op once the entry is gone or no longer pending.

        `commit` decides the new entry from the one read (the rules stay in Python and msgspec) and runs a script
        that writes only if the entry still has the bytes read, answering 1; on 0 (it changed in between, say
        another replica's mark after a lease ran out) the entry is read again and the decision made afresh.
        """
        leased = self._leased.pop(event_id, None)
        with store_errors():
            for _ in range(MAX_CONFLICTS):
                # The bytes this ledger leased, if it did, the first time: the script checks them anyway.
                read = leased if leased is not None else await self._client.get(self._keys.entry(event_id))
                leased = None
                if read is None:
                    return
                blob = raw(read)
                entry = decode_entry(blob)
                if entry.state is not State.PENDING or await commit(blob, entry):
                    return
        raise StoreUnavailable(f"entry {event_id!r} kept changing; retry later")

    async def get(self, event_id: str) -> Entry | None:
        with store_errors():
            blob = await self._client.get(self._keys.entry(event_id))
        return None if blob is None else decode_entry(raw(blob))

    async def get_parked(self, key: str) -> Parked | None:
        with store_errors():
            blob = await self._client.get(self._keys.parked(key))
        return None if blob is None else decode_parked(raw(blob))

    async def list_parked(self, reason: ParkReason | None = None, limit: int = 100) -> list[Parked]:
        if limit <= 0:
            return []
        with store_errors():
            parked_keys = members(await self._client.zrange(self._keys.parked_index(reason), 0, limit - 1))
            if not parked_keys:
                return []
            blobs = await self._client.mget([self._keys.parked(key) for key in parked_keys])
        # A record replayed between the two reads is simply no longer listed.
        return [decode_parked(raw(blob)) for blob in blobs if blob is not None]

    async def stats(self) -> LedgerStats:
        keys = self._keys
        with store_errors():
            # MULTI/EXEC: one consistent snapshot, every read O(1) or O(log n).
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.zcount(keys.age, "-inf", "(inf")  # below the anchor
                pipe.zrangebyscore(keys.age, "-inf", "(inf", start=0, num=1, withscores=True)
                pipe.hmget(keys.stats, ["sent", "units_sent", "units_pending"])
                pipe.zcard(keys.parked_index())
                pending, oldest, counters, parked = await pipe.execute()
        sent, units_sent, units_pending = (int(value or 0) for value in counters)
        return LedgerStats(
            pending=int(pending),
            sent=sent,
            parked=int(parked),
            oldest_pending_at=float(oldest[0][1]) if oldest else None,
            units_sent=units_sent,
            units_pending=units_pending,
        )

    async def usage(self, since: int | None = None, until: int | None = None) -> list[CustomerUsage]:
        """Walk every entry with SCAN: a report for operators, so it costs no index memory and no write per event.

        Redis keeps a sent entry for GATEWAY_DEDUPE_TTL_S only, so a period older than that is reported from what
        is left (Stripe holds the complete record). SCAN does not block Redis; it may return a key twice (hence the
        set) and each entry is read whole, so every entry is counted once, in one state.
        """
        totals: dict[str, list[int]] = {}
        seen: set[bytes] = set()
        with store_errors():
            batch: list[bytes] = []
            async for key in self._client.scan_iter(match=glob_escape(self._keys.entry("")) + "*", count=1000):
                raw_key = raw(key)
                if raw_key not in seen:
                    seen.add(raw_key)
                    batch.append(raw_key)
                if len(batch) >= 1000:
                    self._add_usage(totals, await self._client.mget(batch), since, until)
                    batch = []
            if batch:
                self._add_usage(totals, await self._client.mget(batch), since, until)
        return [
            CustomerUsage(customer, events=events, units_sent=sent, units_pending=pending)
            for customer, (events, sent, pending) in sorted(totals.items())
        ]

    @staticmethod
    def _add_usage(
        totals: dict[str, list[int]], blobs: list[bytes | str | None], since: int | None, until: int | None
    ) -> None:
        for blob in blobs:
            if blob is None:  # expired between SCAN and MGET
                continue
            entry = decode_entry(raw(blob))
            if entry.state is State.PARKED:
                continue
            if (since is not None and entry.timestamp < since) or (until is not None and entry.timestamp >= until):
                continue
            counts = totals.setdefault(entry.billing_customer, [0, 0, 0])
            counts[0] += 1
            counts[1 if entry.state is State.SENT else 2] += entry.units

    async def ping(self) -> None:
        # A write, not a PING: only a write proves Redis accepts them now (not OOM, not a read-only replica).
        with store_errors():
            await self._client.incr(self._keys.heartbeat)
