"""grpc.aio over a unix socket, without codegen: generic handlers carrying bytes.

Payloads are msgspec msgpack, passed through with identity (``None``)
serializers. ``inc``, ``totals``, ``echo`` and ``bcast`` are unary calls; a
one-way send has no unary form in gRPC, so ``sink`` is one client-streaming
call per connection (opened on the first send, closed by ``totals``); each
F client holds a server-streaming ``Subscribe`` that ``bcast`` feeds through
a queue per subscriber. Every channel gets its own connection
(``grpc.use_local_subchannel_pool``). Default asyncio loop only.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import grpc.aio
import msgspec
from _common import BenchError, MiB, Service, emit, stdin_closed

LOOPS = ("asyncio",)
_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder()
_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * MiB),
    ("grpc.max_send_message_length", 64 * MiB),
]
_SERVICE = "bench.Bench"
_HELLO = _enc.encode(-1)


# ---- server ---------------------------------------------------------------------


async def _serve(run_dir: str) -> None:
    svc = Service()
    subscribers: set[asyncio.Queue[bytes]] = set()

    async def inc(request: bytes, context: Any) -> bytes:
        return _enc.encode(_dec.decode(request) + 1)

    async def totals(request: bytes, context: Any) -> bytes:
        return _enc.encode(svc.totals())

    async def echo(request: bytes, context: Any) -> bytes:
        return _enc.encode(svc.echo(_dec.decode(request)))

    async def sink(requests: AsyncIterator[bytes], context: Any) -> bytes:
        async for request in requests:
            svc.sink(_dec.decode(request))
        return _enc.encode(None)

    async def subscribe(request: bytes, context: Any) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        subscribers.add(queue)
        try:
            yield _HELLO
            while True:
                yield await queue.get()
        finally:
            subscribers.discard(queue)

    async def bcast(request: bytes, context: Any) -> bytes:
        m, expected = _dec.decode(request)
        if len(subscribers) != expected:
            raise BenchError(f"{len(subscribers)} subscribers, expected {expected}")
        t0 = time.monotonic()
        for seq in range(m):
            tick = _enc.encode(seq)
            for queue in subscribers:
                queue.put_nowait(tick)
        return _enc.encode(t0)

    handlers = {
        "Inc": grpc.unary_unary_rpc_method_handler(inc),
        "Totals": grpc.unary_unary_rpc_method_handler(totals),
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Bcast": grpc.unary_unary_rpc_method_handler(bcast),
        "Sink": grpc.stream_unary_rpc_method_handler(sink),
        "Subscribe": grpc.unary_stream_rpc_method_handler(subscribe),
    }
    server = grpc.aio.server(options=[*_OPTIONS, ("grpc.max_concurrent_streams", 10_000)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, handlers),))
    address = f"unix:{os.path.join(run_dir, 'grpc.sock')}"
    server.add_insecure_port(address)
    await server.start()
    emit({"address": address})
    await stdin_closed()
    await server.stop(grace=None)


def serve(run_dir: str, loop: str) -> None:
    from _common import run_asyncio

    run_asyncio(lambda: _serve(run_dir), loop)


# ---- client ---------------------------------------------------------------------


class GrpcClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._inc = channel.unary_unary(f"/{_SERVICE}/Inc")
        self._totals = channel.unary_unary(f"/{_SERVICE}/Totals")
        self._echo = channel.unary_unary(f"/{_SERVICE}/Echo")
        self._bcast = channel.unary_unary(f"/{_SERVICE}/Bcast")
        self._sink = channel.stream_unary(f"/{_SERVICE}/Sink")
        self._sink_call: Any = None

    async def call(self, x: int) -> int:
        return _dec.decode(await self._inc(_enc.encode(x)))  # type: ignore[no-any-return]

    async def send(self, x: int) -> None:
        if self._sink_call is None:
            self._sink_call = self._sink()
        await self._sink_call.write(_enc.encode(x))

    async def totals(self) -> list[int]:
        if self._sink_call is not None:
            call, self._sink_call = self._sink_call, None
            await call.done_writing()
            await call
        return _dec.decode(await self._totals(b""))  # type: ignore[no-any-return]

    async def echo(self, data: bytes) -> bytes:
        return _dec.decode(await self._echo(_enc.encode(data)))  # type: ignore[no-any-return]

    async def broadcast(self, m: int, expected: int) -> float:
        return _dec.decode(await self._bcast(_enc.encode([m, expected])))  # type: ignore[no-any-return]


async def _subscribe(channel: grpc.aio.Channel, on_tick: Callable[[int], None]) -> Any:
    call = channel.unary_stream(f"/{_SERVICE}/Subscribe")(b"")
    first = await call.read()
    if first != _HELLO:
        raise BenchError(f"Subscribe: expected the hello message, got {first!r}")

    async def pump() -> None:
        while (message := await call.read()) is not grpc.aio.EOF:
            on_tick(_dec.decode(message))

    return call, asyncio.create_task(pump())


@asynccontextmanager
async def connect(
    info: dict[str, Any], on_tick: Callable[[int], None] | None
) -> AsyncIterator[GrpcClient]:
    options = [*_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(info["address"], options=options) as channel:
        await channel.channel_ready()
        subscription = None
        if on_tick is not None:
            subscription = await _subscribe(channel, on_tick)
        try:
            yield GrpcClient(channel)
        finally:
            if subscription is not None:
                call, task = subscription
                call.cancel()
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, grpc.aio.AioRpcError):
                    pass
