"""A local fake of the slice of Stripe the gateway talks to: a real HTTP server, asserted by its state.

    with FakeStripe(api_key="sk_test_fake") as stripe:
        sink = StripeBillingSink("sk_test_fake", api_base=stripe.url)
        ...
        assert stripe.meter_events == [{"event_name": ..., "identifier": ..., "customer": ..., "value": 5, ...}]
        assert stripe.invalid_requests == []

Why a server and not a mock: the adapter goes through the official SDK, its HTTP client, its form encoding and its
error mapping exactly as in production, and end-to-end tests can point a gateway subprocess at `stripe.url`
(`STRIPE_API_BASE`). Stripe's own stripe-mock has no v2 endpoints and localstripe has no meters or portal
(STRIPE-NOTES.md), hence this.

Invariants:
- Every request is checked against the OpenAPI excerpt (`stripe_schema.py`); one that does not validate is answered
  like Stripe (400 `invalid_request_error`) AND appended to `invalid_requests`, so a test can demand that list be
  empty. Refusals for the state of things (duplicate identifier, unknown customer) are not "invalid requests".
- A meter event identifier is accepted once; a second v1 call with it gets Stripe's 400 "An event already exists
  with identifier ..." with `Stripe-Should-Retry: false` (STRIPE-NOTES; langfuse/langfuse#16292). The v2 stream
  drops duplicates silently, as Stripe does (its validation is asynchronous).
- Injected faults (`fail_next`, `hang_next`) are consumed one per request on their path, in order, and apply
  after validation, so an invalid request is still recorded even when it is answered with a fault.
- All state is guarded by one lock; handlers run on the server's threads.
- Stripe's asynchronous side (events answered and then dropped, error reports as v2 events, their signed delivery)
  lives in stripe_feedback.py as `feedback`; meter event summaries in stripe_summaries.py as `summaries`.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from .http_fake import DROP, Drop, FakeHTTPServer, FakeRequestHandler, Reply, ThreadedFake
from .stripe_feedback import StripeFeedback
from .stripe_schema import Problem, body_schema, load_spec, parse_form, query_schema, validate
from .stripe_summaries import StripeSummaries

FAKE_API_KEY = "sk_test_fake"
METER_EVENTS = "/v1/billing/meter_events"
METER_EVENT_STREAM = "/v2/billing/meter_event_stream"
MAX_STREAM_EVENTS = 100  # "Supports up to 100 events per request" (v2 meter_event_stream, OpenAPI excerpt)
MAX_VALUE_DIGITS = 15  # "more than 15 significant digits is a 400" (STRIPE-NOTES, changelog 2026-04-22.dahlia)
SESSION_TTL_S = 15 * 60  # meter event session tokens are valid 15 minutes (STRIPE-NOTES)

# bench/fake_stripe.py builds on these names (and on `_RequestHandler` below).
_Server = FakeHTTPServer
_Reply = Reply
_Drop = Drop


@dataclass
class RecordedRequest:
    """One request as the fake saw it. `headers` keys are lower-case; `params` is the parsed body or query."""

    method: str
    path: str
    params: Any
    headers: dict[str, str]
    problems: list[Problem] = field(default_factory=list)
    status: int | None = None
    path_params: dict[str, str] = field(default_factory=dict)  # `{id}` and the like, for a templated route

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")

    @property
    def message(self) -> str:
        """The first problem, as Stripe would have reported it."""
        return self.problems[0].message if self.problems else ""


@dataclass(frozen=True)
class _Fault:
    status: int | None  # None: hang
    retry_after: float | str | None = None  # a str is sent as written
    should_retry: bool | None = None
    hang_s: float = 0.0
    then_process: bool = False
    message: str | None = None


Handler = Callable[[RecordedRequest, Any], Reply]


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _error(status: int, message: str, *, kind: str = "invalid_request_error", **extra: Any) -> Reply:
    """Stripe's error envelope (components.schemas.error): `{"error": {"type", "message", "code"?, "param"?}}`."""
    headers = {"Stripe-Should-Retry": "false"} if extra.pop("no_retry", False) else {}
    return Reply(status, {"error": {"type": kind, "message": message, **extra}}, headers)


class _RequestHandler(FakeRequestHandler):
    def _headers_for(self, reply: Reply) -> Mapping[str, str]:
        return {"Request-Id": _new_id("req"), **reply.headers}  # as Stripe stamps every answer


class FakeStripe(ThreadedFake):
    """A Stripe look-alike on 127.0.0.1, an ephemeral port, a background thread. Use it as a context manager.

    `url` is the value for both `api` and `meter_events` base addresses.

    Attributes tests read (lists of dicts shaped like Stripe's objects, newest last):
    `meter_events` (event_name, identifier, customer, value as int, timestamp as unix int), `meters`, `products`,
    `prices`, `portal_sessions`, `meter_event_sessions`, `requests` (every RecordedRequest), `invalid_requests`,
    `error_reports` (what Stripe would report asynchronously for v2 stream events, e.g. an unknown customer).

    Attributes tests set: `known_customers` (None accepts every customer), `asynchronous_validation` (v1 answers an
    unknown customer's event 200 and drops it, reporting it later, as the stream always does; off: a 400 "No such
    customer"), `latency_s` (added to every call),
    `subscriptions` (Stripe subscription objects, at least `id`, `customer`, `status`; listed by
    `GET /v1/subscriptions`, which portal deep links into a subscription use).
    """

    handler_class = _RequestHandler

    def __init__(self, api_key: str = FAKE_API_KEY, *, spec_dir: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.known_customers: set[str] | None = None
        self.asynchronous_validation = False
        self.latency_s = 0.0
        self.session_ttl_s: float = SESSION_TTL_S

        self.meter_events: list[dict[str, Any]] = []
        self.meters: list[dict[str, Any]] = []
        self.products: list[dict[str, Any]] = []
        self.prices: list[dict[str, Any]] = []
        self.portal_sessions: list[dict[str, Any]] = []
        self.subscriptions: list[dict[str, Any]] = []
        self.meter_event_sessions: list[dict[str, Any]] = []
        self.requests: list[RecordedRequest] = []
        self.invalid_requests: list[RecordedRequest] = []
        self.error_reports: list[dict[str, Any]] = []
        self.in_flight_peaks: dict[str, int] = {}
        self.feedback = StripeFeedback(self)
        self.summaries = StripeSummaries(self)

        self._spec = load_spec(spec_dir)
        self._lock = threading.RLock()
        self._stored = threading.Condition(self._lock)  # notified whenever meter_events grows
        self._identifiers: set[str] = set()
        self._in_flight: dict[str, int] = defaultdict(int)
        self._faults: dict[str, deque[_Fault]] = defaultdict(deque)
        self._session_tokens: dict[str, float] = {}
        self._routes: dict[tuple[str, str], Handler] = {
            ("POST", METER_EVENTS): self._create_meter_event,
            ("GET", "/v1/billing/meters"): self._list_meters,
            ("POST", "/v1/billing/meters"): self._create_meter,
            ("GET", "/v1/products"): self._list_products,
            ("POST", "/v1/products"): self._create_product,
            ("GET", "/v1/prices"): self._list_prices,
            ("POST", "/v1/prices"): self._create_price,
            ("POST", "/v1/billing_portal/sessions"): self._create_portal_session,
            ("GET", "/v1/subscriptions"): self._list_subscriptions,
            ("POST", "/v2/billing/meter_event_session"): self._create_meter_event_session,
            ("POST", METER_EVENT_STREAM): self._stream_meter_events,
            ("GET", "/v2/core/events"): self.feedback.list_events,
        }
        # Path templates as the spec names them; `{id}` is handed to the handler in `request.path_params`.
        self._templates: list[tuple[str, str, Handler]] = [
            ("GET", "/v2/core/events/{id}", lambda r, p: self.feedback.retrieve_event(r, r.path_params["id"])),
            (
                "GET",
                "/v1/billing/meters/{id}/event_summaries",
                lambda r, p: self.summaries.list_summaries(r, r.path_params["id"], p),
            ),
        ]

    # -- fault injection -------------------------------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        *,
        retry_after: float | str | None = None,
        should_retry: bool | None = None,
        message: str | None = None,
        path: str = METER_EVENTS,
    ) -> None:
        """Answer the next `n` requests on `path` with `status` (a Stripe error body), whatever they ask.

        `retry_after` sets a `Retry-After` header (a str as written); `should_retry` sets `Stripe-Should-Retry`.
        Nothing is stored.
        """
        with self._lock:
            fault = _Fault(status, retry_after=retry_after, should_retry=should_retry, message=message)
            self._faults[path].extend([fault] * n)

    def hang_next(
        self, n: int = 1, seconds: float = 30.0, *, then_process: bool = False, path: str = METER_EVENTS
    ) -> None:
        """Accept the next `n` requests on `path` and say nothing for `seconds`.

        Then the connection is closed unanswered, or, with `then_process=True`, the request is handled normally
        (the event is stored although the client has probably given up: Stripe may well have recorded a call that
        timed out on our side, and the retry must then come back as "already exists").
        """
        with self._lock:
            self._faults[path].extend([_Fault(None, hang_s=seconds, then_process=then_process)] * n)

    @property
    def max_in_flight_per_customer(self) -> int:
        """The most v1 meter event calls ever in flight at once for any one customer (0 before any call).

        Stripe allows one concurrent call per customer per meter (STRIPE-NOTES). A hung call stops counting while
        it hangs: its client has given up, and counting it would flag the client's retry as concurrent.
        """
        with self._lock:
            return max(self.in_flight_peaks.values(), default=0)

    def events_for(self, customer: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.meter_events if e["customer"] == customer]

    def wait_for_meter_events(self, count: int, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        """Block until at least `count` meter events are stored; return them. AssertionError after `timeout_s`.

        For tests where the sender runs elsewhere (a gateway subprocess, a hung call processed late). From async
        code: `await asyncio.to_thread(stripe.wait_for_meter_events, 3)`.
        """
        with self._stored:
            if not self._stored.wait_for(lambda: len(self.meter_events) >= count, timeout=timeout_s):
                raise AssertionError(f"{len(self.meter_events)} meter events after {timeout_s}s, wanted {count}")
            return list(self.meter_events)

    def total_value(self, customer: str | None = None) -> int:
        with self._lock:
            return sum(e["value"] for e in self.meter_events if customer is None or e["customer"] == customer)

    # -- dispatch (server threads) ---------------------------------------------------------------------------------

    def _dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply | Drop:
        split = urlsplit(target)
        path = split.path
        if method == "GET" and path.startswith("/p/session/"):
            return Reply(200, f"<html><body>Fake billing portal {path.rsplit('/', 1)[-1]}</body></html>")
        handler = self._routes.get((method, path))
        template, path_params = path, {}
        if handler is None:
            template, path_params, handler = self._match_template(method, path)
        params, problems = self._parse(method, template, split.query, headers, body)
        request = RecordedRequest(method, path, params, headers, problems, path_params=path_params)
        with self._lock:
            self.requests.append(request)
        reply = self._answer(request, handler)
        request.status = None if isinstance(reply, Drop) else reply.status
        return reply

    def _match_template(self, method: str, path: str) -> tuple[str, dict[str, str], Handler | None]:
        for verb, template, handler in self._templates:
            pattern = "^" + re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$"
            match = re.match(pattern, path)
            if verb == method and match:
                return template, match.groupdict(), handler
        return path, {}, None

    def _answer(self, request: RecordedRequest, handler: Handler | None) -> Reply | Drop:
        if handler is None:
            return _error(
                404,
                f"Unrecognized request URL ({request.method}: {request.path}). Please see https://stripe.com/docs "
                "or we can help at https://support.stripe.com/.",
            )
        refused = self._authenticate(request)
        if refused is not None:
            return refused
        if request.path == METER_EVENTS and not request.problems:
            request.problems.extend(self._meter_event_problems(request.params))
        if request.problems:
            with self._lock:
                self.invalid_requests.append(request)
        with self._lock:
            fault = self._faults[request.path].popleft() if self._faults[request.path] else None
        if fault is not None and fault.status is None:
            self._stopping.wait(fault.hang_s)
            if not fault.then_process or self._stopping.is_set():
                return DROP
            fault = None
        customer = self._customer_of(request)
        with self._counting(customer):
            if self.latency_s:
                self._stopping.wait(self.latency_s)
            if fault is not None:
                return self._fault_reply(fault)
            if request.problems:
                first = request.problems[0]
                return _error(400, first.message, param=first.param)
            return handler(request, request.params)

    def _parse(
        self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[Any, list[Problem]]:
        """Decode the body (v1 form, v2 JSON) or, for a GET, the query string, and validate it against the spec."""
        if method == "GET":
            params, problems = parse_form(query)
            schema = query_schema(self._spec, path, method)
            form = True
        else:
            schema, form = body_schema(self._spec, path, method)
            if form or path.startswith("/v1/"):
                form = True
                params, problems = parse_form(body.decode("utf-8", "replace"))
                if "json" in headers.get("content-type", ""):
                    problems.append(Problem("", "v1 bodies must be application/x-www-form-urlencoded"))
            else:
                try:
                    params, problems = (json.loads(body) if body.strip() else {}), []
                except ValueError as exc:
                    return {}, [Problem("", f"Invalid JSON body: {exc}")]
        if schema is None or problems:
            return params, problems
        return validate(schema, params, form=form)

    def _authenticate(self, request: RecordedRequest) -> Reply | None:
        authorization = request.headers.get("authorization", "")
        token = authorization[len("Bearer ") :] if authorization.startswith("Bearer ") else ""
        if request.path == METER_EVENT_STREAM:
            with self._lock:
                expires_at = self._session_tokens.get(token)
            if expires_at is None or expires_at <= time.time():
                # The stream authenticates with a session token, never the secret key (STRIPE-NOTES).
                return _error(
                    401,
                    "The meter event session has expired or is not valid. Create a new session.",
                    kind="temporary_session_expired",
                    code="billing_meter_event_session_expired",
                )
            return None
        if not token:
            return _error(
                401,
                "You did not provide an API key. You need to provide your API key in the Authorization header, "
                "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            )
        if not secrets.compare_digest(token, self.api_key):
            masked = token[:8] + "*" * 4 + token[-4:] if len(token) > 12 else "****"
            return _error(401, f"Invalid API Key provided: {masked}")
        return None

    def _fault_reply(self, fault: _Fault) -> Reply:
        status = fault.status or 500
        if status == 429:
            reply = _error(
                429,
                fault.message
                or "Request rate limit exceeded. Learn more about rate limits here "
                "https://stripe.com/docs/rate-limits.",
                code="rate_limit",
            )
        elif status >= 500:
            reply = _error(status, fault.message or "An unknown error occurred (fake).", kind="api_error")
        elif status == 409:
            reply = _error(
                409, fault.message or "This object cannot be accessed right now (fake).", code="lock_timeout"
            )
        else:
            reply = _error(status, fault.message or f"Injected failure {status} (fake).")
        headers = dict(reply.headers)
        if fault.retry_after is not None:
            headers["Retry-After"] = (
                fault.retry_after if isinstance(fault.retry_after, str) else f"{fault.retry_after:g}"
            )
        if fault.should_retry is not None:
            headers["Stripe-Should-Retry"] = "true" if fault.should_retry else "false"
        return Reply(reply.status, reply.body, headers)

    def _customer_of(self, request: RecordedRequest) -> str | None:
        if request.path != METER_EVENTS or not isinstance(request.params, dict):
            return None
        payload = request.params.get("payload")
        customer = payload.get(self._payload_keys(request.params)[0]) if isinstance(payload, dict) else None
        return customer if isinstance(customer, str) else None

    @contextmanager
    def _counting(self, customer: str | None) -> Iterator[None]:
        if customer is None:
            yield
            return
        with self._lock:
            self._in_flight[customer] += 1
            self.in_flight_peaks[customer] = max(self.in_flight_peaks.get(customer, 0), self._in_flight[customer])
        try:
            yield
        finally:
            with self._lock:
                self._in_flight[customer] -= 1

    # -- meter events ----------------------------------------------------------------------------------------------

    def _payload_keys(self, params: Mapping[str, Any]) -> tuple[str, str]:
        """(customer key, value key) of the meter for this event name; Stripe's defaults when there is none."""
        with self._lock:
            for meter in self.meters:
                if meter["event_name"] == params.get("event_name") and meter["status"] == "active":
                    return meter["customer_mapping"]["event_payload_key"], meter["value_settings"]["event_payload_key"]
        return "stripe_customer_id", "value"

    def _meter_event_problems(self, params: Mapping[str, Any]) -> list[Problem]:
        """What the payload must hold beyond the schema: a customer and a whole-number value of at most 15 digits."""
        customer_key, value_key = self._payload_keys(params)
        payload = params.get("payload", {})
        problems = []
        if not payload.get(customer_key):
            problems.append(Problem(f"payload[{customer_key}]", f"Missing required param: payload[{customer_key}]."))
        value = payload.get(value_key)
        if value is None:
            problems.append(Problem(f"payload[{value_key}]", f"Missing required param: payload[{value_key}]."))
        elif not value.isdigit() or not value.isascii() or len(value.lstrip("0")) > MAX_VALUE_DIGITS:
            problems.append(
                Problem(
                    f"payload[{value_key}]",
                    f"Invalid payload[{value_key}]: {value!r} must be a whole number of at most "
                    f"{MAX_VALUE_DIGITS} digits",
                )
            )
        return problems

    def _create_meter_event(self, request: RecordedRequest, params: Mapping[str, Any]) -> Reply:
        customer_key, value_key = self._payload_keys(params)
        payload: dict[str, str] = params["payload"]
        customer = payload[customer_key]
        identifier = params.get("identifier") or _new_id("fake_mev")
        timestamp = params.get("timestamp", int(time.time()))
        with self._lock:
            if identifier in self._identifiers:
                return _error(400, f"An event already exists with identifier {identifier}.", no_retry=True)
            if self.known_customers is not None and customer not in self.known_customers:
                if not self.asynchronous_validation:
                    return _error(
                        400,
                        f"No such customer: '{customer}'",
                        code="resource_missing",
                        param=f"payload[{customer_key}]",
                    )
                # Answered as accepted, then dropped: only the error report will tell (identifier not remembered).
                self.feedback.reject("meter_event_customer_not_found", identifier, customer, params["event_name"])
                return Reply(200, self._meter_event_object(params, identifier, timestamp))
            self._identifiers.add(identifier)
            self.summaries.stored(identifier)
            self.meter_events.append(
                {
                    "event_name": params["event_name"],
                    "identifier": identifier,
                    "customer": customer,
                    "value": int(payload[value_key]),
                    "timestamp": timestamp,
                }
            )
            self._stored.notify_all()
        return Reply(200, self._meter_event_object(params, identifier, timestamp))

    def _meter_event_object(self, params: Mapping[str, Any], identifier: str, timestamp: int) -> dict[str, Any]:
        return {
            "object": "billing.meter_event",
            "created": int(time.time()),
            "event_name": params["event_name"],
            "identifier": identifier,
            "livemode": False,
            "payload": params["payload"],
            "timestamp": timestamp,
        }

    def _create_meter_event_session(self, request: RecordedRequest, params: Any) -> Reply:
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=self.session_ttl_s)
        session = {
            "id": _new_id("mes"),
            "object": "v2.billing.meter_event_session",
            "authentication_token": _new_id("mest"),
            "created": now.isoformat().replace("+00:00", "Z"),
            "expires_at": expires.isoformat().replace("+00:00", "Z"),
            "livemode": False,
        }
        with self._lock:
            self._session_tokens[session["authentication_token"]] = expires.timestamp()
            self.meter_event_sessions.append(session)
        return Reply(200, session)

    def _stream_meter_events(self, request: RecordedRequest, params: Mapping[str, Any]) -> Reply:
        events = params["events"]
        if len(events) > MAX_STREAM_EVENTS:
            with self._lock:
                self.invalid_requests.append(request)
            request.problems.append(Problem("events", f"events: at most {MAX_STREAM_EVENTS} per request"))
            return _error(400, request.problems[-1].message, param="events")
        with self._lock:
            for event in events:
                identifier = event.get("identifier") or _new_id("fake_mev")
                if identifier in self._identifiers:
                    continue  # the stream de-duplicates silently; its validation is asynchronous
                customer_key, value_key = self._payload_keys(event)
                customer = event["payload"].get(customer_key, "")
                value = event["payload"].get(value_key, "")
                if self.known_customers is not None and customer not in self.known_customers:
                    self.error_reports.append({"code": "meter_event_customer_not_found", "identifier": identifier})
                    self.feedback.reject("meter_event_customer_not_found", identifier, customer, event["event_name"])
                    continue
                if not value.isdigit():
                    self.error_reports.append({"code": "meter_event_invalid_value", "identifier": identifier})
                    self.feedback.reject("meter_event_invalid_value", identifier, customer, event["event_name"])
                    continue
                stamp = event.get("timestamp")
                self._identifiers.add(identifier)
                self.summaries.stored(identifier)
                self.meter_events.append(
                    {
                        "event_name": event["event_name"],
                        "identifier": identifier,
                        "customer": customer,
                        "value": int(value),
                        "timestamp": int(datetime.fromisoformat(stamp).timestamp()) if stamp else int(time.time()),
                    }
                )
            self._stored.notify_all()
        return Reply(200, {})

    # -- meters, products, prices ----------------------------------------------------------------------------------

    def _create_meter(self, request: RecordedRequest, params: Mapping[str, Any]) -> Reply:
        now = int(time.time())
        with self._lock:
            if any(m["event_name"] == params["event_name"] and m["status"] == "active" for m in self.meters):
                return _error(
                    400, f"An active meter with event_name '{params['event_name']}' already exists.", param="event_name"
                )
            meter = {
                "id": _new_id("mtr"),
                "object": "billing.meter",
                "created": now,
                "customer_mapping": params.get(
                    "customer_mapping", {"event_payload_key": "stripe_customer_id", "type": "by_id"}
                ),
                "default_aggregation": params["default_aggregation"],
                "display_name": params["display_name"],
                "event_name": params["event_name"],
                "event_time_window": params.get("event_time_window"),
                "livemode": False,
                "status": "active",
                "status_transitions": {"deactivated_at": None},
                "updated": now,
                "value_settings": params.get("value_settings", {"event_payload_key": "value"}),
            }
            self.meters.append(meter)
        return Reply(200, meter)

    def _list_meters(self, request: RecordedRequest, params: Mapping[str, Any]) -> Reply:
        with self._lock:
            found = [m for m in self.meters if params.get("status") in (None, m["status"])]
        return Reply(200, _page(found, params, "/v1/billing/meters"))

    def _create_product(self, request: RecordedRequest, params: Mapping[str, Any]) -> Reply:
        with self._lock:
            product_id = params.get("id") or _new_id("prod")
            if any(p["id"] == product_id for p in self.products):
                return _error(
                    400, f"Product already exists: '{product_id}'", code="resource_already_exists", param="id"
                )
            product = self._new_product(dict(params, id=product_id))
            default_price = params.get("default_price_data")
            if default_price is not None:
                price = self._new_price(dict(default_price, product=product_id))
                product["default_price"] = price["id"]
        return Reply(200, product)

    def _new_product(self, params: Mapping[str, Any]) -> dict[str, Any]:
        now = int(time.time())
        product = {
            "id": params["id"],
            "object": "product",
            "active": params.get("active", True),
            "created": now,
            "default_price": None,
            "description": params.get("description"),
            "images": params.get("images", []),
            "livemode": False,
            "marketing_features": params.get("marketing_features", []),
            "metadata": params.get("metadata", {}),
            "name": params["name"],
            "package_dimensions": params.get("package_dimensions"),
            "shippable": params.get("shippable"),
            "statement_descriptor": params.get("statement_descriptor"),
            "tax_code": params.get("tax_code"),
            "type": "service",
            "unit_label": params.get("unit_label"),
            "updated": now,
            "url": params.get("url"),
        }
        self.products.append(product)
        return product

    def _list_products(self, request: RecordedRequest, params: Mapping[str, Any]) -> Reply:
        # Not in the OpenAPI excerpt, so its query is not validated; enough for a set-up's find-or-create.
        with self._lock:
            found = [p for p in self.products if _matches(p, params, "active")]
        return Reply(200, _page(found, params, "/v1/products"))

    def _create_price(self, request: RecordedRequest, params: Mapping[str, Any]) -> Reply:
        recurring = params.get("recurring") or {}
        with self._lock:
            if "product_data" in params:
                product_id = self._new_product(dict(params["product_data"], id=_new_id("prod")))["id"]
            elif "product" in params:
                product_id = params["product"]
                if not any(p["id"] == product_id for p in self.products):
                    return _error(400, f"No such product: '{product_id}'", code="resource_missing", param="product")
            else:
                return _error(400, "Missing required param: product.", param="product")
            meter = recurring.get("meter")
            if meter is not None and not any(m["id"] == meter for m in self.meters):
                return _error(
                    400, f"No such billing meter: '{meter}'", code="resource_missing", param="recurring[meter]"
                )
            if recurring.get("usage_type") == "metered" and meter is None:
                # Since 2025-03-31.basil a metered price must name a meter (STRIPE-NOTES).
                return _error(
                    400, "Metered prices must be backed by a meter: set recurring[meter].", param="recurring[meter]"
                )
            lookup_key = params.get("lookup_key")
            holder = next((p for p in self.prices if lookup_key and p["lookup_key"] == lookup_key), None)
            if holder is not None:
                if not params.get("transfer_lookup_key"):
                    return _error(400, f"A price (`{holder['id']}`) already uses that lookup key.", param="lookup_key")
                holder["lookup_key"] = None
            price = self._new_price(dict(params, product=product_id))
        return Reply(200, price)

    def _new_price(self, params: Mapping[str, Any]) -> dict[str, Any]:
        recurring = params.get("recurring")
        unit_amount = params.get("unit_amount")
        unit_amount_decimal = params.get("unit_amount_decimal")
        price = {
            "id": _new_id("price"),
            "object": "price",
            "active": params.get("active", True),
            "billing_scheme": params.get("billing_scheme", "per_unit"),
            "created": int(time.time()),
            "currency": params["currency"].lower(),
            "custom_unit_amount": None,
            "livemode": False,
            "lookup_key": params.get("lookup_key"),
            "metadata": params.get("metadata", {}),
            "nickname": params.get("nickname"),
            "product": params["product"],
            "recurring": None
            if recurring is None
            else {
                "interval": recurring["interval"],
                "interval_count": recurring.get("interval_count", 1),
                "meter": recurring.get("meter"),
                "usage_type": recurring.get("usage_type", "licensed"),
                "trial_period_days": None,
            },
            "tax_behavior": params.get("tax_behavior", "unspecified"),
            "tiers_mode": params.get("tiers_mode"),
            "transform_quantity": params.get("transform_quantity"),
            "type": "one_time" if recurring is None else "recurring",
            "unit_amount": unit_amount,
            "unit_amount_decimal": unit_amount_decimal
            if unit_amount_decimal is not None
            else (None if unit_amount is None else str(unit_amount)),
        }
        self.prices.append(price)
        return price

    def _list_prices(self, request: RecordedRequest, params: Mapping[str, Any]) -> Reply:
        # Not in the OpenAPI excerpt, so its query is not validated. Supports `product`, `active`, `lookup_keys[]`.
        lookup_keys = params.get("lookup_keys")
        if isinstance(lookup_keys, dict):
            lookup_keys = list(lookup_keys.values())
        with self._lock:
            found = [
                p
                for p in self.prices
                if _matches(p, params, "active", "product") and (lookup_keys is None or p["lookup_key"] in lookup_keys)
            ]
        return Reply(200, _page(found, params, "/v1/prices"))

    # -- billing portal --------------------------------------------------------------------------------------------

    def _create_portal_session(self, request: RecordedRequest, params: Mapping[str, Any]) -> Reply:
        customer = params.get("customer")
        if customer is None and params.get("customer_account") is None:
            problem = Problem("customer", "Missing required param: customer.")
            request.problems.append(problem)
            with self._lock:
                self.invalid_requests.append(request)
            return _error(400, problem.message, param="customer")
        with self._lock:
            if self.known_customers is not None and customer not in self.known_customers:
                return _error(400, f"No such customer: '{customer}'", code="resource_missing", param="customer")
            session_id = _new_id("bps")
            flow_data = params.get("flow_data")
            session = {
                "id": session_id,
                "object": "billing_portal.session",
                "configuration": params.get("configuration", "bpc_fake_default"),
                "created": int(time.time()),
                "customer": customer,
                "customer_account": params.get("customer_account"),
                "flow": None if flow_data is None else _flow(flow_data),
                "livemode": False,
                "locale": params.get("locale"),
                "on_behalf_of": params.get("on_behalf_of"),
                "return_url": params.get("return_url"),
                "url": f"{self.url}/p/session/{session_id}",
            }
            self.portal_sessions.append(session)
        return Reply(200, session)

    def _list_subscriptions(self, request: RecordedRequest, params: Mapping[str, Any]) -> Reply:
        # Not in the OpenAPI excerpt, so its query is not validated. Supports `customer` and `status`; without a
        # status, every subscription that is not canceled, as Stripe does (docs api/subscriptions/list).
        status = params.get("status")
        with self._lock:
            found = [
                {"object": "subscription", **s}
                for s in self.subscriptions
                if _matches(s, params, "customer")
                and (status == "all" or s.get("status") == status or (status is None and s.get("status") != "canceled"))
            ]
        return Reply(200, _page(found, params, "/v1/subscriptions"))


def _flow(flow_data: Mapping[str, Any]) -> dict[str, Any]:
    after = flow_data.get("after_completion", {"type": "portal_homepage"})
    return {
        "after_completion": {
            "hosted_confirmation": after.get("hosted_confirmation"),
            "redirect": after.get("redirect"),
            "type": after["type"],
        },
        "subscription_cancel": flow_data.get("subscription_cancel"),
        "subscription_update": flow_data.get("subscription_update"),
        "subscription_update_confirm": flow_data.get("subscription_update_confirm"),
        "type": flow_data["type"],
    }


def _matches(item: Mapping[str, Any], params: Mapping[str, Any], *names: str) -> bool:
    for name in names:
        wanted = params.get(name)
        if wanted is None:
            continue
        if name == "active":
            wanted = wanted in (True, "true")
        if item.get(name) != wanted:
            return False
    return True


def _page(items: list[dict[str, Any]], params: Mapping[str, Any], url: str) -> dict[str, Any]:
    """A Stripe list object, newest first, honouring `limit` (default 10), `starting_after` and `ending_before`."""
    newest_first = list(reversed(items))
    ids = [item["id"] for item in newest_first]
    start, end = 0, len(newest_first)
    if params.get("starting_after") in ids:
        start = ids.index(params["starting_after"]) + 1
    if params.get("ending_before") in ids:
        end = ids.index(params["ending_before"])
    limit = int(params.get("limit") or 10)
    window = newest_first[start:end]
    if params.get("ending_before") in ids:
        page = window[-limit:]
        has_more = len(window) > limit
    else:
        page = window[:limit]
        has_more = len(window) > limit
    return {"object": "list", "data": page, "has_more": has_more, "url": url}


def main() -> None:
    """`python -m tests.fakes.stripe_server [port]`: run the fake in the foreground for manual trials."""
    import sys

    fake = FakeStripe()
    server = fake.bind(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    print(f"fake Stripe on {fake.url} (API key {fake.api_key})", flush=True)
    with suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
