"""A blocking renderer: ``ipcbus.sync.IpcRenderer`` for code without an event loop.

Main (async, as always) spawns this file with ``--renderer``; the renderer is
a plain synchronous program. ``ipcbus.sync`` gives blocking ``send``,
``send_sync``, ``invoke``, which do their I/O in the calling thread; listeners
(registered before connecting) run on a background thread.

Run: ``python examples/sync_renderer.py``
"""

from __future__ import annotations

import queue
import sys

import anyio

from ipcbus import IpcMain, IpcMainEvent, IpcRendererEvent
from ipcbus.sync import IpcRenderer

EXPECTED = """
[renderer] invoke('add', 2, 3) -> 5
[renderer] send_sync('question') -> 42
[main    ] got 'hello from a blocking renderer'
[renderer] main sent 'welcome'
[main    ] renderer 1 gone: clean-exit
"""


def say(side: str, text: str) -> None:
    print(f"[{side:8}] {text}", flush=True)


async def main() -> None:
    ipc_main = IpcMain()
    ipc_main.handle("add", lambda event, a, b: a + b)

    @ipc_main.on("question")
    def question(event: IpcMainEvent) -> None:
        event.return_value = 42

    @ipc_main.on("hello")
    async def hello(event: IpcMainEvent, text: str) -> None:
        say("main", f"got {text!r}")
        await event.reply("welcome", "welcome")

    async with ipc_main:
        contents = await ipc_main.spawn([sys.executable, __file__, "--renderer"])
        await contents.wait_closed()
        reason = contents.disconnect_details.reason if contents.disconnect_details else "?"
        say("main", f"renderer {contents.id} gone: {reason}")


def renderer() -> None:
    inbox: queue.Queue[str] = queue.Queue()
    ipc = IpcRenderer()

    @ipc.on("welcome")  # registered before connecting: nothing main sends is lost
    def on_welcome(event: IpcRendererEvent, text: str) -> None:
        inbox.put(text)  # runs on the background thread: hand over safely

    with ipc.connect():  # blocking; no address: the main that spawned us
        say("renderer", f"invoke('add', 2, 3) -> {ipc.invoke('add', 2, 3, timeout=5)}")
        say("renderer", f"send_sync('question') -> {ipc.send_sync('question')}")
        ipc.send("hello", "hello from a blocking renderer")
        say("renderer", f"main sent {inbox.get(timeout=10)!r}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--renderer"]:
        renderer()
    else:
        anyio.run(main)
