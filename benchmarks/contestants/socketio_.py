"""python-socketio: an ``AsyncServer`` on aiohttp (unix socket), ``AsyncClient.call``.

Clients speak WebSocket only (no long-polling start) through an aiohttp
``UnixConnector``; values use Socket.IO's default serializer (JSON, with
bytes as binary attachments). ``bcast`` is ``sio.emit("tick", seq)`` to
everyone. Default asyncio loop only.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import socketio
from _common import BenchError, MiB, Service, emit, stdin_closed
from aiohttp import web

LOOPS = ("asyncio",)
_MAX = 64 * MiB


# ---- server ---------------------------------------------------------------------


async def _serve(run_dir: str) -> None:
    svc = Service()
    sio = socketio.AsyncServer(
        async_mode="aiohttp", max_http_buffer_size=_MAX, ping_timeout=120, ping_interval=120
    )
    app = web.Application(client_max_size=_MAX)
    sio.attach(app)
    connected: set[str] = set()

    @sio.event
    async def connect(sid: str, environ: Any) -> None:
        connected.add(sid)

    @sio.event
    async def disconnect(sid: str, *reason: Any) -> None:
        connected.discard(sid)

    @sio.event
    async def inc(sid: str, x: int) -> int:
        return x + 1

    @sio.event
    async def sink(sid: str, x: int) -> None:
        svc.sink(x)

    @sio.event
    async def totals(sid: str) -> list[int]:
        return svc.totals()

    @sio.event
    async def echo(sid: str, data: bytes) -> bytes:
        return data

    @sio.event
    async def bcast(sid: str, m: int, expected: int) -> float:
        if len(connected) != expected:
            raise BenchError(f"{len(connected)} clients connected, expected {expected}")
        t0 = time.monotonic()
        for seq in range(m):
            await sio.emit("tick", seq)
        return t0

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    path = os.path.join(run_dir, "sio.sock")
    site = web.UnixSite(runner, path, backlog=4096)
    await site.start()
    emit({"address": path})
    await stdin_closed()
    await runner.cleanup()


def serve(run_dir: str, loop: str) -> None:
    from _common import run_asyncio

    run_asyncio(lambda: _serve(run_dir), loop)


# ---- client ---------------------------------------------------------------------

_session: aiohttp.ClientSession | None = None
_users = 0


class SioClient:
    def __init__(self, sio: socketio.AsyncClient) -> None:
        self._sio = sio

    async def call(self, x: int) -> int:
        return await self._sio.call("inc", x, timeout=60)  # type: ignore[no-any-return]

    async def send(self, x: int) -> None:
        await self._sio.emit("sink", x)

    async def totals(self) -> list[int]:
        return await self._sio.call("totals", timeout=60)  # type: ignore[no-any-return]

    async def echo(self, data: bytes) -> bytes:
        return await self._sio.call("echo", data, timeout=60)  # type: ignore[no-any-return]

    async def broadcast(self, m: int, expected: int) -> float:
        return await self._sio.call("bcast", (m, expected), timeout=60)  # type: ignore[no-any-return]


@asynccontextmanager
async def connect(
    info: dict[str, Any], on_tick: Callable[[int], None] | None
) -> AsyncIterator[SioClient]:
    global _session, _users
    if _session is None:
        _session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=info["address"], limit=0)
        )
    _users += 1
    sio = socketio.AsyncClient(
        reconnection=False,
        handle_sigint=False,
        http_session=_session,
        request_timeout=60,
        websocket_extra_options={"max_msg_size": 0},
    )
    if on_tick is not None:
        sio.on("tick", on_tick)
    try:
        await sio.connect("http://localhost", transports=["websocket"], wait_timeout=60)
        try:
            yield SioClient(sio)
        finally:
            await sio.disconnect()
    finally:
        _users -= 1
        if _users == 0 and _session is not None:
            session, _session = _session, None
            await session.close()
            await asyncio.sleep(0)
