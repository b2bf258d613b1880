"""What the Redis ledger costs in memory per event, measured rather than guessed (README, "Redis").

    python -m bench.redis_memory [--events 100000] [--customers 1000]

Starts a redis-server of its own (no persistence, a temporary directory, a free port) so that nothing else moves
`used_memory` during the run, records N billable events through RedisLedger with realistic shapes (ULID-like event
ids, Stripe-like customer ids, the default event type, costs with several decimals), reads INFO memory, marks them
all sent (the steady state: a sent entry is what stays for GATEWAY_DEDUPE_TTL_S), reads it again, and extrapolates
both figures to one million events. Sent entries are the ones that matter for sizing: pending ones are few (the
dispatcher sends them within seconds) unless Stripe is down.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import socket
import string
import subprocess
import tempfile
import time
from decimal import Decimal

from redis.asyncio import Redis

from gateway.adapters.redis import RedisLedger, connect
from gateway.domain.ledger import Claim
from gateway.domain.units import Rounding, exact_units

_ULID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _claims(events: int, customers: int, seed: int = 1) -> list[Claim]:
    rng = random.Random(seed)
    stripe_ids = ["cus_" + "".join(rng.choices(string.ascii_letters + string.digits, k=14)) for _ in range(customers)]
    ringside_ids = [f"cust_{rng.getrandbits(48):012x}" for _ in range(customers)]
    claims = []
    for _ in range(events):
        who = rng.randrange(customers)
        cost = Decimal(rng.randint(1, 5_000_000)) / Decimal(10**8)  # $0.00000001 .. $0.05
        claims.append(
            Claim(
                event_id="evt_" + "".join(rng.choices(_ULID_ALPHABET, k=26)),
                event_type="chat.completion.finished",
                billing_customer=stripe_ids[who],
                ringside_customer=ringside_ids[who],
                cost_usd=cost,
                exact_units=exact_units(cost, 100_000),
                timestamp=1_800_000_000 + rng.randrange(3600),
            )
        )
    return claims


async def _used_memory(client: Redis) -> int:
    info = await client.info("memory")
    return int(info["used_memory"])


async def measure(events: int, customers: int, port: int) -> tuple[float, float]:
    """Bytes per event while pending and once sent (with its TTL), over `events` events."""
    client = connect(f"redis://127.0.0.1:{port}/0")
    ledger = RedisLedger(client)
    claims = _claims(events, customers)
    try:
        before = await _used_memory(client)
        now = time.time()
        for start in range(0, events, 500):
            await asyncio.gather(*(ledger.record(c, Rounding.CARRY, now) for c in claims[start : start + 500]))
        pending = await _used_memory(client)
        while leased := await ledger.lease_due(now + 1, 500, 60.0):
            await asyncio.gather(*(ledger.mark_sent(entry.event_id, now + 2) for entry in leased))
        sent = await _used_memory(client)
        stats = await ledger.stats()
        assert stats.sent == events and stats.pending == 0, stats
    finally:
        await client.aclose()
    return (pending - before) / events, (sent - before) / events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=1000)
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    port = _free_port()
    with tempfile.TemporaryDirectory() as directory:
        server = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", directory, "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            time.sleep(0.3)
            per_pending, per_sent = asyncio.run(measure(args.events, args.customers, port))
        finally:
            server.terminate()
            server.wait(timeout=10)
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    print(f"{version}")
    print(f"{args.events} events over {args.customers} customers")
    print(f"pending: {per_pending:7.1f} B/event  = {per_pending * 1e6 / 2**20:6.1f} MiB per million events")
    print(f"sent:    {per_sent:7.1f} B/event  = {per_sent * 1e6 / 2**20:6.1f} MiB per million events")


if __name__ == "__main__":
    main()
