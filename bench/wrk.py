"""Maximum throughput measured with wrk, the bare HMAC endpoint and the gateway side by side in one run.

    bench/setup                                    # once: wrk (Debian), py-spy and granian (the venv)
    .venv/bin/python -m bench.wrk [--duration 9] [--rounds 3] [--only bare,sqlite,redis,postgres,postgres-w2,...]

wrk is a C load generator: on a 2-core machine it leaves the server far more of the CPU than bench/load.py does,
which would otherwise squeeze the bare endpoint more than the gateway and flatter the ratios. Each target is a
server started as `gateway serve` (or bench.bare_app) starts it, one worker, and gets
1. a file of pre-signed requests written here (signing must be done ahead: wrk only replays), all valid and
   distinct (`--deliveries` ~1 KiB deliveries over `--customers` customers), read by bench/replay.lua;
2. a warm-up (`--warmup` s of wrk on the file's last `WARMUP_SHARE`, so that the measured part stays fresh);
3. the maximum: wrk, 1 thread, `--connections` connections, `--duration` s -> req/s, p50/p99 (wrk's closed loop),
   and the server's CPU seconds (utime + stime of the server and its children from /proc, before and after) and
   CPU per delivery;
4. half load: bench/load.py's open loop at half that maximum -> p99 (no coordinated omission).
Targets are interleaved per round (bare, gateway, bare, ...) so that a burst of outside load hits each alike, and
every row's ratio is to the bare endpoint of the same round: the only ratios worth quoting on a shared machine.
The summary gives each target's median over the rounds and the spread (lowest to highest).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.bare_app import granian_argv
from bench.load import (
    BENCH_SECRET,
    LoadResult,
    Mix,
    ProcessMemory,
    Target,
    event_body,
    free_port,
    install_fast_loop,
    presign,
    raw_request,
    run_load,
    signature,
)
from bench.pg_server import PostgresServer
from bench.run import ROOT, Server, _flush_redis
from bench.threads import cpu_seconds_by_thread, thread_ticks
from gateway.app.server import worker_factory

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
WARMUP_SHARE = 0.2  # the file's tail the warm-up replays; the measured run must not reach it
SEPARATOR = b"\0"  # between requests in the file: neither an HTTP head nor a JSON body holds a NUL
SERVERS = ("uvicorn", "granian")
VARIANTS = ("quiet", "nodispatch", "linelog", "nogroup")
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
KINDS = ("bare", "sqlite", "redis", "postgres")


@dataclass(frozen=True)
class Spec:
    """One server: `kind` bare, sqlite or redis, on `server` uvicorn (as `gateway serve`) or granian (a prototype:
    the gateway's app factory under granian), with a `variant` that prices one part of the gateway: `quiet` runs it
    at GATEWAY_LOG_LEVEL=warning (no per-delivery log line), `nodispatch` without its in-process dispatcher,
    `linelog` with GATEWAY_LOG_FLUSH_MS=0 (a write() per log line, as before the lines were batched), `nogroup`
    without group commit (bench.ablate); `w2` runs two worker processes (`gateway serve --workers 2`)."""

    kind: str
    server: str = "uvicorn"
    variant: str = ""
    workers: int = 1

    @classmethod
    def parse(cls, name: str) -> Spec:
        """`kind[-granian][-quiet|-nodispatch]`, e.g. `sqlite-granian-quiet`."""
        kind, *options = name.split("-")
        server = next((option for option in options if option in SERVERS), "uvicorn")
        variant = next((option for option in options if option in VARIANTS), "")
        workers = 2 if "w2" in options else 1
        unknown = set(options) - set(SERVERS) - set(VARIANTS) - {"w2"}
        if kind not in KINDS or unknown or len(options) > 2 or (kind == "bare" and (variant or workers > 1)):
            raise ValueError(
                f"unknown target {name!r}: kind[-granian][-quiet|-nodispatch|-linelog|-nogroup][-w2],"
                f" kind {'|'.join(KINDS)}"
            )
        return cls(kind, server, variant, workers)

    @property
    def name(self) -> str:
        server = "" if self.server == "uvicorn" else self.server
        workers = "w2" if self.workers == 2 else ""
        return "-".join(part for part in (self.kind, server, self.variant, workers) if part)

    @property
    def stateless(self) -> bool:
        return self.kind == "bare"


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # socket errors, timeouts and non-2xx answers

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


@dataclass
class Measured:
    spec: Spec
    full: WrkResult
    cpu_s: float
    threads: dict[str, float]
    half: LoadResult | None
    round: int
    notes: list[str] = field(default_factory=list)
    # The store server's CPU meanwhile (Redis, or PostgreSQL's processes: shared with anything else that uses it).
    store_cpu_s: float | None = None
    wal_bytes: int | None = None  # the WAL PostgreSQL wrote meanwhile

    @property
    def cpu_us_per_delivery(self) -> float:
        return self.cpu_s / self.full.requests * 1e6 if self.full.requests else 0.0


# -- the requests file ----------------------------------------------------------------------------------------------


def write_requests(path: Path, count: int, target: Target, *, customers: int, secret: str = BENCH_SECRET) -> str:
    """Write `count` distinct valid signed requests (ids `evt_<run>_<n>`, customers 0..`customers`-1 in turn), NUL
    separated; returns the run id. Signed now: the file must be replayed within the 300 s tolerance."""
    run_id = secrets.token_hex(4)
    now = int(time.time())
    with path.open("wb") as out:
        for n in range(count):
            body = event_body(f"evt_{run_id}_{n:09d}", n % customers, 1 + (n * 7919) % 49_999, now)
            out.write(raw_request(target, body, signature(body, secret, now)))
            out.write(SEPARATOR)
    return run_id


def read_requests(path: Path) -> list[bytes]:
    """The requests of a file `write_requests` wrote, as bench/replay.lua splits it."""
    return path.read_bytes().split(SEPARATOR)[:-1]


# -- wrk ------------------------------------------------------------------------------------------------------------

_JSON_LINE = re.compile(r"^WRK_JSON (\{.*\})$", re.MULTILINE)


def parse_wrk(output: str) -> WrkResult:
    """The figures bench/replay.lua's done() prints (latency in microseconds)."""
    match = _JSON_LINE.search(output)
    if match is None:
        raise RuntimeError(f"wrk printed no WRK_JSON line:\n{output}")
    raw = json.loads(match.group(1))
    errors = sum(raw[key] for key in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    return WrkResult(
        requests=raw["requests"],
        duration_s=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        errors=errors,
    )


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is not installed: run bench/setup (apt-get install -y wrk)")
    return found


def run_wrk(port: int, requests_file: Path, *, duration_s: float, connections: int, start: int = 0) -> WrkResult:
    argv = [
        wrk_binary(),
        "-t1",
        f"-c{connections}",
        f"-d{duration_s:g}s",
        "--timeout",
        "10s",
        "-s",
        str(ROOT / "bench" / "replay.lua"),
        f"http://127.0.0.1:{port}/webhooks/ringside",
        "--",
        str(requests_file),
        str(start),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited {done.returncode}: {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


# -- servers --------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def started(
    spec: Spec, workdir: Path, redis_url: str, number: int, postgres_url: str = DEFAULT_POSTGRES_URL
) -> Iterator[Server]:
    """The server of `spec`, one worker, with its dispatcher and the local ledger biller, on a free port."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "RINGSIDE_WEBHOOK_SECRETS": BENCH_SECRET,
        "GATEWAY_LOG_FORMAT": "json",
        "GATEWAY_PORT": str(port),
    }
    env.pop("STRIPE_API_KEY", None)  # the local ledger biller: the dispatcher's work stays in this process
    if spec.kind == "sqlite":
        env["GATEWAY_STORE"] = f"sqlite:///{workdir / f'gateway-{number}.db'}"
    elif spec.kind == "redis":
        env["GATEWAY_STORE"] = redis_url
        env.setdefault("GATEWAY_REDIS_ALLOW_VOLATILE", "true")  # the bench's Redis need not persist
        _flush_redis(redis_url)
    elif spec.kind == "postgres":
        env["GATEWAY_STORE"] = _fresh_postgres_schema(postgres_url, f"bench_{number}")
    if spec.variant == "quiet":
        env["GATEWAY_LOG_LEVEL"] = "warning"
    elif spec.variant == "linelog":
        env["GATEWAY_LOG_FLUSH_MS"] = "0"
    # bench.ablate with no switch serves as the real thing does, its threads named for bench/threads.py.
    without = "group-commit" if spec.variant == "nogroup" else ""
    wrapper = [sys.executable, "-m", "bench.ablate", "--without", without, "--"]
    if spec.kind == "bare":
        argv = [*wrapper, "bare", "--port", str(port), "--server", spec.server]
        ready = "/healthz"
    elif spec.server == "granian":
        argv = granian_argv(worker_factory(run_dispatcher=spec.variant != "nodispatch"), "127.0.0.1", port, 1)
        ready = "/readyz"
    else:
        argv = [*wrapper, "serve", *(["--no-dispatcher"] if spec.variant == "nodispatch" else [])]
        argv += ["--workers", str(spec.workers)] if spec.workers > 1 else []
        ready = "/readyz"
    server = Server(argv, env, workdir / f"{number:02d}-{spec.name}.log", port)
    try:
        server.wait_ready(ready)
        yield server
    finally:
        server.stop()


def _fresh_postgres_schema(url: str, schema: str) -> str:
    """`url` with its tables in `schema`, emptied first (dropped and created again)."""
    import asyncpg

    async def recreate() -> None:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")
        finally:
            await connection.close()

    asyncio.run(recreate())
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}"


def measure(
    spec: Spec, server: Server, args: argparse.Namespace, workdir: Path, round_: int, bare_file: Path | None
) -> Measured:
    target = Target("127.0.0.1", server.port, "/webhooks/ringside")
    if spec.stateless and bare_file is not None:
        requests_file = bare_file  # the bare endpoint keeps nothing: one file serves every round
    else:
        requests_file = workdir / f"requests-{spec.name}-{round_}.bin"
        write_requests(requests_file, args.deliveries, target, customers=args.customers)
    warm_start = int(args.deliveries * (1 - WARMUP_SHARE))
    run_wrk(server.port, requests_file, duration_s=args.warmup, connections=args.connections, start=warm_start)
    memory = ProcessMemory(server.pid)
    redis = ProcessMemory(redis_pid(args.redis_url)) if spec.kind == "redis" else None
    redis_before = redis.cpu_s() if redis is not None else 0.0
    postgres = PostgresServer(args.postgres_url) if spec.kind == "postgres" else None
    postgres_before = postgres.snapshot() if postgres is not None else None
    cpu_before, threads_before = memory.cpu_s(), thread_ticks(server.pid)
    full = run_wrk(server.port, requests_file, duration_s=args.duration, connections=args.connections)
    cpu_s = memory.cpu_s() - cpu_before
    store_cpu_s = redis.cpu_s() - redis_before if redis is not None else None
    wal_bytes = None
    if postgres is not None and postgres_before is not None:
        store_cpu_s, wal_bytes = postgres.since(postgres_before)
    threads = cpu_seconds_by_thread(threads_before, thread_ticks(server.pid))
    notes = []
    if not spec.stateless and full.requests + args.connections > warm_start:
        notes.append("reached the warm-up's deliveries: some were duplicates")
    if full.errors:
        notes.append(f"{full.errors} errors/non-2xx")
    half = None
    if args.half:
        rate = max(1.0, full.rps / 2)
        deliveries = presign(int(rate * (1 + args.duration)) + 1000, target, secret=BENCH_SECRET, mix=Mix())
        half = asyncio.run(
            run_load(
                target,
                deliveries,
                duration_s=args.duration,
                concurrency=args.connections,
                rate_rps=rate,
                warmup_s=1.0,
            )
        )
        if half.errors:
            notes.append(f"{half.errors} wrong answers at half load")
    if requests_file != bare_file:
        requests_file.unlink(missing_ok=True)
    return Measured(spec, full, cpu_s, threads, half, round_, notes, store_cpu_s, wal_bytes)


def redis_pid(url: str) -> int:
    """The Redis server's process id (it runs on this machine: its CPU competes with the gateway's)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


def measure_target(
    spec: Spec, args: argparse.Namespace, workdir: Path, round_: int, number: int, bare_file: Path
) -> Measured:
    with started(spec, workdir, args.redis_url, number, args.postgres_url) as server:
        # One file for the bare endpoint, signed anew before the signatures' tolerance runs out.
        if spec.stateless and (not bare_file.exists() or time.time() - bare_file.stat().st_mtime > 200):
            target = Target("127.0.0.1", server.port, "/webhooks/ringside")
            write_requests(bare_file, args.deliveries, target, customers=args.customers)
        return measure(spec, server, args, workdir, round_, bare_file)


# -- the report -----------------------------------------------------------------------------------------------------


def _bare_of_round(row: Measured, rows: list[Measured], server: str) -> Measured | None:
    return next((r for r in rows if r.round == row.round and r.spec == Spec("bare", server)), None)


def ratio(row: Measured, rows: list[Measured], server: str) -> str:
    """`row`'s req/s over the bare endpoint's on `server` in the same round, or "-"."""
    bare = _bare_of_round(row, rows, server)
    return f"{row.full.rps / bare.full.rps:.2f}" if bare and bare.full.rps else "-"


def cpu_ratio(row: Measured, rows: list[Measured]) -> str:
    """The bare endpoint's (uvicorn, same round) CPU per delivery over `row`'s: what the req/s ratio would be if
    each server had one core's worth of CPU to itself. On a shared machine it holds far steadier than req/s, which
    the scheduler's shares move (a server with more busy threads gets more of a contended core)."""
    bare = _bare_of_round(row, rows, "uvicorn")
    return f"{bare.cpu_us_per_delivery / row.cpu_us_per_delivery:.2f}" if bare and row.cpu_us_per_delivery else "-"


def table(rows: list[Measured]) -> str:
    lines = [
        "| round | target | req/s | vs bare (uvicorn) | vs bare (same HTTP server) | p50 ms | p99 ms "
        "| server CPU s | CPU us/delivery | CPU ratio (bare/this) | store server us/delivery | WAL bytes/delivery "
        "| p99 ms at half load | notes |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        half = f"{row.half.p99_ms:.1f} ({row.half.throughput_rps:,.0f}/s)" if row.half else "-"
        lines.append(
            f"| {row.round} | {row.spec.name} | {row.full.rps:,.0f} | {ratio(row, rows, 'uvicorn')} "
            f"| {ratio(row, rows, row.spec.server)} | {row.full.p50_ms:.1f} | {row.full.p99_ms:.1f} "
            f"| {row.cpu_s:.2f} | {row.cpu_us_per_delivery:.0f} | {cpu_ratio(row, rows)} "
            f"| {_per_delivery(row.store_cpu_s, row)} "
            f"| {_wal_per_delivery(row)} | {half} "
            f"| {'; '.join(row.notes)} |"
        )
    return "\n".join(lines)


def _spread(values: list[float], form: str) -> str:
    """The median, and the lowest to highest when there are several: `1.02 (0.95-1.10)`."""
    if not values:
        return "-"
    median = statistics.median(values)
    if len(values) == 1:
        return format(median, form)
    return f"{median:{form}} ({min(values):{form}}-{max(values):{form}})"


def summary(rows: list[Measured]) -> str:
    """Per target over the rounds: the median and spread of req/s, of its ratios to the bare endpoint of the same
    round, of CPU per delivery and of the half-load p99."""
    lines = [
        "| target | rounds | req/s | vs bare (uvicorn) | vs bare (same HTTP server) | CPU us/delivery "
        "| CPU ratio (bare/this) | p99 ms | p99 ms at half load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for spec in dict.fromkeys(row.spec for row in rows):
        mine = [row for row in rows if row.spec == spec]

        def ratios(of: list[str]) -> list[float]:
            return [float(value) for value in of if value != "-"]

        lines.append(
            f"| {spec.name} | {len(mine)} | {_spread([r.full.rps for r in mine], ',.0f')} "
            f"| {_spread(ratios([ratio(r, rows, 'uvicorn') for r in mine]), '.2f')} "
            f"| {_spread(ratios([ratio(r, rows, spec.server) for r in mine]), '.2f')} "
            f"| {_spread([r.cpu_us_per_delivery for r in mine], '.0f')} "
            f"| {_spread(ratios([cpu_ratio(r, rows) for r in mine]), '.2f')} "
            f"| {_spread([r.full.p99_ms for r in mine], '.1f')} "
            f"| {_spread([r.half.p99_ms for r in mine if r.half], '.1f')} |"
        )
    return "\n".join(lines)


def _wal_per_delivery(row: Measured) -> str:
    return f"{row.wal_bytes / row.full.requests:,.0f}" if row.wal_bytes is not None and row.full.requests else "-"


def _per_delivery(seconds: float | None, row: Measured) -> str:
    return f"{seconds / row.full.requests * 1e6:.0f}" if seconds is not None and row.full.requests else "-"


def thread_table(rows: list[Measured]) -> str:
    """CPU per delivery by thread (us), each row's threads as the kernel counted them."""
    lines = ["| round | target | CPU us/delivery by thread |", "|---:|---|---|"]
    for row in rows:
        per = ", ".join(f"{name} {seconds / row.full.requests * 1e6:.0f}" for name, seconds in row.threads.items())
        lines.append(f"| {row.round} | {row.spec.name} | {per} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.wrk", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        default="bare,sqlite,redis",
        help="targets in order: kind[-granian][-quiet|-nodispatch], kind bare|sqlite|redis [bare,sqlite,redis]",
    )
    parser.add_argument("--duration", type=float, default=9.0, help="measured seconds per wrk run [9]")
    parser.add_argument("--warmup", type=float, default=2.0, help="wrk warm-up seconds [2]")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--deliveries", type=int, default=250_000, help="pre-signed deliveries per file [250000]")
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument(
        "--rounds", "--repeat", dest="repeat", type=int, default=2, help="rounds, each target once per round [2]"
    )
    parser.add_argument("--no-half", dest="half", action="store_false", help="skip the half-load latency runs")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="a database the bench may flush [db 14]")
    parser.add_argument(
        "--postgres-url", default=DEFAULT_POSTGRES_URL, help="a database where the bench may drop and create schemas"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, databases)")
    args = parser.parse_args(argv)
    specs = [Spec.parse(name.strip()) for name in args.only.split(",") if name.strip()]
    wrk_binary()
    install_fast_loop()
    workdir = Path(tempfile.mkdtemp(prefix="gateway-wrk-"))
    rows: list[Measured] = []
    number = 0
    try:
        bare_file = workdir / "requests-bare.bin"
        for round_ in range(1, args.repeat + 1):
            for spec in specs:
                number += 1
                try:
                    row = measure_target(spec, args, workdir, round_, number, bare_file)
                except (RuntimeError, OSError) as exc:
                    print(f"-- round {round_} {spec.name}: not measured: {exc}", file=sys.stderr, flush=True)
                    continue
                rows.append(row)
                half = f"; half load p99 {row.half.p99_ms:.1f} ms" if row.half else ""
                print(
                    f"-- round {round_} {spec.name}: {row.full.rps:,.0f} req/s, p99 {row.full.p99_ms:.1f} ms, "
                    f"{row.cpu_us_per_delivery:.0f} us CPU/delivery{half} {' '.join(row.notes)}",
                    file=sys.stderr,
                    flush=True,
                )
        print(
            f"wrk 1 thread x{args.connections} connections, {args.duration:g} s after {args.warmup:g} s warm-up, "
            f"one worker, {args.deliveries:,} pre-signed deliveries over {args.customers} customers per file; "
            f"load average {os.getloadavg()[0]:.2f}"
        )
        print(summary(rows))
        print()
        print(table(rows))
        print()
        print(thread_table(rows))
    finally:
        if args.keep:
            print(f"work dir kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
