"""Main talks first: ``WebContents.invoke``, ``WebContents.send`` and ``broadcast``.

Main spawns two renderers (this file, ``--renderer NAME``). It calls a handler
*in* each renderer (``contents.invoke`` -- Electron has no such thing), sends
to one of them, then broadcasts to all. Renderers answer messages by sending
an ``ack`` back, which main prints.

Run: ``python examples/main_to_renderer.py``
"""

from __future__ import annotations

import sys

import anyio

from ipcbus import (
    ConnectionClosedError,
    IpcMain,
    IpcMainEvent,
    IpcRenderer,
    IpcRendererEvent,
)

EXPECTED = """
[main    ] renderers: [1, 2]
[main    ] renderer 1 says it is 'alice (id 1)'
[main    ] renderer 2 says it is 'bob (id 2)'
[main    ] renderer 2 computed add(2, 3) = 5
[main    ] ack from renderer 2: 'bob got only-you: psst'
[main    ] ack from renderer 1: 'alice got news: hello, all'
[main    ] ack from renderer 2: 'bob got news: hello, all'
[main    ] renderer 1 gone: clean-exit; destroyed: True
[main    ] renderer 2 gone: clean-exit; destroyed: True
[main    ] send to a closed renderer: ConnectionClosedError
[main    ] from_id(1) after it left: None
"""


def say(side: str, text: str) -> None:
    print(f"[{side:8}] {text}", flush=True)


async def main() -> None:
    ipc_main = IpcMain()
    acks_in, acks_out = anyio.create_memory_object_stream[tuple[int, str]](10)

    @ipc_main.on("ack")
    async def on_ack(event: IpcMainEvent, text: str) -> None:
        await acks_in.send((event.sender.id, text))

    async def print_acks(count: int) -> None:
        got = sorted([await acks_out.receive() for _ in range(count)])
        for renderer_id, text in got:
            say("main", f"ack from renderer {renderer_id}: {text!r}")

    async with ipc_main, acks_in, acks_out:
        for name in ("alice", "bob"):
            await ipc_main.spawn([sys.executable, __file__, "--renderer", name])
        everyone = ipc_main.get_all_web_contents()
        say("main", f"renderers: {[contents.id for contents in everyone]}")

        for contents in everyone:  # main -> renderer invoke
            say("main", f"renderer {contents.id} says it is {await contents.invoke('whoami')!r}")
        bob = ipc_main.from_id(2)
        assert bob is not None
        say("main", f"renderer 2 computed add(2, 3) = {await bob.invoke('add', 2, 3, timeout=5)}")

        await bob.send("only-you", "psst")  # one renderer
        await print_acks(1)
        await ipc_main.broadcast("news", "hello, all")  # every live renderer
        await print_acks(2)

        await ipc_main.broadcast("bye")
        for contents in everyone:
            await contents.wait_closed()
            details = contents.disconnect_details
            reason = details.reason if details else "?"
            destroyed = contents.is_destroyed()
            say("main", f"renderer {contents.id} gone: {reason}; destroyed: {destroyed}")
        try:
            await bob.send("only-you", "are you there?")
        except ConnectionClosedError as exc:
            say("main", f"send to a closed renderer: {type(exc).__name__}")
        await ipc_main.broadcast("news", "nobody hears this")  # skips closed renderers
        say("main", f"from_id(1) after it left: {ipc_main.from_id(1)}")


async def renderer(name: str) -> None:
    ipc_renderer = IpcRenderer()
    bye = anyio.Event()

    @ipc_renderer.handle("whoami")
    def whoami(event: IpcRendererEvent) -> str:
        return f"{name} (id {ipc_renderer.id})"  # .id: the WebContents.id main gave us

    @ipc_renderer.handle("add")
    async def add(event: IpcRendererEvent, a: int, b: int) -> int:
        return a + b

    @ipc_renderer.on("only-you")
    @ipc_renderer.on("news")
    async def on_message(event: IpcRendererEvent, text: str) -> None:
        await ipc_renderer.send("ack", f"{name} got {event.channel}: {text}")

    @ipc_renderer.on("bye")
    def on_bye(event: IpcRendererEvent) -> None:
        bye.set()

    async with ipc_renderer.connect():
        await bye.wait()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--renderer"]:
        anyio.run(renderer, sys.argv[2])
    else:
        anyio.run(main)
