"""A request id on every request, in every log line of it, and in the response (`X-Request-ID`).

Invariants:
- The structlog context is cleared when a request starts, so nothing bound by an earlier request (or by a task the
  request was started from) leaks into its lines; `request_id` is then bound for the whole request, whoever logs.
- An incoming `X-Request-ID` (a load balancer's, Ringside's) is kept only when it is sane: 1 to 128 characters of
  `[A-Za-z0-9._:@/+=-]`. Anything else (header injection attempts, control characters, megabytes) is replaced by a
  fresh id, so a client can never write arbitrary text into our logs or our response headers.
- The id is echoed in the response's `X-Request-ID` header, on every response, errors and 404s included.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
_SANE = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")


class _RandomIds:
    """Fresh ids of 128 random bits (as uuid4().hex carries 122), drawn from the OS 256 at a time: a getrandom()
    system call per request was one of the webhook's costliest lines under load (docs/performance.md, "Where the
    CPU goes"). Each id is used once; a forked child starts a pool of its own."""

    IDS_PER_DRAW = 256

    def __init__(self) -> None:
        self._pool = ""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def next(self) -> str:
        at = self._at
        pool = self._pool
        if at >= len(pool):
            pool = self._pool = os.urandom(16 * self.IDS_PER_DRAW).hex()
            at = 0
        self._at = at + 32
        return pool[at : at + 32]

    def _forget(self) -> None:
        self._pool = ""
        self._at = 0


_fresh = _RandomIds()


def request_id_from(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The incoming request id when it is sane, else a new random one."""
    for name, value in headers:
        if name.lower() == HEADER:
            if _SANE.fullmatch(value):
                return value.decode("ascii")
            break
    return _fresh.next()


class RequestIdMiddleware:
    """ASGI middleware: bind `request_id` in structlog's contextvars for the request, echo it in the response.

    It wraps Litestar's whole ASGI handler (see `create_app`), not a route, so that requests matching no route
    (404, 405) and errors turned into responses by the exception handlers carry the id too.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope["headers"])
        encoded = request_id.encode("ascii")
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != HEADER]
                headers.append((HEADER, encoded))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.clear_contextvars()
