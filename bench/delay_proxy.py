"""A TCP proxy that holds every chunk for a fixed time each way: a network round trip on one host.

    proxy = start(target_port=5432, rtt_s=0.001)   # a child process; connect to 127.0.0.1:proxy.port
    proxy.stop()

It runs in a process of its own so that its CPU is neither the client's nor the server's in what a bench measures.
Threads and sleeps rather than an event loop: uvloop's timers (and epoll's timeouts) round to whole milliseconds.
Chunks keep their order (one fixed delay per direction); flow control is left out (bench traffic is small).
"""

from __future__ import annotations

import multiprocessing
import queue
import socket
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess


class Proxy:
    def __init__(self, process: BaseProcess, port: int) -> None:
        self.process = process
        self.port = port

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(5)


def start(target_port: int, rtt_s: float, target_host: str = "127.0.0.1") -> Proxy:
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(child, target_host, target_port, rtt_s / 2), daemon=True
    )
    process.start()
    return Proxy(process, int(parent.recv()))


def _serve(ready: Connection, target_host: str, target_port: int, one_way_s: float) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    ready.send(listener.getsockname()[1])
    while True:
        client, _ = listener.accept()
        upstream = socket.create_connection((target_host, target_port))
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _direction(client, upstream, one_way_s)
        _direction(upstream, client, one_way_s)


def _direction(source: socket.socket, sink: socket.socket, delay_s: float) -> None:
    held: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()

    def read() -> None:
        try:
            while data := source.recv(65536):
                held.put((time.monotonic() + delay_s, data))
        except OSError:
            pass
        held.put((time.monotonic() + delay_s, b""))

    def write() -> None:
        while True:
            due, data = held.get()
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            try:
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(data)
            except OSError:
                return

    threading.Thread(target=read, daemon=True).start()
    threading.Thread(target=write, daemon=True).start()
