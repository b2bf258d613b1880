"""A local fake of the slice of Lago the gateway talks to: a real HTTP server, asserted by its state.

    with FakeLago() as lago:
        lago.add_customer("cust_ACME", subscriptions=["sub_ACME"])
        sink = LagoBillingSink(FAKE_LAGO_KEY, metric_code=METRIC_CODE, api_url=lago.url)
        ...
        assert lago.events == [{"transaction_id": ..., "external_subscription_id": "sub_ACME", "code": ..., ...}]
        assert lago.invalid_requests == []

Why a server: the adapter's real httpx client, JSON encoding, headers and error mapping run as in production, and
an end-to-end test points a `gateway serve` subprocess at `lago.url` (LAGO_API_URL).

What it holds to, from Lago's API reference and its source (getlago/lago-api):
- Every `/api/v1/...` call needs `Authorization: Bearer <api key>`; otherwise `401 {"status": 401, "error":
  "Unauthorized"}`.
- `POST /api/v1/events` takes `{"event": {...}}`. `transaction_id` and `code` are mandatory (`422` `value_is_mandatory`
  otherwise). Lago keeps one event per (external_subscription_id, transaction_id): a second one is `422
  {"code": "validation_errors", "error_details": {"transaction_id": ["value_already_exist"]}}` and stores nothing.
- Lago silently drops what it does not bill: unpermitted keys, and `external_customer_id` (deprecated on events;
  an event without `external_subscription_id` is stored but never billed). The fake answers such requests as Lago
  does AND appends them to `invalid_requests` with the problem, so a test can demand that list be empty. So are
  shapes our adapter promises and Lago would only reject later, asynchronously: a non-integer `timestamp`, units
  that are not a non-negative integer, a `code` other than the fake's `metric_code`.
- `POST /api/v1/events/batch` takes `{"events": [...]}`, at most 100 (`too_many_events`), at least one
  (`no_events`), and is all or nothing (`Events::CreateBatchService`): one bad or known event rejects the batch with
  `422` and `error_details` keyed by position (`{"0": {"transaction_id": ["value_already_exist"]}}`), storing none.
- `GET /api/v1/subscriptions/{external_id}[?status=]` finds the subscription in that status (default `active`),
  else `404 {"code": "subscription_not_found"}`. `GET /api/v1/customers/{external_id}/portal_url` answers
  `{"customer": {"portal_url": ...}}`, else `404 {"code": "customer_not_found"}`. `GET /customer-portal/<token>`
  serves a page, so a test can follow a portal URL.
- Events for subscriptions the fake does not know are accepted, as Lago does (it validates them after ingestion),
  and reported in `error_reports`, as Lago's `events.errors` webhook would.
- Injected faults (`fail_next`, `hang_next`) are consumed one per request on their route, in order, after the body
  was checked (so an invalid request is still recorded).
- All state is guarded by one lock; handlers run on the server's threads.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .http_fake import DROP, Drop, FakeHTTPServer, FakeRequestHandler, Reply, ThreadedFake

FAKE_LAGO_KEY = "lago_test_key_fake"
METRIC_CODE = "ringside_units"
UNITS_PROPERTY = "units"
MAX_BATCH = 100  # Events::CreateBatchService::MAX_LENGTH (LAGO_EVENTS_BATCH_MAX_LENGTH, default 100)

# Route names, used as `fail_next(route=...)` / `hang_next(route=...)`.
EVENTS = "events"
BATCH = "events_batch"
SUBSCRIPTION = "subscription"
PORTAL_URL = "portal_url"

_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"^/api/v1/events$"), EVENTS),
    ("POST", re.compile(r"^/api/v1/events/batch$"), BATCH),
    ("GET", re.compile(r"^/api/v1/subscriptions/(?P<id>[^/]+)$"), SUBSCRIPTION),
    ("GET", re.compile(r"^/api/v1/customers/(?P<id>[^/]+)/portal_url$"), PORTAL_URL),
]
# EventsController#create_params / #batch_params: what Rails' strong parameters let through.
_PERMITTED = frozenset(
    {
        "transaction_id",
        "external_customer_id",
        "code",
        "timestamp",
        "external_subscription_id",
        "properties",
        "precise_total_amount_cents",
    }
)


@dataclass
class RecordedRequest:
    """One request as the fake saw it. `headers` keys are lower-case; `body` is the decoded JSON (None if none)."""

    method: str
    path: str
    body: Any
    headers: dict[str, str]
    problems: list[str] = field(default_factory=list)
    status: int | None = None


@dataclass(frozen=True)
class _Fault:
    status: int | None  # None: hang
    retry_after: float | str | None = None  # a str is sent as written
    rate_limit_reset: int | None = None
    body: Any = None
    hang_s: float = 0.0
    then_process: bool = False


def _not_found(resource: str) -> Reply:
    return Reply(404, {"status": 404, "error": "Not Found", "code": f"{resource}_not_found"})


def _validation(errors: Mapping[str, Any]) -> Reply:
    return Reply(
        422, {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors", "error_details": errors}
    )


class _Server(FakeHTTPServer):
    # socketserver's default backlog of 5 resets bursts of concurrent connections (the dispatcher's, a race test).
    request_queue_size = 128


class _RequestHandler(FakeRequestHandler):
    json_content_type = "application/json; charset=utf-8"


class FakeLago(ThreadedFake):
    """A Lago look-alike on 127.0.0.1, an ephemeral port, a background thread. Use it as a context manager.

    `url` is the value for LAGO_API_URL.

    Attributes tests read (newest last): `events` (stored events: transaction_id, external_subscription_id, code,
    timestamp, properties, as sent), `portal_urls` (external_customer_id, portal_url), `requests`,
    `invalid_requests`, `error_reports`. Attributes tests set: `latency_s` (added to every call); customers and
    subscriptions through `add_customer`.
    """

    server_class = _Server
    handler_class = _RequestHandler

    def __init__(
        self, api_key: str = FAKE_LAGO_KEY, *, metric_code: str = METRIC_CODE, units_property: str = UNITS_PROPERTY
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.metric_code = metric_code
        self.units_property = units_property
        self.latency_s = 0.0

        self.events: list[dict[str, Any]] = []
        self.portal_urls: list[dict[str, str]] = []
        self.requests: list[RecordedRequest] = []
        self.invalid_requests: list[RecordedRequest] = []
        self.error_reports: list[dict[str, Any]] = []
        self.customers: dict[str, dict[str, Any]] = {}
        self.subscriptions: list[dict[str, Any]] = []

        self._lock = threading.RLock()
        self._stored = threading.Condition(self._lock)  # notified whenever `events` grows
        self._keys: set[tuple[str | None, str]] = set()  # (external_subscription_id, transaction_id)
        self._faults: dict[str, deque[_Fault]] = defaultdict(deque)
        self._handlers: dict[str, Callable[[RecordedRequest, dict[str, str], dict[str, list[str]]], Reply]] = {
            EVENTS: self._create_event,
            BATCH: self._create_batch,
            SUBSCRIPTION: self._find_subscription,
            PORTAL_URL: self._portal_url,
        }

    # -- set-up and fault injection ----------------------------------------------------------------------------------

    def add_customer(self, external_id: str, *, subscriptions: Iterable[str] = (), status: str = "active") -> None:
        """A Lago customer and its subscriptions (external ids), all in `status`."""
        with self._lock:
            self.customers[external_id] = {"external_id": external_id, "lago_id": _new_id()}
            for subscription in subscriptions:
                self.subscriptions.append(
                    {"external_id": subscription, "external_customer_id": external_id, "status": status}
                )

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        *,
        retry_after: float | str | None = None,
        rate_limit_reset: int | None = None,
        body: Any = None,
        route: str = EVENTS,
    ) -> None:
        """Answer the next `n` requests on `route` with `status`, whatever they ask; nothing is stored.

        The body is Lago's error envelope for that status unless `body` is given; `retry_after` sets `Retry-After`
        (a str as written), `rate_limit_reset` sets `X-RateLimit-Reset` (seconds until Lago's rate-limit window resets).
        """
        with self._lock:
            fault = _Fault(status, retry_after=retry_after, rate_limit_reset=rate_limit_reset, body=body)
            self._faults[route].extend([fault] * n)

    def hang_next(self, n: int = 1, seconds: float = 30.0, *, then_process: bool = False, route: str = EVENTS) -> None:
        """Accept the next `n` requests on `route` and say nothing for `seconds`.

        Then the connection is closed unanswered, or, with `then_process=True`, the request is handled normally (the
        event is stored although the client has given up, so its retry must come back as `value_already_exist`).
        """
        with self._lock:
            self._faults[route].extend([_Fault(None, hang_s=seconds, then_process=then_process)] * n)

    # -- reading state ---------------------------------------------------------------------------------------------

    def events_for(self, subscription: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e["external_subscription_id"] == subscription]

    def units(self, subscription: str | None = None) -> int:
        with self._lock:
            return sum(
                int(e["properties"][self.units_property])
                for e in self.events
                if subscription is None or e["external_subscription_id"] == subscription
            )

    def wait_for_events(self, count: int, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        """Block until at least `count` events are stored; return them. AssertionError after `timeout_s`."""
        with self._stored:
            if not self._stored.wait_for(lambda: len(self.events) >= count, timeout=timeout_s):
                raise AssertionError(f"{len(self.events)} Lago events after {timeout_s}s, wanted {count}")
            return list(self.events)

    # -- dispatch (server threads) ---------------------------------------------------------------------------------

    def _dispatch(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Reply | Drop:
        split = urlsplit(target)
        if method == "GET" and split.path.startswith("/customer-portal/"):
            return Reply(200, f"<html><body>Fake Lago customer portal {split.path.rsplit('/', 1)[-1]}</body></html>")
        request = RecordedRequest(method, split.path, None, headers)
        with self._lock:
            self.requests.append(request)
        reply = self._answer(request, split.query, raw)
        request.status = None if isinstance(reply, Drop) else reply.status
        return reply

    def _answer(self, request: RecordedRequest, query: str, raw: bytes) -> Reply | Drop:
        route, params = _route(request.method, request.path)
        if route is None:
            return Reply(404, {"status": 404, "error": "Not Found"})
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return Reply(401, {"status": 401, "error": "Unauthorized"})
        if request.method == "POST":
            if "application/json" not in request.headers.get("content-type", ""):
                request.problems.append("Lago's API takes JSON bodies (Content-Type: application/json)")
            try:
                request.body = json.loads(raw) if raw.strip() else None
            except ValueError as exc:
                request.problems.append(f"the body is not JSON: {exc}")
                self._flag(request)
                return Reply(400, {"status": 400, "error": "BadRequest: invalid JSON"})
        with self._lock:
            fault = self._faults[route].popleft() if self._faults[route] else None
        if fault is not None and fault.status is None:
            self._stopping.wait(fault.hang_s)
            if not fault.then_process or self._stopping.is_set():
                return DROP
            fault = None
        if self.latency_s:
            self._stopping.wait(self.latency_s)
        if fault is not None:
            self._check_shape(request, route)
            return _fault_reply(fault)
        return self._handlers[route](request, params, parse_qs(query))

    def _flag(self, request: RecordedRequest) -> None:
        with self._lock:
            if request.problems and request not in self.invalid_requests:
                self.invalid_requests.append(request)

    def _check_shape(self, request: RecordedRequest, route: str) -> None:
        """Record shape problems of a POST body without acting on them (used when a fault answers instead)."""
        if route == EVENTS and isinstance(request.body, dict) and isinstance(request.body.get("event"), dict):
            request.problems.extend(self._event_problems(request.body["event"], ""))
        self._flag(request)

    # -- events ----------------------------------------------------------------------------------------------------

    def _event_problems(self, event: Mapping[str, Any], where: str) -> list[str]:
        """What Lago would drop silently or reject later, and what our adapter promises not to send."""
        problems = [f"{where}{key}: not a parameter Lago permits ; dropped" for key in event if key not in _PERMITTED]
        if "external_customer_id" in event:
            problems.append(f"{where}external_customer_id: deprecated on events; Lago drops it, bills by subscription")
        subscription = event.get("external_subscription_id")
        if not isinstance(subscription, str) or not subscription:
            problems.append(f"{where}external_subscription_id: missing; Lago stores the event and never bills it")
        if event.get("code") not in (None, self.metric_code):
            problems.append(f"{where}code: {event.get('code')!r} is not the billable metric {self.metric_code!r}")
        timestamp = event.get("timestamp")
        if not isinstance(timestamp, int) or isinstance(timestamp, bool):
            problems.append(f"{where}timestamp: {timestamp!r} is not integer unix seconds")
        properties = event.get("properties")
        units = properties.get(self.units_property) if isinstance(properties, dict) else None
        if not isinstance(units, int) or isinstance(units, bool) or units < 0:
            problems.append(f"{where}properties.{self.units_property}: {units!r} is not a non-negative integer")
        return problems

    @staticmethod
    def _mandatory(event: Mapping[str, Any]) -> dict[str, list[str]]:
        """Event#validates presence of transaction_id and code: `value_is_mandatory`."""
        errors: dict[str, list[str]] = {}
        for name in ("transaction_id", "code"):
            value = event.get(name)
            if not isinstance(value, str) or not value:
                errors[name] = ["value_is_mandatory"]
        return errors

    def _stored_form(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """The event as Lago keeps it: external_customer_id and unpermitted keys are dropped."""
        return {
            "transaction_id": event["transaction_id"],
            "external_subscription_id": event.get("external_subscription_id"),
            "code": event["code"],
            "timestamp": event.get("timestamp"),
            "properties": event.get("properties") or {},
        }

    def _store(self, events: list[dict[str, Any]]) -> None:
        """Append under the lock (the caller holds it) and report events for subscriptions the fake does not know."""
        known = {s["external_id"] for s in self.subscriptions}
        for event in events:
            self._keys.add((event["external_subscription_id"], event["transaction_id"]))
            self.events.append(event)
            if event["external_subscription_id"] not in known:
                self.error_reports.append(
                    {"transaction_id": event["transaction_id"], "error": {"external_subscription_id": ["not_found"]}}
                )
        self._stored.notify_all()

    def _create_event(self, request: RecordedRequest, _params: dict[str, str], _query: dict[str, list[str]]) -> Reply:
        body = request.body
        if not isinstance(body, dict) or not isinstance(body.get("event"), dict):
            # ActionController::ParameterMissing -> ApiErrors#bad_request_error.
            request.problems.append('the body must be {"event": {...}}')
            self._flag(request)
            return Reply(400, {"status": 400, "error": "BadRequest: param is missing or the value is empty: event"})
        event = body["event"]
        request.problems.extend(self._event_problems(event, ""))
        mandatory = self._mandatory(event)
        if mandatory:
            request.problems.extend(f"{name}: value_is_mandatory" for name in mandatory)
            self._flag(request)
            return _validation(mandatory)
        self._flag(request)
        stored = self._stored_form(event)
        with self._lock:
            if (stored["external_subscription_id"], stored["transaction_id"]) in self._keys:
                # Events::CreateService rescues ActiveRecord::RecordNotUnique (index_unique_transaction_id).
                return _validation({"transaction_id": ["value_already_exist"]})
            self._store([stored])
        return Reply(200, {"event": {"lago_id": _new_id(), **stored}})

    def _create_batch(self, request: RecordedRequest, _params: dict[str, str], _query: dict[str, list[str]]) -> Reply:
        body = request.body
        events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(events, list) or not events:
            return _validation({"events": ["no_events"]})
        if len(events) > MAX_BATCH:
            return _validation({"events": ["too_many_events"]})
        errors: dict[str, dict[str, list[str]]] = {}
        stored: list[dict[str, Any]] = []
        with self._lock:
            seen: set[tuple[str | None, str]] = set()
            for index, event in enumerate(events):
                if not isinstance(event, dict):
                    errors[str(index)] = {"event": ["invalid_format"]}
                    continue
                request.problems.extend(self._event_problems(event, f"events[{index}]."))
                mandatory = self._mandatory(event)
                if mandatory:
                    errors[str(index)] = mandatory
                    continue
                form = self._stored_form(event)
                key = (form["external_subscription_id"], form["transaction_id"])
                if key in self._keys or key in seen:
                    errors[str(index)] = {"transaction_id": ["value_already_exist"]}
                    continue
                seen.add(key)
                stored.append(form)
            self._flag(request)
            if errors:
                # All or nothing: Events::CreateBatchService saves the batch in one transaction, or none of it.
                return _validation(errors)
            self._store(stored)
        return Reply(200, {"events": [{"lago_id": _new_id(), **event} for event in stored]})

    # -- subscriptions and the customer portal ------------------------------------------------------------------------

    def _find_subscription(
        self, _request: RecordedRequest, params: dict[str, str], query: dict[str, list[str]]
    ) -> Reply:
        status = (query.get("status") or ["active"])[0]
        with self._lock:
            found = [s for s in self.subscriptions if s["external_id"] == params["id"] and s["status"] == status]
        if not found:
            return _not_found("subscription")
        subscription = found[-1]
        return Reply(200, {"subscription": {"lago_id": _new_id(), "plan_code": "ringside", **subscription}})

    def _portal_url(self, _request: RecordedRequest, params: dict[str, str], _query: dict[str, list[str]]) -> Reply:
        with self._lock:
            if params["id"] not in self.customers:
                return _not_found("customer")
            url = f"{self.url}/customer-portal/{secrets.token_urlsafe(24)}"
            self.portal_urls.append({"external_customer_id": params["id"], "portal_url": url})
        return Reply(200, {"customer": {"portal_url": url}})


def _route(method: str, path: str) -> tuple[str | None, dict[str, str]]:
    for route_method, pattern, name in _ROUTES:
        match = pattern.match(path)
        if match and method == route_method:
            return name, {key: unquote(value) for key, value in match.groupdict().items()}
    return None, {}


def _fault_reply(fault: _Fault) -> Reply:
    assert fault.status is not None
    headers: dict[str, str] = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = fault.retry_after if isinstance(fault.retry_after, str) else f"{fault.retry_after:g}"
    if fault.rate_limit_reset is not None:
        headers["X-RateLimit-Limit"] = "500"
        headers["X-RateLimit-Remaining"] = "0"
        headers["X-RateLimit-Reset"] = str(fault.rate_limit_reset)
    if fault.body is not None:
        return Reply(fault.status, fault.body, headers)
    reasons = {
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not Found",
        422: "Unprocessable Entity",
        429: "Too Many Requests",
    }
    error = reasons.get(fault.status, "Internal Server Error" if fault.status >= 500 else "Bad Request")
    return Reply(fault.status, {"status": fault.status, "error": error}, headers)


def _new_id() -> str:
    """A Lago-style uuid-ish `lago_id`."""
    raw = secrets.token_hex(16)
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"
