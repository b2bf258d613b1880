"""The biller's error reports back into the ledger: by notification (a webhook) or by polling its event list.

Invariants:
- A report is applied once: `reject_sent` claims its event id in the same step that parks the entries, so a
  redelivered notification, a poll that sees the event again, or a restart changes nothing twice.
- Only entries in state sent move; each becomes parked `biller_rejected` with the biller's code and message, so the
  operator's `parked list / show / replay` work on it as on any rejected entry.
- Events of other types are acknowledged and ignored.
- Polling keeps its position in a durable cursor (the `created` time of the newest event handled) and re-reads a
  short overlap behind it, since an event list may show an event a little after its creation time; the claims
  make the overlap harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from gateway.domain.feedback import (
    CUSTOMER_ERROR_CODES,
    REPORT_TYPES,
    ErrorReport,
    Handled,
    HandleResult,
    Notification,
    infer,
)
from gateway.domain.ledger import Entry
from gateway.domain.ports import BillerFeedback, BillerReports, Clock, FeedbackCursor

log = logging.getLogger("gateway.feedback")

# Our `sent_at` is stamped after the biller answered, its validation window from its own clock: allow this much.
DEFAULT_SLACK_S = 60.0
DEFAULT_OVERLAP_S = 300.0
CURSOR = "stripe_events"


class ReportHandler:
    """Applies one biller event to the ledger. `identifier_of` is the meter identifier the sink sent for an event id."""

    def __init__(
        self,
        ledger: BillerFeedback,
        reports: BillerReports,
        clock: Clock,
        identifier_of: Callable[[str], str],
        *,
        slack_s: float = DEFAULT_SLACK_S,
    ) -> None:
        self._ledger = ledger
        self._reports = reports
        self._clock = clock
        self._identifier_of = identifier_of
        self._slack_s = slack_s

    async def handle(self, notification: Notification) -> HandleResult:
        """Apply `notification`'s report, once. Raises BillerUnavailable or StoreUnavailable (then nothing changed)."""
        if notification.event_type not in REPORT_TYPES:
            log.info("feedback.ignored event_id=%s type=%s", notification.event_id, notification.event_type)
            return HandleResult(notification.event_id, Handled.IGNORED)
        if await self._ledger.report_handled(notification.event_id):
            return HandleResult(notification.event_id, Handled.DUPLICATE)
        report = await self._reports.fetch_report(notification.event_id)
        if report is None:
            return HandleResult(notification.event_id, Handled.IGNORED)
        return await self.apply(report)

    async def apply(self, report: ErrorReport) -> HandleResult:
        since, until = report.validation_start - self._slack_s, report.validation_end + self._slack_s
        by_identifier: dict[str, Entry] = {}
        for error in report.error_types:
            for sample in error.samples:
                found = await self._find(sample.identifier)
                if found is not None:
                    by_identifier[sample.identifier] = found
        unresolved = {s.identifier for e in report.error_types for s in e.samples} - by_identifier.keys()
        if unresolved:
            # A digested identifier cannot be reversed: compute the identifiers of what was sent in the window.
            for entry in await self._ledger.sent_between(since, until):
                identifier = self._identifier_of(entry.event_id)
                if identifier in unresolved:
                    by_identifier[identifier] = entry
        lost_customers = {
            by_identifier[sample.identifier].billing_customer
            for error in report.error_types
            if error.code in CUSTOMER_ERROR_CODES
            for sample in error.samples
            if sample.identifier in by_identifier
        }
        window = [
            entry
            for customer in sorted(lost_customers)
            for entry in await self._ledger.sent_between(since, until, customer)
        ]
        inference = infer(report, by_identifier, window)
        moved = await self._ledger.reject_sent(report.event_id, inference.rejections, self._clock.now())
        if moved is None:
            return HandleResult(report.event_id, Handled.DUPLICATE)
        errors_by_code = {error.code: error.error_count for error in report.error_types}
        log.warning(
            "feedback.report event_id=%s errors=%s parked=%d by_code=%s",
            report.event_id,
            report.error_count,
            moved,
            errors_by_code,
        )
        if inference.unmatched:
            log.warning("feedback.unmatched event_id=%s identifiers=%s", report.event_id, list(inference.unmatched))
        if inference.unattributed:
            # Customers no sample named: reconciliation finds their windows missing at the biller.
            log.warning("feedback.unattributed event_id=%s by_code=%s", report.event_id, dict(inference.unattributed))
        return HandleResult(
            report.event_id,
            Handled.APPLIED,
            parked=moved,
            unmatched=inference.unmatched,
            errors_by_code=errors_by_code,
            unattributed=dict(inference.unattributed),
        )

    async def _find(self, identifier: str) -> Entry | None:
        """The sent entry whose meter identifier is `identifier`, when the identifier is its event id."""
        entry = await self._ledger.get(identifier)
        if entry is None or self._identifier_of(entry.event_id) != identifier:
            return None
        return entry


class ReportPoller:
    """Polls the biller's event list for error reports from a durable cursor; a restart resumes from it."""

    def __init__(
        self,
        handler: ReportHandler,
        reports: BillerReports,
        cursor: FeedbackCursor,
        clock: Clock,
        *,
        overlap_s: float = DEFAULT_OVERLAP_S,
        lookback_s: float = 24 * 3600.0,
    ) -> None:
        self._handler = handler
        self._reports = reports
        self._cursor = cursor
        self._clock = clock
        self._overlap_s = overlap_s
        self._lookback_s = lookback_s

    async def poll_once(self) -> list[HandleResult]:
        """Handle every report created since the cursor (minus the overlap), oldest first, moving the cursor along.

        A first poll, with no cursor yet, looks back `lookback_s`.
        """
        position = await self._cursor.get_cursor(CURSOR)
        start = position - self._overlap_s if position is not None else self._clock.now() - self._lookback_s
        results = []
        for notification in await self._reports.notifications_since(start, REPORT_TYPES):
            result = await self._handler.handle(notification)
            await self._cursor.set_cursor(CURSOR, notification.created)
            if result.status is not Handled.DUPLICATE:
                results.append(result)
        return results
