"""Micro-benchmark of the pure domain path per event: verify the signature, parse, assess (and convert to units).

    python -m bench.domain [--number 20000] [--repeat 7]

Each figure is the best of `--repeat` timeit runs of `--number` events, in microseconds per event: the best run is
the one least disturbed by the rest of the machine, which is what a per-event cost means. The body is the load
generator's ~1 KiB event (bench.load.event_body), signed with one live secret; the clock is fixed so that every
event is within the signature tolerance and billable.
"""

from __future__ import annotations

import argparse
import time
import timeit
from collections.abc import Callable

from bench.load import BENCH_SECRET, event_body, signature
from gateway.domain.event import parse_event
from gateway.domain.policy import Bill, BillingPolicy, assess
from gateway.domain.signature import SignatureVerifier

TARGET_US = 25.0


def steps() -> dict[str, Callable[[], object]]:
    now = int(time.time())
    body = event_body("evt_bench_domain_000000001", 42, 12_345, now)
    header = signature(body, BENCH_SECRET, now)
    verifier = SignatureVerifier([BENCH_SECRET])
    policy = BillingPolicy()
    event = parse_event(body)
    decision = assess(event, now, now, policy)
    assert isinstance(decision, Bill), decision

    def whole() -> object:
        signed_at = verifier.verify(header, body, now)
        return assess(parse_event(body), signed_at, now, policy)

    return {
        "verify (HMAC-SHA256, constant-time compare)": lambda: verifier.verify(header, body, now),
        "parse (msgspec, Decimal cost)": lambda: parse_event(body),
        "assess + convert to units (exact Decimal)": lambda: assess(event, now, now, policy),
        "whole domain path": whole,
    }


def measure(number: int, repeat: int) -> dict[str, float]:
    """Best-of-`repeat` microseconds per call of each step."""
    return {
        name: min(timeit.repeat(step, number=number, repeat=repeat)) / number * 1e6 for name, step in steps().items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.domain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    results = measure(args.number, args.repeat)
    body = len(event_body("evt_bench_domain_000000001", 42, 12_345, 0))
    print(f"Domain path per event (~{body} B body), best of {args.repeat} x {args.number:,}:")
    for name, micros in results.items():
        print(f"  {name:<45} {micros:7.2f} us")
    whole = results["whole domain path"]
    print(f"  target < {TARGET_US:g} us: {'met' if whole < TARGET_US else 'MISSED'}")


if __name__ == "__main__":
    main()
