"""The HTTP side of Lago: one async httpx client per adapter, and one bounded request at a time."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import httpx

from gateway.domain.errors import BillerUnavailable

# Lago Cloud's API origin, as in every curl example of its docs (`LAGO_URL="https://api.getlago.com"`).
DEFAULT_API_URL = "https://api.getlago.com"


class LagoClient:
    """An async httpx client for one Lago API: bearer key, JSON, per-phase timeouts, no redirects.

    Building one does no I/O. `api_url` is Lago's origin as in its docs (`https://api.getlago.com`,
    `https://api.eu.getlago.com`, or a self-hosted `http://localhost:3000`); a trailing `/api/v1` is accepted too.
    """

    def __init__(self, api_key: str, api_url: str, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.http = httpx.AsyncClient(
            base_url=api_root(api_url),
            headers={
                "Authorization": f"Bearer {api_key}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": "ringside-billing-gateway",
            },
            timeout=httpx.Timeout(timeout_s),
            # A redirect means a wrong LAGO_API_URL (http -> https, a login page): report it, do not follow it
            # with the bearer key attached.
            follow_redirects=False,
        )

    async def close(self) -> None:
        await self.http.aclose()


async def call(lago: LagoClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request, bounded as a whole by the client's timeout; transport failures become BillerUnavailable."""
    try:
        async with asyncio.timeout(lago.timeout_s):
            return await lago.http.request(method, path, **kwargs)
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise BillerUnavailable(f"Lago did not answer within {lago.timeout_s:g}s", cause="timeout") from exc
    except httpx.TransportError as exc:
        raise BillerUnavailable(f"cannot reach Lago ({type(exc).__name__})", cause="connection") from exc
    except Exception as exc:  # the boundary: whatever else goes wrong, keep the entry and retry later
        raise BillerUnavailable(f"unexpected error calling Lago: {type(exc).__name__}", cause="unknown") from exc


def api_root(api_url: str) -> str:
    """`https://api.getlago.com` or `https://api.getlago.com/api/v1/` -> `https://api.getlago.com/api/v1/`."""
    root = api_url.strip().rstrip("/")
    if root.endswith("/api/v1"):
        root = root[: -len("/api/v1")]
    return f"{root}/api/v1/"


def segment(value: str) -> str:
    """An id as one path segment: everything escaped, and `.`/`..` too, which URL normalisation would eat."""
    return value.replace(".", "%2E") if value in (".", "..") else quote(value, safe="")
