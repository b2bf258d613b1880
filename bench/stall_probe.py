"""How late the machine lets a sleeping process wake: the stalls no server can be blamed for.

    python -m bench.stall_probe SECONDS      # prints one JSON object when done

A process of its own (not a thread of the load generator, whose interpreter lock would add its own waits) sleeps
1 ms at a time for SECONDS and records by how much each sleep overran. On an idle machine an overrun is well under
a millisecond; a longer one means that nothing here ran for that long: the hypervisor, another tenant of the
shared host, or the kernel. bench/run.py runs it beside every half-load measurement and prints its longest overrun
next to the p99, so that a p99 over the target can be told apart from a machine that stopped for as long.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import IO

TICK_S = 0.001


@dataclass(frozen=True)
class Stalls:
    longest_ms: float  # the longest overrun of a 1 ms sleep
    over_10ms: int  # sleeps that overran by more than 10 ms
    lost_ms: float  # the overruns over 5 ms, added up: time in which nothing ran


def watch(seconds: float) -> Stalls:
    overruns: list[float] = []
    end = time.perf_counter() + seconds
    before = time.perf_counter()
    while before < end:
        time.sleep(TICK_S)
        after = time.perf_counter()
        overruns.append(after - before - TICK_S)
        before = after
    return Stalls(
        longest_ms=max(overruns, default=0.0) * 1000,
        over_10ms=sum(overrun > 0.010 for overrun in overruns),
        lost_ms=sum(overrun for overrun in overruns if overrun > 0.005) * 1000,
    )


class StallProbe:
    """`python -m bench.stall_probe` in a subprocess for `seconds`; `result()` waits for it and reads its answer."""

    def __init__(self, seconds: float) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.stall_probe", str(seconds)], stdout=subprocess.PIPE, text=True
        )

    def result(self) -> Stalls | None:
        stdout: IO[str] | None = self._process.stdout
        try:
            out, _ = self._process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
            return None
        finally:
            if stdout is not None:
                stdout.close()
        if self._process.returncode != 0 or not out.strip():
            return None
        return Stalls(**json.loads(out))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    stalls = watch(float(args[0]) if args else 10.0)
    print(json.dumps(stalls.__dict__))


if __name__ == "__main__":
    main()
