"""bench/wrk.py: the requests file wrk replays, the figures it reads back from wrk, the targets it understands."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.load import BENCH_SECRET, Target
from bench.wrk import (
    Measured,
    Spec,
    WrkResult,
    cpu_ratio,
    parse_wrk,
    ratio,
    read_requests,
    summary,
    write_requests,
)
from gateway.domain.event import parse_event
from gateway.domain.signature import SignatureVerifier


def test_the_requests_file_holds_distinct_validly_signed_deliveries_over_the_given_customers(tmp_path: Path) -> None:
    path = tmp_path / "requests.bin"

    write_requests(path, 1_200, Target("127.0.0.1", 8000, "/webhooks/ringside"), customers=500)

    requests = read_requests(path)
    verifier = SignatureVerifier([BENCH_SECRET])
    ids, customers = set(), set()
    for request in requests:
        head, _, body = request.partition(b"\r\n\r\n")
        assert head.startswith(b"POST /webhooks/ringside HTTP/1.1\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
        assert int(headers["Content-Length"]) == len(body)
        verifier.verify(headers["X-FC-Signature"], body, time.time())
        event = parse_event(body)
        ids.add(event.id)
        customers.add(event.stripe_customer)
    assert len(requests) == 1_200
    assert len(ids) == 1_200
    assert len(customers) == 500
    assert 900 < sum(map(len, requests)) / len(requests) < 1_400  # about 1 KiB each, head included


def test_wrk_figures_are_read_from_the_replay_scripts_json_line() -> None:
    output = (
        "Running 9s test @ http://127.0.0.1:1/webhooks/ringside\n  1 threads and 64 connections\n"
        'WRK_JSON {"requests":90000,"duration_us":9000000,"p50_us":4100,"p90_us":6000,"p99_us":12500,'
        '"max_us":40000,"connect_errors":0,"read_errors":1,"write_errors":0,"status_errors":2,"timeouts":3}\n'
    )

    result = parse_wrk(output)

    assert result.rps == 10_000
    assert (result.p50_ms, result.p99_ms, result.max_ms) == (4.1, 12.5, 40.0)
    assert result.errors == 6


def test_wrk_output_without_the_json_line_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no WRK_JSON"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("bare", Spec("bare")),
        ("bare-granian", Spec("bare", "granian")),
        ("sqlite-quiet", Spec("sqlite", variant="quiet")),
        ("redis-granian-nodispatch", Spec("redis", "granian", "nodispatch")),
        ("postgres-w2", Spec("postgres", workers=2)),
        ("postgres-nogroup", Spec("postgres", variant="nogroup")),
        ("sqlite-linelog", Spec("sqlite", variant="linelog")),
    ],
)
def test_a_target_name_names_kind_server_and_variant_and_round_trips(name: str, expected: Spec) -> None:
    assert Spec.parse(name) == expected
    assert expected.name == name


@pytest.mark.parametrize("name", ["mysql", "sqlite-fast", "bare-quiet", "bare-w2", "sqlite-quiet-quiet-granian"])
def test_an_unknown_target_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="unknown target"):
        Spec.parse(name)


def measured(name: str, round_: int, requests: int, cpu_s: float) -> Measured:
    result = WrkResult(requests=requests, duration_s=10.0, p50_ms=1, p90_ms=2, p99_ms=3, max_ms=4, errors=0)
    return Measured(Spec.parse(name), result, cpu_s, {}, None, round_)


def test_ratios_are_to_the_bare_endpoint_of_the_same_round() -> None:
    rows = [
        measured("bare", 1, 100_000, 8.0),  # 80 us per delivery
        measured("sqlite", 1, 50_000, 6.0),  # 120 us
        measured("bare", 2, 50_000, 4.0),  # a slower round: 80 us still
        measured("sqlite", 2, 40_000, 4.8),
    ]

    assert [ratio(row, rows, "uvicorn") for row in rows] == ["1.00", "0.50", "1.00", "0.80"]
    assert [cpu_ratio(row, rows) for row in rows] == ["1.00", "0.67", "1.00", "0.67"]


def test_a_row_without_a_bare_endpoint_in_its_round_has_no_ratio() -> None:
    rows = [measured("bare", 1, 100_000, 8.0), measured("redis-granian", 2, 50_000, 5.0)]

    assert ratio(rows[1], rows, "uvicorn") == "-"
    assert ratio(rows[1], rows, "granian") == "-"
    assert cpu_ratio(rows[1], rows) == "-"


def test_the_summary_gives_each_targets_median_and_spread_over_the_rounds() -> None:
    rows = [
        measured("bare", 1, 100_000, 8.0),
        measured("sqlite", 1, 50_000, 6.0),  # 0.50 of bare, 120 us
        measured("bare", 2, 50_000, 4.0),
        measured("sqlite", 2, 40_000, 4.8),  # 0.80, 120 us
        measured("bare", 3, 100_000, 8.0),
        measured("sqlite", 3, 70_000, 7.0),  # 0.70, 100 us
    ]

    lines = summary(rows).splitlines()

    assert lines[2].startswith("| bare | 3 | 10,000 (5,000-10,000) | 1.00 (1.00-1.00) |")
    assert lines[3].startswith(
        "| sqlite | 3 | 5,000 (4,000-7,000) | 0.70 (0.50-0.80) | 0.70 (0.50-0.80) | 120 (100-120)"
    )
