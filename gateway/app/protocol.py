"""uvicorn's httptools protocol with a cap on the size of a request's head (request line and headers).

uvicorn offers a head-size limit for its h11 protocol only (`h11_max_incomplete_event_size`, which bounds what h11
buffers of an incomplete head); with httptools (the C parser `gateway serve` runs on) a client can send megabytes of
headers, all kept in memory until the head ends. This subclass counts the bytes received while a head is open and,
past the limit, answers 431 with the gateway's usual JSON error and closes the connection. It reads the limit from
the same uvicorn option, so one setting (GATEWAY_MAX_HEADER_BYTES) caps both protocols.

It hooks only httptools' parser callbacks (`on_message_begin`, `on_headers_complete`) and asyncio's
`data_received`, which uvicorn's protocol implements; tests/app/test_request_limits.py holds it to its promise.
"""

from __future__ import annotations

from typing import Any

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.app.errors import error_body

_STATUS_LINE = b"HTTP/1.1 431 Request Header Fields Too Large\r\n"


class HeadLimitedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol refusing a head larger than `config.h11_max_incomplete_event_size` bytes (431, closed).

    The count is per chunk received, so a head is refused at most one read (64 KiB) past the limit.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limit = self.config.h11_max_incomplete_event_size
        self._max_head_bytes: int | None = limit
        self._head_open = False
        self._head_bytes = 0

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_open and self._max_head_bytes is not None and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head_bytes:
                self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._head_open = False
        super().on_headers_complete()

    def _refuse_head(self) -> None:
        self._head_open = False
        message = f"the request line and headers are larger than {self._max_head_bytes} bytes"
        body = msgspec.json.encode(error_body("headers_too_large", message))
        head = [_STATUS_LINE]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        self.transport.close()
