"""pyzmq with asyncio: a ROUTER server, one DEALER per client, over ``ipc://``.

Bodies are the floor's msgspec ``[kind, id, method, arg]`` frames (zmq does
the framing). The server awaits every ``recv_multipart``/``send_multipart``,
as the pyzmq asyncio docs do. High-water marks are lifted so that no
message is ever dropped (ROUTER drops silently when a peer's queue is full).
Default asyncio loop only.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import msgspec
import zmq
import zmq.asyncio
from _common import ERROR, ONEWAY, REPLY, REQUEST, Frame, Service, emit, stdin_closed

LOOPS = ("asyncio",)

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Frame)
_ctx: zmq.asyncio.Context | None = None


def _context() -> zmq.asyncio.Context:
    global _ctx
    if _ctx is None:
        _ctx = zmq.asyncio.Context()
    return _ctx


# ---- server ---------------------------------------------------------------------


async def _router(sock: zmq.asyncio.Socket) -> None:
    svc = Service()
    work: dict[str, Callable[[Any], Any]] = {
        "inc": svc.inc,
        "sink": svc.sink,
        "totals": svc.totals,
        "echo": svc.echo,
    }
    peers: dict[bytes, None] = {}
    while True:
        ident, body = await sock.recv_multipart()
        peers[ident] = None
        f = _dec.decode(body)
        if f.kind == ONEWAY:
            work[f.method](f.arg)
        elif f.method == "bcast":
            m, expected = f.arg
            if len(peers) != expected:
                reply = (ERROR, f.id, "", f"{len(peers)} peers")
            else:
                t0 = time.monotonic()
                for seq in range(m):
                    tick = _enc.encode((ONEWAY, 0, "tick", seq))
                    for peer in peers:
                        await sock.send_multipart((peer, tick))
                reply = (REPLY, f.id, "", t0)
            await sock.send_multipart((ident, _enc.encode(reply)))
        else:
            reply = (REPLY, f.id, "", work[f.method](f.arg))
            await sock.send_multipart((ident, _enc.encode(reply)))


async def _serve(run_dir: str) -> None:
    sock = _context().socket(zmq.ROUTER)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.LINGER, 0)
    address = f"ipc://{os.path.join(run_dir, 'zmq.sock')}"
    sock.bind(address)
    emit({"address": address})
    task = asyncio.create_task(_router(sock))
    await stdin_closed()
    task.cancel()
    sock.close()


def serve(run_dir: str, loop: str) -> None:
    from _common import run_asyncio

    run_asyncio(lambda: _serve(run_dir), loop)


# ---- client ---------------------------------------------------------------------


class ZmqClient:
    def __init__(self, sock: zmq.asyncio.Socket, on_tick: Callable[[int], None] | None) -> None:
        self._sock = sock
        self._on_tick = on_tick
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._loop = asyncio.get_running_loop()
        self.call = partial(self._request, "inc")
        self.totals = partial(self._request, "totals", None)
        self.echo = partial(self._request, "echo")

    async def read_loop(self) -> None:
        while True:
            f = _dec.decode(await self._sock.recv())
            if f.kind == ONEWAY:
                if self._on_tick is not None:
                    self._on_tick(f.arg)
                continue
            fut = self._pending.pop(f.id)
            if f.kind == REPLY:
                fut.set_result(f.arg)
            else:
                fut.set_exception(RuntimeError(f"remote error: {f.arg}"))

    async def _request(self, method: str, arg: Any) -> Any:
        self._next_id += 1
        request_id = self._next_id
        fut = self._pending[request_id] = self._loop.create_future()
        await self._sock.send(_enc.encode((REQUEST, request_id, method, arg)))
        return await fut

    async def send(self, x: int) -> None:
        await self._sock.send(_enc.encode((ONEWAY, 0, "sink", x)))

    async def broadcast(self, m: int, expected: int) -> float:
        return await self._request("bcast", [m, expected])  # type: ignore[no-any-return]


@asynccontextmanager
async def connect(
    info: dict[str, Any], on_tick: Callable[[int], None] | None
) -> AsyncIterator[ZmqClient]:
    sock = _context().socket(zmq.DEALER)  # default high-water marks: backpressure on send
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(info["address"])
    client = ZmqClient(sock, on_tick)
    task = asyncio.create_task(client.read_loop())
    try:
        yield client
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        sock.close()
