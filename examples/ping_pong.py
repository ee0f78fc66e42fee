"""Electron's classic ping/pong: ``send`` + ``event.reply``, and ``send_sync``.

Main spawns this same file as its renderer (``--renderer``). The renderer asks
main synchronously (``send_sync`` -> ``event.return_value``), then
asynchronously (``send`` -> ``event.reply``).

Run: ``python examples/ping_pong.py``
"""

from __future__ import annotations

import sys

import anyio

from ipcbus import IpcMain, IpcMainEvent, IpcRenderer, IpcRendererEvent

EXPECTED = """
[main    ] synchronous-message: 'ping'
[renderer] send_sync returned 'pong'
[main    ] asynchronous-message: 'ping'
[renderer] asynchronous-reply: 'pong'
[renderer] send_sync to a listener that sets nothing returned None
[main    ] renderer 1 gone: clean-exit (exit code 0)
"""


def say(side: str, text: str) -> None:
    # flush: main and renderer share one stdout; keep the lines in causal order.
    print(f"[{side:8}] {text}", flush=True)


async def main() -> None:
    ipc_main = IpcMain()

    @ipc_main.on("asynchronous-message")
    async def on_async(event: IpcMainEvent, arg: str) -> None:
        say("main", f"asynchronous-message: {arg!r}")
        await event.reply("asynchronous-reply", "pong")  # same as event.sender.send(...)

    @ipc_main.on("synchronous-message")
    def on_sync(event: IpcMainEvent, arg: str) -> None:
        say("main", f"synchronous-message: {arg!r}")
        event.return_value = "pong"  # the reply leaves at this assignment

    @ipc_main.on("quiet")
    def on_quiet(event: IpcMainEvent) -> None:
        pass  # never assigns return_value: the send_sync caller gets None

    async with ipc_main:
        contents = await ipc_main.spawn([sys.executable, __file__, "--renderer"])
        await contents.wait_closed()
        details = contents.disconnect_details  # set once the renderer is gone
        assert details is not None
        exit_code = details.exit_code
        say("main", f"renderer {contents.id} gone: {details.reason} (exit code {exit_code})")


async def renderer() -> None:
    ipc_renderer = IpcRenderer()
    got_pong = anyio.Event()

    # Registered before connecting, so nothing main sends early is lost.
    @ipc_renderer.on("asynchronous-reply")
    def on_reply(event: IpcRendererEvent, arg: str) -> None:
        say("renderer", f"asynchronous-reply: {arg!r}")
        got_pong.set()

    async with ipc_renderer.connect():  # no address: the main that spawned us
        reply = await ipc_renderer.send_sync("synchronous-message", "ping")
        say("renderer", f"send_sync returned {reply!r}")
        await ipc_renderer.send("asynchronous-message", "ping")
        await got_pong.wait()
        nothing = await ipc_renderer.send_sync("quiet")
        say("renderer", f"send_sync to a listener that sets nothing returned {nothing!r}")


if __name__ == "__main__":
    anyio.run(renderer if sys.argv[1:] == ["--renderer"] else main)
