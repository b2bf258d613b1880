"""Redis adapters: the shared store of several gateway replicas (`GATEWAY_STORE=redis://host:port/db`, CONTRACT 5).

Every replica (`gateway serve`, `gateway worker`, CLI commands) talks to one Redis through redis-py's asyncio
client. The rules of each port stay MemoryLedger's; what Redis adds is that they must hold across processes, so:

- every state change is ONE server-side step: a Lua script (Redis runs a script whole, with nothing interleaved),
  or a MULTI/EXEC transaction. Python never reads a key and then writes another on the strength of that read;
- Decimal carries and ledger rules are computed in Python (gateway.domain.units.settle, msgspec structs), and the
  scripts commit them only if what Python read is still what the server holds (compare-and-set). A script that
  finds its precondition broken writes nothing and says why, and Python retries with the fresh value;
- every script checks all of its preconditions before its first write. Redis refuses a write for lack of memory
  (maxmemory) only before a script's first write, and never stops one half-way, so a script writes all or nothing;
- any Redis failure (connection refused or lost, timeout, OOM, READONLY replica, ...) surfaces as StoreUnavailable:
  the delivery gets 503 and Ringside retries. The client's connections reconnect by themselves on the next call.

Key layout under the prefix P (default "gw:"; per-record keys and index keys have distinct first segments, so an
event id can never collide with an index):

    P e:<event id>       string  msgpack Entry, the claim of a billable event. Expires GATEWAY_DEDUPE_TTL_S after it
                                 is sent; pending and biller-rejected entries never expire.
    P p:<key>            string  msgpack Parked, the claim of a parked delivery (kept until it is replayed).
    P c:<customer>       string  the customer's carry, a Decimal in plain text (str(Decimal), exact).
    P q:due              zset    pending ids not leased, scored by next_attempt_at.
    P q:leased           zset    pending ids leased by a dispatcher, scored by the lease's deadline.
    P q:held             hash    leased id -> its next_attempt_at, restored to q:due when the lease ends.
    P q:age              zset    every pending id, scored by created_at (pending count, oldest pending).
                                 The three queues also hold ANCHOR at +inf (see the scripts): never an event id.
    P ix:parked          zset    every parked key, scored by parked_at; P ix:parked:<reason> the same per reason.
    P stats              hash    counters kept by the scripts: sent, units_sent, units_pending (stats is O(1)).
    P customers          hash    Ringside customer id -> billing customer id; P ix:customers (zset, score 0) keeps
                                 the ids in byte order for list().
    P m:<identifier>     string  the local ledger biller's claim on a meter event identifier;
    P meter_events       list    its meter events (msgpack MeterEvent) in the order they were first sent.
    P heartbeat          string  a counter ping() increments: the write that proves Redis accepts writes.

Values are msgpack-encoded msgspec structs with their field names: Decimals travel as strings, bytes bodies as
msgpack bin (byte-exact, non-UTF-8 included), floats as float64 (exact), and replicas of two versions can read each
other's records during a rolling upgrade (unknown fields are ignored, missing ones take their default).

Redis Cluster is not supported: the lease script reads entry keys it learns from the queue, which Cluster does not
allow. Use one primary (with replicas, Sentinel or a managed failover).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from decimal import Decimal
from typing import Any, Final, cast

import hiredis
import msgspec
import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError
from redis.typing import EncodableT
from redis.utils import HIREDIS_AVAILABLE

from gateway.domain.errors import BillerUnavailable, StoreUnavailable
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
    pending_entry,
)
from gateway.domain.ports import BatchBillingSink, BatchLedger, CustomerStore, Delivery, MeterEvent
from gateway.domain.units import ZERO, Rounding, settle

log = structlog.get_logger("gateway.redis")

DEFAULT_PREFIX: Final = "gw:"
# Longer than the oldest event ingest accepts (35 days) plus the signature tolerance, so that a late redelivery of a
# sent event is still a duplicate. Stripe's own identifier de-duplication only lasts "at least 24 hours"
# (docs/billers.md), so ours must outlive every redelivery the gateway would still accept.
DEFAULT_DEDUPE_TTL_S: Final = 40 * 24 * 3600

# A webhook must get its answer (or a 503) well within Ringside's delivery timeout: a dead Redis fails fast, a
# slow one is abandoned after SOCKET_TIMEOUT_S per try.
SOCKET_TIMEOUT_S: Final = 2.0
# Connections per process; every step is one short script, so a few dozen serve thousands of deliveries a second.
MAX_CONNECTIONS: Final = 64
POOL_WAIT_S: Final = 5.0
# A pooled connection idle this long is PINGed before use, so a Redis restart is noticed before a command is lost.
HEALTH_CHECK_INTERVAL_S: Final = 15
# Retries re-dial a broken pooled connection (the first command after a Redis restart fails on it). Re-sending a
# script after a lost reply is safe: each one re-checks its preconditions (a second record of an id is answered as
# a duplicate, still a 2xx after a durable record; a second compare-and-set finds the new value and stops; a second
# lease leases other entries, and the first ones come back when their lease runs out).
_RETRY = Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=2)
# Optimistic steps retry on a conflict; every conflict means another call succeeded, so progress is certain, and
# this bound only turns pathological contention into a 503 (Ringside retries) instead of an endless loop.
_MAX_CONFLICTS: Final = 1000
# Records sent in one _RECORD_MANY at most: bounds the time one script holds Redis (~10 commands per record).
_RECORD_BATCH: Final = 128
# Customers whose last known carry a ledger remembers (see RedisLedger.record); past this many it forgets them all.
_CARRY_HINTS: Final = 10_000

_encode = msgspec.msgpack.Encoder().encode
_decode_entry = msgspec.msgpack.Decoder(Entry).decode
_decode_parked = msgspec.msgpack.Decoder(Parked).decode
_decode_meter_event = msgspec.msgpack.Decoder(MeterEvent).decode


def connect(url: str, *, max_connections: int = MAX_CONNECTIONS) -> Redis:
    """A client for `redis://host:port/db` (or `rediss://`): no I/O until the first command.

    Bytes in, bytes out (no decode_responses): stored records are binary msgpack. The pool is a blocking one: under
    a burst, calls queue for a connection (up to POOL_WAIT_S) instead of failing at once or opening one connection
    per concurrent delivery. The client owns its pool and closes it with `aclose()`.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=POOL_WAIT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
        retry=_RETRY,
        client_name="ringside-gateway",
    )
    if HIREDIS_AVAILABLE:
        pool.connection_class = _packing_with_hiredis(pool.connection_class)
    return Redis.from_pool(pool)


class _HiredisPacking:
    """Commands packed by hiredis.pack_command (C) rather than redis-py's asyncio packer (Python), which cost the
    dispatcher a quarter of its CPU per event here: the same bytes (RESP arrays of bulk strings), eight times faster.
    redis-py's synchronous client does the same (HiredisRespSerializer); its asyncio connection does not. Command
    names of several words and what hiredis refuses (None, bool: redis-py raises DataError for them) go to
    redis-py's own packer."""

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        if not (isinstance(args[0], str) and " " in args[0]):
            with suppress(TypeError):
                return [hiredis.pack_command(args)]  # type: ignore[arg-type]  # its stub types a 1-tuple
        return cast("list[bytes]", super().pack_command(*args))  # type: ignore[misc]


def _packing_with_hiredis(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """The pool's own connection class (TCP, TLS or Unix socket, as the URL chose) with _HiredisPacking first."""
    return type(f"Hiredis{connection_class.__name__}", (_HiredisPacking, connection_class), {})


class DurabilityWarning(msgspec.Struct, frozen=True):
    """One way a Redis server could forget acknowledged events or claims: a log event name and what to do."""

    event: str
    message: str


async def durability_warnings(client: Redis) -> list[DurabilityWarning]:
    """What is wrong with this Redis as a home for billing data; empty when nothing is. Never raises.

    - `appendonly no`: without AOF, a restart loses every write since the last RDB snapshot (or all of them), so
      events Ringside was told were recorded could be lost, and claims forgotten (a redelivery billed again).
    - a `maxmemory-policy` other than `noeviction`: Redis would evict claims and pending entries under memory
      pressure instead of refusing writes (which become 503s, and Ringside retries).
    """
    try:
        appendonly = _config_value(await client.config_get("appendonly"), "appendonly")
        eviction = _config_value(await client.config_get("maxmemory-policy"), "maxmemory-policy")
    except RedisError as exc:
        # Managed Redis services often disable CONFIG: say that we could not check rather than stay silent.
        return [DurabilityWarning("redis.durability_unknown", f"could not read Redis persistence settings: {exc}")]
    warnings = []
    if appendonly != "yes":
        warnings.append(
            DurabilityWarning(
                "redis.no_persistence",
                "Redis has no AOF persistence (appendonly no): acknowledged events could be lost on a Redis "
                "restart. Run Redis for billing data with appendonly yes (README, Redis).",
            )
        )
    if eviction not in ("noeviction", ""):
        warnings.append(
            DurabilityWarning(
                "redis.eviction_enabled",
                f"maxmemory-policy is {eviction}: Redis may evict claims and pending entries under memory "
                "pressure; set maxmemory-policy noeviction (README, Redis).",
            )
        )
    return warnings


async def warn_if_volatile(client: Redis) -> None:
    """At start-up: log a structlog warning for each durability_warnings() finding. Never raises."""
    for warning in await durability_warnings(client):
        log.warning(warning.event, message=warning.message)


def _config_value(reply: Any, name: str) -> str:
    """One value of a CONFIG GET reply ("" for a parameter the server does not know), whatever the key type.

    redis-py decodes CONFIG replies to str even without decode_responses; accept bytes too, to be independent of it.
    """
    values = {_text(key): _text(value) for key, value in dict(reply).items()}
    return values.get(name, "")


@contextmanager
def _store_errors() -> Iterator[None]:
    """Translate redis-py's errors at the boundary: nothing named `redis.*` travels upward."""
    try:
        yield
    except RedisError as exc:
        raise StoreUnavailable(f"Redis is unavailable: {exc}") from exc


class _Keys:
    """The key layout of the module docstring, under one prefix."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def entry(self, event_id: str) -> str:
        return f"{self.prefix}e:{event_id}"

    def parked(self, key: str) -> str:
        return f"{self.prefix}p:{key}"

    def carry(self, customer: str) -> str:
        return f"{self.prefix}c:{customer}"

    def meter_event(self, identifier: str) -> str:
        return f"{self.prefix}m:{identifier}"

    def parked_index(self, reason: ParkReason | None = None) -> str:
        return f"{self.prefix}ix:parked" if reason is None else f"{self.prefix}ix:parked:{reason.value}"

    def every_reason_index(self) -> list[str]:
        return [self.parked_index(reason) for reason in ParkReason]

    @property
    def due(self) -> str:
        return f"{self.prefix}q:due"

    @property
    def leased(self) -> str:
        return f"{self.prefix}q:leased"

    @property
    def held(self) -> str:
        return f"{self.prefix}q:held"

    @property
    def age(self) -> str:
        return f"{self.prefix}q:age"

    @property
    def stats(self) -> str:
        return f"{self.prefix}stats"

    @property
    def customers(self) -> str:
        return f"{self.prefix}customers"

    @property
    def customer_index(self) -> str:
        return f"{self.prefix}ix:customers"

    @property
    def meter_events(self) -> str:
        return f"{self.prefix}meter_events"

    @property
    def heartbeat(self) -> str:
        return f"{self.prefix}heartbeat"


# -- Scripts ----------------------------------------------------------------------------------------------------
# Each reads and checks first, then writes; none does arithmetic of its own (values arrive as the exact strings
# Python wrote: Redis parses scores with strtod, so floats round-trip exactly, and Lua's numbers would print a
# 15-digit unit count as 1e+15). An error after a script's first write would leave it half done, so every argument
# a write takes is formed in Python and well-formed by construction (negative counts included: Redis refuses "-0").

# The queues (q:due, q:leased, q:age) each hold ANCHOR, scored +inf, so that Redis keeps them in its skiplist encoding.
# Why: a sorted set of up to 128 short members is a listpack, where ZADD walks the whole list to find its place, and
# the dispatcher keeps these sets that small (it leases what is recorded within milliseconds; an emptied set is deleted
# and the next ZADD makes a listpack again). Measured with the bench's load (INFO commandstats): ZADD cost 3.9 us a
# call, a third of Redis's time, against 0.6 us in a skiplist under the same load. A member longer than
# zset-max-listpack-value (64 bytes unless configured higher: then the queues stay listpacks, only slower) makes and
# keeps a set a skiplist, and the anchor is never removed, so the set is never emptied. It starts with a NUL, which no
# event id has (ids are printable), and every read of a queue stops below +inf (ZRANGEBYSCORE to now, ZCOUNT and the
# oldest entry to "(inf"). `zadd` anchors a queue before its first ZADD in a script: after a ZREM, or as the script's
# first write, so that Redis's out-of-memory refusal still hits the first write only. (A replica of an earlier
# version, during a rolling upgrade, counts the anchor as one more pending entry in its stats; its leases never see
# it.)
ANCHOR = "\x00anchor: a member over 64 bytes keeps this sorted set a skiplist in Redis; never an event id"
_ANCHORED = """
local ANCHOR = '\\0anchor: a member over 64 bytes keeps this sorted set a skiplist in Redis; never an event id'
local anchored = {}
local function anchor(key)
  if not anchored[key] then
    redis.call('ZADD', key, 'inf', ANCHOR)
    anchored[key] = true
  end
end
local function zadd(key, score, member)
  anchor(key)
  redis.call('ZADD', key, score, member)
end
"""

# record(): claim + carry + pending entry, for a batch of records. Why compare-and-set rather than the whole rule in
# Lua: the carry is an exact Decimal of up to ~40 fractional digits and its rule lives in units.settle; Lua has only
# doubles, so doing it there means a second, hand-written decimal adder to keep in step with settle(). Why not
# WATCH/MULTI: each in-flight WATCH pins a connection until EXEC (500 concurrent deliveries, 500 connections), costs
# three round trips, and a conflict needs a fresh read; this script answers a conflict with the current carry in the
# same reply, answers a duplicate with the existing entry, and commits claim, carry, queue and counters in one step.
# Each record is treated in turn, as if it ran alone after the ones before it (a second record of an id finds the
# first's entry; a customer's carry goes from one record to the next; a replay takes the place of the parked record it
# replaces, which is deleted with its index entries). A record travels as two arguments, its entry blob and the rest as
# one msgpack array (Redis's Lua has cmsgpack; it cannot read msgpack's bin type, hence the blob apart), so a batch of a
# hundred costs the client ~200 arguments to encode rather than ~1,000. Key names are built here from the prefixes, as
# _LEASE does, which is one more reason Redis Cluster is not supported. A record's preconditions are checked before its
# writes; the first write of the script is the only one Redis can refuse (maxmemory), so a refusal leaves nothing
# written, and a batch is all or nothing, like a single record.
_RECORD_MANY = (
    _ANCHORED
    + """
-- KEYS: 1 q:due, 2 q:age, 3 stats, 4.. ix:parked and ix:parked:<reason> for every reason
-- ARGV: 1 prefix of entry keys, 2 of parked keys, 3 of carry keys, 4 msgpack array of records, each an array
--       {event id, next_attempt_at, created_at, units, settles the carry (bool), the carry Python settled from
--        ('' = none), the new carry, the billing customer, the parked key replaced ('' = none)}; 4 + i the entry
--       blob of record i
-- Answers two items per record: 'created' '', 'exists' <entry blob>, 'parked' '', or 'carry' <current carry>.
local answer = {}
local units_pending = 0
for i, r in ipairs(cmsgpack.unpack(ARGV[4])) do
  local id = r[1]
  local entry_key = ARGV[1] .. id
  local existing = redis.call('GET', entry_key)
  local carry_key = ARGV[3] .. r[8]
  local carry = r[5] and (redis.call('GET', carry_key) or '') or ''
  if existing then
    answer[#answer + 1] = 'exists'
    answer[#answer + 1] = existing
  elseif r[9] ~= id and redis.call('EXISTS', ARGV[2] .. id) == 1 then
    answer[#answer + 1] = 'parked'
    answer[#answer + 1] = ''
  elseif r[5] and carry ~= r[6] then
    answer[#answer + 1] = 'carry'
    answer[#answer + 1] = carry
  else
    anchor(KEYS[1])
    anchor(KEYS[2])
    redis.call('SET', entry_key, ARGV[4 + i])
    if r[5] then redis.call('SET', carry_key, r[7]) end
    redis.call('ZADD', KEYS[1], r[2], id)
    redis.call('ZADD', KEYS[2], r[3], id)
    units_pending = units_pending + r[4]
    if r[9] ~= '' then
      redis.call('DEL', ARGV[2] .. r[9])
      for k = 4, #KEYS do redis.call('ZREM', KEYS[k], r[9]) end
    end
    answer[#answer + 1] = 'created'
    answer[#answer + 1] = ''
  end
end
if units_pending ~= 0 then redis.call('HINCRBY', KEYS[3], 'units_pending', units_pending) end
return answer
"""
)

_PARK = """
-- KEYS: 1 entry of this key, 2 parked record, 3 ix:parked, 4 ix:parked:<reason>
-- ARGV: 1 parked blob, 2 key, 3 parked_at
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
return 1
"""

# Expired leases come back first (a crashed dispatcher's entries), then due ids move from q:due to q:leased, all in
# one step, so two dispatchers can never take the same id: the second finds it gone from q:due.
_LEASE = (
    _ANCHORED
    + """
-- KEYS: 1 q:due, 2 q:leased, 3 q:held
-- ARGV: 1 now, 2 limit, 3 lease deadline, 4 prefix of entry keys
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])) do
  local due_at = redis.call('HGET', KEYS[3], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  if due_at then zadd(KEYS[1], due_at, id) end
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local leased = {}
for i = 1, #due, 2 do
  local id, due_at = due[i], due[i + 1]
  redis.call('ZREM', KEYS[1], id)
  local blob = redis.call('GET', ARGV[4] .. id)
  if blob then
    zadd(KEYS[2], ARGV[3], id)
    redis.call('HSET', KEYS[3], id, due_at)
    leased[#leased + 1] = blob
  end
end
return leased
"""
)

_RELEASE = (
    _ANCHORED
    + """
-- KEYS: 1 q:due, 2 q:leased, 3 q:held.  ARGV: the ids
for _, id in ipairs(ARGV) do
  local due_at = redis.call('HGET', KEYS[3], id)
  if due_at then
    redis.call('ZREM', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    zadd(KEYS[1], due_at, id)
  end
end
return 0
"""
)

# The three marks compare the entry with the bytes Python decided from (ARGV[1]) and write nothing when it changed
# in between; Python then re-reads and decides again (usually: it is no longer pending, so nothing to do).
# mark_sent for a batch, all or nothing: every entry must still have the bytes read, or nothing is written and the
# positions that changed are answered (Python reads them again and decides afresh).
_MARK_SENT_MANY = """
-- KEYS: 1 q:due, 2 q:leased, 3 q:held, 4 q:age, 5 stats, then one entry key per entry
-- ARGV: 1 dedupe TTL in seconds, then per entry i (from 0) at 2 + 4i: the blob read, the new blob, the event id,
--       its units
local changed = {}
for i = 6, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[2 + 4 * (i - 6)] then changed[#changed + 1] = i - 6 end
end
if #changed > 0 then return changed end
local units = 0
for i = 6, #KEYS do
  local at = 2 + 4 * (i - 6)
  local id = ARGV[at + 2]
  redis.call('SET', KEYS[i], ARGV[at + 1], 'EX', ARGV[1])
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
  units = units + tonumber(ARGV[at + 3])
end
redis.call('HINCRBY', KEYS[5], 'sent', #KEYS - 5)
redis.call('HINCRBY', KEYS[5], 'units_sent', units)
redis.call('HINCRBY', KEYS[5], 'units_pending', 0 - units)  -- never -units: -0 is not an integer to Redis
return changed
"""

_MARK_RETRY = (
    _ANCHORED
    + """
-- KEYS: 1 entry, 2 q:due, 3 q:leased, 4 q:held
-- ARGV: 1 entry blob read, 2 new blob, 3 event id, 4 next_attempt_at
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
anchor(KEYS[2])
redis.call('SET', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('HDEL', KEYS[4], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
return 1
"""
)

_MARK_REJECTED = """
-- KEYS: 1 entry, 2 q:due, 3 q:leased, 4 q:held, 5 q:age, 6 stats, 7 parked record, 8 ix:parked,
--       9 ix:parked:<the reason it is parked for>, 10.. ix:parked:<reason> for every reason
-- ARGV: 1 entry blob read, 2 new blob, 3 event id, 4 minus the units, 5 parked blob, 6 parked_at
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('HDEL', KEYS[4], ARGV[3])
redis.call('ZREM', KEYS[5], ARGV[3])
redis.call('HINCRBY', KEYS[6], 'units_pending', ARGV[4])
-- Overwrite, as MemoryLedger does: a rejection must always be recordable, never stuck on a conflict.
redis.call('SET', KEYS[7], ARGV[5])
for i = 10, #KEYS do redis.call('ZREM', KEYS[i], ARGV[3]) end
redis.call('ZADD', KEYS[8], ARGV[6], ARGV[3])
redis.call('ZADD', KEYS[9], ARGV[6], ARGV[3])
return 1
"""

# An operator's replay of a biller-rejected entry: both the entry and its parked record must still be the bytes
# Python decided from, so two concurrent replays requeue it once.
_REQUEUE = (
    _ANCHORED
    + """
-- KEYS: 1 entry, 2 parked record, 3 q:due, 4 q:age, 5 stats, 6 ix:parked, 7.. ix:parked:<reason> for every reason
-- ARGV: 1 entry blob read, 2 parked blob read, 3 new blob, 4 event id, 5 next_attempt_at, 6 created_at, 7 units
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
anchor(KEYS[3])
anchor(KEYS[4])
redis.call('SET', KEYS[1], ARGV[3])
redis.call('DEL', KEYS[2])
for i = 6, #KEYS do redis.call('ZREM', KEYS[i], ARGV[4]) end
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[6], ARGV[4])
redis.call('HINCRBY', KEYS[5], 'units_pending', ARGV[7])
return 1
"""
)

# The local ledger biller: each event recorded unless its identifier is known, in order; 1 (recorded) or 0 each.
_SEND_MANY = """
-- KEYS: 1 meter_events, then m:<identifier> per event.  ARGV: the meter event blobs, in the same order
local stored = {}
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX') then
    redis.call('RPUSH', KEYS[1], ARGV[i - 1])
    stored[i - 1] = 1
  else
    stored[i - 1] = 0
  end
end
return stored
"""


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _members(reply: object) -> list[str]:
    """ZRANGE without scores answers a list of members (redis-py's return type covers every ZRANGE form)."""
    return [_text(member) for member in cast("list[bytes | str]", reply)]


def _glob_escape(text: str) -> str:
    """A literal prefix in a SCAN MATCH pattern: glob's special characters escaped."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


def _raw(value: bytes | str) -> bytes:
    """The client never decodes replies (no decode_responses), but redis-py's types cannot know it."""
    return value if isinstance(value, bytes) else value.encode()


class _Waiting:
    """A record() waiting for its batch; `future` belongs to the caller's loop. A caller that has gone (cancelled)
    is skipped; its record stands, as a durable record always does."""

    __slots__ = ("claim", "conflicts", "future", "now", "replaces", "rounding", "settles")

    def __init__(
        self, claim: Claim, rounding: Rounding, now: float, replaces: str | None, future: asyncio.Future[Recorded]
    ) -> None:
        self.claim = claim
        self.rounding = rounding
        self.now = now
        self.replaces = replaces
        self.future = future
        self.settles = rounding is Rounding.CARRY
        self.conflicts = 0

    def settle(self, recorded: Recorded) -> None:
        if not self.future.done():
            self.future.set_result(recorded)


class RedisLedger(BatchLedger):
    """The ledger in Redis, with MemoryLedger's semantics, shared by every replica.

    Invariants: an id is claimed by at most one entry or one parked record (a biller-rejected entry keeps its entry
    and gains a parked record of the same key); each method is one atomic server-side step; a pending id is in
    exactly one of q:due and q:leased, so a lease is held by one dispatcher at a time, and an expired lease is
    taken over by the next lease_due of any replica; sent entries expire `dedupe_ttl_s` after they are sent,
    pending ones never. lease_due orders by next_attempt_at, then by event id (MemoryLedger: then by created_at).
    """

    def __init__(
        self, client: Redis, *, prefix: str = DEFAULT_PREFIX, dedupe_ttl_s: int = DEFAULT_DEDUPE_TTL_S
    ) -> None:
        if dedupe_ttl_s <= 0:
            raise ValueError("dedupe_ttl_s must be positive")
        self._client = client
        self._keys = _Keys(prefix)
        self._ttl_s = int(dedupe_ttl_s)
        self._record_many = client.register_script(_RECORD_MANY)
        # Records waiting for the next _RECORD_MANY, and the task that sends them (see record()).
        self._waiting: list[_Waiting] = []
        self._sender: asyncio.Task[None] | None = None
        # customer -> the carry this ledger last wrote or read for them: the hint `record` sends instead of a GET.
        self._carry_hints: dict[str, bytes | str | None] = {}
        self._park = client.register_script(_PARK)
        self._lease = client.register_script(_LEASE)
        self._release = client.register_script(_RELEASE)
        self._mark_sent_many = client.register_script(_MARK_SENT_MANY)
        self._mark_retry = client.register_script(_MARK_RETRY)
        self._mark_rejected = client.register_script(_MARK_REJECTED)
        self._requeue = client.register_script(_REQUEUE)

    def __repr__(self) -> str:
        return f"RedisLedger(prefix={self._keys.prefix!r})"

    async def record(self, claim: Claim, rounding: Rounding, now: float, *, replaces: str | None = None) -> Recorded:
        """Group commit, as SqliteDatabase does it: records made while a batch is on its way to Redis wait, and go
        together in the next one (at most _RECORD_BATCH), so the client encodes and sends one command per batch
        rather than one per record; an idle ledger sends a lone record at once. Replays (`replaces`) included."""
        loop = asyncio.get_running_loop()
        waiting = _Waiting(claim, rounding, now, replaces, loop.create_future())
        self._waiting.append(waiting)
        sender = self._sender
        if sender is None or sender.done() or sender.get_loop() is not loop:
            self._sender = loop.create_task(self._send_waiting())
        return await waiting.future

    async def _send_waiting(self) -> None:
        while self._waiting:
            batch = self._waiting[:_RECORD_BATCH]
            del self._waiting[:_RECORD_BATCH]
            try:
                again = await self._record_batch(batch)
            except Exception as exc:  # every caller gets the failure; none is left waiting
                failure = exc if isinstance(exc, StoreUnavailable) else StoreUnavailable(f"Redis record failed: {exc}")
                for waiting in batch:
                    if not waiting.future.done():
                        waiting.future.set_exception(failure)
                continue
            self._waiting[:0] = again  # carry conflicts go first, in their order

    async def _record_batch(self, batch: list[_Waiting]) -> list[_Waiting]:
        """One _RECORD_MANY for the batch; settles each caller's future, and answers the records to send again
        (their carry changed under them: another process billed the customer)."""
        keys = self._keys
        hints = self._carry_hints
        unknown = list({w.claim.billing_customer for w in batch if w.settles and w.claim.billing_customer not in hints})
        with _store_errors():
            if unknown:
                # The carries this ledger has no hint for, in one round trip (the script re-checks them anyway).
                found = await self._client.mget([keys.carry(customer) for customer in unknown])
                for customer, known in zip(unknown, found, strict=True):
                    self._remember_carry(customer, known)
            carries: dict[str, str] = {}  # each customer's carry after the batch's records so far
            records: list[tuple[object, ...]] = []
            entries: list[Entry] = []
            for waiting in batch:
                claim, customer = waiting.claim, waiting.claim.billing_customer
                read = ""
                if waiting.settles:
                    read = carries[customer] if customer in carries else _text(hints.get(customer))
                units, settled = settle(claim.exact_units, Decimal(read) if read else ZERO, waiting.rounding)
                entry = pending_entry(claim, units, waiting.now)
                if waiting.settles:
                    carries[customer] = str(settled)
                entries.append(entry)
                record = (claim.event_id, waiting.now, waiting.now, units, waiting.settles, read, str(settled))
                records.append((*record, customer, waiting.replaces or ""))
            reply = await self._record_many(
                keys=[keys.due, keys.age, keys.stats, keys.parked_index(), *keys.every_reason_index()],
                args=[keys.entry(""), keys.parked(""), keys.carry(""), _encode(records), *map(_encode, entries)],
            )
        again: list[_Waiting] = []
        for position, (waiting, entry) in enumerate(zip(batch, entries, strict=True)):
            outcome, payload = _text(reply[2 * position]), reply[2 * position + 1]
            if outcome == "created":
                if waiting.settles:
                    self._remember_carry(entry.billing_customer, carries[entry.billing_customer])
                waiting.settle(Recorded(created=True, entry=entry))
            elif outcome == "exists":
                waiting.settle(Recorded(created=False, entry=_decode_entry(payload)))
            elif outcome == "parked":
                waiting.settle(Recorded(created=False, entry=None))
            else:  # "carry": another record of this customer won; settle again from its carry
                self._remember_carry(entry.billing_customer, payload)
                waiting.conflicts += 1
                if waiting.conflicts < _MAX_CONFLICTS:
                    again.append(waiting)
                elif not waiting.future.done():
                    waiting.future.set_exception(
                        StoreUnavailable(f"too much contention on the carry of {entry.billing_customer!r}; retry later")
                    )
        return again

    def _remember_carry(self, customer: str, carry: bytes | str | None) -> None:
        if len(self._carry_hints) >= _CARRY_HINTS and customer not in self._carry_hints:
            self._carry_hints.clear()
        self._carry_hints[customer] = carry

    async def park(self, parked: Parked) -> bool:
        keys = self._keys
        with _store_errors():
            claimed = await self._park(
                keys=[
                    keys.entry(parked.key),
                    keys.parked(parked.key),
                    keys.parked_index(),
                    keys.parked_index(parked.reason),
                ],
                args=[_encode(parked), parked.key, parked.parked_at],
            )
        return bool(claimed)

    async def lease_due(self, now: float, limit: int, lease_s: float) -> list[Entry]:
        if limit <= 0:
            return []
        keys = self._keys
        with _store_errors():
            blobs = await self._lease(
                keys=[keys.due, keys.leased, keys.held],
                args=[now, limit, now + lease_s, keys.entry("")],
            )
        return [_decode_entry(blob) for blob in blobs]

    async def release(self, event_ids: list[str]) -> None:
        if not event_ids:
            return
        keys = self._keys
        with _store_errors():
            await self._release(keys=[keys.due, keys.leased, keys.held], args=list(event_ids))

    async def mark_sent(self, event_id: str, now: float) -> None:
        await self.mark_sent_many([event_id], now)

    async def mark_sent_many(self, event_ids: Sequence[str], now: float) -> None:
        """mark_sent for the lot in one compare-and-set step: one MGET and one script per batch, not two round trips
        per entry. An entry that changed between the read and the script makes the script write nothing; then
        every entry is read again and the decision made afresh, as _transition does for one."""
        ids = list(dict.fromkeys(event_ids))
        if not ids:
            return
        keys = self._keys
        with _store_errors():
            for _ in range(_MAX_CONFLICTS):
                blobs = await self._client.mget([keys.entry(event_id) for event_id in ids])
                entry_keys: list[str] = []
                args: list[EncodableT] = [self._ttl_s]
                for event_id, read in zip(ids, blobs, strict=True):
                    if read is None:
                        continue
                    blob = _raw(read)
                    entry = _decode_entry(blob)
                    if entry.state is not State.PENDING:
                        continue
                    sent = msgspec.structs.replace(entry, state=State.SENT, sent_at=now)
                    entry_keys.append(keys.entry(event_id))
                    args += [blob, _encode(sent), event_id, entry.units]
                if not entry_keys:
                    return
                changed = await self._mark_sent_many(
                    keys=[keys.due, keys.leased, keys.held, keys.age, keys.stats, *entry_keys], args=args
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
                args=[blob, _encode(retried), event_id, next_attempt_at],
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
                    *keys.every_reason_index(),
                ],
                args=[
                    blob,
                    _encode(rejected),
                    event_id,
                    -entry.units,
                    _encode(entry_record(rejected, reason, message, now)),
                    now,
                ],
            )

        await self._transition(event_id, commit)

    async def requeue(
        self, event_id: str, now: float, *, billing_customer: str | None = None, timestamp: int | None = None
    ) -> Entry | None:
        keys = self._keys
        with _store_errors():
            for _ in range(_MAX_CONFLICTS):
                entry_blob, parked_blob = await self._client.mget([keys.entry(event_id), keys.parked(event_id)])
                if entry_blob is None or parked_blob is None:
                    return None
                entry = _decode_entry(_raw(entry_blob))
                if entry.state is not State.PARKED or _decode_parked(_raw(parked_blob)).reason not in REQUEUEABLE:
                    return None
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
                        *keys.every_reason_index(),
                    ],
                    args=[entry_blob, parked_blob, _encode(requeued), event_id, now, entry.created_at, entry.units],
                ):
                    return requeued
        raise StoreUnavailable(f"entry {event_id!r} kept changing; retry later")

    async def _transition(self, event_id: str, commit: Callable[[bytes, Entry], Awaitable[Any]]) -> None:
        """Change a pending entry by compare-and-set; a no-op once the entry is gone or no longer pending.

        `commit` decides the new entry from the one read (the rules stay in Python and msgspec) and runs a script
        that writes only if the entry still has the bytes read, answering 1; on 0 (it changed in between, say
        another replica's mark after a lease ran out) the entry is read again and the decision made afresh.
        """
        with _store_errors():
            for _ in range(_MAX_CONFLICTS):
                read = await self._client.get(self._keys.entry(event_id))
                if read is None:
                    return
                blob = _raw(read)
                entry = _decode_entry(blob)
                if entry.state is not State.PENDING or await commit(blob, entry):
                    return
        raise StoreUnavailable(f"entry {event_id!r} kept changing; retry later")

    async def get(self, event_id: str) -> Entry | None:
        with _store_errors():
            blob = await self._client.get(self._keys.entry(event_id))
        return None if blob is None else _decode_entry(_raw(blob))

    async def get_parked(self, key: str) -> Parked | None:
        with _store_errors():
            blob = await self._client.get(self._keys.parked(key))
        return None if blob is None else _decode_parked(_raw(blob))

    async def list_parked(self, reason: ParkReason | None = None, limit: int = 100) -> list[Parked]:
        if limit <= 0:
            return []
        with _store_errors():
            parked_keys = _members(await self._client.zrange(self._keys.parked_index(reason), 0, limit - 1))
            if not parked_keys:
                return []
            blobs = await self._client.mget([self._keys.parked(key) for key in parked_keys])
        # A record replayed between the two reads is simply no longer listed.
        return [_decode_parked(_raw(blob)) for blob in blobs if blob is not None]

    async def stats(self) -> LedgerStats:
        keys = self._keys
        with _store_errors():
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
        with _store_errors():
            batch: list[bytes] = []
            async for key in self._client.scan_iter(match=_glob_escape(self._keys.entry("")) + "*", count=1000):
                raw_key = _raw(key)
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
            entry = _decode_entry(_raw(blob))
            if entry.state is State.PARKED:
                continue
            if (since is not None and entry.timestamp < since) or (until is not None and entry.timestamp >= until):
                continue
            counts = totals.setdefault(entry.billing_customer, [0, 0, 0])
            counts[0] += 1
            counts[1 if entry.state is State.SENT else 2] += entry.units

    async def ping(self) -> None:
        # A write, not a PING: only a write proves Redis accepts them now (not OOM, not a read-only replica).
        with _store_errors():
            await self._client.incr(self._keys.heartbeat)


class RedisCustomers(CustomerStore):
    """Ringside customer id -> Stripe customer id: a hash, plus a score-0 zset that keeps the ids in byte order.

    Invariant: an id is in the hash exactly when it is in the zset; both change in one MULTI/EXEC.
    """

    def __init__(self, client: Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._keys = _Keys(prefix)

    async def get(self, ringside_id: str) -> str | None:
        with _store_errors():
            value = await self._client.hget(self._keys.customers, ringside_id)
        return None if value is None else _text(value)

    async def set(self, ringside_id: str, billing_id: str) -> None:
        with _store_errors():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(self._keys.customers, ringside_id, billing_id)
                pipe.zadd(self._keys.customer_index, {ringside_id: 0})
                await pipe.execute()

    async def set_many(self, pairs: Sequence[tuple[str, str]]) -> None:
        # A dict keeps each id's last pair, as the port requires; one MULTI/EXEC applies all of them or none.
        mapping: dict[EncodableT, EncodableT] = dict(pairs)
        if not mapping:
            return
        with _store_errors():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(self._keys.customers, mapping=mapping)
                pipe.zadd(self._keys.customer_index, {ringside_id: 0 for ringside_id, _ in pairs})
                await pipe.execute()

    async def delete(self, ringside_id: str) -> bool:
        with _store_errors():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hdel(self._keys.customers, ringside_id)
                pipe.zrem(self._keys.customer_index, ringside_id)
                removed, _ = await pipe.execute()
        return bool(removed)

    async def list(self, limit: int = 1000) -> list[tuple[str, str]]:
        if limit <= 0:
            return []
        with _store_errors():
            # Members of equal score are ordered by their bytes: UTF-8 byte order is code point order, as sorted().
            ids = _members(await self._client.zrange(self._keys.customer_index, 0, limit - 1))
            if not ids:
                return []
            billing_ids = await self._client.hmget(self._keys.customers, list(ids))
        # An id deleted between the two reads is simply no longer listed.
        pairs = zip(ids, billing_ids, strict=True)
        return [(ringside, _text(billing)) for ringside, billing in pairs if billing is not None]


class RedisBiller(BatchBillingSink):
    """The local ledger biller in Redis: records meter events instead of sending them (CONTRACT 5).

    Invariant: one event per identifier, like Stripe's de-duplication of `identifier`; a second send returns
    ALREADY_SENT and keeps the first. A Redis failure is a transient biller failure (BillerUnavailable), so the
    dispatcher retries the entry rather than parking it. It takes batches like Stripe's v2 stream (up to
    `max_batch` events in one script), so that it costs the dispatcher one round trip per batch, not per event.
    """

    name = "ledger"
    max_batch = 100

    def __init__(self, client: Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._keys = _Keys(prefix)
        self._send_many = client.register_script(_SEND_MANY)

    async def send_batch(self, events: Sequence[MeterEvent]) -> list[Delivery]:
        """Record every event in one step; SENT or ALREADY_SENT for each, in order, or nothing at all."""
        keys = self._keys
        try:
            with _store_errors():
                stored = await self._send_many(
                    keys=[keys.meter_events, *(keys.meter_event(event.identifier) for event in events)],
                    args=[_encode(event) for event in events],
                )
        except StoreUnavailable as exc:
            raise BillerUnavailable(exc.message, cause="store_unavailable") from exc
        return [Delivery.SENT if flag else Delivery.ALREADY_SENT for flag in stored]

    async def send(self, event: MeterEvent) -> Delivery:
        return (await self.send_batch([event]))[0]

    async def events(self) -> list[MeterEvent]:
        """Every recorded meter event, in the order they were first sent."""
        with _store_errors():
            blobs = await self._client.lrange(self._keys.meter_events, 0, -1)
        return [_decode_meter_event(_raw(blob)) for blob in blobs]

    async def close(self) -> None:
        # The client belongs to the container (it is shared with the ledger), which closes it.
        return None
