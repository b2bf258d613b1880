"""A load generator for the webhook endpoint: pre-signed deliveries over keep-alive connections.

    python -m bench.load run --url http://127.0.0.1:8000/webhooks/ringside --secret S --duration 10 \
        --concurrency 32 [--rate 2000] [--mix valid=0.8,duplicate=0.15,bad=0.05] [--pid SERVER_PID] [--rss-timeline]
    python -m bench.load selftest          # what the generator itself can do, against a trivial server

Invariants:
- Every delivery is built and signed before the clock starts, so the generator spends its time on I/O only. A
  signature's `t` is the pre-signing time and the gateway accepts it for 300 s (docs/design.md), so a run (pre-signing
  included) must end within that window: `run` refuses a longer one.
- Valid deliveries carry ids unique to the run (a run id prefixes them), so a rerun against the same store never
  turns them into duplicates. A duplicate repeats the exact bytes of an earlier valid delivery, as a Ringside
  redelivery does. A bad delivery is a fresh event under a wrong signature: it must be answered 401.
- Closed loop (`--rate` absent): `concurrency` connections each send back to back. Open loop (`--rate R`): request i
  is due at start + i/R and its latency is counted from that due time, not from when a connection was free, so a
  stalled server cannot hide its queueing (no coordinated omission).
- The default client is raw asyncio streams speaking HTTP/1.1 with Content-Length framing: `selftest` shows it is
  several times faster than httpx, which would otherwise be the bottleneck on a 2-core machine shared with the
  server. `--client httpx` is kept for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import msgspec

# docs/design.md, "Signature": |now - t| <= 300 s. Keep a margin for the clock reads on both sides.
SIGNATURE_WINDOW_S = 290.0
REQUEST_TIMEOUT_S = 10.0
BENCH_SECRET = "whsec_bench_only_not_a_real_secret"
PAD = (
    "Summarise the attached quarterly usage report for the finance team, highlighting any anomalies in the per-model "
    "token spend and the customers whose usage grew fastest over the period. "
)


class Kind(StrEnum):
    VALID = "valid"
    DUPLICATE = "duplicate"
    BAD = "bad"


# What each kind may be answered with and still count as correct. A duplicate may overtake its original on another
# connection and be the one accepted; that is still exactly-once, so both answers are fine for both kinds.
EXPECTED: dict[Kind, frozenset[str]] = {
    Kind.VALID: frozenset({"200 accepted", "200 duplicate"}),
    Kind.DUPLICATE: frozenset({"200 duplicate", "200 accepted"}),
    Kind.BAD: frozenset({"401"}),
}


@dataclass(frozen=True)
class Mix:
    valid: float = 0.80
    duplicate: float = 0.15
    bad: float = 0.05

    @classmethod
    def parse(cls, text: str) -> Mix:
        shares = {name: 0.0 for name in ("valid", "duplicate", "bad")}
        for part in text.split(","):
            name, _, value = part.partition("=")
            if name.strip() not in shares:
                raise ValueError(f"unknown kind {name!r} in --mix (valid, duplicate, bad)")
            shares[name.strip()] = float(value)
        total = sum(shares.values())
        if total <= 0:
            raise ValueError("--mix shares must add up to more than 0")
        return cls(**{name: value / total for name, value in shares.items()})


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("--url must be http://host:port/path")
        return cls(parts.hostname, parts.port or 80, parts.path or "/")


def event_body(event_id: str, customer: int, cost_micro_usd: int, created: int) -> bytes:
    """A Ringside-shaped event of about 1 KiB: the fields the gateway reads plus the kind of payload it ignores."""
    body = {
        "id": event_id,
        "type": "chat.completion.finished",
        "created": created,
        "data": {
            "cost_usd": f"{cost_micro_usd / 1_000_000:.6f}",
            "customer": {
                "id": f"cust_bench_{customer}",
                "metadata": {"stripe_customer_id": f"cus_bench_{customer}", "plan": "growth"},
            },
            "model": "claude-sonnet-4",
            "usage": {"prompt_tokens": 1200 + customer, "completion_tokens": 340, "cache_read_tokens": 0},
            "request_id": f"req_{event_id[-16:]}",
            "latency_ms": 812,
            "tags": ["bench", "load", "webhook"],
            "prompt_preview": (PAD * 4)[:560],
        },
    }
    return msgspec.json.encode(body)


def signature(body: bytes, secret: str, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def raw_request(target: Target, body: bytes, signature_value: str) -> bytes:
    head = (
        f"POST {target.path} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\nContent-Type: application/json\r\n"
        f"X-FC-Signature: {signature_value}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Deliveries:
    """Pre-signed requests, in sending order. `signed_at` bounds how long they stay valid."""

    kinds: list[Kind]
    requests: list[bytes]
    signed_at: float
    body_bytes: int

    def __len__(self) -> int:
        return len(self.requests)


def presign(
    count: int, target: Target, *, secret: str, mix: Mix, customers: int = 1000, seed: int = 7, run_id: str = ""
) -> Deliveries:
    """Build and sign `count` requests. Valid ids are `evt_<run_id>_<n>`; duplicates replay an earlier valid one."""
    rng = random.Random(seed)
    run_id = run_id or secrets.token_hex(4)
    now = int(time.time())
    kinds: list[Kind] = []
    requests: list[bytes] = []
    valid_positions: list[int] = []
    body_bytes = 0
    thresholds = (mix.valid, mix.valid + mix.duplicate)
    for n in range(count):
        draw = rng.random()
        kind = Kind.VALID if draw < thresholds[0] else Kind.DUPLICATE if draw < thresholds[1] else Kind.BAD
        if kind is Kind.DUPLICATE and not valid_positions:
            kind = Kind.VALID
        if kind is Kind.DUPLICATE:
            # A recent one, as Ringside redelivers within seconds to minutes.
            original = valid_positions[max(0, len(valid_positions) - 1 - rng.randrange(1000))]
            request = requests[original]
        else:
            body = event_body(f"evt_{run_id}_{n:09d}", rng.randrange(customers), rng.randrange(1, 50_000), now)
            body_bytes += len(body)
            value = signature(body, secret, now)
            if kind is Kind.BAD:
                value = value[:-8] + ("0" * 8 if not value.endswith("0" * 8) else "1" * 8)
            else:
                valid_positions.append(n)
            request = raw_request(target, body, value)
        kinds.append(kind)
        requests.append(request)
    signed = max(1, count - kinds.count(Kind.DUPLICATE))
    return Deliveries(kinds, requests, float(now), body_bytes // signed)


# -- the server's memory --------------------------------------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: the parent pid is the 2nd field after them.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(children.get(current, []))
    return found


def _status_kib(pid: int, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


@dataclass
class MemorySample:
    at_s: float
    rss_kib: int


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    # utime and stime (fields 14 and 15 of proc(5)), counted from the state field (field 3) on: all its threads.
    return int(fields[11]) + int(fields[12])


@dataclass
class ProcessMemory:
    """The server's resident memory and CPU time: the process and every descendant (uvicorn workers), summed."""

    pid: int
    samples: list[MemorySample] = field(default_factory=list)

    def cpu_s(self) -> float:
        """CPU seconds (user + system, every thread) the server has used so far: noise from other load on the
        machine slows a server down but hardly changes what each request costs it."""
        return sum(_cpu_ticks(pid) for pid in _descendants(self.pid)) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        return sum(_status_kib(pid, "VmRSS") for pid in _descendants(self.pid))

    def peak_kib(self) -> int:
        """Sum over the tree of each process's high-water mark (VmHWM): never below any sampled RSS."""
        return sum(_status_kib(pid, "VmHWM") for pid in _descendants(self.pid))

    async def sample_every(self, interval_s: float, started: float) -> None:
        while True:
            self.samples.append(MemorySample(time.perf_counter() - started, self.rss_kib()))
            await asyncio.sleep(interval_s)


# -- clients --------------------------------------------------------------------------------------------------------


class _Status(msgspec.Struct):
    status: str = ""


_decode_status = msgspec.json.Decoder(_Status).decode


def outcome_label(status: int, body: bytes) -> str:
    if status in (200, 202):
        try:
            return f"{status} {_decode_status(body).status}"
        except msgspec.DecodeError:
            return f"{status} unparsable"
    return str(status)


class RawConnection:
    """One keep-alive HTTP/1.1 connection over asyncio streams; responses must carry Content-Length."""

    def __init__(self, target: Target) -> None:
        self._target = target
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._target.host, self._target.port)
            sock = self._writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert self._reader is not None
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at < 0:
            self.close()
            raise ConnectionError("response without Content-Length")
        end = lower.index(b"\r\n", at + 2)
        body = await self._reader.readexactly(int(lower[at + 17 : end]))
        if b"\r\nconnection: close" in lower:
            self.close()
        return status, body

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


class HttpxConnection:
    """The same exchange through httpx (for comparison: `--client httpx`)."""

    def __init__(self, target: Target, client: Any) -> None:
        import httpx

        self._url = f"http://{target.host}:{target.port}{target.path}"
        self._client = client
        self._errors = httpx.HTTPError

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        head, _, body = request.partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
        headers.pop("Host", None)
        headers.pop("Content-Length", None)
        try:
            response = await self._client.post(self._url, content=body, headers=headers)
        except self._errors as exc:
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc
        return int(response.status_code), bytes(response.content)

    def close(self) -> None:
        return None


# -- the run --------------------------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    sent: int
    duration_s: float
    throughput_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    outcomes: dict[str, dict[str, int]]
    body_bytes: int
    rate_rps: float | None
    concurrency: int
    peak_rss_mib: float | None = None
    rss_mib: list[tuple[float, float]] = field(default_factory=list)
    server_cpu_us: float | None = None  # server CPU time per measured request, in microseconds
    machine_stall_ms: float | None = None  # bench.stall_probe's longest overrun during the run, when it ran

    def rss_growth(self) -> tuple[float, float, float, float] | None:
        """(start, middle, end, growth of end over start in %) of the sampled RSS, or None without samples."""
        if len(self.rss_mib) < 3:
            return None
        start, middle, end = self.rss_mib[0][1], self.rss_mib[len(self.rss_mib) // 2][1], self.rss_mib[-1][1]
        return start, middle, end, (end - start) / start * 100 if start else 0.0

    def summary(self) -> str:
        mode = f"rate {self.rate_rps:g}/s" if self.rate_rps else f"closed loop x{self.concurrency}"
        lines = [
            f"{self.sent} requests in {self.duration_s:.1f}s ({mode}, ~{self.body_bytes} B bodies): "
            f"{self.throughput_rps:,.0f} req/s",
            f"latency ms: p50 {self.p50_ms:.2f}  p90 {self.p90_ms:.2f}  p99 {self.p99_ms:.2f}  max {self.max_ms:.2f}",
            f"errors: {self.errors}",
            "outcomes: " + "; ".join(f"{kind}: {dict(counts)}" for kind, counts in self.outcomes.items()),
        ]
        if self.peak_rss_mib is not None:
            lines.append(f"server peak RSS: {self.peak_rss_mib:.1f} MiB")
        if self.server_cpu_us is not None:
            lines.append(f"server CPU per request: {self.server_cpu_us:.0f} us")
        growth = self.rss_growth()
        if growth is not None:
            lines.append(
                f"server RSS MiB: start {growth[0]:.1f}  middle {growth[1]:.1f}  end {growth[2]:.1f}"
                f"  (end vs start {growth[3]:+.1f}%)"
            )
        return "\n".join(lines)


def _percentile(ordered: list[float], share: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def run_load(
    target: Target,
    deliveries: Deliveries,
    *,
    duration_s: float,
    concurrency: int,
    rate_rps: float | None = None,
    warmup_s: float = 1.0,
    server_pid: int | None = None,
    rss_every_s: float | None = None,
    client: str = "raw",
    cycle: bool = False,
) -> LoadResult:
    """Send `deliveries` in order until `warmup_s + duration_s` is over or they run out; measure after warm-up.

    `cycle` starts over at the first delivery instead of running out: only for a server that keeps no state (the
    bare endpoint), where a repeat is no different from a first delivery.
    """
    if time.time() + warmup_s + duration_s - deliveries.signed_at > SIGNATURE_WINDOW_S:
        raise ValueError("the run would outlast the signatures' 300 s tolerance: shorten it or pre-sign later")
    latencies: list[float] = []
    outcomes: dict[Kind, Counter[str]] = {kind: Counter() for kind in Kind}
    errors = 0
    next_index = 0
    started = time.perf_counter()
    measure_from = started + warmup_s
    stop_at = measure_from + duration_s
    measured = 0
    memory = ProcessMemory(server_pid) if server_pid else None
    cpu_started: float | None = None

    async def cpu_at_measure_start() -> None:
        nonlocal cpu_started
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        cpu_started = memory.cpu_s() if memory is not None else None

    cpu_task = asyncio.create_task(cpu_at_measure_start())
    sampler = (
        asyncio.create_task(memory.sample_every(rss_every_s, measure_from))
        if memory is not None and rss_every_s
        else None
    )

    async def worker(connection: RawConnection | HttpxConnection) -> None:
        nonlocal next_index, errors, measured
        while True:
            # Claim the index before any await: workers sleeping towards their due times must not share one.
            sequence = next_index
            if sequence >= len(deliveries) and not cycle:
                return
            next_index = sequence + 1
            index = sequence % len(deliveries)
            if rate_rps:
                due = started + sequence / rate_rps
                if due >= stop_at:
                    return
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                due = time.perf_counter()
                if due >= stop_at:
                    return
            kind = deliveries.kinds[index]
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    status, body = await connection.exchange(deliveries.requests[index])
                label = outcome_label(status, body)
            except (OSError, EOFError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                connection.close()
                label = f"error {type(exc).__name__}"
            finished = time.perf_counter()
            if due >= measure_from and finished <= stop_at + REQUEST_TIMEOUT_S:
                measured += 1
                latencies.append(finished - due)
                outcomes[kind][label] += 1
                if label not in EXPECTED[kind]:
                    errors += 1

    httpx_client: Any = None
    if client == "httpx":
        import httpx

        # TCP_NODELAY: httpx writes the head and the body separately, and without it Nagle's algorithm holds the
        # body back until the server's delayed ACK (~40 ms), which would measure the kernel rather than httpx.
        httpx_client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(
                limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            ),
            timeout=None,
        )
        connections: list[RawConnection | HttpxConnection] = [
            HttpxConnection(target, httpx_client) for _ in range(concurrency)
        ]
    else:
        connections = [RawConnection(target) for _ in range(concurrency)]
    try:
        await asyncio.gather(*(worker(connection) for connection in connections))
    finally:
        for connection in connections:
            connection.close()
        if httpx_client is not None:
            await httpx_client.aclose()
        if sampler is not None:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
    ended = min(time.perf_counter(), stop_at)
    cpu_used = memory.cpu_s() - cpu_started if memory is not None and cpu_started is not None else None
    cpu_task.cancel()
    window = max(1e-9, ended - measure_from)
    latencies.sort()
    if next_index >= len(deliveries) and ended < stop_at:
        print(f"warning: ran out of pre-signed deliveries after {window:.1f}s; pre-sign more", file=sys.stderr)
    return LoadResult(
        sent=measured,
        duration_s=window,
        throughput_rps=measured / window,
        p50_ms=_percentile(latencies, 0.50) * 1000,
        p90_ms=_percentile(latencies, 0.90) * 1000,
        p99_ms=_percentile(latencies, 0.99) * 1000,
        max_ms=(latencies[-1] if latencies else 0.0) * 1000,
        errors=errors,
        outcomes={kind.value: dict(counts) for kind, counts in outcomes.items() if counts},
        body_bytes=deliveries.body_bytes,
        rate_rps=rate_rps,
        concurrency=concurrency,
        peak_rss_mib=memory.peak_kib() / 1024 if memory is not None else None,
        rss_mib=[(s.at_s, s.rss_kib / 1024) for s in memory.samples] if memory is not None else [],
        # Requests still in flight at the end were partly served: a bias of at most `concurrency` requests.
        server_cpu_us=cpu_used / measured * 1e6 if cpu_used is not None and measured else None,
    )


def install_fast_loop() -> str:
    """uvloop when it is installed (the generator then needs less CPU per request), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


# -- the trivial server and the self-test ---------------------------------------------------------------------------

_TRIVIAL_REPLY = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 21\r\n\r\n{"status":"accepted"}'


class _TrivialProtocol(asyncio.Protocol):
    """Answers every request with the same 200 and reads nothing but the framing: the cheapest server possible."""

    def __init__(self) -> None:
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, only shaped like one.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lower = self._buffer[:end].lower()
            at = lower.find(b"content-length:")
            length = 0
            if at >= 0:
                line_end = lower.find(b"\r\n", at)
                length = int(lower[at + 15 : line_end if line_end >= 0 else len(lower)])
            if len(self._buffer) < end + 4 + length:
                return
            self._buffer = self._buffer[end + 4 + length :]
            assert self._transport is not None
            self._transport.write(_TRIVIAL_REPLY)


async def serve_trivial(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_TrivialProtocol, "127.0.0.1", port)
    print(f"trivial server on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


def selftest(duration_s: float, concurrency: int) -> list[tuple[str, LoadResult]]:
    """The generator against a trivial server in another process: its own ceiling, raw streams and httpx."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench.load", "trivial-server", "--port", str(port)])
    results = []
    try:
        wait_for_port(port)
        target = Target("127.0.0.1", port, "/webhooks/ringside")
        for client in ("raw", "httpx"):
            # All valid: the trivial server answers 200 to everything, so a mix would only count as errors.
            deliveries = presign(
                int((duration_s + 1) * 60_000), target, secret=BENCH_SECRET, mix=Mix(valid=1, duplicate=0, bad=0)
            )
            result = asyncio.run(
                run_load(target, deliveries, duration_s=duration_s, concurrency=concurrency, client=client)
            )
            results.append((client, result))
    finally:
        server.terminate()
        server.wait(timeout=10)
    return results


def _iter_lines(result: LoadResult) -> Iterator[str]:
    yield from result.summary().splitlines()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="load a running endpoint")
    run.add_argument("--url", default="http://127.0.0.1:8000/webhooks/ringside")
    run.add_argument("--secret", default=os.environ.get("RINGSIDE_WEBHOOK_SECRETS", BENCH_SECRET).split(",")[0])
    run.add_argument("--duration", type=float, default=10.0, help="measured seconds (after warm-up)")
    run.add_argument("--warmup", type=float, default=1.0)
    run.add_argument("--concurrency", type=int, default=32, help="connections")
    run.add_argument("--rate", type=float, default=None, help="requests/s (open loop); closed loop without it")
    run.add_argument("--mix", type=Mix.parse, default=Mix(), help="valid=0.8,duplicate=0.15,bad=0.05")
    run.add_argument("--presign", type=int, default=None, help="deliveries to pre-sign [rate or 8000/s x time]")
    run.add_argument("--pid", type=int, default=None, help="server pid: report its (and its children's) RSS")
    run.add_argument("--rss-timeline", action="store_true", help="sample RSS each second: start/middle/end")
    run.add_argument("--client", choices=("raw", "httpx"), default="raw")
    run.add_argument("--json", type=Path, default=None, help="also write the result as JSON here")
    trivial = commands.add_parser("trivial-server", help="the trivial server selftest runs against")
    trivial.add_argument("--port", type=int, required=True)
    test = commands.add_parser("selftest", help="what the generator itself can do")
    test.add_argument("--duration", type=float, default=5.0)
    test.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    loop_name = install_fast_loop()

    if args.command == "trivial-server":
        asyncio.run(serve_trivial(args.port))
        return
    if args.command == "selftest":
        print(f"generator loop: {loop_name}")
        for client, result in selftest(args.duration, args.concurrency):
            print(f"-- client {client} vs a trivial asyncio server (no HMAC, fixed reply)")
            print(result.summary())
        return
    target = Target.parse(args.url)
    total_s = args.warmup + args.duration
    count = args.presign or int((args.rate or 8000) * total_s * 1.05) + 100
    began = time.perf_counter()
    deliveries = presign(count, target, secret=args.secret, mix=args.mix)
    print(f"pre-signed {count} deliveries in {time.perf_counter() - began:.1f}s (loop {loop_name})", file=sys.stderr)
    result = asyncio.run(
        run_load(
            target,
            deliveries,
            duration_s=args.duration,
            concurrency=args.concurrency,
            rate_rps=args.rate,
            warmup_s=args.warmup,
            server_pid=args.pid,
            rss_every_s=1.0 if args.rss_timeline else None,
            client=args.client,
        )
    )
    for line in _iter_lines(result):
        print(line)
    if args.json is not None:
        args.json.write_text(json.dumps(msgspec.to_builtins(result), indent=2))


if __name__ == "__main__":
    main()
