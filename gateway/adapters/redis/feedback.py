"""The ledger's side of closing the loop with the biller, in Redis: error reports, polling cursors, reconciliation.

Keys (keys.py): `fr:<report id>` (reports applied), `cursors`, `ix:sent` (sent ids by sent_at), `h:<hour>` and
`ix:hours` (units per customer and hour, kept by the scripts that move entries in and out of sent and
biller_rejected), `fixes` and `ix:fixes` (the corrections repair sent).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from redis.asyncio import Redis
from redis.typing import EncodableT

from gateway.adapters.redis import scripts
from gateway.adapters.redis.codec import decode_entry, encode, members, raw, text
from gateway.adapters.redis.errors import MAX_CONFLICTS, store_errors
from gateway.adapters.redis.keys import Keys
from gateway.domain.errors import StoreUnavailable
from gateway.domain.feedback import Rejection
from gateway.domain.ledger import Entry, ParkReason, State, entry_record, sent_within
from gateway.domain.ports import FeedbackLedger
from gateway.domain.reconcile import Correction, LedgerWindow, counted, hour_floor, with_correction

decode_correction = msgspec.msgpack.Decoder(Correction).decode


class RedisFeedback(FeedbackLedger):
    """FeedbackLedger for RedisLedger, which provides its client, key layout and dedupe TTL, and calls
    `_register_feedback` once; `get` is the ledger's own."""

    _client: Redis
    _keys: Keys
    _ttl_s: int

    def _register_feedback(self) -> None:
        self._reject_sent = scripts.register(self._client, "reject_sent")
        self._set_cursor = scripts.register(self._client, "set_cursor")
        self._record_correction = scripts.register(self._client, "record_correction")

    async def sent_between(self, since: float, until: float, billing_customer: str | None = None) -> list[Entry]:
        keys = self._keys
        with store_errors():
            ids = members(await self._client.zrangebyscore(keys.sent_index, since, until))
            if not ids:
                return []
            blobs = await self._client.mget([keys.entry(event_id) for event_id in ids])
        # The index and the entries are two reads: keep what is still sent, in range, when read.
        entries = (decode_entry(raw(blob)) for blob in blobs if blob is not None)
        return sent_within(entries, since, until, billing_customer)

    async def report_handled(self, report_id: str) -> bool:
        with store_errors():
            return bool(await self._client.exists(self._keys.report(report_id)))

    async def reject_sent(self, report_id: str, rejections: Sequence[Rejection], now: float) -> int | None:
        """One script claims the report and moves the entries, by compare-and-set on every entry read (as
        mark_sent_many): when one changed in between, nothing is written and every entry is read again."""
        keys = self._keys
        messages: dict[str, str] = {}
        for rejection in rejections:  # a repeated id is moved by its first rejection, as in MemoryLedger
            messages.setdefault(rejection.event_id, rejection.message)
        ids = list(messages)
        with store_errors():
            for _ in range(MAX_CONFLICTS):
                blobs = await self._client.mget([keys.entry(event_id) for event_id in ids]) if ids else []
                entry_keys: list[str] = []
                moving: list[EncodableT] = []
                units = 0
                for event_id, read in zip(ids, blobs, strict=True):
                    if read is None:
                        continue
                    blob = raw(read)
                    entry = decode_entry(blob)
                    if entry.state is not State.SENT:
                        continue
                    message = messages[event_id]
                    parked = msgspec.structs.replace(entry, state=State.PARKED, last_error=message)
                    record = entry_record(parked, ParkReason.BILLER_REJECTED, message, now)
                    entry_keys.append(keys.entry(event_id))
                    moving += [blob, encode(parked), encode(record), event_id, entry.units, -entry.units]
                    moving += [hour_floor(entry.timestamp), entry.billing_customer]
                    units += entry.units
                reply = await self._reject_sent(
                    keys=[
                        keys.report(report_id),
                        keys.stats,
                        keys.sent_index,
                        keys.parked_index(),
                        keys.parked_index(ParkReason.BILLER_REJECTED),
                        keys.hours,
                        *entry_keys,
                    ],
                    args=[self._ttl_s, now, keys.window(""), keys.parked(""), -len(entry_keys), -units, *moving],
                )
                if reply == -1:
                    return None
                if not reply:
                    return len(entry_keys)
        raise StoreUnavailable(f"the entries of report {report_id!r} kept changing; retry later")

    async def get_cursor(self, name: str) -> float | None:
        with store_errors():
            value = await self._client.hget(self._keys.cursors, name)
        return None if value is None else float(text(value))

    async def set_cursor(self, name: str, value: float) -> None:
        with store_errors():
            await self._set_cursor(keys=[self._keys.cursors], args=[name, repr(float(value))])

    async def sent_windows(self, since: int, until: int, billing_customer: str | None = None) -> list[LedgerWindow]:
        """From the hour counters: whole hours, those starting in [hour_floor(since), until)."""
        keys = self._keys
        with store_errors():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.zrangebyscore(keys.hours, hour_floor(since), f"({until}")
                pipe.zrangebyscore(keys.fix_index, since, f"({until}")
                hours_reply, fix_ids = await pipe.execute()
            hours = [int(hour) for hour in members(hours_reply)]
            fields = None if billing_customer is None else [f"s:{billing_customer}", f"r:{billing_customer}"]
            async with self._client.pipeline(transaction=True) as pipe:
                for hour in hours:
                    if fields is None:
                        pipe.hgetall(keys.window(hour))
                    else:
                        pipe.hmget(keys.window(hour), fields)
                if fix_ids:
                    pipe.hmget(keys.fixes, members(fix_ids))
                replies = await pipe.execute()
        windows: dict[tuple[str, int], LedgerWindow] = {}
        for hour, reply in zip(hours, replies, strict=False):
            hour_counts = reply if fields is None else dict(zip(fields, reply, strict=True))
            for field, value in hour_counts.items():
                if value is None:
                    continue
                kind, _, customer = text(field).partition(":")
                current = windows.get((customer, hour)) or LedgerWindow(customer, hour, 0)
                if kind == "s":
                    current = msgspec.structs.replace(current, sent_units=int(value))
                else:
                    current = msgspec.structs.replace(current, rejected_units=int(value))
                windows[(customer, hour)] = current
        fixes = [decode_correction(raw(blob)) for blob in (replies[-1] if fix_ids else []) if blob is not None]
        for fix in fixes:
            if billing_customer not in (None, fix.billing_customer):
                continue
            key = (fix.billing_customer, fix.window_start)
            current = windows.get(key) or LedgerWindow(*key, 0)
            windows[key] = with_correction(current, fix)
        return counted(windows)

    async def record_correction(self, correction: Correction) -> bool:
        keys = self._keys
        with store_errors():
            recorded = await self._record_correction(
                keys=[keys.fixes, keys.fix_index],
                args=[correction.identifier, encode(correction), correction.window_start],
            )
        return bool(recorded)

    async def corrections(self, since: int | None = None, until: int | None = None) -> list[Correction]:
        keys = self._keys
        low = "-inf" if since is None else since
        high = "+inf" if until is None else f"({until}"
        with store_errors():
            identifiers = members(await self._client.zrangebyscore(keys.fix_index, low, high))
            if not identifiers:
                return []
            blobs = await self._client.hmget(keys.fixes, identifiers)
        found = [decode_correction(raw(blob)) for blob in blobs if blob is not None]
        return sorted(found, key=lambda fix: (fix.window_start, fix.billing_customer, fix.recorded_at, fix.identifier))
