"""``ipcbus demo``: Electron's ping/pong, an invoke and a push, across two processes.

Main (``run_main``) spawns this module as a renderer (``run_renderer``). Each
side prints with a prefix so the interleaving is readable.
"""

from __future__ import annotations

import os
import sys

import anyio

from .main import IpcMain, IpcMainEvent, IpcMainInvokeEvent
from .renderer import IpcRenderer, IpcRendererEvent

__all__ = ("run_main", "run_renderer", "run_web")


def _say(side: str, text: str) -> None:
    try:
        print(f"[{side:8}] {text}", flush=True)
    except BrokenPipeError:
        # Whoever read our output stopped (``ipcbus demo | head``). Carry on
        # without it: a listener that raised here would never answer, and the
        # two processes would wait for each other forever.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


async def run_main() -> None:
    ipc_main = IpcMain()

    @ipc_main.on("asynchronous-message")
    async def on_async(event: IpcMainEvent, arg: str) -> None:
        _say("main", f"asynchronous-message: {arg!r}")
        await event.reply("asynchronous-reply", "pong")

    @ipc_main.on("synchronous-message")
    def on_sync(event: IpcMainEvent, arg: str) -> None:
        _say("main", f"synchronous-message: {arg!r}")
        event.return_value = "pong"

    @ipc_main.handle("add")
    async def add(event: IpcMainInvokeEvent, a: int, b: int) -> int:
        _say("main", f"invoke add({a}, {b}) from renderer {event.sender.id}")
        return a + b

    async with ipc_main:
        contents = await ipc_main.spawn([sys.executable, "-m", "ipcbus._demo"])
        _say("main", f"spawned renderer {contents.id} (pid {contents.process_id})")
        await contents.send("main-says", "hello from main")
        answer = await contents.invoke("renderer-name")
        _say("main", f"main -> renderer invoke answered {answer!r}")
        await contents.wait_closed()
        details = contents.disconnect_details
        _say("main", f"renderer {contents.id} gone: {details.reason if details else '?'}")


async def run_renderer() -> None:
    ipc_renderer = IpcRenderer()
    got_pong = anyio.Event()
    got_push = anyio.Event()

    @ipc_renderer.on("asynchronous-reply")
    def on_reply(event: IpcRendererEvent, arg: str) -> None:
        _say("renderer", f"asynchronous-reply: {arg!r}")
        got_pong.set()

    @ipc_renderer.on("main-says")
    def on_push(event: IpcRendererEvent, arg: str) -> None:
        _say("renderer", f"push from main: {arg!r}")
        got_push.set()

    @ipc_renderer.handle("renderer-name")
    def name(event: IpcRendererEvent) -> str:
        return f"renderer {event.sender.id}"

    async with ipc_renderer.connect():
        _say("renderer", f"connected as {ipc_renderer.id}")
        reply = await ipc_renderer.send_sync("synchronous-message", "ping")
        _say("renderer", f"send_sync returned {reply!r}")
        await ipc_renderer.send("asynchronous-message", "ping")
        await got_pong.wait()
        _say("renderer", f"invoke add(1, 2) = {await ipc_renderer.invoke('add', 1, 2)}")
        await got_push.wait()


def run_web(open_browser: bool, port: int) -> None:
    """``ipcbus demo --web``: run ``examples/web_page/main.py``, which a wheel carries inside."""
    import runpy
    from pathlib import Path

    here = Path(__file__).resolve().parent
    # A wheel has it at ipcbus/web/example (pyproject's force-include); a checkout in examples/.
    for folder in (here / "web" / "example", here.parent.parent / "examples" / "web_page"):
        if (folder / "main.py").is_file():
            break
    else:
        raise SystemExit("ipcbus demo --web: the web example is not installed with this ipcbus")
    example = runpy.run_path(str(folder / "main.py"), run_name="ipcbus_web_example")
    anyio.run(example["serve"], open_browser, port)


if __name__ == "__main__":
    anyio.run(run_renderer)
