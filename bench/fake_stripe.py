"""The tests' fake Stripe in a process of its own, with artificial latency, timed requests and a stats command.

    python -m bench.fake_stripe --latency-ms 50      # prints its URL, then answers `stats` / `arrivals` / `quit`

A process of its own so that its request handling (and its OpenAPI validation of every event) does not share the
dispatcher's interpreter lock and slow the side being measured. `stats` prints one JSON line: requests by path and
status, stored meter events, invalid requests, the most v1 calls ever in flight for one customer, and the most
requests (per path) started within any one second, which is what Stripe's rate limits count. `arrivals` prints one
JSON object: each stored meter event's identifier and the wall-clock time it was stored.
"""

from __future__ import annotations

import argparse
import bisect
import json
import sys
import threading
import time
from collections import Counter
from typing import Any

from tests.fakes.http_fake import Drop, FakeHTTPServer, Reply
from tests.fakes.stripe_server import FAKE_API_KEY, FakeStripe, _RequestHandler


class _QuickServer(FakeHTTPServer):
    # The default backlog of 5 drops connection attempts when the dispatcher opens its connections at once (a client
    # then waits a second for its SYN to be retried, or fails).
    request_queue_size = 1024


class _QuickHandler(_RequestHandler):
    # The handler writes the response head and body separately; with Nagle's algorithm on, the body waits for the
    # client's delayed ACK of the head (~40 ms on Linux), which would add 40 ms to every call and measure the kernel.
    disable_nagle_algorithm = True


class TimedFakeStripe(FakeStripe):
    """FakeStripe that also notes when each request started, per path (for the per-second rate), on a server that
    neither drops connections nor delays answers (see above)."""

    server_class = _QuickServer
    handler_class = _QuickHandler

    def __init__(self) -> None:
        super().__init__(api_key=FAKE_API_KEY)
        self.started: dict[str, list[float]] = {}
        self.statuses: Counter[tuple[str, int]] = Counter()
        self._timing = threading.Lock()
        # When each meter event was stored (wall clock, comparable with another process's): bench/e2e.py's
        # acknowledgement-to-Stripe delay.
        self.arrived: dict[str, float] = {}
        self._seen = 0

    def _dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply | Drop:
        started = time.monotonic()
        reply = super()._dispatch(method, target, headers, body)
        path = target.split("?", 1)[0]
        with self._lock:
            now = time.time()
            for event in self.meter_events[self._seen :]:
                self.arrived.setdefault(event["identifier"], now)
            self._seen = len(self.meter_events)
        with self._timing:
            self.started.setdefault(path, []).append(started)
            self.statuses[(path, reply.status if isinstance(reply, Reply) else 0)] += 1
        return reply

    def stats(self) -> dict[str, Any]:
        with self._timing:
            busiest = {path: _busiest_second(sorted(times)) for path, times in self.started.items()}
            statuses = {f"{path} {status}": count for (path, status), count in self.statuses.items()}
        return {
            "meter_events": len(self.meter_events),
            "distinct_identifiers": len({event["identifier"] for event in self.meter_events}),
            "total_value": self.total_value(),
            "invalid_requests": len(self.invalid_requests),
            "sessions": len(self.meter_event_sessions),
            "max_in_flight_per_customer": self.max_in_flight_per_customer,
            "busiest_second": busiest,
            "statuses": statuses,
            # CPU seconds this process has used, all threads: is the fake the bottleneck of a run?
            "cpu_s": time.process_time(),
        }


def _busiest_second(times: list[float]) -> int:
    """The most requests that started within any window of one second (a sliding window over sorted times)."""
    best = 0
    for index, start in enumerate(times):
        best = max(best, bisect.bisect_left(times, start + 1.0, lo=index) - index)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fake_stripe")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--session-ttl-s", type=float, default=15 * 60)
    args = parser.parse_args()
    fake = TimedFakeStripe()
    fake.latency_s = args.latency_ms / 1000
    fake.session_ttl_s = args.session_ttl_s
    fake.start()
    print(fake.url, flush=True)
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "stats":
                print(json.dumps(fake.stats()), flush=True)
            elif command == "arrivals":
                with fake._lock:
                    arrived = dict(fake.arrived)
                print(json.dumps(arrived), flush=True)
            elif command == "quit":
                break
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
