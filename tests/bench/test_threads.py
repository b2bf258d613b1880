"""bench/threads.py: a thread's CPU account under its own name."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter

from bench.threads import cpu_seconds_by_thread, kernel_name, parse_stat


def test_kernel_names_drop_the_project_prefix_and_fit_fifteen_bytes() -> None:
    assert kernel_name("gateway-sqlite_0") == "sqlite_0"
    assert kernel_name("gateway-sqlite-checkpoint") == "sqlite-checkpoi"
    assert kernel_name("asyncio_0") == "asyncio_0"


def test_utime_and_stime_are_read_past_a_name_with_spaces_and_parentheses() -> None:
    stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1000 0 0"

    assert parse_stat(stat) == 300


def test_cpu_per_thread_is_the_difference_of_two_readings_largest_first() -> None:
    hertz = os.sysconf("SC_CLK_TCK")
    before = Counter({"main": hertz, "sqlite_0": 0})
    after = Counter({"main": 3 * hertz, "sqlite_0": 5 * hertz, "idle": 0})

    assert list(cpu_seconds_by_thread(before, after).items()) == [("sqlite_0", 5.0), ("main", 2.0)]


def test_a_named_python_thread_shows_its_name_to_the_kernel() -> None:
    program = textwrap.dedent(
        """
        import threading
        from bench.threads import name_threads
        name_threads()
        seen = {}
        def look():
            seen["comm"] = open(f"/proc/self/task/{threading.get_native_id()}/comm").read().strip()
        thread = threading.Thread(target=look, name="gateway-sqlite-sync")
        thread.start(); thread.join()
        main = open(f"/proc/self/task/{threading.get_native_id()}/comm").read().strip()
        print(seen["comm"], main)
        """
    )

    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)

    assert done.stdout.split() == ["sqlite-sync", "main"]
