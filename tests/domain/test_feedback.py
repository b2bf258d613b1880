"""What a biller's error report says about the ledger: the inference rule."""

from __future__ import annotations

from decimal import Decimal

from gateway.domain.feedback import ERROR_REPORT, ErrorReport, ErrorType, Rejection, SampleError, infer
from gateway.domain.ledger import Entry, State

NOT_FOUND = "meter_event_customer_not_found"


def sent(event_id: str, customer: str, *, sent_at: float = 100.0) -> Entry:
    return Entry(
        event_id=event_id,
        event_type="chat.completion.finished",
        billing_customer=customer,
        ringside_customer=None,
        cost_usd=Decimal("0.01"),
        units=1000,
        timestamp=90,
        state=State.SENT,
        created_at=90.0,
        sent_at=sent_at,
    )


def report(*errors: ErrorType) -> ErrorReport:
    return ErrorReport(
        event_id="evt_test_REPORT",
        event_type=ERROR_REPORT,
        created=200.0,
        validation_start=95.0,
        validation_end=150.0,
        error_count=sum(e.error_count for e in errors),
        error_types=errors,
    )


def test_customer_error_rejects_every_entry_sent_to_a_named_customer_in_the_window() -> None:
    window = [sent("evt_A1", "cus_GONE"), sent("evt_B1", "cus_OK"), sent("evt_A2", "cus_GONE")]
    samples = (SampleError("evt_A1", "No customer found with id cus_GONE."),)

    inference = infer(report(ErrorType(NOT_FOUND, 2, samples)), {"evt_A1": window[0]}, window)

    message = f"{NOT_FOUND}: No customer found with id cus_GONE."
    assert inference.rejections == (Rejection("evt_A1", message), Rejection("evt_A2", message))
    assert (inference.unmatched, dict(inference.unattributed)) == ((), {})


def test_per_event_error_rejects_its_samples_only() -> None:
    window = [sent("evt_1", "cus_A"), sent("evt_2", "cus_A"), sent("evt_3", "cus_A")]
    samples = (SampleError("evt_2", "Meter event value must be a whole number."),)

    inference = infer(report(ErrorType("meter_event_invalid_value", 2, samples)), {"evt_2": window[1]}, window)

    assert [r.event_id for r in inference.rejections] == ["evt_2"]
    assert dict(inference.unattributed) == {}  # per-event errors beyond the samples are left to reconciliation


def test_samples_that_name_no_sent_entry_are_unmatched() -> None:
    inference = infer(report(ErrorType(NOT_FOUND, 1, (SampleError("fix_abc", "gone"),))), {}, [])

    assert (inference.rejections, inference.unmatched) == ((), ("fix_abc",))


def test_customer_errors_beyond_what_the_samples_explain_are_counted_unattributed() -> None:
    window = [sent("evt_A1", "cus_GONE"), sent("evt_C1", "cus_ALSO_GONE")]
    samples = (SampleError("evt_A1", "gone"),)

    inference = infer(report(ErrorType(NOT_FOUND, 2, samples)), {"evt_A1": window[0]}, window)

    assert [r.event_id for r in inference.rejections] == ["evt_A1"]
    assert dict(inference.unattributed) == {NOT_FOUND: 1}


def test_an_entry_named_twice_is_rejected_once_with_the_first_code() -> None:
    entry = sent("evt_1", "cus_GONE")
    first = ErrorType(NOT_FOUND, 1, (SampleError("evt_1", "gone"),))
    second = ErrorType("meter_event_invalid_value", 1, (SampleError("evt_1", "bad"),))

    inference = infer(report(first, second), {"evt_1": entry}, [entry])

    assert inference.rejections == (Rejection("evt_1", f"{NOT_FOUND}: gone"),)
