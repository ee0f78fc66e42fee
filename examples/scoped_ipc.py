"""``WebContents.ipc``: listeners and handlers for one renderer only.

Like Electron's ``webContents.ipc``: a renderer's scoped listeners run before
``ipc_main``'s, and its scoped handler answers ``invoke`` instead of
``ipc_main``'s. Registering them in a plain (non-async) ``on_connect`` hook is
race-free: the hook runs before the renderer's handshake completes, so the
renderer cannot send anything first.

Run: ``python examples/scoped_ipc.py``
"""

from __future__ import annotations

import sys

import anyio

from ipcbus import IpcMain, IpcMainEvent, IpcMainInvokeEvent, IpcRenderer, WebContents

EXPECTED = """
[main    ] ipc_main log listener: 'alice says hi'
[renderer] alice: whoami -> 'the shared handler'
[renderer] alice: config -> 'global config'
[main    ] renderer 2 log listener: 'bob says hi'
[main    ] ipc_main log listener: 'bob says hi'
[renderer] bob: whoami -> "renderer 2's own handler"
[renderer] bob: whoami again -> 'the shared handler'
[renderer] bob: config -> 'config for renderer 2'
"""


def say(side: str, text: str) -> None:
    print(f"[{side:8}] {text}", flush=True)


async def main() -> None:
    ipc_main = IpcMain()

    @ipc_main.handle("whoami")
    def shared_whoami(event: IpcMainInvokeEvent) -> str:
        return "the shared handler"

    @ipc_main.on("log")
    def shared_log(event: IpcMainEvent, text: str) -> None:
        say("main", f"ipc_main log listener: {text!r}")

    @ipc_main.on("config")
    def shared_config(event: IpcMainEvent) -> None:
        event.return_value = "global config"  # ignored if a scoped listener answered first

    @ipc_main.on_connect
    def scope_renderer_2(contents: WebContents) -> None:
        if contents.id != 2:
            return

        @contents.ipc.handle_once("whoami")  # once: later invokes fall back to ipc_main's
        def own_whoami(event: IpcMainInvokeEvent) -> str:
            return f"renderer {event.sender.id}'s own handler"

        @contents.ipc.on("log")
        def own_log(event: IpcMainEvent, text: str) -> None:
            say("main", f"renderer {event.sender.id} log listener: {text!r}")

        @contents.ipc.on("config")
        def own_config(event: IpcMainEvent) -> None:
            event.return_value = f"config for renderer {event.sender.id}"

    async with ipc_main:
        for name in ("alice", "bob"):  # one after the other, so the output is in order
            contents = await ipc_main.spawn([sys.executable, __file__, "--renderer", name])
            await contents.wait_closed()


async def renderer(name: str) -> None:
    async with IpcRenderer().connect() as ipc_renderer:
        await ipc_renderer.send("log", f"{name} says hi")
        say("renderer", f"{name}: whoami -> {await ipc_renderer.invoke('whoami')!r}")
        if name == "bob":
            say("renderer", f"{name}: whoami again -> {await ipc_renderer.invoke('whoami')!r}")
        say("renderer", f"{name}: config -> {await ipc_renderer.send_sync('config')!r}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--renderer"]:
        anyio.run(renderer, sys.argv[2])
    else:
        anyio.run(main)
