"""The fake Stripe's meter event summaries: `GET /v1/billing/meters/{id}/event_summaries`. Plugged into FakeStripe
(stripe_server.py) as `stripe.summaries`.

What it models (Stripe API reference, "List billing meter event summaries"; shapes from
stripe-openapi/paths.reconcile.json and schemas.reconcile.json):
- `customer`, `start_time` (inclusive) and `end_time` (exclusive) are required and must sit on minute boundaries;
  with `value_grouping_window=hour` on hour boundaries, with `day` on UTC day boundaries. Otherwise a 400.
- One summary per window that holds usage (summed `value`), by the meter event's timestamp; without a grouping
  window, one summary for the whole range. Paginated like any v1 list (newest first, `limit`, `starting_after`).
- Eventually consistent: an event received less than `settle_s` ago is not counted yet.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .http_fake import Reply

if TYPE_CHECKING:
    from .stripe_server import FakeStripe, RecordedRequest

_WINDOWS = {"hour": 3600, "day": 86400}


class StripeSummaries:
    def __init__(self, fake: FakeStripe) -> None:
        self._fake = fake
        self.settle_s = 0.0
        self.received_at: dict[str, float] = {}  # identifier -> when the fake stored the event

    def stored(self, identifier: str) -> None:
        """Note when an accepted event arrived (caller holds the fake's lock)."""
        self.received_at[identifier] = time.time()

    def list_summaries(self, request: RecordedRequest, meter_id: str, params: Mapping[str, Any]) -> Reply:
        from .stripe_server import _error, _page

        start, end = params["start_time"], params["end_time"]
        grouping = params.get("value_grouping_window")
        step = _WINDOWS.get(grouping or "", 60)
        if start % step or end % step or start >= end:
            unit = grouping or "minute"
            problem = f"start_time and end_time must be aligned with {unit} boundaries, and start_time before end_time"
            return _error(400, problem, param="start_time")
        with self._fake._lock:
            meter = next((m for m in self._fake.meters if m["id"] == meter_id), None)
            if meter is None:
                return _error(404, f"No such billing meter: '{meter_id}'", code="resource_missing", param="id")
            settled_before = time.time() - self.settle_s
            totals: dict[int, int] = {}
            for event in self._fake.meter_events:
                if event["event_name"] != meter["event_name"] or event["customer"] != params["customer"]:
                    continue
                if not start <= event["timestamp"] < end:
                    continue
                if self.received_at.get(event["identifier"], 0.0) > settled_before:
                    continue
                window = start + (event["timestamp"] - start) // step * step if grouping else start
                totals[window] = totals.get(window, 0) + event["value"]
        size = step if grouping else end - start
        summaries = [
            {
                "id": f"mtrusum_{meter_id}_{params['customer']}_{window}",
                "object": "billing.meter_event_summary",
                "aggregated_value": value,
                "end_time": window + size,
                "livemode": False,
                "meter": meter_id,
                "start_time": window,
            }
            for window, value in sorted(totals.items())
        ]
        return Reply(200, _page(summaries, params, f"/v1/billing/meters/{meter_id}/event_summaries"))
