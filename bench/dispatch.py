"""Dispatch throughput against the fake Stripe with artificial latency: v1 (one event per call) and the v2 stream.

    python -m bench.dispatch [--latency-ms 50] [--backlog 100000] [--v1-limit-s 20] [--store sqlite|redis://...]

Each row fills a fresh ledger with a backlog of pending entries (through the ledger port, spread over
`--customers` billing customers), starts the gateway's own dispatcher (built by the container, exactly as
`gateway serve` builds it) against a fake Stripe in another process, and times the drain. A row stops when the
backlog is empty or its time limit is reached; a row cut short says so, and its time for the whole backlog is an
extrapolation from its steady rate, marked "~".

It also checks what Stripe's limits ask of the v1 path, from the fake's own records: the busiest second never
holds more calls than GATEWAY_STRIPE_MAX_RPS (a third row paces v1 at a low rate with no latency to show the token
bucket binding), no customer ever has two calls in flight, and no call is answered 429. Every row checks that
Stripe holds exactly one meter event per drained entry.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, TextIO

from bench.load import install_fast_loop
from gateway.app.container import Container, build_container
from gateway.app.environment import load_settings
from gateway.app.lifecycle import running
from gateway.app.logging import configure_logging
from gateway.app.secret import Secret
from gateway.domain.ledger import Claim
from gateway.domain.units import exact_units
from tests.fakes.stripe_server import FAKE_API_KEY

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Scenario:
    api: str  # v1 | v2_stream
    latency_ms: float
    max_rps: float
    limit_s: float
    backlog: int


@dataclass
class Drain:
    scenario: Scenario
    drained: int
    seconds: float
    stats: dict[str, Any]

    @property
    def rate(self) -> float:
        return self.drained / self.seconds if self.seconds else 0.0

    @property
    def complete(self) -> bool:
        return self.drained >= self.scenario.backlog


class FakeStripeProcess:
    """bench.fake_stripe in a subprocess: its URL on the first line, one JSON line per `stats` or `arrivals`."""

    def __init__(self, latency_ms: float) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.fake_stripe", "--latency-ms", str(latency_ms)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._stdin: IO[str] = _stream(self._process.stdin)
        self._stdout: IO[str] = _stream(self._process.stdout)
        self.url = self._stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.stop()
            raise RuntimeError("the fake Stripe did not start")

    def stats(self) -> dict[str, Any]:
        self._stdin.write("stats\n")
        self._stdin.flush()
        stats: dict[str, Any] = json.loads(self._stdout.readline())
        return stats

    def arrivals(self) -> dict[str, float]:
        """Each stored meter event's identifier -> the wall-clock time the fake stored it."""
        self._stdin.write("arrivals\n")
        self._stdin.flush()
        arrived: dict[str, float] = json.loads(self._stdout.readline())
        return arrived

    def stop(self) -> None:
        if self._process.poll() is None:
            try:
                self._stdin.write("quit\n")
                self._stdin.flush()
                self._process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait(timeout=10)


def _stream(stream: IO[str] | None) -> IO[str]:
    assert stream is not None
    return stream


async def fill(container: Container, backlog: int, customers: int) -> None:
    """`backlog` pending entries through the ledger port (concurrently, so SQLite's group commit batches them)."""
    ledger = container.ledger()
    now = time.time()
    cost = Decimal("0.0123")
    exact = exact_units(cost, 100_000)
    step = 2000
    for start in range(0, backlog, step):
        claims = [
            Claim(
                event_id=f"evt_dispatch_{n:07d}",
                event_type="chat.completion.finished",
                billing_customer=f"cus_bench_{n % customers}",
                ringside_customer=None,
                cost_usd=cost,
                exact_units=exact,
                timestamp=int(now),
            )
            for n in range(start, min(backlog, start + step))
        ]
        await asyncio.gather(*(ledger.record(claim, container.settings().rounding, now) for claim in claims))


async def run_scenario(
    scenario: Scenario, *, store: str, concurrency: int, customers: int, workdir: Path, log: TextIO
) -> Drain:
    fake = FakeStripeProcess(scenario.latency_ms)
    try:
        settings = load_settings(
            {},
            store=store,
            webhook_secrets=[Secret("whsec_bench_only_not_a_real_secret")],
            stripe={
                "api_key": Secret(FAKE_API_KEY),
                "api_base": fake.url,
                "api": scenario.api,
                "max_rps": scenario.max_rps,
            },
            dispatch_concurrency=concurrency,
        )
        configure_logging("json", "info", stream=log)
        async with running(build_container(settings)) as container:
            await fill(container, scenario.backlog, customers)
            ledger = container.ledger()
            dispatcher = container.dispatcher()
            started = time.perf_counter()
            task = asyncio.create_task(dispatcher.run())
            pending = scenario.backlog
            while pending and time.perf_counter() - started < scenario.limit_s:
                await asyncio.sleep(0.25)
                pending = (await ledger.stats()).pending
            seconds = time.perf_counter() - started
            dispatcher.stop()
            await asyncio.wait_for(task, timeout=30)
            drained = scenario.backlog - (await ledger.stats()).pending
            slots = dispatcher.slots
            print(f"   slots: limit {slots.limit}, peak {slots.peak}", file=sys.stderr)
        return Drain(scenario, drained, seconds, fake.stats())
    finally:
        fake.stop()


def table(drains: list[Drain], concurrency: int, customers: int) -> str:
    lines = [
        f"Dispatch, concurrency {concurrency}, {customers} customers; the fake Stripe in its own process",
        "| API | latency ms | max calls/s | entries drained | seconds | events/s | calls | events/call "
        "| busiest second (calls) | max in flight per customer | 429s | exactly once | fake Stripe CPU "
        "| backlog drains in |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for drain in drains:
        s, stats = drain.scenario, drain.stats
        path = "/v1/billing/meter_events" if s.api == "v1" else "/v2/billing/meter_event_stream"
        calls = sum(count for key, count in stats["statuses"].items() if key.startswith(path))
        throttled = sum(count for key, count in stats["statuses"].items() if key.endswith(" 429"))
        once = stats["meter_events"] == stats["distinct_identifiers"] == drain.drained
        if drain.complete:
            whole = f"{drain.seconds:.1f} s"
        elif drain.rate:
            estimate = s.backlog / drain.rate
            shown = f"{estimate / 60:.1f} min" if estimate >= 120 else f"{estimate:.0f} s"
            whole = f"~{shown} (extrapolated)"
        else:
            whole = "n/a"
        per_customer = stats["max_in_flight_per_customer"] if s.api == "v1" else "n/a (v2)"
        lines.append(
            f"| {s.api} | {s.latency_ms:g} | {s.max_rps:g} | {drain.drained:,} of {s.backlog:,} | {drain.seconds:.1f} "
            f"| {drain.rate:,.0f} | {calls:,} | {drain.drained / calls if calls else 0:.1f} "
            f"| {stats['busiest_second'].get(path, 0)} | {per_customer} | {throttled} | {'yes' if once else 'NO'} "
            f"| {stats['cpu_s'] / drain.seconds:.0%} | {whole} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=16, help="GATEWAY_DISPATCH_CONCURRENCY [16]")
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--max-rps", type=float, default=1000.0, help="GATEWAY_STRIPE_MAX_RPS [1000: live mode]")
    parser.add_argument("--v1-limit-s", type=float, default=20.0, help="time limit of the v1 drain [20]")
    parser.add_argument("--v2-limit-s", type=float, default=300.0, help="time limit of the v2 drain [300]")
    parser.add_argument("--pacing-rps", type=float, default=100.0, help="the pacing check's rate [100]")
    parser.add_argument("--store", default="sqlite", help="sqlite (a fresh file) or a redis:// URL it may fill")
    parser.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop", help="the event loop [uvloop, as gateway serve]"
    )
    parser.add_argument(
        "--only", default="v2_stream,v1,pacing", help="rows, comma-separated [v2_stream,v1,pacing: all three]"
    )
    args = parser.parse_args(argv)
    rows = {name.strip() for name in args.only.split(",") if name.strip()}
    if args.loop == "uvloop":
        install_fast_loop()  # as `gateway serve` runs the dispatcher: on uvicorn's uvloop
    workdir = Path(tempfile.mkdtemp(prefix="gateway-dispatch-"))
    scenarios = {
        "v2_stream": Scenario("v2_stream", args.latency_ms, args.max_rps, args.v2_limit_s, args.backlog),
        "v1": Scenario("v1", args.latency_ms, args.max_rps, args.v1_limit_s, args.backlog),
        # The token bucket binding: no latency, so only the pace limits v1.
        "pacing": Scenario("v1", 0.0, args.pacing_rps, 10.0, int(args.pacing_rps * 10)),
    }
    if rows - set(scenarios):
        raise SystemExit(f"--only: unknown row(s) {sorted(rows - set(scenarios))}; known: {', '.join(scenarios)}")
    drains = []
    try:
        with (workdir / "gateway.log").open("w") as log:
            for number, scenario in enumerate(scenario for name, scenario in scenarios.items() if name in rows):
                store = f"sqlite:///{workdir / f'ledger-{number}.db'}" if args.store == "sqlite" else args.store
                print(f"-- {scenario}", file=sys.stderr)
                drain = asyncio.run(
                    run_scenario(
                        scenario,
                        store=store,
                        concurrency=args.concurrency,
                        customers=args.customers,
                        workdir=workdir,
                        log=log,
                    )
                )
                print(f"   {drain.drained:,} in {drain.seconds:.1f} s: {drain.rate:,.0f}/s", file=sys.stderr)
                drains.append(drain)
        print(table(drains, args.concurrency, args.customers))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
