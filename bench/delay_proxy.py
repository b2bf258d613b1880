"""A TCP proxy that holds every chunk for a fixed time each way: a network round trip on one host.

    proxy = start(target_port=5432, rtt_s=0.001)   # a child process; connect to 127.0.0.1:proxy.port
    proxy.stop()

It runs in a process of its own so that its CPU is neither the client's nor the server's in what a bench measures.
Chunks keep their order (one fixed delay per direction); flow control is left out (bench traffic is small).
"""

from __future__ import annotations

import asyncio
import multiprocessing
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import uvloop


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
    port = int(parent.recv())
    return Proxy(process, port)


def _serve(ready: Connection, target_host: str, target_port: int, one_way_s: float) -> None:
    uvloop.run(_main(ready, target_host, target_port, one_way_s))


async def _main(ready: Connection, target_host: str, target_port: int, one_way_s: float) -> None:
    async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        while data := await source.read(65536):
            loop.call_later(one_way_s, _write, sink, data)
        loop.call_later(one_way_s, sink.close)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(target_host, target_port)
        try:
            await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer))
        except OSError:
            writer.close()
            upstream_writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    ready.send(server.sockets[0].getsockname()[1])
    await server.serve_forever()


def _write(sink: asyncio.StreamWriter, data: bytes) -> None:
    if not sink.is_closing():
        sink.write(data)
