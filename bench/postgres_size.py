"""Disk per event in PostgreSQL: record and send N events through PostgresLedger, then sum pg_total_relation_size
(tables, indexes, TOAST) over the schema's tables.

    .venv/bin/python -m bench.postgres_size [--events 100000] [--customers 1000] [--url postgresql://...]

It uses (and drops) a schema of its own. Ids are 30 characters, like Ringside's `evt_...` ids.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from decimal import Decimal

import asyncpg

from gateway.adapters.postgres import PostgresDatabase, PostgresLedger
from gateway.domain.ledger import Claim
from gateway.domain.units import Rounding

SCHEMA = "bench_size"


async def main(url: str, events: int, customers: int) -> None:
    admin = await asyncpg.connect(url)
    await admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}")
    database = PostgresDatabase(f"{url}?options=-csearch_path%3D{SCHEMA}", max_connections=4)
    ledger = PostgresLedger(database)
    now = time.time()
    try:
        for start in range(0, events, 1000):
            batch = [
                Claim(
                    event_id=f"evt_{n:026d}",
                    event_type="chat.completion.finished",
                    billing_customer=f"cus_{n % customers:014d}",
                    ringside_customer=f"cust_{n % customers:010d}",
                    cost_usd=Decimal("0.0123456"),
                    exact_units=Decimal("1234.56"),
                    timestamp=int(now),
                )
                for n in range(start, min(start + 1000, events))
            ]
            await asyncio.gather(*(ledger.record(claim, Rounding.CARRY, now) for claim in batch))
            await ledger.mark_sent_many([claim.event_id for claim in batch], now)
        await admin.execute("VACUUM ANALYZE")
        rows = await admin.fetch(
            "SELECT c.relname, pg_total_relation_size(c.oid) AS bytes FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r'"
            " ORDER BY bytes DESC",
            SCHEMA,
        )
    finally:
        await database.close()
        await admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        await admin.close()
    total = sum(int(row["bytes"]) for row in rows)
    for row in rows[:4]:
        print(f"{row['relname']:<16} {int(row['bytes']) / 2**20:8.1f} MiB")
    print(
        f"total {total / 2**20:.1f} MiB for {events:,} sent events: {total / events:.0f} B per event, "
        f"{total / events * 1_000_000 / 2**20:.0f} MiB per million"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=1000)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.url, arguments.events, arguments.customers))
