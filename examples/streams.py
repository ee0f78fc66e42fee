"""Streams: an async-generator handler, iterated from the other side.

Main serves async generators with ``handle``; the renderer (this file,
``--renderer``) iterates them with ``ipc_renderer.stream(ch, *args)``; and
main iterates the renderer's with ``contents.stream(ch, *args)``. Shown:

1. a finite stream, item by item;
2. flow control: a fast generator feeding a consumer that sleeps is paused
   (it runs at most ``window`` items ahead), so memory stays flat;
3. leaving early (``break``) closes the generator on the other side;
4. an exception in the generator arrives as ``RemoteError``;
5. the other way round: main streams from the renderer.

Run: ``python examples/streams.py``
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import anyio

from ipcbus import IpcMain, IpcMainInvokeEvent, IpcRenderer, IpcRendererEvent, RemoteError

EXPECTED = """
[renderer] 1. countdown(3): [3, 2, 1, 'liftoff']
[renderer] 2. read 20 items of 64 KiB slowly with window=4
[main    ]    the generator stayed at most 4 items ahead of the reader: True
[renderer] 3. ticks until I break: [0, 1, 2]
[main    ]    the ticks generator was closed (its finally ran)
[renderer] 4. RemoteError: Error invoking remote method 'fragile': ValueError: no more than 2
[renderer]    after the items [0, 1]
[main    ] 5. main streams from the renderer: ['a', 'b', 'c']
"""


def say(side: str, text: str) -> None:
    print(f"[{side:8}] {text}", flush=True)


async def main() -> None:
    ipc_main = IpcMain()
    produced = 0
    max_ahead = 0

    @ipc_main.handle("countdown")
    async def countdown(event: IpcMainInvokeEvent, n: int) -> AsyncIterator[int | str]:
        for i in range(n, 0, -1):
            yield i
        yield "liftoff"

    @ipc_main.handle("chunks")
    async def chunks(event: IpcMainInvokeEvent) -> AsyncIterator[bytes]:
        nonlocal produced
        while True:  # never waits: only the reader's credit holds it back
            produced += 1
            yield bytes(64 * 1024)

    @ipc_main.handle("consumed")
    def consumed(event: IpcMainInvokeEvent, n: int) -> None:
        nonlocal max_ahead
        max_ahead = max(max_ahead, produced - n)

    ticks_closed = anyio.Event()

    @ipc_main.handle("ticks-closed")
    async def wait_ticks_closed(event: IpcMainInvokeEvent) -> None:
        await ticks_closed.wait()

    @ipc_main.handle("ticks")
    async def ticks(event: IpcMainInvokeEvent) -> AsyncIterator[int]:
        i = 0
        try:
            while True:
                yield i
                i += 1
        finally:
            say("main", "   the ticks generator was closed (its finally ran)")
            ticks_closed.set()

    @ipc_main.handle("fragile")
    async def fragile(event: IpcMainInvokeEvent) -> AsyncIterator[int]:
        for i in range(5):
            if i == 2:
                raise ValueError("no more than 2")
            yield i

    step = anyio.Event()
    ipc_main.on("step", lambda event: step.set())

    async with ipc_main:
        contents = await ipc_main.spawn([sys.executable, __file__, "--renderer"])
        await step.wait()
        flat = max_ahead <= 4
        say("main", f"   the generator stayed at most 4 items ahead of the reader: {flat}")
        step = anyio.Event()
        await contents.send("go")
        await step.wait()
        letters = [letter async for letter in contents.stream("letters", "abc")]
        say("main", f"5. main streams from the renderer: {letters}")
        await contents.send("bye")
        await contents.wait_closed()


async def renderer() -> None:
    r = IpcRenderer()
    go, bye = anyio.Event(), anyio.Event()
    r.on("go", lambda event: go.set())
    r.on("bye", lambda event: bye.set())

    @r.handle("letters")
    async def letters(event: IpcRendererEvent, word: str) -> AsyncIterator[str]:
        for letter in word:
            yield letter

    async with r.connect():
        say("renderer", f"1. countdown(3): {[x async for x in r.stream('countdown', 3)]}")

        n = 0
        async with r.stream("chunks", window=4) as stream:
            async for chunk in stream:
                size = len(chunk)
                n += 1
                await anyio.sleep(0.005)  # a slow reader
                await r.invoke("consumed", n)
                if n == 20:
                    break
        say("renderer", f"2. read {n} items of {size // 1024} KiB slowly with window=4")
        await r.send("step")
        await go.wait()

        got = []
        async for tick in r.stream("ticks"):
            got.append(tick)
            if len(got) == 3:
                break  # the stream is dropped: main's generator is closed
        say("renderer", f"3. ticks until I break: {got}")
        await r.invoke("ticks-closed")  # main confirms its generator was closed

        got = []
        try:
            async for value in r.stream("fragile"):
                got.append(value)
        except RemoteError as exc:
            say("renderer", f"4. RemoteError: {exc}")
            say("renderer", f"   after the items {got}")
        await r.send("step")
        await bye.wait()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--renderer"]:
        anyio.run(renderer)
    else:
        anyio.run(main)
