"""Where a server's CPU goes per delivery: py-spy samples under wrk load, sorted into the gateway's parts.

    bench/setup                                  # once: wrk and py-spy
    .venv/bin/python -m bench.profile [--target sqlite] [--duration 8] [--rate 200] [--raw out.txt]

Starts the target as bench/wrk.py does (one worker, dispatcher in-process, local ledger biller), warms it up with
wrk, then runs wrk again while `py-spy record --native --threads --format raw` samples the server. Each sample (one
thread's stack at one instant; py-spy leaves idle threads out) goes to one part, by the thread it was taken on and
then by its innermost frame that belongs to a known part (see `PARTS`); a sample caught waiting (`IDLE_CALLS`)
counts for nothing. Each thread's CPU per delivery is measured from /proc (bench/threads.py) and shared among its
parts in proportion to its busy samples. The sampler pauses the
server for each sample, so throughput under profile is lower than bench/wrk.py's; the shares are what counts.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.load import ProcessMemory, Target
from bench.threads import cpu_seconds_by_thread, kernel_name, thread_ticks
from bench.wrk import DEFAULT_POSTGRES_URL, WARMUP_SHARE, Spec, run_wrk, started, write_requests

# Threads other than the event loop's, by the name bench/threads.py gives them. The SQLite writer's samples are
# split by the job it runs (WRITER_JOBS); the others are one part each.
THREADS = {
    "sqlite-sync": "fsync thread",
    "sqlite-checkpoi": "checkpoint thread",
    "log-writer": "logging: writer thread",
}
WRITER = "sqlite_0"
WRITER_JOBS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("writer: ingest record (_record_many)", ("_record_many", "SqliteLedger.record", "SqliteLedger.park")),
    ("writer: local biller send_batch", ("SqliteBiller.",)),
    ("writer: dispatcher lease/mark_sent", ("lease_due", "mark_sent", "release", "mark_retry")),
    ("writer: checkpoint", ("_finish_checkpoint",)),
    ("writer: BEGIN/COMMIT, fsync hand-off", ("_run_writes", "_begin_immediate", "_Syncer", "_drain")),
)

# On the event loop's thread: the first part, innermost frame first, whose pattern a frame's text holds. Order
# matters only within one frame. The dispatcher and the sweep are whole parts: what they call (the store, logging)
# counts to them, as work that ingest does not do.
OWNERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("dispatcher", ("gateway/service/dispatcher.py",)),
    ("sweep", ("gateway/service/sweep.py",)),
)
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "logging",
        (
            "structlog/",
            "/logging/__init__.py",
            "gateway/app/logging.py",
            "gateway/app/redaction.py",
            "gateway/app/log_handler.py",
        ),
    ),
    ("metrics", ("prometheus_client/", "gateway/app/metrics.py")),
    ("signature", ("gateway/domain/signature.py",)),
    ("parse", ("gateway/domain/event.py",)),
    ("policy", ("gateway/domain/policy.py", "gateway/domain/units.py")),
    ("store call", ("gateway/adapters/", "site-packages/redis/", "redis/asyncio/", "hiredis")),
    ("webhook route and ingest", ("gateway/app/webhook.py", "gateway/service/ingest.py", "gateway/app/")),
    ("HTTP server and framework", ("uvicorn/", "httptools", "litestar/", "granian")),
)
LOOP = "event loop, other"
IDLE = "idle"
# A sample whose innermost frames wait (for I/O, a queue, a condition or the GIL) spent no CPU: py-spy's --native
# stacks do not always leave those out. Matched against the last IDLE_DEPTH frames.
IDLE_CALLS = (
    "epoll_wait",
    "epoll_pwait",
    "pthread_cond_timedwait",
    "pthread_cond_wait",
    "sem_clockwait",
    "sem_timedwait",
    "sem_wait",
    "futex",
    "nanosleep",
    "_queue_SimpleQueue_get",
    "PyThread_acquire_lock_timed",
    "select (",
    "poll (",
)
IDLE_DEPTH = 3

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_THREAD = re.compile(r"^thread \((?P<tid>\d+)\)(?::\s*(?P<name>.*))?$")


def classify(frames: list[str], thread_name: str) -> str:
    """The part one sample belongs to; `frames` outermost first, as py-spy's raw format lists them."""
    if any(call in frame for frame in frames[-IDLE_DEPTH:] for call in IDLE_CALLS):
        return IDLE
    if thread_name in THREADS:
        return THREADS[thread_name]
    if thread_name == WRITER:
        for part, patterns in WRITER_JOBS:
            if any(pattern in frame for frame in frames for pattern in patterns):
                return part
        return "writer: other"
    if thread_name != "main":
        return f"thread {thread_name}"
    for part, patterns in OWNERS:
        if any(pattern in frame for frame in frames for pattern in patterns):
            return part
    for frame in reversed(frames):
        for part, patterns in PARTS:
            if any(pattern in frame for pattern in patterns):
                return part
    return LOOP


def breakdown(raw: str, thread_names: dict[str, str] | None = None) -> dict[str, Counter[str]]:
    """Samples per thread and part from py-spy's raw output (`--threads`: each stack starts with
    `thread (TID): Name`). A thread is known by its kernel name (bench/threads.py): from py-spy's Python name, else
    from `thread_names` (TID -> kernel name), else `main`."""
    threads: dict[str, Counter[str]] = {}
    for line in raw.splitlines():
        match = _LINE.match(line.strip())
        if match is None:
            continue
        frames = match.group("stack").split(";")
        name = "main"
        if frames and (thread := _THREAD.match(frames[0])):
            python_name = thread.group("name")
            if python_name:
                name = "main" if python_name == "MainThread" else kernel_name(python_name)
            else:
                name = (thread_names or {}).get(thread.group("tid"), "main")
            frames = frames[1:]
        threads.setdefault(name, Counter())[classify(frames, name)] += int(match.group("count"))
    return threads


def attribute(samples: dict[str, Counter[str]], thread_us: dict[str, float]) -> dict[str, float]:
    """CPU us per delivery per part: each thread's measured CPU (from /proc, `thread_us`) shared among its parts in
    proportion to its busy samples. A thread that used CPU but was never caught busy stays one part of its own."""
    parts: dict[str, float] = {}
    for thread, used in thread_us.items():
        busy = {part: count for part, count in samples.get(thread, Counter()).items() if part != IDLE}
        total = sum(busy.values())
        if not total:
            parts[f"thread {thread} (no busy sample)"] = used
            continue
        for part, count in busy.items():
            parts[part] = parts.get(part, 0.0) + used * count / total
    return parts


def names_by_tid(pid: int) -> dict[str, str]:
    """The kernel's name of each thread of `pid`, by TID."""
    names = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            names[task.name] = (task / "comm").read_text().strip()
        except OSError:
            continue
    return names


def server_pid(root: int) -> int:
    """The process that runs the app: the server itself, or granian's worker (its only Python child)."""
    children = Path(f"/proc/{root}/task/{root}/children").read_text().split()
    return int(children[0]) if children else root


def report(parts: dict[str, float]) -> str:
    total = sum(parts.values()) or 1.0
    lines = ["| part | CPU us/delivery | share |", "|---|---:|---:|"]
    for part, micros in sorted(parts.items(), key=lambda item: -item[1]):
        lines.append(f"| {part} | {micros:.1f} | {micros / total:.0%} |")
    lines.append(f"| total | {total:.1f} | 100% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="sqlite", help="as bench.wrk's --only: one target [sqlite]")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--deliveries", type=int, default=150_000)
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second [200]")
    parser.add_argument("--raw", type=Path, default=None, help="keep py-spy's raw stacks here")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL, help="as bench.wrk's --postgres-url")
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: run bench/setup")
    spec = Spec.parse(args.target)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-profile-"))
    try:
        with started(spec, workdir, args.redis_url, 1, args.postgres_url) as server:
            pid = server_pid(server.pid)
            requests_file = workdir / "requests.bin"
            write_requests(
                requests_file,
                args.deliveries,
                Target("127.0.0.1", server.port, "/webhooks/ringside"),
                customers=args.customers,
            )
            warm = int(args.deliveries * (1 - WARMUP_SHARE))
            run_wrk(server.port, requests_file, duration_s=args.warmup, connections=args.connections, start=warm)
            raw_path = args.raw or workdir / "profile.txt"
            memory = ProcessMemory(server.pid)
            cpu_before, threads_before = memory.cpu_s(), thread_ticks(server.pid)
            record = ["record", "--native", "--threads", "-r", str(args.rate), "-d", f"{args.duration:g}"]
            sampler = subprocess.Popen(
                [spy, *record, "--format", "raw", "-o", str(raw_path), "--pid", str(pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            time.sleep(0.3)  # py-spy attaches
            full = run_wrk(server.port, requests_file, duration_s=args.duration, connections=args.connections)
            cpu_s = memory.cpu_s() - cpu_before
            threads = cpu_seconds_by_thread(threads_before, thread_ticks(server.pid))
            _, errors = sampler.communicate(timeout=60)
            names = names_by_tid(pid)
        samples = breakdown(raw_path.read_text(), names)
        thread_us = {name: seconds / full.requests * 1e6 for name, seconds in threads.items()} if full.requests else {}
        per_delivery = cpu_s / full.requests * 1e6 if full.requests else 0.0
        print(
            f"{spec.name}: {full.rps:,.0f} req/s under the profiler (wrk 1 thread x{args.connections}, "
            f"{args.duration:g} s), server CPU {cpu_s:.2f} s = {per_delivery:.0f} us/delivery; py-spy at {args.rate}/s"
        )
        print("CPU by thread (us/delivery): " + ", ".join(f"{name} {us:.0f}" for name, us in thread_us.items()))
        print(report(attribute(samples, thread_us)))
        if errors and "Errors: 0" not in errors:
            print(f"py-spy: {errors.strip().splitlines()[0]}", file=sys.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
