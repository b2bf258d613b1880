"""The dispatcher's pause while the biller refuses this deployment's set-up (BillerMisconfigured).

Such a refusal (Stripe: a v2 meter event session refused with a 4xx: a wrong or restricted key, a wrong account) is
the operator's to fix and fails every call alike, so no entry is charged for it: the entries are released untouched
(no attempt counted, nothing parked), and the dispatcher stops calling. It tries again after a pause that doubles
from `base_s` up to `max_s` (never more than a minute, so that a fixed key takes effect within one), and resumes by
itself as soon as a call goes through. An error line on every refusal, and a gauge, say so while it lasts.
"""

from __future__ import annotations

from gateway.domain.errors import BillerMisconfigured
from gateway.service.logs import EventLogger
from gateway.service.metrics import Metrics

log = EventLogger("gateway.dispatcher")

REASON = "biller_configuration"
# The longest wait between two attempts while the biller refuses: how long a fixed configuration may go unnoticed.
LONGEST_PAUSE_S = 60.0


class ConfigurationPause:
    """How long to wait after each refusal in a row; `resumed()` after a call that went through ends the run."""

    def __init__(self, metrics: Metrics, *, base_s: float, max_s: float) -> None:
        self._metrics = metrics
        self._base_s = base_s
        self._max_s = min(max_s, LONGEST_PAUSE_S)
        self._refusals = 0
        self.until = 0.0

    def active(self, now: float) -> bool:
        return now < self.until

    def refused(self, exc: BillerMisconfigured, now: float, biller: str, entries: int) -> float:
        """Count a refusal, say so loudly, and return until when to pause (finite, at most `max_s` from `now`).

        Calls already under way when the pause began may be refused too: they neither lengthen it nor log again."""
        if self.active(now):
            return self.until
        pause = min(self._max_s, self._base_s * float(2 ** min(self._refusals, 32)))
        self._refusals += 1
        self.until = max(self.until, now + pause)
        self._metrics.dispatcher_paused(REASON, True)
        log.error(
            "dispatcher.paused",
            reason=REASON,
            biller=biller,
            cause=exc.cause,
            error=exc.message,
            refusals=self._refusals,
            retry_in_s=round(pause, 3),
            entries_kept=entries,
            action="fix the biller's configuration (API key, account, permissions); delivery resumes by itself",
        )
        return self.until

    def resumed(self, biller: str) -> None:
        """A call went through: end a pause, if one was on."""
        if self._refusals == 0:
            return
        log.warning("dispatcher.resumed", reason=REASON, biller=biller, refusals=self._refusals)
        self._refusals = 0
        self._metrics.dispatcher_paused(REASON, False)
