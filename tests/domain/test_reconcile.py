"""Reconciliation verdicts, totals, and the repair plan."""

from __future__ import annotations

from gateway.domain.reconcile import (
    HOUR_S,
    LedgerWindow,
    Verdict,
    correction_identifier,
    hour_ceil,
    hour_floor,
    judge,
    plan_repairs,
    totals,
)

NOW = 1_800_000_000.0
OLD = hour_floor(NOW) - 10 * HOUR_S  # a window long settled
MAX_AGE_S = 35 * 24 * 3600


def verdicts(ledger: list[LedgerWindow], biller: dict[tuple[str, int], int], settle_s: float = 3600) -> list[Verdict]:
    return [row.verdict for row in judge(ledger, biller, NOW, settle_s)]


def test_windows_are_whole_hours() -> None:
    assert (hour_floor(7199), hour_floor(7200), hour_ceil(7200), hour_ceil(7201)) == (3600, 7200, 7200, 10800)


def test_equal_units_match_fewer_at_the_biller_are_missing_more_are_extra() -> None:
    ledger = [LedgerWindow("cus_A", OLD, 10), LedgerWindow("cus_B", OLD, 10), LedgerWindow("cus_C", OLD, 10)]
    biller = {("cus_A", OLD): 10, ("cus_B", OLD): 4, ("cus_C", OLD): 12}

    rows = judge(ledger, biller, NOW, 3600)

    assert [(r.billing_customer, r.verdict, r.difference) for r in rows] == [
        ("cus_A", Verdict.MATCH, 0),
        ("cus_B", Verdict.MISSING_AT_BILLER, 6),
        ("cus_C", Verdict.EXTRA_AT_BILLER, -2),
    ]


def test_a_window_only_the_biller_knows_is_extra() -> None:
    assert verdicts([], {("cus_A", OLD): 3}) == [Verdict.EXTRA_AT_BILLER]


def test_a_window_younger_than_the_settle_time_is_settling() -> None:
    recent = hour_floor(NOW) - HOUR_S  # ended less than an hour ago

    assert verdicts([LedgerWindow("cus_A", recent, 10)], {}) == [Verdict.SETTLING]
    assert verdicts([LedgerWindow("cus_A", recent, 10)], {}, settle_s=0) == [Verdict.MISSING_AT_BILLER]


def test_a_window_corrected_less_than_the_settle_time_ago_is_settling() -> None:
    corrected = LedgerWindow("cus_A", OLD, 10, corrections=1, corrected_units=6, last_corrected_at=NOW - 60)

    assert verdicts([corrected], {("cus_A", OLD): 4}) == [Verdict.SETTLING]


def test_totals_count_windows_and_units_per_verdict() -> None:
    rows = judge(
        [LedgerWindow("cus_A", OLD, 10), LedgerWindow("cus_B", OLD, 10)],
        {("cus_A", OLD): 10, ("cus_B", OLD): 7},
        NOW,
        3600,
    )

    summary = totals(rows)

    assert (summary.windows, summary.ledger_units, summary.biller_units) == (2, 20, 17)
    assert summary.windows_by_verdict == {"match": 1, "missing_at_biller": 1}
    assert summary.units_by_verdict == {"match": 0, "missing_at_biller": 3}
    assert not summary.matched


def test_repair_plans_one_correction_per_missing_window_for_the_difference_inside_the_window() -> None:
    rows = judge(
        [LedgerWindow("cus_A", OLD, 10), LedgerWindow("cus_B", OLD, 5)],
        {("cus_A", OLD): 4, ("cus_B", OLD): 9},
        NOW,
        3600,
    )

    [correction] = plan_repairs(rows, NOW, MAX_AGE_S)

    assert (correction.billing_customer, correction.window_start, correction.units) == ("cus_A", OLD, 6)
    assert OLD <= correction.timestamp < OLD + HOUR_S
    assert correction.identifier == correction_identifier("cus_A", OLD, 0)


def test_repair_skips_windows_the_biller_no_longer_takes() -> None:
    ancient = hour_floor(NOW - MAX_AGE_S) - HOUR_S
    rows = judge([LedgerWindow("cus_A", ancient, 10)], {}, NOW, 3600)

    assert rows[0].verdict is Verdict.MISSING_AT_BILLER
    assert plan_repairs(rows, NOW, MAX_AGE_S) == []


def test_correction_identifiers_are_deterministic_short_and_new_per_correction_of_a_window() -> None:
    first = correction_identifier("cus_A", OLD, 0)

    assert first == correction_identifier("cus_A", OLD, 0)
    assert len({first, correction_identifier("cus_A", OLD, 1), correction_identifier("cus_B", OLD, 0)}) == 3
    assert len(first) <= 100


def test_a_second_correction_of_a_window_gets_the_next_identifier() -> None:
    rows = judge(
        [LedgerWindow("cus_A", OLD, 10, corrections=1, corrected_units=2, last_corrected_at=NOW - 7200)],
        {("cus_A", OLD): 8 - 1},
        NOW,
        3600,
    )

    [correction] = plan_repairs(rows, NOW, MAX_AGE_S)

    assert correction.identifier == correction_identifier("cus_A", OLD, 1)


def test_units_the_biller_rejected_are_missing_but_left_to_replay_not_to_repair() -> None:
    rows = judge([LedgerWindow("cus_A", OLD, 0, rejected_units=9)], {}, NOW, 3600)

    assert [(r.verdict, r.ledger_units, r.difference) for r in rows] == [(Verdict.MISSING_AT_BILLER, 9, 9)]
    assert plan_repairs(rows, NOW, MAX_AGE_S) == []


def test_repair_carries_only_the_sent_units_the_biller_does_not_hold() -> None:
    rows = judge([LedgerWindow("cus_A", OLD, 10, rejected_units=3)], {("cus_A", OLD): 6}, NOW, 3600)

    [correction] = plan_repairs(rows, NOW, MAX_AGE_S)

    assert (rows[0].difference, correction.units) == (7, 4)
