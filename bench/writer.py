"""The SQLite writer thread's CPU per delivery, without HTTP: the store calls one delivery makes, in process.

    .venv/bin/python -m bench.writer [--mode ingest|drain] [--deliveries 30000]

ingest: as under bench.wrk's load: `--group` records at once (one group commit), then the dispatcher's round over
them (lease_due, the local ledger biller's send_batch, mark_sent_many), again and again. drain: as bench.dispatch's
v2 row: a backlog of `--deliveries` entries over `--customers`, leased 6,400 at a time, each lease sent and marked
in batches of 100. Prints the CPU per delivery of the writer thread and of the calling (event loop) thread, from
/proc (bench/threads.py). Run it from a worktree to measure that worktree's store.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
import time
from decimal import Decimal
from functools import partial
from pathlib import Path

from bench.threads import name_threads, thread_ticks


async def run(mode: str, deliveries: int, group: int, customers: int, path: Path) -> None:
    from gateway.adapters.sqlite import SqliteBiller, SqliteDatabase, SqliteLedger
    from gateway.domain.ledger import Claim
    from gateway.domain.ports import MeterEvent
    from gateway.domain.units import Rounding

    database = SqliteDatabase(path)
    ledger = SqliteLedger(database)
    biller = SqliteBiller(database)
    await database.open()
    # BENCH_DROP=index,index: what those indexes cost, measured by leaving them out.
    for index in filter(None, os.environ.get("BENCH_DROP", "").split(",")):
        await database.write(partial(_drop_index, index=index))

    def claim(number: int) -> Claim:
        return Claim(
            event_id=f"evt_{number:09d}",
            event_type="usage",
            billing_customer=f"cus_{number % customers:05d}",
            ringside_customer=None,
            cost_usd=Decimal("0.0123"),
            exact_units=Decimal("12.3"),
            timestamp=1_700_000_000 + number,
        )

    async def deliver(limit: int) -> int:
        entries = await ledger.lease_due(time.time(), limit, 30.0)
        for start in range(0, len(entries), biller.max_batch):
            chunk = entries[start : start + biller.max_batch]
            events = [MeterEvent(f"id_{e.event_id}", e.billing_customer, e.units, e.timestamp) for e in chunk]
            await biller.send_batch(events)
            await ledger.mark_sent_many([e.event_id for e in chunk], time.time())
        return len(entries)

    if mode == "drain":
        for start in range(0, deliveries, 500):
            await asyncio.gather(
                *(
                    ledger.record(claim(n), Rounding.CARRY, time.time())
                    for n in range(start, min(start + 500, deliveries))
                )
            )
    before = thread_ticks(os.getpid())
    written = _written()
    started = time.perf_counter()
    done = 0
    if mode == "ingest":
        for start in range(0, deliveries, group):
            await asyncio.gather(
                *(
                    ledger.record(claim(n), Rounding.CARRY, time.time())
                    for n in range(start, min(start + group, deliveries))
                )
            )
            done += await deliver(6400)
    else:
        while leased := await deliver(6400):
            done += leased
    elapsed = time.perf_counter() - started
    ticks = thread_ticks(os.getpid()) - before
    written = _written() - written
    stats = await ledger.stats()
    database.close()
    assert stats.sent == deliveries and stats.pending == 0, stats
    per = {name: count / os.sysconf("SC_CLK_TCK") / done * 1e6 for name, count in ticks.items() if count}
    split = ", ".join(f"{name} {us:.1f}" for name, us in sorted(per.items(), key=lambda item: -item[1]))
    print(
        f"{mode}: {done} deliveries, {done / elapsed:,.0f}/s, {written / done / 1024:.1f} KiB written a delivery;"
        f" CPU us/delivery: {split}"
    )


def _written() -> int:
    """Bytes this process has written (to the WAL, the database file by checkpoints): /proc/self/io's wchar."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["wchar"])


def _drop_index(connection: sqlite3.Connection, *, index: str) -> None:
    connection.execute(f"DROP INDEX {index}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("ingest", "drain"), default="ingest")
    parser.add_argument("--deliveries", type=int, default=30_000)
    parser.add_argument("--group", type=int, default=32, help="records per group commit (ingest) [32]")
    parser.add_argument("--customers", type=int, default=1000)
    args = parser.parse_args()
    name_threads()
    with tempfile.TemporaryDirectory() as workdir:
        asyncio.run(run(args.mode, args.deliveries, args.group, args.customers, Path(workdir) / "writer.db"))


if __name__ == "__main__":
    main()
