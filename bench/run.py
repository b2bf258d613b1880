"""Ingest benchmark: the gateway (SQLite, Redis; one worker and two) against a bare HMAC endpoint, in one run.

    .venv/bin/python -m bench.run [--duration 10] [--only bare,bare-asgi,sqlite,redis] [--workers 1,2] [--soak 60]
    bench/run.sh ...   (the same)

For every target and worker count it starts a server, warms it up, then measures
1. the maximum: closed loop for `--duration` s at each of the `--concurrency` levels (32 and 64 connections by
   default), the best of them -> req/s, p50/p90/p99, errors, RSS. A server that waits on its store (the gateway)
   keeps fewer requests in its CPU at a given concurrency than one that only computes (the bare endpoint), so one
   fixed level can measure how many connections were offered rather than how much the server can take; each target
   is given the levels alike, its best is its maximum, and the table names the level;
2. half load: open loop at half that maximum for `--duration` s -> p99 (the latency target is quoted there);
and prints one table in which each row's throughput is a ratio to the bare endpoint with as many workers (the
issue's baseline: a `@post` Litestar handler), and to that endpoint written as a raw ASGI route (`bare-asgi`), as
the gateway's webhook route is, which prices the gateway's own pipeline alone.
`--soak S` adds a memory run: the SQLite gateway, one worker, full load for S seconds, RSS at start/middle/end.

Invariants: servers bind 127.0.0.1 on free ports and are stopped (SIGTERM, then SIGKILL) whatever happens; every
load is bounded in time; SQLite runs in a fresh temporary directory; Redis uses one database (`--redis-url`, db 14
by default) that is flushed before each Redis target, so point it at a database nothing else uses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.load import BENCH_SECRET, LoadResult, Mix, Target, free_port, install_fast_loop, presign, run_load
from bench.stall_probe import StallProbe

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
_RUNS = itertools.count(1)  # numbers the servers' log files, so that a repeated target keeps every log


@dataclass(frozen=True)
class Setup:
    """One server to measure: `kind` is bare, bare-asgi (the bare endpoint as a raw ASGI route), sqlite or redis;
    `without` names bench.ablate switches turned off; `quiet` runs the gateway at GATEWAY_LOG_LEVEL=warning (no
    per-delivery log line), to price that line."""

    kind: str
    workers: int
    without: tuple[str, ...] = ()
    quiet: bool = False

    @property
    def label(self) -> str:
        label = {
            "bare": "bare HMAC endpoint",
            "bare-asgi": "bare HMAC endpoint, raw ASGI route",
            "sqlite": "gateway, SQLite",
            "redis": "gateway, Redis",
        }[self.kind]
        if self.without:
            label += " without " + ", ".join(self.without)
        if self.quiet:
            label += ", log level warning"
        return label

    @property
    def baseline(self) -> tuple[int, bool]:
        """Rows are compared with the bare endpoint on the same server stack and worker count."""
        return self.workers, "fast-server" in self.without


@dataclass
class Row:
    setup: Setup
    full: LoadResult | None
    half: LoadResult | None
    note: str = ""
    runs: int = 1


class Server:
    """A server subprocess on a free port; its output goes to a log file."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], log_path: Path, port: int) -> None:
        self.port = port
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            list(argv), env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, path: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}; see {self.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout_s}s; see {self.log_path}")

    def stop(self) -> None:
        if self.process.poll() is None:
            # The whole session: uvicorn's worker processes too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()


@contextlib.contextmanager
def started(setup: Setup, workdir: Path, redis_url: str, dispatcher: bool) -> Iterator[Server]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "RINGSIDE_WEBHOOK_SECRETS": BENCH_SECRET,
        "GATEWAY_LOG_FORMAT": "json",
        "GATEWAY_PORT": str(port),
    }
    env.pop("STRIPE_API_KEY", None)  # the local ledger biller: the dispatcher's work stays on this machine
    log_path = workdir / f"{next(_RUNS):02d}-{setup.kind}-{setup.workers}-{'-'.join(setup.without) or 'all'}.log"
    prefix = [sys.executable, "-m", "bench.ablate", "--without", ",".join(setup.without), "--"]
    if setup.quiet:
        env["GATEWAY_LOG_LEVEL"] = "warning"
    if setup.kind in ("bare", "bare-asgi"):
        argv = ([*prefix, "bare"] if setup.without else [sys.executable, "-m", "bench.bare_app"]) + [
            "--port",
            str(port),
            "--workers",
            str(setup.workers),
        ]
        if setup.kind == "bare-asgi":
            argv.append("--raw-asgi")
        ready = "/healthz"
    else:
        if setup.kind == "sqlite":
            env["GATEWAY_STORE"] = f"sqlite:///{workdir / f'gateway-{setup.workers}.db'}"
        else:
            env["GATEWAY_STORE"] = redis_url
            # A bench Redis may run without AOF (measuring, not billing): `serve` refuses one unless told.
            env.setdefault("GATEWAY_REDIS_ALLOW_VOLATILE", "true")
            _flush_redis(redis_url)
        argv = ([*prefix, "serve"] if setup.without else [sys.executable, "-m", "gateway.app.cli", "serve"]) + [
            "--workers",
            str(setup.workers),
        ]
        if not dispatcher:
            argv.append("--no-dispatcher")
        ready = "/readyz"
    server = Server(argv, env, log_path, port)
    try:
        server.wait_ready(ready)
        yield server
    finally:
        server.stop()


def _flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def measure(
    server: Server,
    *,
    duration_s: float,
    concurrency: Sequence[int],
    warmup_s: float,
    expect_rps: float,
    stateless: bool,
) -> tuple[LoadResult, LoadResult]:
    """Maximum (closed loop, the best over the `concurrency` levels), then half of it (open loop). A `stateless`
    server (the bare endpoint) may be sent the pre-signed deliveries over again; the gateway must get fresh ones, or
    its valid events would turn duplicates."""
    target = Target("127.0.0.1", server.port, "/webhooks/ringside")
    levels: list[LoadResult] = []
    for connections in concurrency:
        deliveries = presign(int(expect_rps * (warmup_s + duration_s)) + 1000, target, secret=BENCH_SECRET, mix=Mix())
        levels.append(
            asyncio.run(
                run_load(
                    target,
                    deliveries,
                    duration_s=duration_s,
                    concurrency=connections,
                    warmup_s=warmup_s,
                    server_pid=server.pid,
                    cycle=stateless,
                )
            )
        )
        if len(concurrency) > 1:
            print(f"   x{connections}: {levels[-1].throughput_rps:,.0f} req/s", file=sys.stderr)
    full = max(levels, key=lambda level: level.throughput_rps)
    rate = max(1.0, full.throughput_rps / 2)
    deliveries = presign(int(rate * (1 + duration_s)) + 1000, target, secret=BENCH_SECRET, mix=Mix())
    probe = StallProbe(1.0 + duration_s)  # beside the run: the machine's own stalls (bench/stall_probe.py)
    half = asyncio.run(
        run_load(
            target,
            deliveries,
            duration_s=duration_s,
            concurrency=full.concurrency,
            rate_rps=rate,
            warmup_s=1.0,
            server_pid=server.pid,
        )
    )
    stalls = probe.result()
    return full, dataclasses.replace(half, machine_stall_ms=stalls.longest_ms if stalls else None)


def soak(workdir: Path, redis_url: str, seconds: float, concurrency: int, expect_rps: float) -> LoadResult:
    """The SQLite gateway at full load for `seconds`, sampling its RSS every second."""
    with started(Setup("sqlite", 1), workdir, redis_url, dispatcher=True) as server:
        target = Target("127.0.0.1", server.port, "/webhooks/ringside")
        deliveries = presign(int(expect_rps * (seconds + 5)) + 1000, target, secret=BENCH_SECRET, mix=Mix())
        return asyncio.run(
            run_load(
                target,
                deliveries,
                duration_s=seconds,
                concurrency=concurrency,
                warmup_s=5.0,
                server_pid=server.pid,
                rss_every_s=1.0,
            )
        )


def table(rows: list[Row]) -> str:
    """One row per setup. `vs bare` is the issue's ratio: to the bare `@post` Litestar endpoint with as many workers.
    `vs raw ASGI` is to the same endpoint written as a raw ASGI route, as the gateway's webhook route is: with
    Litestar's request/response machinery out of both, it is what the gateway's own pipeline costs."""
    bare = _throughputs(rows, "bare")
    raw = _throughputs(rows, "bare-asgi")
    header = (
        "| target | workers | req/s (max, at xN connections) | vs bare | vs raw ASGI | p50 ms | p90 ms | p99 ms "
        "| p99 ms at half load | longest machine stall ms "
        "| server CPU us/req | errors | peak RSS MiB |"
    )
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        if row.full is None or row.half is None:
            lines.append(f"| {row.setup.label} | {row.setup.workers} | {row.note} | | | | | | | | | | |")
            continue
        lines.append(
            f"| {row.setup.label} | {row.setup.workers} | {row.full.throughput_rps:,.0f} (x{row.full.concurrency}) "
            f"| {_ratio(row, bare)} | {_ratio(row, raw)} "
            f"| {row.full.p50_ms:.1f} | {row.full.p90_ms:.1f} | {row.full.p99_ms:.1f} "
            f"| {row.half.p99_ms:.1f} ({row.half.throughput_rps:,.0f}/s) | {_stall(row.half)} "
            f"| {row.full.server_cpu_us or 0:.0f} "
            f"| {row.full.errors + row.half.errors} | {row.full.peak_rss_mib or 0:.0f} |"
        )
    return "\n".join(lines)


def per_run_table(setups: list[Setup], results: dict[Setup, list[tuple[LoadResult, LoadResult]]]) -> str:
    """Every run, not only the median: its maximum, its ratio to the bare endpoint of the same round, and at half
    load its p99 and the longest stall of the machine meanwhile (bench/stall_probe.py)."""
    runs = max((len(measured) for measured in results.values()), default=0)
    bare = {setup.baseline: results[setup] for setup in setups if setup.kind == "bare"}
    lines = ["| target | workers | " + " | ".join(f"run {n + 1}" for n in range(runs)) + " |"]
    lines.append("|---|---:|" + "---|" * runs)
    for setup in setups:
        cells = []
        for index, (full, half) in enumerate(results[setup]):
            baseline = bare.get(setup.baseline, [])
            ratio = (
                f": {full.throughput_rps / baseline[index][0].throughput_rps:.2f}"
                if setup.kind != "bare" and index < len(baseline)
                else ""
            )
            cells.append(f"{full.throughput_rps:,.0f}{ratio} ({half.p99_ms:.1f} ms; stall {_stall(half)} ms)")
        lines.append(f"| {setup.label} | {setup.workers} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _stall(result: LoadResult) -> str:
    return f"{result.machine_stall_ms:.1f}" if result.machine_stall_ms is not None else "-"


def _throughputs(rows: list[Row], kind: str) -> dict[tuple[int, bool], float]:
    return {row.setup.baseline: row.full.throughput_rps for row in rows if row.setup.kind == kind and row.full}


def _ratio(row: Row, baselines: dict[tuple[int, bool], float]) -> str:
    base = baselines.get(row.setup.baseline)
    return f"{row.full.throughput_rps / base:.2f}" if base and row.full else "-"


def median_run(runs: list[tuple[LoadResult, LoadResult]]) -> tuple[LoadResult, LoadResult]:
    """The run whose maximum throughput is the median: one noisy neighbour's burst moves no figure."""
    ordered = sorted(runs, key=lambda run: run[0].throughput_rps)
    return ordered[(len(ordered) - 1) // 2]


def load_average() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/loadavg").read_text().split(" ", 1)[0]
    return "?"


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({cpu}), Python {sys.version.split()[0]}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement [10]")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument(
        "--concurrency", default="32,64", help="closed-loop levels for the maximum, comma-separated; the best counts"
    )
    parser.add_argument(
        "--only", default="bare,bare-asgi,sqlite,redis", help="targets, comma-separated [bare,bare-asgi,sqlite,redis]"
    )
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated [1,2]")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="a database the bench may flush [db 14]")
    parser.add_argument("--no-dispatcher", action="store_true", help="gateway without its in-process dispatcher")
    parser.add_argument("--soak", type=float, default=0.0, help="also a memory run at full load for this many s")
    parser.add_argument(
        "--expect-rps", type=float, default=16000.0, help="pre-signing budget per second of load [16000]"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per target, interleaved; the median is shown")
    parser.add_argument(
        "--ablations",
        action="store_true",
        help="also one worker with each optimisation off (bench.ablate), and without the per-delivery log line",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, databases)")
    args = parser.parse_args(argv)
    loop_name = install_fast_loop()

    kinds = [kind.strip() for kind in args.only.split(",") if kind.strip()]
    levels = [int(level) for level in args.concurrency.split(",")]
    workers = [int(count) for count in args.workers.split(",")]
    setups = [
        Setup(kind, count) for count in workers for kind in ("bare", "bare-asgi", "sqlite", "redis") if kind in kinds
    ]
    if args.ablations:
        setups += [
            Setup("sqlite", 1, without=("group-commit",)),
            Setup("sqlite", 1, without=("batch-biller",)),
            Setup("sqlite", 1, quiet=True),
            Setup("bare", 1, without=("fast-server",)),
            Setup("sqlite", 1, without=("fast-server",)),
        ]
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    print(f"machine: {machine()}; load generator loop: {loop_name}; work dir {workdir}", file=sys.stderr)
    results: dict[Setup, list[tuple[LoadResult, LoadResult]]] = {setup: [] for setup in setups}
    failures: dict[Setup, str] = {}
    loads = [load_average()]
    try:
        for attempt in range(args.repeat):
            # Interleaved (bare, gateway, bare, ...), so that a burst of outside load hits every target alike.
            for setup in setups:
                if setup in failures:
                    continue
                print(f"-- {setup.label}, {setup.workers} worker(s), run {attempt + 1}", file=sys.stderr)
                try:
                    with started(setup, workdir, args.redis_url, dispatcher=not args.no_dispatcher) as server:
                        full, half = measure(
                            server,
                            duration_s=args.duration,
                            concurrency=levels,
                            warmup_s=args.warmup,
                            expect_rps=args.expect_rps,
                            stateless=setup.kind in ("bare", "bare-asgi"),
                        )
                except (RuntimeError, OSError) as exc:
                    print(f"   skipped: {exc}", file=sys.stderr)
                    failures[setup] = f"not measured: {exc}"
                    continue
                print(full.summary(), file=sys.stderr)
                print(
                    f"   half load: {half.throughput_rps:,.0f}/s, p99 {half.p99_ms:.1f} ms; longest machine stall "
                    f"meanwhile {_stall(half)} ms",
                    file=sys.stderr,
                )
                results[setup].append((full, half))
                loads.append(load_average())
        rows = [
            Row(setup, *median_run(results[setup]), runs=len(results[setup]))
            if results[setup]
            else Row(setup, None, None, note=failures.get(setup, "not measured"))
            for setup in setups
        ]
        print()
        print(
            f"Ingest, {args.duration:g} s per measurement, median of {args.repeat} run(s), maximum: the best closed "
            f"loop of x{', x'.join(map(str, levels))}; mix {Mix()}; {machine()}; "
            f"1-min load average during the run: {', '.join(loads)}"
        )
        print(table(rows))
        print()
        print("Each run (maximum req/s: its ratio to the bare endpoint of the same round; p99 at half load; the")
        print("machine's longest stall meanwhile):")
        print(per_run_table(setups, results))
        if args.soak:
            result = soak(workdir, args.redis_url, args.soak, levels[0], args.expect_rps)
            growth = result.rss_growth()
            print()
            print(f"Memory, gateway SQLite x1 at full load for {args.soak:g} s: {result.throughput_rps:,.0f} req/s")
            if growth is not None:
                print(
                    f"RSS MiB start {growth[0]:.1f}, middle {growth[1]:.1f}, end {growth[2]:.1f}: "
                    f"{growth[3]:+.1f}% (target: within 10%)"
                )
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
