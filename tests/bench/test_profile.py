"""bench/profile.py: each py-spy sample goes to the part of the gateway that spent it."""

from __future__ import annotations

from bench.profile import LOOP, breakdown, classify

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
    assert classify(stack("select (selectors.py:1)"), "main") == LOOP
    server = stack("data_received (/venv/site-packages/uvicorn/protocols/http/httptools_impl.py:1)")
    assert classify(server, "main") == "HTTP server and framework"


def test_a_named_thread_is_a_part_of_its_own() -> None:
    assert classify(["sqlite3_step (libsqlite3.so)"], "sqlite_0") == "SQLite writer thread"
    assert classify(["fsync (libc.so.6)"], "sqlite-sync") == "fsync thread"
    assert classify(["x (y.py:1)"], "asyncio_0") == "thread asyncio_0"


def test_py_spy_raw_lines_are_counted_per_part_by_thread() -> None:
    raw = "\n".join(
        [
            "thread (100);" + ";".join(stack("verify (/r/gateway/domain/signature.py:1)")) + " 30",
            "thread (100);" + ";".join(stack("verify (/r/gateway/domain/signature.py:1)")) + " 5",
            "thread (200);_worker (concurrent/futures/thread.py:1);execute (sqlite3) 40",
            "thread (300);_run (/r/gateway/adapters/sqlite.py:250);fsync (libc.so.6) 7",
            "",
        ]
    )

    parts = breakdown(raw, {"100": "main", "200": "sqlite_0", "300": "sqlite-sync"})

    assert parts == {"signature": 35, "SQLite writer thread": 40, "fsync thread": 7}
