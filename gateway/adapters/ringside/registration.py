"""`gateway ringside-register` against Ringside: register the gateway's webhook URL, keep the secret shown once.

Reached through httpx; every failure becomes SetupError, whose message is one line an operator can act on, and never
holds the API key or the secret.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import httpx
import msgspec

from gateway.domain.errors import SetupError

# Ringside's webhooks reference names POST /v1/webhook_endpoints; its docs also name POST /v1/webhooks.
RINGSIDE_PATHS = ("/v1/webhook_endpoints", "/v1/webhooks")


class RegisteredEndpoint(msgspec.Struct, frozen=True):
    """A Ringside webhook endpoint. The signing secret is deliberately not part of it (see `register`)."""

    id: str
    url: str
    events: list[str]
    created_with: str


class RingsideRegistration:
    """Registers the gateway's URL with Ringside, which answers with the endpoint's signing secret, once.

    Invariants: the API key and the secret are never logged or put in an exception message; an endpoint already
    registered for the same URL is reported, not duplicated (a second endpoint would deliver every event twice,
    signed with a second secret), unless `force` is given.
    """

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def find(self, url: str) -> RegisteredEndpoint | None:
        """The endpoint registered for `url`, when Ringside lists endpoints; None when it does not or none is."""
        for path in RINGSIDE_PATHS:
            response = self._call("GET", path)
            if response.status_code in (404, 405):
                continue
            _raise_for_auth(response)
            if not response.is_success:
                return None
            for item in _items(_json(response)):
                if isinstance(item, dict) and item.get("url") == url:
                    return _endpoint(item, url, path)
            return None
        return None

    def register(self, url: str, events: Sequence[str], description: str) -> tuple[RegisteredEndpoint, str]:
        """Create the endpoint; returns it and its signing secret (shown by Ringside this one time only)."""
        body = {"url": url, "events": list(events), "description": description}
        for path in RINGSIDE_PATHS:
            response = self._call("POST", path, body)
            if response.status_code == 404 and path != RINGSIDE_PATHS[-1]:
                continue  # an API that only knows the other name
            _raise_for_auth(response)
            if response.status_code == 404:
                raise SetupError(
                    f"Ringside answered 404 to POST {' and POST '.join(RINGSIDE_PATHS)}: is RINGSIDE_API_BASE "
                    f"({self._client.base_url}) Ringside's API?"
                )
            if not response.is_success:
                raise SetupError(f"Ringside refused the registration: {_ringside_error(response)}")
            data = _json(response)
            data = data.get("data", data) if isinstance(data, dict) and isinstance(data.get("data"), dict) else data
            if not isinstance(data, dict):
                raise SetupError("Ringside's answer is not a JSON object")
            # Ringside's reference calls it `secret`; accept the common other spelling rather than lose it.
            secret = data.get("secret") or data.get("signing_secret")
            if not isinstance(secret, str) or not secret:
                raise SetupError(
                    f"Ringside registered endpoint {data.get('id')} but its answer has no signing secret: rotate "
                    "the endpoint's secret in Ringside's dashboard"
                )
            return _endpoint(data, url, path, events), secret
        raise AssertionError("unreachable")  # pragma: no cover

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        try:
            return self._client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise SetupError(f"cannot reach Ringside at {self._client.base_url}: {type(exc).__name__}") from None


def ringside_client(api_key: str, api_base: str, timeout_s: float = 15.0) -> httpx.Client:
    return httpx.Client(
        base_url=api_base.rstrip("/"),
        headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
        timeout=timeout_s,
    )


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _items(data: Any) -> Iterable[Any]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        return list(data["data"])
    return ()


def _endpoint(data: dict[str, Any], url: str, path: str, events: Sequence[str] = ()) -> RegisteredEndpoint:
    listed = data.get("events")
    return RegisteredEndpoint(
        id=str(data.get("id") or "?"),
        url=str(data.get("url") or url),
        events=[str(e) for e in listed] if isinstance(listed, list) else list(events),
        created_with=f"POST {path}",
    )


def _raise_for_auth(response: httpx.Response) -> None:
    if response.status_code in (401, 403):
        raise SetupError(f"Ringside refused RINGSIDE_API_KEY: {_ringside_error(response)}")


def _ringside_error(response: httpx.Response) -> str:
    """`<status> <code>: <message>` from Ringside's error body, whatever its exact shape."""
    data = _json(response)
    error = data.get("error", data) if isinstance(data, dict) else None
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        text = ": ".join(str(part) for part in (code, message) if part)
    else:
        text = str(error or response.text[:200])
    return " ".join(f"{response.status_code} {text}".split())
