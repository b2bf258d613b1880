"""bench/profile.py: each py-spy sample goes to the part of the gateway that spent it."""

from __future__ import annotations

from collections import Counter

from bench.profile import IDLE, LOOP, attribute, breakdown, classify

ROOT = "_run_once (uvloop/loop.pyx:1);run (asyncio/events.py:80)"


def stack(*frames: str) -> list[str]:
    return [*ROOT.split(";"), *frames]


def test_the_innermost_known_frame_names_the_part() -> None:
    frames = stack(
        "handle (/repo/gateway/app/webhook.py:90)",
        "ingest (/repo/gateway/service/ingest.py:60)",
        "verify (/repo/gateway/domain/signature.py:88)",
        "hexdigest (hmac.py:160)",
    )

    assert classify(frames, "main") == "signature"


def test_logging_inside_ingest_counts_as_logging() -> None:
    frames = stack(
        "ingest (/repo/gateway/service/ingest.py:60)",
        "info (/venv/site-packages/structlog/_native.py:10)",
        "encode (msgspec:1)",
    )

    assert classify(frames, "main") == "logging"


def test_what_the_dispatcher_calls_counts_to_the_dispatcher() -> None:
    frames = stack(
        "run (/repo/gateway/service/dispatcher.py:120)",
        "lease (/repo/gateway/adapters/sqlite.py:500)",
    )

    assert classify(frames, "main") == "dispatcher"


def test_frames_of_no_known_part_are_the_event_loop() -> None:
    assert classify(stack("_run_once (uvloop/loop.pyx:1)", "Handle._run (loop.pyx:1)"), "main") == LOOP
    server = stack("data_received (/venv/site-packages/uvicorn/protocols/http/httptools_impl.py:1)")
    assert classify(server, "main") == "HTTP server and framework"


def test_a_named_thread_is_a_part_of_its_own_and_the_writer_is_split_by_job() -> None:
    assert classify(["fsync (libc.so.6)"], "sqlite-sync") == "fsync thread"
    assert classify(["x (y.py:1)"], "asyncio_0") == "thread asyncio_0"
    writer = ["_run_writes (/r/gateway/adapters/sqlite.py:520)", "_perform (/r/gateway/adapters/sqlite.py:654)"]
    assert classify([*writer, "_record_many (/r/x.py:1)", "sqlite3_step (libsqlite3.so)"], "sqlite_0") == (
        "writer: ingest record (_record_many)"
    )
    assert classify([*writer, "SqliteBiller.send_batch.<locals>.work (/r/x.py:1)"], "sqlite_0") == (
        "writer: local biller send_batch"
    )


def test_a_sample_caught_waiting_is_idle_whatever_its_thread() -> None:
    waiting = ["_pysqlite_query_execute (cursor.c:896)", "pthread_cond_timedwait (libc.so.6)", "0x7f (libc.so.6)"]

    assert classify(["_record_many (/r/x.py:1)", *waiting], "sqlite_0") == IDLE
    assert classify(stack("uv__io_poll (linux.c:1)", "epoll_pwait (libc.so.6)"), "main") == IDLE


def test_py_spy_raw_lines_are_counted_per_thread_and_part_by_pythons_thread_names() -> None:
    raw = "\n".join(
        [
            "thread (100): MainThread;" + ";".join(stack("verify (/r/gateway/domain/signature.py:1)")) + " 30",
            "thread (100): MainThread;" + ";".join(stack("verify (/r/gateway/domain/signature.py:1)")) + " 5",
            "thread (200): gateway-sqlite_0;_worker (concurrent/futures/thread.py:1);_record_many (x.py:1) 40",
            "thread (300);_run (/r/gateway/adapters/sqlite.py:250);fsync (libc.so.6) 7",
            "",
        ]
    )

    samples = breakdown(raw, {"300": "sqlite-sync"})

    assert samples == {
        "main": {"signature": 35},
        "sqlite_0": {"writer: ingest record (_record_many)": 40},
        "sqlite-sync": {"fsync thread": 7},
    }


def test_each_threads_measured_cpu_is_shared_among_its_busy_parts() -> None:
    samples = {"main": Counter({"signature": 10, "logging": 30, IDLE: 60}), "sqlite_0": Counter({IDLE: 5})}

    parts = attribute(samples, {"main": 100.0, "sqlite_0": 8.0})

    assert parts == {"signature": 25.0, "logging": 75.0, "thread sqlite_0 (no busy sample)": 8.0}
