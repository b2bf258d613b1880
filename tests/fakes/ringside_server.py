"""A local fake of the slice of Ringside's API the gateway calls: webhook endpoint registration (and customers).

    with FakeRingside(api_key="rs_test_key") as ringside:
        ... RINGSIDE_API_BASE=ringside.url ...
        assert [e["url"] for e in ringside.endpoints] == ["https://billing.example.com/webhooks/ringside"]
        assert ringside.invalid_requests == []

What it follows (Ringside's webhooks reference, ringside.fightclub.pro/docs/webhooks): `POST /v1/webhook_endpoints`
with `Authorization: Bearer <key>` and a JSON body `{"url"*, "events"*, "description"}`; the answer carries the
endpoint's `id` (`wh_*`) and its HMAC signing `secret`, "returned once on create"; errors are `401
invalid_api_key` and `400 invalid_url` ("URL must be https"). Its docs also name `POST /v1/webhooks`: `paths` says
which of the two names this fake serves, so that a client's fallback on 404 can be tested.

Invariants: every request is recorded; a request that breaks the documented shape is answered 400 AND appended to
`invalid_requests`, so a test can demand that list be empty; the secret is never listed again after creation.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .http_fake import Reply, ThreadedFake

FAKE_RINGSIDE_KEY = "rs_test_fake_key"
ENDPOINT_PATHS = ("/v1/webhook_endpoints", "/v1/webhooks")
_ALLOWED_FIELDS = {"url", "events", "description"}


@dataclass
class RingsideRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int | None = None
    problems: list[str] = field(default_factory=list)


class FakeRingside(ThreadedFake):
    """Ringside on 127.0.0.1, an ephemeral port, a background thread. Use it as a context manager.

    Tests read `endpoints` (dicts with `id`, `url`, `events`, `description`, `secret`), `requests`,
    `invalid_requests`; they set `paths` (the endpoint paths served; others answer 404), `listing` (whether
    `GET` on those paths lists endpoints) and `customers` (`GET /v1/customers/<id>` answers these objects).
    """

    def __init__(
        self, api_key: str = FAKE_RINGSIDE_KEY, *, paths: Sequence[str] = ENDPOINT_PATHS, listing: bool = True
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.paths = tuple(paths)
        self.listing = listing
        self.endpoints: list[dict[str, Any]] = []
        self.customers: dict[str, dict[str, Any]] = {}
        self.requests: list[RingsideRequest] = []
        self.invalid_requests: list[RingsideRequest] = []
        self._lock = threading.Lock()

    def posts(self) -> list[RingsideRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST"]

    # -- handling (server threads) ---------------------------------------------------------------------------------

    def _dispatch(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Reply:
        request = RingsideRequest(method, urlsplit(target).path, headers, None)
        with self._lock:
            self.requests.append(request)
        status, body = self._answer(request, raw)
        request.status = status
        if request.problems:
            with self._lock:
                self.invalid_requests.append(request)
        return Reply(status, body)

    def _answer(self, request: RingsideRequest, raw: bytes) -> tuple[int, Any]:
        authorization = request.headers.get("authorization", "")
        token = authorization[len("Bearer ") :] if authorization.startswith("Bearer ") else ""
        if not secrets.compare_digest(token.encode(), self.api_key.encode()):
            return 401, _error("invalid_api_key", "Missing or revoked key.")
        if request.method == "GET" and request.path.startswith("/v1/customers/"):
            customer = self.customers.get(request.path.rsplit("/", 1)[-1])
            return (200, customer) if customer is not None else (404, _error("not_found", "No such customer."))
        if request.path not in self.paths:
            return 404, _error("not_found", f"Unknown path {request.path}.")
        if request.method == "GET":
            if not self.listing:
                return 405, _error("method_not_allowed", "Listing is not supported.")
            with self._lock:
                listed = [{k: v for k, v in e.items() if k != "secret"} for e in self.endpoints]
            return 200, {"object": "list", "data": listed}
        if request.method != "POST":
            return 405, _error("method_not_allowed", f"{request.method} is not allowed here.")
        return self._create(request, raw)

    def _create(self, request: RingsideRequest, raw: bytes) -> tuple[int, Any]:
        if "application/json" not in request.headers.get("content-type", ""):
            request.problems.append("Content-Type must be application/json")
        try:
            request.body = json.loads(raw or b"null")
        except ValueError:
            request.problems.append("body is not JSON")
        body = request.body
        if not isinstance(body, dict):
            request.problems.append("body must be a JSON object")
            return 400, _error("invalid_request", "; ".join(request.problems))
        unknown = set(body) - _ALLOWED_FIELDS
        if unknown:
            request.problems.append(f"unknown fields {sorted(unknown)}")
        url, events, description = body.get("url"), body.get("events"), body.get("description")
        if not isinstance(url, str) or not url:
            request.problems.append("url is required")
        if not isinstance(events, list) or not events or not all(isinstance(e, str) and e for e in events):
            request.problems.append("events must be a non-empty array of event types")
        if description is not None and not isinstance(description, str):
            request.problems.append("description must be a string")
        if request.problems:
            return 400, _error("invalid_request", "; ".join(request.problems))
        assert isinstance(url, str) and isinstance(events, list)
        if urlsplit(url).scheme != "https":
            # A refusal for the URL itself (documented), not a malformed request.
            return 400, _error("invalid_url", "URL must be https.")
        endpoint = {
            "id": "wh_" + secrets.token_hex(8),
            "url": url,
            "events": events,
            "description": description,
            "created": int(time.time()),
            "secret": "whsec_" + secrets.token_urlsafe(24),
        }
        with self._lock:
            self.endpoints.append(endpoint)
        return 200, dict(endpoint)


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}
