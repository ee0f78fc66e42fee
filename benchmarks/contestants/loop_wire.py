"""The least server an event loop can be, with ``mpconn``'s blocking client: a bound for main.

Scenario S only. The server is one ``asyncio.BufferedProtocol``: each read
lands in one buffer, and ``buffer_updated`` splits the frames out
(``multiprocessing.connection``'s framing, a 4-byte big-endian length, then
the floor's msgspec msgpack bodies), runs the work inline and writes the
replies before it returns. No streams, no tasks, no
handshake. The client is ``mpconn``'s own. What separates this row from
``mpconn`` is the loop alone (its wake-up, its ``read`` and ``write``
against a thread that blocks in ``recv``): no main that runs on a loop can
answer a blocking client faster. ``ipcbus-wire`` is ipcbus's main with the
same client shape.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, cast

import msgspec
from _common import REPLY, BenchError, Frame, Params, Service, emit, run_asyncio, stdin_closed

from contestants import mpconn

__all__ = ("LOOPS", "run_client", "serve")

LOOPS = ("asyncio", "uvloop")  # the server's loop; the client has none
_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Frame)
_READ_SIZE = 64 * 1024


class _Server(asyncio.BufferedProtocol):
    """Reads into one buffer (a plain ``Protocol`` gets a fresh 256 KiB ``bytes`` per read)."""

    def __init__(self, svc: Service) -> None:
        self._work = {"inc": svc.inc}
        self._buf = bytearray(_READ_SIZE)
        self._view = memoryview(self._buf)
        self._end = 0  # bytes held in _buf
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._end == len(self._buf):  # a frame larger than the buffer: a bigger one
            bigger = bytearray(2 * len(self._buf))  # (a bytearray with a view cannot grow)
            bigger[: self._end] = self._buf
            self._buf, self._view = bigger, memoryview(bigger)
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        end = self._end + nbytes
        view = self._view
        out = bytearray()
        pos = 0
        while end - pos >= 4:
            size = int.from_bytes(view[pos : pos + 4], "big")
            if end - pos - 4 < size:
                break
            f = _dec.decode(view[pos + 4 : pos + 4 + size])
            pos += 4 + size
            body = _enc.encode((REPLY, f.id, "", self._work[f.method](f.arg)))
            out += len(body).to_bytes(4, "big")
            out += body
        if pos:  # keep a partial frame at the start
            view[: end - pos] = view[pos:end]
        self._end = end - pos
        if out and self._transport is not None:
            self._transport.write(out)


def serve(run_dir: str, loop: str) -> None:
    async def main() -> None:
        svc = Service()
        path = os.path.join(run_dir, "loop.sock")
        server = await asyncio.get_running_loop().create_unix_server(
            lambda: _Server(svc), path, backlog=64
        )
        emit({"address": path})
        async with server:
            await stdin_closed()

    run_asyncio(main, loop)


def run_client(
    info: dict[str, Any], scenario: str, p: Params, index: int, conns: int
) -> dict[str, Any]:
    if scenario != "S":
        raise BenchError(f"loop-wire runs scenario S only, not {scenario}")
    return mpconn.run_client(info, scenario, p, index, conns)
