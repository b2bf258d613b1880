"""asyncpg against psycopg 3 on the gateway's hot PostgreSQL statements (issue 17: pick the driver by measurement).

    flock /work/wt/bench.lock .venv/bin/python -m bench.pg_drivers [--rounds 3] [--seconds 3] [--only record-32,lease]

Needs the bench extra (`pip install -e '.[bench]'`: psycopg[binary,pool]). Each shape (bench/pg_driver_shapes.py)
runs through asyncpg, asyncpg-noreset (its pool skips the reset query on release, which the gateway's pool runs),
psycopg, and psycopg-pipeline (psycopg's pipeline mode), on one uvloop event loop (as the gateway runs), each driver
with a pool of 4 connections of its own (recording.MAX_IN_FLIGHT); --rtt-ms puts a delay proxy (bench/delay_proxy.py)
between the pools and the server, as a network would:

- record-1, record-32: recording.py's group commit of 1 or 32 new claims (advisory locks, two look-ups, the carry
  upsert, the unnest insert, the carry update, COMMIT), 4 tasks in flight sharing the pool;
- lease: ledger.py's lease_due (the lease lock, an UPDATE ... RETURNING of 14 columns for 100 rows) and the rows
  decoded into entries, one task (the dispatcher leases one round at a time);
- fetch: the same 100 rows as a plain SELECT, one task: mostly the drivers' decoding.

The drivers alternate within each round (the order rotated every round); every run starts from the same tables and
a warm-up (prepared statements cached). Per run: transactions/s, the process's CPU (utime + stime) per transaction,
and the pool's PostgreSQL backends' CPU per transaction (/proc/<pid>/stat of pg_backend_pid(): the server must be on
this host). Printed: each run, then medians with the lowest-highest over the rounds. The schema is dropped after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import asyncpg
import msgspec
import uvloop
from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from bench import delay_proxy
from bench.pg_driver_shapes import AsyncpgShapes, BatchMaker, PsycopgShapes
from gateway.adapters.postgres import schema
from gateway.adapters.postgres.recording import MAX_IN_FLIGHT

SCHEMA = "bench_pg_drivers"
POOL_SIZE = MAX_IN_FLIGHT
SHAPES = ("record-1", "record-32", "lease", "fetch")
LEASE_ROWS = 100
BASE = 50_000  # sent entries in the table before every run
PENDING = 2000  # pending entries (one customer each) for lease and fetch
TICK_S = 1 / os.sysconf("SC_CLK_TCK")
Shapes = AsyncpgShapes | PsycopgShapes


class Run(msgspec.Struct, frozen=True):
    shape: str
    driver: str
    transactions: int
    seconds: float
    client_s: float
    server_s: float

    @property
    def per_s(self) -> float:
        return self.transactions / self.seconds

    def client_us(self) -> float:
        return self.client_s / self.transactions * 1e6

    def server_us(self) -> float:
        return self.server_s / self.transactions * 1e6


def client_cpu() -> float:
    times = os.times()
    return times.user + times.system


def backends_cpu(pids: list[int]) -> float:
    """utime + stime of these processes, in seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total * TICK_S


async def drive(operation: Callable[[], Awaitable[object]], tasks: int, seconds: float) -> tuple[int, float]:
    """`operation` in a loop on `tasks` tasks until `seconds` pass: how many ran, and in how long."""
    count = 0
    start = time.perf_counter()
    end = start + seconds

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < end:
            await operation()
            count += 1

    await asyncio.gather(*(worker() for _ in range(tasks)))
    return count, time.perf_counter() - start


async def reset_tables(admin: asyncpg.Connection, shape: str, customers: int) -> None:
    """The same tables before every run, in a steady state: BASE sent entries, a carry for every customer, and for
    lease and fetch PENDING pending entries (one per customer); analyzed, as autovacuum would have them. (Timed
    from empty tables, the record statements' generic plans scan the entries table: a server cost no deployment
    pays.)"""
    await admin.execute("TRUNCATE entries, carries, parked")
    now = time.time()
    await admin.execute(
        "INSERT INTO entries (event_id, event_type, billing_customer, ringside_customer, cost_usd, units, timestamp,"
        " state, created_at, next_attempt_at, sent_at)"
        " SELECT $4 || lpad(g::text, 20, '0'), 'chat.completion.finished', 'cus_' || lpad((g % $5)::text, 14, '0'),"
        " 'cust_' || lpad((g % $5)::text, 10, '0'), '0.0123456', 1234, $1::bigint, $6, $2 + g * 0.001, $2,"
        " CASE WHEN $6 = 'sent' THEN $2 END"
        " FROM generate_series(1, $3::int) AS g",
        int(now),
        now - 3600,
        BASE,
        "evt_base_",
        customers,
        "sent",
    )
    await admin.execute(
        "INSERT INTO carries (billing_customer, carry)"
        " SELECT 'cus_' || lpad(g::text, 14, '0'), '0' FROM generate_series(0, $1::int - 1) AS g",
        customers,
    )
    if not shape.startswith("record"):
        # One customer each, so that a lease takes 100 of them (a customer with a live lease is skipped).
        await admin.execute(
            "INSERT INTO entries (event_id, event_type, billing_customer, ringside_customer, cost_usd, units,"
            " timestamp, state, created_at, next_attempt_at)"
            " SELECT 'evt_pend_' || lpad(g::text, 20, '0'), 'chat.completion.finished',"
            " 'cus_p' || lpad(g::text, 13, '0'), 'cust_' || lpad(g::text, 10, '0'), '0.0123456', 1234, $1::bigint,"
            " 'pending', $2 + g * 0.001, $2 FROM generate_series(1, $3::int) AS g",
            int(now),
            now - 60,
            PENDING,
        )
    await admin.execute("ANALYZE entries, carries, parked")


async def measure(
    admin: asyncpg.Connection, shapes: Shapes, shape: str, tag: str, arguments: argparse.Namespace
) -> Run:
    await reset_tables(admin, shape, arguments.customers)
    if shape.startswith("record"):
        size = int(shape.split("-")[1])
        maker = BatchMaker(tag, arguments.customers, seed=17)

        async def operation() -> object:
            await shapes.record(maker.make(size, time.time()))
            return None

        tasks = arguments.tasks
    elif shape == "lease":

        async def operation() -> object:
            return await shapes.lease(time.time(), LEASE_ROWS)

        tasks = 1
    else:

        async def operation() -> object:
            return await shapes.fetch(LEASE_ROWS)

        tasks = 1
    pids = await shapes.backend_pids(POOL_SIZE)
    await drive(operation, tasks, arguments.warmup)
    client, server = client_cpu(), backends_cpu(pids)
    count, seconds = await drive(operation, tasks, arguments.seconds)
    client, server = client_cpu() - client, backends_cpu(pids) - server
    if sorted(await shapes.backend_pids(POOL_SIZE)) != sorted(pids):
        raise RuntimeError(f"{shapes.name}: the pool replaced a connection during the run; its CPU is not counted")
    return Run(shape, shapes.name, count, seconds, client, server)


async def no_reset(connection: asyncpg.Connection) -> None:
    """asyncpg's pool, on release, rolls back an open transaction and then runs this instead of its reset query
    (unlock all advisory locks, close cursors, unlisten, reset settings: one more round trip)."""


async def round_trip_ms(pool: asyncpg.Pool) -> float:
    async with pool.acquire() as connection:
        times = []
        for _ in range(200):
            start = time.perf_counter()
            await connection.fetchval("SELECT 1")
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def spread(values: list[float], digits: int = 0) -> str:
    def show(value: float) -> str:
        return f"{value:,.{digits}f}"

    return f"{show(statistics.median(values))} ({show(min(values))}-{show(max(values))})"


def summary(runs: list[Run]) -> None:
    print("\n| shape | driver | transactions/s | client CPU µs/tx | server CPU µs/tx | client+server µs/tx |")
    print("|---|---|---:|---:|---:|---:|")
    for shape in dict.fromkeys(run.shape for run in runs):
        for driver in dict.fromkeys(run.driver for run in runs if run.shape == shape):
            mine = [run for run in runs if run.shape == shape and run.driver == driver]
            cells = [
                spread([r.per_s for r in mine]),
                spread([r.client_us() for r in mine]),
                spread([r.server_us() for r in mine]),
                spread([r.client_us() + r.server_us() for r in mine]),
            ]
            print(f"| {shape} | {driver} | {' | '.join(cells)} |")
    print("\nRatios to asyncpg in the same round (median, lowest-highest): transactions/s, client CPU per transaction")
    rounds = sorted({run.shape for run in runs})
    for shape in rounds:
        base = [run for run in runs if run.shape == shape and run.driver == "asyncpg"]
        for driver in dict.fromkeys(run.driver for run in runs if run.shape == shape and run.driver != "asyncpg"):
            mine = [run for run in runs if run.shape == shape and run.driver == driver]
            rate = [m.per_s / b.per_s for m, b in zip(mine, base, strict=False)]
            cpu = [m.client_us() / b.client_us() for m, b in zip(mine, base, strict=False)]
            print(f"  {shape:<10} {driver:<17} rate {spread(rate, 2)}   client CPU {spread(cpu, 2)}")


async def main(arguments: argparse.Namespace, through: str) -> None:
    """`through`: the URL the pools use (the proxy's, with --rtt-ms); the schema is set up on arguments.url."""
    url = f"{through}?options=-csearch_path%3D{SCHEMA}"
    shapes_run = [shape for shape in SHAPES if not arguments.only or shape in arguments.only.split(",")]
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC, load average {os.getloadavg()[0]:.1f},"
        f" loop {type(asyncio.get_running_loop()).__module__}, asyncpg {asyncpg.__version__},"
        f" psycopg {psycopg_version()}, {arguments.rounds} rounds of {arguments.seconds} s per run,"
        f" round trip {'+' + str(arguments.rtt_ms) + ' ms (delay proxy)' if arguments.rtt_ms else 'direct'}"
    )
    admin = await asyncpg.connect(f"{arguments.url}?options=-csearch_path%3D{SCHEMA}")
    await admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}")
    await admin.execute(f"SET search_path = {SCHEMA}")
    apools: list[asyncpg.Pool] = []
    ppool: AsyncConnectionPool[AsyncConnection[TupleRow]] | None = None
    try:
        await schema.migrate(admin)
        for reset in (None, no_reset):
            apools.append(
                await asyncpg.create_pool(
                    url,
                    min_size=POOL_SIZE,
                    max_size=POOL_SIZE,
                    # Keep the same backends for the whole bench (their CPU is read by pid): asyncpg replaces a
                    # connection after 50,000 queries by default, or after 300 s idle.
                    max_queries=2**62,
                    max_inactive_connection_lifetime=0,
                    reset=reset,
                )
            )
        ppool = AsyncConnectionPool(
            url, min_size=POOL_SIZE, max_size=POOL_SIZE, open=False, kwargs={"autocommit": True}
        )
        await ppool.open(wait=True)
        rtt = await round_trip_ms(apools[0])
        print(f"round trip (SELECT 1 through the pools' address, median of 200): {rtt:.2f} ms")
        drivers: list[Shapes] = [
            AsyncpgShapes(apools[0]),
            AsyncpgShapes(apools[1], "asyncpg-noreset"),
            PsycopgShapes(ppool, pipeline=False),
            PsycopgShapes(ppool, pipeline=True),
        ]
        runs: list[Run] = []
        for number in range(arguments.rounds):
            for shape in shapes_run:
                # A pipeline changes nothing for fetch's one statement outside a transaction.
                mine = [d for d in drivers if not (shape == "fetch" and d.name == "psycopg-pipeline")]
                shift = number % len(mine)
                for driver in mine[shift:] + mine[:shift]:
                    run = await measure(admin, driver, shape, f"{number}{shape[-2:]}{drivers.index(driver)}", arguments)
                    runs.append(run)
                    print(
                        f"round {number + 1} {shape:<10} {driver.name:<17} {run.per_s:8,.0f} tx/s"
                        f"  client {run.client_us():7,.0f} µs/tx  server {run.server_us():7,.0f} µs/tx",
                        flush=True,
                    )
        summary(runs)
        print(f"\nended {datetime.now(UTC):%H:%M:%S} UTC, load average {os.getloadavg()[0]:.1f}")
    finally:
        for apool in apools:
            await apool.close()
        if ppool is not None:
            await ppool.close()
        await admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        await admin.close()


def psycopg_version() -> str:
    import psycopg

    return f"{psycopg.__version__} ({psycopg.pq.__impl__} libpq {psycopg.pq.version()})"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per run")
    parser.add_argument("--warmup", type=float, default=0.5, help="untimed seconds before each run")
    parser.add_argument("--tasks", type=int, default=POOL_SIZE, help="record transactions in flight")
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--only", default="", help=f"comma-separated, of {','.join(SHAPES)}")
    parser.add_argument("--rtt-ms", type=float, default=0.0, help="a network round trip added by a delay proxy")
    parsed = parser.parse_args()
    if parsed.rtt_ms > 0:
        address = urlsplit(parsed.url)
        proxy = delay_proxy.start(address.port or 5432, parsed.rtt_ms / 1000, address.hostname or "127.0.0.1")
        user = f"{address.username}@" if address.username else ""
        try:
            uvloop.run(main(parsed, address._replace(netloc=f"{user}127.0.0.1:{proxy.port}").geturl()))
        finally:
            proxy.stop()
    else:
        uvloop.run(main(parsed, parsed.url))
