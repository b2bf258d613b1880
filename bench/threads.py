"""Per-thread CPU of a server process: which of its threads (event loop, SQLite writer, fsync, ...) spent it.

Linux keeps a CPU account per thread in /proc/<pid>/task/<tid>/stat and shows the thread's name in
/proc/<pid>/task/<tid>/comm. Python does not pass its thread names to the kernel, so `name_threads()` (called by
bench.ablate, which wraps the servers the benches start) makes every new Python thread set its own: the account of
"sqlite_0" is then the SQLite writer's, "sqlite-sync" the fsync thread's, and so on.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections import Counter
from pathlib import Path

from bench.load import _descendants

_PR_SET_NAME = 15
_COMM_BYTES = 15  # the kernel keeps 16 bytes, the last one a NUL


def kernel_name(python_name: str) -> str:
    """The name a thread shows to the kernel: the project prefix dropped (it would push the part that tells the
    threads apart past the kernel's 15 bytes), then cut to 15 bytes."""
    return python_name.removeprefix("gateway-")[:_COMM_BYTES]


def name_threads() -> None:
    """From now on each Python thread names itself to the kernel when it starts; the calling thread is "main"."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)

    def set_name(name: str) -> None:
        libc.prctl(_PR_SET_NAME, ctypes.c_char_p(kernel_name(name).encode()), 0, 0, 0)

    original = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def bootstrap_named(self: threading.Thread) -> None:
        set_name(self.name)
        original(self)

    threading.Thread._bootstrap_inner = bootstrap_named  # type: ignore[attr-defined]
    set_name("main")


def parse_stat(stat: str) -> int:
    """utime + stime (clock ticks) from a /proc .../stat line; the name in parentheses may hold spaces."""
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def thread_ticks(pid: int) -> Counter[str]:
    """CPU clock ticks per thread name (threads of one name added up) over `pid` and all its descendants; a child
    process's threads are prefixed with its pid when there are several processes."""
    ticks: Counter[str] = Counter()
    processes = _descendants(pid)
    for process in processes:
        prefix = f"{process}/" if len(processes) > 1 else ""
        try:
            tids = os.listdir(f"/proc/{process}/task")
        except OSError:
            continue
        for tid in tids:
            base = Path(f"/proc/{process}/task/{tid}")
            try:
                name = (base / "comm").read_text().strip()
                ticks[prefix + name] += parse_stat((base / "stat").read_text())
            except OSError:
                continue  # the thread ended meanwhile
    return ticks


def cpu_seconds_by_thread(before: Counter[str], after: Counter[str]) -> dict[str, float]:
    """What each thread name used between two `thread_ticks` readings, in seconds, largest first. A thread that
    ended in between is lost from `after`; its partial use is not counted (a server's threads live as long as it)."""
    hertz = os.sysconf("SC_CLK_TCK")
    used = {name: (after[name] - before.get(name, 0)) / hertz for name in after}
    return dict(sorted(((name, s) for name, s in used.items() if s > 0), key=lambda item: -item[1]))
