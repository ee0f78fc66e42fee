"""Port messages and stream items per second, beside ``send`` (issue 5).

    python benchmarks/ports_streams.py [--n 100000] [--loop asyncio|uvloop] [--repeat 3]

Main spawns two renderers (this file, ``--renderer``) and times, on this
machine, over the spawn socket pairs:

* ``send``: renderer -> main ``send`` of small ints to a plain listener (the
  baseline: one frame per message, main decodes the arguments);
* port messages renderer -> main, main -> renderer, and renderer ->
  renderer (through main, which routes them without decoding);
* port messages between the two ends of a channel inside one process (no
  socket at all);
* stream items main -> renderer, with windows of 16, 32 (the default), 64 and 256.

Then round trips, one at a time (``--n / 20`` of them): ``invoke`` to main,
and a port ping-pong with main and with the other renderer (through main).

Each row is the median of ``--repeat`` runs of ``--n`` messages. The clock
starts before the first message is sent and stops when the receiver has
counted the last one (the sender learns it from one extra round trip). Port
posts are queued without awaiting (they have no backpressure, like
Electron's), so the sender yields to the event loop every 256 posts to let
them go out while it keeps posting.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel

from ipcbus import (
    IpcMain,
    IpcMainInvokeEvent,
    IpcRenderer,
    IpcRendererEvent,
    MessageChannelMain,
    MessageEvent,
    MessagePortMain,
)

BATCH = 256
WINDOWS = (16, 32, 64, 256)


async def post_all(port: MessagePortMain, n: int) -> None:
    for i in range(n):
        port.post_message(i)
        if i % BATCH == BATCH - 1:
            await anyio.lowlevel.checkpoint()


def echo(port: MessagePortMain) -> None:
    port.on("message", lambda message: port.post_message(message.data))
    port.start()


async def count_all(port: MessagePortMain, n: int) -> None:
    got = 0
    async for _ in port:
        got += 1
        if got == n:
            return


# ---- main -------------------------------------------------------------------


async def main(n: int, repeat: int, loop: str) -> None:
    ipc_main = IpcMain()
    received = 0
    all_in = anyio.Event()
    done_in, done_out = anyio.create_memory_object_stream[float](10)

    @ipc_main.on("data")
    def on_data(event: Any, i: int) -> None:
        nonlocal received
        received += 1
        if received == n:
            all_in.set()

    @ipc_main.handle("all-in")
    async def wait_all_in(event: IpcMainInvokeEvent) -> None:
        await all_in.wait()

    @ipc_main.on("elapsed")
    def on_elapsed(event: Any, seconds: float) -> None:
        done_in.send_nowait(seconds)

    @ipc_main.handle("items")
    async def items(event: IpcMainInvokeEvent, count: int) -> AsyncIterator[int]:
        for i in range(count):
            yield i

    def reset() -> None:
        nonlocal received, all_in
        received = 0
        all_in = anyio.Event()

    rows: dict[str, list[float]] = {}
    trips: dict[str, list[float]] = {}
    k = max(1, n // 20)
    ipc_main.handle("nothing", lambda event: None)

    def record(name: str, seconds: float) -> None:
        rows.setdefault(name, []).append(n / seconds)

    def record_trip(name: str, seconds: float) -> None:
        trips.setdefault(name, []).append(seconds / k * 1e6)

    argv = [sys.executable, __file__, "--renderer", "--loop", loop]
    async with ipc_main, done_in, done_out:
        r1 = await ipc_main.spawn(argv)
        r2 = await ipc_main.spawn(argv)
        for _ in range(repeat):
            reset()
            record("send, renderer -> main", await r1.invoke("bench-send", n))

            reset()
            channel = MessageChannelMain()
            channel.port1.on("message", lambda event: on_data(event, 0))
            channel.port1.start()
            await r1.post_message("bench-post", n, [channel.port2])
            record("port, renderer -> main", await done_out.receive())
            channel.port1.close()

            channel = MessageChannelMain()
            await r1.post_message("bench-count", n, [channel.port2])
            start = time.perf_counter()
            await post_all(channel.port1, n)
            await done_out.receive()
            record("port, main -> renderer", time.perf_counter() - start)
            channel.port1.close()

            channel = MessageChannelMain()
            await r2.post_message("bench-count", n, [channel.port2])
            await r1.post_message("bench-post-to-peer", n, [channel.port1])
            # r2 reports 0.0 when it has counted them all; r1 the time it took.
            elapsed = max(await done_out.receive(), await done_out.receive())
            record("port, renderer -> renderer (via main)", elapsed)

            local = MessageChannelMain()
            start = time.perf_counter()
            async with anyio.create_task_group() as tg:
                tg.start_soon(count_all, local.port2, n)
                await post_all(local.port1, n)
            record("port, both ends in one process", time.perf_counter() - start)
            local.port1.close()

            for window in WINDOWS:
                name = f"stream items, main -> renderer (window {window})"
                record(name, await r1.invoke("bench-stream", n, window))

            record_trip("invoke, renderer -> main", await r1.invoke("bench-invoke", k))
            channel = MessageChannelMain()
            echo(channel.port1)
            await r1.post_message("bench-ping", k, [channel.port2])
            record_trip("port ping-pong, renderer <-> main", await done_out.receive())
            channel.port1.close()
            channel = MessageChannelMain()
            await r2.post_message("bench-echo", None, [channel.port2])
            await r1.post_message("bench-ping", k, [channel.port1])
            record_trip("port ping-pong, renderer <-> renderer", await done_out.receive())

    width = max(len(name) for name in rows)
    print(f"ipcbus ports and streams, n={n}, loop={loop}, median of {repeat}")
    print(f"| {'what':<{width}} | messages/s |")
    print(f"| {'-' * width} | ---------: |")
    for name, rates in rows.items():
        print(f"| {name:<{width}} | {statistics.median(rates):>10,.0f} |")
    print()
    width = max(len(name) for name in trips)
    print(f"| {'round trip, one at a time':<{width}} | µs median |")
    print(f"| {'-' * width} | --------: |")
    for name, micros in trips.items():
        print(f"| {name:<{width}} | {statistics.median(micros):>9.1f} |")


# ---- renderers --------------------------------------------------------------


async def renderer() -> None:
    r = IpcRenderer()
    to_peer_done = anyio.Event()

    @r.handle("bench-send")
    async def bench_send(event: IpcRendererEvent, n: int) -> float:
        start = time.perf_counter()
        for i in range(n):
            await r.send("data", i)
        await r.invoke("all-in")
        return time.perf_counter() - start

    @r.on("bench-post")
    async def bench_post(event: IpcRendererEvent, n: int) -> None:
        port = event.ports[0]
        start = time.perf_counter()
        await post_all(port, n)
        await r.invoke("all-in")
        await r.send("elapsed", time.perf_counter() - start)

    @r.on("bench-count")
    async def bench_count(event: IpcRendererEvent, n: int) -> None:
        port = event.ports[0]
        await count_all(port, n)
        port.post_message("done")  # tells a renderer peer it is over
        await r.send("elapsed", 0.0)

    @r.on("bench-post-to-peer")
    async def bench_post_to_peer(event: IpcRendererEvent, n: int) -> None:
        port = event.ports[0]
        start = time.perf_counter()
        await post_all(port, n)
        async for message in port:  # the peer's "done"
            assert isinstance(message, MessageEvent)
            break
        await r.send("elapsed", time.perf_counter() - start)
        to_peer_done.set()

    @r.handle("bench-invoke")
    async def bench_invoke(event: IpcRendererEvent, k: int) -> float:
        start = time.perf_counter()
        for _ in range(k):
            await r.invoke("nothing")
        return time.perf_counter() - start

    @r.on("bench-ping")
    async def bench_ping(event: IpcRendererEvent, k: int) -> None:
        port = event.ports[0]
        port.start()
        start = time.perf_counter()
        for i in range(k):
            port.post_message(i)
            async for _ in port:
                break
        await r.send("elapsed", time.perf_counter() - start)
        port.close()

    @r.on("bench-echo")
    def bench_echo(event: IpcRendererEvent, _: None) -> None:
        echo(event.ports[0])

    @r.handle("bench-stream")
    async def bench_stream(event: IpcRendererEvent, n: int, window: int) -> float:
        start = time.perf_counter()
        got = 0
        async with r.stream("items", n, window=window) as stream:
            async for _ in stream:
                got += 1
        assert got == n
        return time.perf_counter() - start

    async with r.connect():
        await r.wait_closed()


def run(fn: Any, *args: Any, loop: str) -> None:
    if loop == "uvloop":
        anyio.run(fn, *args, backend_options={"use_uvloop": True})
    else:
        anyio.run(fn, *args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="messages per row and run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (median)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--renderer", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.renderer:
        run(renderer, loop=options.loop)
    else:
        run(main, options.n, options.repeat, options.loop, loop=options.loop)
