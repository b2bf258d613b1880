"""The fake Stripe's asynchronous side: meter events it answered and then dropped, its error reports as v2 events,
and their signed delivery to an event destination. Plugged into FakeStripe (stripe_server.py) as `stripe.feedback`.

What it models (Stripe docs: meter event errors, v2 events, event destinations; shapes from
stripe-openapi/schemas.reconcile.json):
- An event the fake drops after answering it (an unknown customer, on the v2 stream always and on v1 when
  `FakeStripe.asynchronous_validation` is set) is recorded as an error; its identifier is NOT remembered, so a
  re-send with the same identifier is accepted.
- `emit_report()` turns the errors recorded since the last report into one `v1.billing.meter.error_report_triggered`
  event: per code, `error_count` counts every error and `sample_errors` lists at most `samples_per_code` of them;
  `validation_start`/`validation_end` span the errors' receipt times, in whole seconds.
- `GET /v2/core/events` (newest first, `types`, `created[gt|gte|lt|lte]`, `limit`, `page` via `next_page_url`) and
  `GET /v2/core/events/{id}` serve the events.
- With a destination set (`destination(url, secret)`), each event is POSTed as a thin notification signed
  `Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the whsec_ secret>`, on a
  background thread; `deliveries` records (event id, HTTP status or the error).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from .http_fake import Reply

if TYPE_CHECKING:
    from .stripe_server import FakeStripe, RecordedRequest

ERROR_REPORT = "v1.billing.meter.error_report_triggered"
SAMPLES_PER_CODE = 3
MESSAGES = {
    "meter_event_customer_not_found": "No customer found with id {customer}.",
    "meter_event_no_customer_defined": "Customer mapping key stripe_customer_id not found in payload.",
    "meter_event_invalid_value": "Meter event value must be a whole number.",
}


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The `Stripe-Signature` header value Stripe would send for `body` at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


@dataclass(frozen=True)
class AsyncError:
    code: str
    identifier: str
    customer: str
    event_name: str
    received_at: float

    @property
    def message(self) -> str:
        return MESSAGES.get(self.code, self.code).format(customer=self.customer)


class StripeFeedback:
    """Recorded errors, emitted reports, and their delivery. Guarded by the fake's lock."""

    def __init__(self, fake: FakeStripe) -> None:
        self._fake = fake
        self.samples_per_code = SAMPLES_PER_CODE
        self.errors: list[AsyncError] = []  # every error ever recorded
        self.events: list[dict[str, Any]] = []  # v2 events, oldest first
        self.deliveries: list[tuple[str, int | str]] = []
        self._unreported: list[AsyncError] = []
        self._destination: tuple[str, str] | None = None
        self._delivered = threading.Condition()

    def destination(self, url: str, secret: str) -> None:
        """Deliver every event emitted from now on to `url`, signed with `secret` (a whsec_ secret)."""
        self._destination = (url, secret)

    def reject(self, code: str, identifier: str, customer: str, event_name: str) -> None:
        """Record an event the fake answered and then dropped (caller holds the fake's lock)."""
        error = AsyncError(code, identifier, customer, event_name, time.time())
        self.errors.append(error)
        self._unreported.append(error)

    def emit_report(self) -> dict[str, Any] | None:
        """One error report for every error since the last one (None when there is none), delivered if configured."""
        with self._fake._lock:
            errors, self._unreported = self._unreported, []
            if not errors:
                return None
            event = self._report(errors)
            self.events.append(event)
        if self._destination is not None:
            url, secret = self._destination
            threading.Thread(target=self._deliver, args=(event, url, secret), daemon=True).start()
        return event

    def wait_for_deliveries(self, count: int, timeout_s: float = 5.0) -> list[tuple[str, int | str]]:
        with self._delivered:
            if not self._delivered.wait_for(lambda: len(self.deliveries) >= count, timeout=timeout_s):
                raise AssertionError(f"{len(self.deliveries)} deliveries after {timeout_s}s, wanted {count}")
            return list(self.deliveries)

    def _report(self, errors: list[AsyncError]) -> dict[str, Any]:
        by_code: dict[str, list[AsyncError]] = {}
        for error in errors:
            by_code.setdefault(error.code, []).append(error)
        meter = next(
            (m["id"] for m in self._fake.meters if m["event_name"] == errors[0].event_name), "mtr_fake_unconfigured"
        )
        count = len(errors)
        return {
            "id": f"evt_test_{secrets.token_hex(16)}",
            "object": "v2.core.event",
            "type": ERROR_REPORT,
            "created": rfc3339(time.time()),
            "livemode": False,
            "changes": {},
            "related_object": {"id": meter, "type": "billing.meter", "url": f"/v1/billing/meters/{meter}"},
            "data": {
                "developer_message_summary": f"There {'is' if count == 1 else 'are'} {count} invalid "
                f"event{'' if count == 1 else 's'}",
                "reason": {
                    "error_count": count,
                    "error_types": [
                        {
                            "code": code,
                            "error_count": len(found),
                            "sample_errors": [
                                {"error_message": e.message, "request": {"identifier": e.identifier}}
                                for e in found[: self.samples_per_code]
                            ],
                        }
                        for code, found in by_code.items()
                    ],
                },
                "validation_start": rfc3339(math.floor(min(e.received_at for e in errors))),
                "validation_end": rfc3339(math.ceil(max(e.received_at for e in errors))),
            },
        }

    def _deliver(self, event: Mapping[str, Any], url: str, secret: str) -> None:
        thin = {k: event[k] for k in ("id", "object", "type", "created", "livemode", "related_object")}
        body = json.dumps(thin).encode()
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Stripe-Signature": sign(body, secret, int(time.time()))},
        )
        outcome: int | str
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                outcome = int(response.status)
        except urllib.error.HTTPError as exc:
            outcome = exc.code
        except OSError as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        with self._delivered:
            self.deliveries.append((event["id"], outcome))
            self._delivered.notify_all()

    # -- GET /v2/core/events, GET /v2/core/events/{id} (server threads) -----------------------------------------

    def list_events(self, request: RecordedRequest, params: Mapping[str, Any]) -> Reply:
        types = params.get("types")
        created: Mapping[str, str] = params.get("created") or {}
        bounds = {op: _parse_time(value) for op, value in created.items()}
        with self._fake._lock:
            found = [
                e
                for e in reversed(self.events)
                if (not types or e["type"] in types) and _within(_parse_time(e["created"]), bounds)
            ]
        limit = int(params.get("limit") or 20)
        offset = int(params.get("page") or 0)
        page = found[offset : offset + limit]
        next_url = None
        if offset + limit < len(found):
            query = {k: v for k, v in request.params.items() if k not in ("page", "types", "created")}
            query.update({f"types[{i}]": t for i, t in enumerate(types or [])})
            query.update({f"created[{op}]": v for op, v in created.items()})
            query["page"] = str(offset + limit)
            next_url = "/v2/core/events?" + urlencode(query)
        previous_url = None if offset == 0 else "/v2/core/events?" + urlencode({"page": str(max(0, offset - limit))})
        return Reply(200, {"data": page, "next_page_url": next_url, "previous_page_url": previous_url})

    def retrieve_event(self, request: RecordedRequest, event_id: str) -> Reply:
        with self._fake._lock:
            event = next((e for e in self.events if e["id"] == event_id), None)
        if event is None:
            missing = {"type": "invalid_request_error", "code": "not_found", "message": f"No such event: {event_id}"}
            return Reply(404, {"error": missing})
        return Reply(200, event)


def _within(created: float, bounds: Mapping[str, float]) -> bool:
    checks = {
        "gt": lambda b: created > b,
        "gte": lambda b: created >= b,
        "lt": lambda b: created < b,
        "lte": lambda b: created <= b,
    }
    return all(checks[op](bound) for op, bound in bounds.items())
