"""What the fake servers share: a threaded HTTP server on 127.0.0.1 and a handler that hands requests to the fake.

    class FakeThing(ThreadedFake):
        def _dispatch(self, method, target, headers, body):  # on the server's threads
            return Reply(200, {"ok": True})

    with FakeThing() as thing:
        ... thing.url ...

A fake answers each request with a `Reply` (a `str` body is served as HTML, anything else as JSON) or with `DROP`,
which closes the connection unanswered. A request whose body did not arrive whole (the client died mid-request) is
never dispatched: like any HTTP server, the real service would not see it.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)


class Drop:
    """Close the connection without answering (after a hang)."""


DROP = Drop()


class FakeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    fake: ThreadedFake

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up is expected here (hang_next); stay quiet about broken pipes.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class FakeRequestHandler(BaseHTTPRequestHandler):
    server: FakeHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects
    json_content_type = "application/json"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            # The client died mid-request (a SIGKILLed gateway): like any HTTP server, the real service never sees a
            # request whose body did not arrive whole, so it is neither processed nor recorded as an invalid one.
            self.close_connection = True
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = self.server.fake._dispatch(method, self.path, headers, body)
        if isinstance(reply, Drop):
            self.close_connection = True
            return
        if isinstance(reply.body, str):
            data, content_type = reply.body.encode(), "text/html; charset=utf-8"
        else:
            data, content_type = json.dumps(reply.body).encode(), self.json_content_type
        self.send_response(reply.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in self._headers_for(reply).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _headers_for(self, reply: Reply) -> Mapping[str, str]:
        """The reply's own headers, plus any a subclass adds to every answer."""
        return reply.headers

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read state, not access logs


class ThreadedFake:
    """A fake served on 127.0.0.1, an ephemeral port, a background thread. Use it as a context manager.

    Subclasses implement `_dispatch`, and may name their own `server_class` and `handler_class`. `_stopping` is set
    by `stop`: a request that waits on it (a hang, added latency) is released when the fake stops.
    """

    server_class: type[FakeHTTPServer] = FakeHTTPServer
    handler_class: type[FakeRequestHandler] = FakeRequestHandler

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._server: FakeHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def bind(self, port: int = 0) -> FakeHTTPServer:
        """Listen on `port` (0: an ephemeral one) without serving yet; `start` serves on a thread."""
        server = self.server_class(("127.0.0.1", port), self.handler_class)
        server.fake = self
        self._server = server
        return server

    def start(self) -> Self:
        server = self.bind()
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; hung requests are released (their connections are closed unanswered)."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply | Drop:
        """Answer one request (on a server thread). `target` is the path with its query; `headers` are lower-case."""
        raise NotImplementedError
