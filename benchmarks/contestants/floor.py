"""The floor: raw asyncio streams + msgspec msgpack, 4-byte length prefix, message ids.

What a pure-Python asyncio design cannot beat: no handshake, no states, no
locks, no tasks per message. Each side reads big chunks, splits frames out of
one buffer, runs the (synchronous) work inline, and writes every reply of one
read in a single ``write``. The client queues outgoing frames into one buffer
that is written once per loop iteration (or sooner when it passes 64 KiB),
and awaits ``drain`` only when the transport says it is over its high-water
mark. Futures by message id carry replies to callers.
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
from _common import ERROR, ONEWAY, REPLY, REQUEST, Frame, Service, append_frame, emit, stdin_closed

LOOPS = ("asyncio", "uvloop")
READ_SIZE = 256 * 1024
FLUSH_AT = 64 * 1024
HIGH_WATER = 256 * 1024

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Frame)


def _frames(buf: bytearray) -> tuple[list[Frame], int]:
    """Complete frames at the start of ``buf`` and how many bytes they took."""
    frames = []
    pos = 0
    end = len(buf)
    with memoryview(buf) as view:
        while end - pos >= 4:
            size = int.from_bytes(view[pos : pos + 4], "big")
            if end - pos - 4 < size:
                break
            frames.append(_dec.decode(view[pos + 4 : pos + 4 + size]))
            pos += 4 + size
    return frames, pos


# ---- server ---------------------------------------------------------------------


async def _serve(run_dir: str) -> None:
    svc = Service()
    work: dict[str, Callable[[Any], Any]] = {
        "inc": svc.inc,
        "sink": svc.sink,
        "totals": svc.totals,
        "echo": svc.echo,
    }
    writers: set[asyncio.StreamWriter] = set()
    tasks: set[asyncio.Task[None]] = set()

    async def bcast(
        origin: asyncio.StreamWriter, request_id: int, m: int, expected: int, paced: bool = False
    ) -> None:
        out = bytearray()
        if len(writers) != expected:
            append_frame(_enc, (ERROR, request_id, "", f"{len(writers)} clients"), out)
            origin.write(out)
            return
        t0 = time.monotonic()
        targets = list(writers)
        for seq in range(m):
            frame = bytearray()
            append_frame(_enc, (ONEWAY, 0, "tick", seq), frame)
            for w in targets:
                w.write(frame)
            for w in targets:
                if w.transport.get_write_buffer_size() > HIGH_WATER:
                    await w.drain()
            if paced:
                await asyncio.sleep(0)  # scenario H: each broadcast in its own loop turn
        append_frame(_enc, (REPLY, request_id, "", t0), out)
        origin.write(out)

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        buf = bytearray()
        try:
            while data := await reader.read(READ_SIZE):
                buf += data
                frames, used = _frames(buf)
                del buf[:used]
                out = bytearray()
                for f in frames:
                    if f.kind == ONEWAY:
                        work[f.method](f.arg)
                    elif f.method == "bcast":
                        task = asyncio.create_task(bcast(writer, f.id, *f.arg))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    else:
                        append_frame(_enc, (REPLY, f.id, "", work[f.method](f.arg)), out)
                if out:
                    writer.write(memoryview(out))  # 3.11's transport slices: no copy
                    if writer.transport.get_write_buffer_size() > HIGH_WATER:
                        await writer.drain()
        except ConnectionError:
            pass
        finally:
            writers.discard(writer)
            writer.close()

    path = os.path.join(run_dir, "floor.sock")
    server = await asyncio.start_unix_server(on_connection, path, backlog=4096, limit=READ_SIZE)
    emit({"address": path})
    async with server:
        await stdin_closed()


def serve(run_dir: str, loop: str, max_connections: int = 0) -> None:
    """Serve until stdin closes; the floor has no connection limit (G's is ignored)."""
    from _common import run_asyncio

    run_asyncio(lambda: _serve(run_dir), loop)


# ---- client ---------------------------------------------------------------------


class FloorClient:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_tick: Callable[[int], None] | None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._transport = writer.transport
        self._loop = asyncio.get_running_loop()
        self._on_tick = on_tick
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._out = bytearray()
        self._flush_scheduled = False
        # Bound straight to _request: no extra coroutine per call.
        self.call = partial(self._request, "inc")
        self.totals = partial(self._request, "totals", None)
        self.echo = partial(self._request, "echo")

    async def read_loop(self) -> None:
        buf = bytearray()
        pending = self._pending
        while data := await self._reader.read(READ_SIZE):
            buf += data
            frames, used = _frames(buf)
            del buf[:used]
            for f in frames:
                if f.kind == ONEWAY:
                    if self._on_tick is not None:
                        self._on_tick(f.arg)
                    continue
                fut = pending.pop(f.id)
                if f.kind == REPLY:
                    fut.set_result(f.arg)
                else:
                    fut.set_exception(RuntimeError(f"remote error: {f.arg}"))
        for fut in pending.values():
            fut.set_exception(ConnectionError("server closed the connection"))

    def _queue(self, body: tuple[Any, ...]) -> None:
        append_frame(_enc, body, self._out)
        if len(self._out) >= FLUSH_AT:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out:
            out, self._out = self._out, bytearray()
            self._transport.write(memoryview(out))  # 3.11's transport slices: no copy

    async def _request(self, method: str, arg: Any) -> Any:
        self._next_id += 1
        request_id = self._next_id
        fut = self._pending[request_id] = self._loop.create_future()
        self._queue((REQUEST, request_id, method, arg))
        return await fut

    async def send(self, x: int) -> None:
        self._queue((ONEWAY, 0, "sink", x))
        if self._transport.get_write_buffer_size() > HIGH_WATER:
            await self._writer.drain()

    async def broadcast(self, m: int, expected: int, paced: bool = False) -> float:
        return await self._request("bcast", [m, expected, paced])  # type: ignore[no-any-return]


@asynccontextmanager
async def connect(
    info: dict[str, Any], on_tick: Callable[[int], None] | None
) -> AsyncIterator[FloorClient]:
    reader, writer = await asyncio.open_unix_connection(info["address"], limit=READ_SIZE)
    client = FloorClient(reader, writer, on_tick)
    task = asyncio.create_task(client.read_loop())
    try:
        yield client
    finally:
        task.cancel()
        writer.close()
        try:
            await task
        except (asyncio.CancelledError, ConnectionError):
            pass
