"""End to end: ingest held at a share of its maximum while the dispatcher streams to a fake Stripe with latency.

    .venv/bin/python -m bench.e2e [--latency-ms 50] [--share 0.8] [--duration 60] [--api v2_stream] [--max-rps R]

1. Starts the fake Stripe (bench.fake_stripe, `--latency-ms` per call, in its own process) and the real gateway
   (`gateway serve`, one worker, SQLite in a fresh directory, GATEWAY_BILLER=stripe on `--api`, live-mode pace).
2. The maximum: wrk (bench/wrk.py: 1 thread, 64 connections, pre-signed distinct deliveries) for `--max-duration`
   s with the dispatcher running, unless `--max-rps` gives it; then waits until that backlog is drained.
3. The open loop (bench/load.py, no coordinated omission) at `--share` of the maximum for `--duration` s, sampling
   the ledger's pending entries (GET /metrics) every second; then waits until the backlog is drained.
4. Prints: the pending backlog over the run (first and last third, its slope and its peak), and for every
   acknowledged event the delay from its acknowledgement (the answer's arrival at the client) to the fake Stripe
   storing it: p50/p99/max and the share within 2 s (an event never stored counts as late; an event whose cost is
   below one unit is carried to its customer's next event, never sent, and left out).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.dispatch import FakeStripeProcess
from bench.load import BENCH_SECRET, Mix, Target, free_port, install_fast_loop, presign, run_load
from bench.run import ROOT, Server
from bench.wrk import run_wrk, write_requests
from gateway.adapters.stripe.rules import meter_identifier
from tests.fakes.stripe_server import FAKE_API_KEY

_PENDING = re.compile(r"^gateway_ledger_pending_entries(?:\{[^}]*\})? ([0-9.e+]+)$", re.MULTILINE)


def pending(port: int) -> int:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    match = _PENDING.search(text)
    if match is None:
        raise RuntimeError("GET /metrics has no ledger_pending_entries gauge")
    return int(float(match.group(1)))


def wait_drained(port: int, timeout_s: float) -> float:
    """Seconds until nothing is pending (or `timeout_s`)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if pending(port) == 0:
            break
        time.sleep(0.25)
    return time.monotonic() - started


def start_gateway(workdir: Path, fake_url: str, api: str) -> Server:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "RINGSIDE_WEBHOOK_SECRETS": BENCH_SECRET,
        "GATEWAY_LOG_FORMAT": "json",
        "GATEWAY_PORT": str(port),
        "GATEWAY_STORE": f"sqlite:///{workdir / 'gateway.db'}",
        "GATEWAY_BILLER": "stripe",
        "STRIPE_API_KEY": FAKE_API_KEY,
        "STRIPE_API_BASE": fake_url,
        "GATEWAY_STRIPE_API": api,
        "GATEWAY_STRIPE_MAX_RPS": "1000",  # live mode's limit (the fake's key is a test key)
    }
    server = Server(
        [sys.executable, "-m", "gateway.app.cli", "serve", "--workers", "1"], env, workdir / "gateway.log", port
    )
    try:
        server.wait_ready("/readyz")
    except BaseException:
        server.stop()
        raise
    return server


async def sample_pending(port: int, every_s: float, samples: list[tuple[float, int]]) -> None:
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            match = _PENDING.search(text)
            if match is not None:
                samples.append((time.monotonic() - started, int(float(match.group(1)))))
            await asyncio.sleep(every_s)


async def open_loop(
    port: int, rate: float, duration_s: float, acked: dict[str, float], samples: list[tuple[float, int]]
) -> str:
    target = Target("127.0.0.1", port, "/webhooks/ringside")
    run_id = "e2e" + str(int(time.time()))
    count = int(rate * (duration_s + 2)) + 1000
    deliveries = presign(count, target, secret=BENCH_SECRET, mix=Mix(1.0, 0.0, 0.0), run_id=run_id)

    def answered(index: int, status: int, at: float) -> None:
        if status in (200, 202):
            acked[meter_identifier(f"evt_{run_id}_{index:09d}")] = at

    sampler = asyncio.create_task(sample_pending(port, 1.0, samples))
    try:
        result = await run_load(
            target, deliveries, duration_s=duration_s, concurrency=64, rate_rps=rate, on_answer=answered
        )
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    return result.summary()


def zero_unit_identifiers(database: Path) -> dict[str, None]:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
        rows = connection.execute("SELECT event_id FROM entries WHERE units = 0").fetchall()
    return {meter_identifier(event_id): None for (event_id,) in rows}


def percentile(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def backlog_report(samples: list[tuple[float, int]]) -> str:
    if len(samples) < 6:
        return "pending backlog: too few samples"
    third = len(samples) // 3
    first = sum(n for _, n in samples[:third]) / third
    last = sum(n for _, n in samples[-third:]) / third
    # Least-squares slope of pending over time: a backlog that grows has a positive one.
    mean_t = sum(t for t, _ in samples) / len(samples)
    mean_n = sum(n for _, n in samples) / len(samples)
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    slope = sum((t - mean_t) * (n - mean_n) for t, n in samples) / var if var else 0.0
    peak = max(n for _, n in samples)
    return (
        f"pending backlog: mean {first:,.0f} in the first third, {last:,.0f} in the last; "
        f"slope {slope:+,.1f} entries/s; peak {peak:,}"
    )


def delay_report(acked: dict[str, float], arrived: dict[str, float], within_s: float) -> str:
    delays = sorted(arrived[i] - at if i in arrived else float("inf") for i, at in acked.items())
    if not delays:
        return "no acknowledged events"
    on_time = sum(d <= within_s for d in delays)
    missing = sum(d == float("inf") for d in delays)
    if missing:
        print("never stored, e.g.:", sorted(i for i in acked if i not in arrived)[:5], file=sys.stderr)
    return (
        f"acknowledgement -> Stripe, {len(delays):,} events: p50 {percentile(delays, 0.5) * 1000:,.0f} ms, "
        f"p99 {percentile(delays, 0.99) * 1000:,.0f} ms, max {delays[-1] * 1000:,.0f} ms; "
        f"{on_time / len(delays):.2%} within {within_s:g} s; never stored: {missing}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--api", choices=("v1", "v2_stream"), default="v2_stream")
    parser.add_argument("--share", type=float, default=0.8, help="of the maximum, for the open loop [0.8]")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of open loop [60]")
    parser.add_argument("--max-duration", type=float, default=8.0, help="seconds of wrk for the maximum [8]")
    parser.add_argument("--max-rps", type=float, default=None, help="skip the wrk run: the maximum is this")
    parser.add_argument("--within", type=float, default=2.0, help="the delay target, seconds [2]")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (ledger, server log)")
    args = parser.parse_args(argv)
    install_fast_loop()
    workdir = Path(tempfile.mkdtemp(prefix="gateway-e2e-"))
    fake = FakeStripeProcess(args.latency_ms)
    try:
        server = start_gateway(workdir, fake.url, args.api)
        try:
            if args.max_rps is None:
                requests_file = workdir / "requests.bin"
                write_requests(
                    requests_file,
                    int(40_000 * args.max_duration / 8),
                    Target("127.0.0.1", server.port, "/webhooks/ringside"),
                    customers=500,
                )
                maximum = run_wrk(server.port, requests_file, duration_s=args.max_duration, connections=64)
                print(
                    f"maximum (wrk, 64 connections, {args.max_duration:g} s): {maximum.rps:,.0f} req/s, "
                    f"p99 {maximum.p99_ms:.1f} ms, errors {maximum.errors}"
                )
                max_rps = maximum.rps
                print(f"its backlog drained in {wait_drained(server.port, 120):.1f} s")
            else:
                max_rps = args.max_rps
            rate = args.share * max_rps
            acked: dict[str, float] = {}
            samples: list[tuple[float, int]] = []
            print(
                f"open loop at {rate:,.0f}/s ({args.share:.0%}) for {args.duration:g} s, {args.api} at "
                f"{args.latency_ms:g} ms per call"
            )
            print(asyncio.run(open_loop(server.port, rate, args.duration, acked, samples)))
            print(f"drained {wait_drained(server.port, 120):.1f} s after the load stopped")
        finally:
            server.stop()
        print(backlog_report(samples))
        # A cost below one unit is carried to the customer's next event and its entry is never sent: not late.
        zero = zero_unit_identifiers(workdir / "gateway.db")
        print(f"zero-unit events (never sent, by design): {len(zero.keys() & acked.keys())}")
        print(delay_report({i: at for i, at in acked.items() if i not in zero}, fake.arrivals(), args.within))
        stats = fake.stats()
        print(
            f"fake Stripe: {stats['meter_events']:,} meter events ({stats['distinct_identifiers']:,} distinct), "
            f"{stats['invalid_requests']} invalid requests, answers {stats['statuses']}"
        )
    finally:
        fake.stop()
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
