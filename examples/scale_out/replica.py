"""One replica of the app "shop": ``python replica.py NATS_URL NAME``.

Serves the app's channels until its stdin closes (or Ctrl-C), then leaves the
app: no new renderer is sent to it, and its renderers get a Goodbye.
"""

from __future__ import annotations

import sys

import anyio
import anyio.to_thread

from ipcbus import IpcMain, IpcMainEvent, IpcMainInvokeEvent


async def main(url: str, name: str) -> None:
    ipc_main = IpcMain()

    @ipc_main.handle("add")
    def add(event: IpcMainInvokeEvent, a: int, b: int) -> int:
        return a + b

    @ipc_main.handle("where")
    def where(event: IpcMainInvokeEvent) -> str:
        return name

    @ipc_main.on("announce")
    async def announce(event: IpcMainEvent, text: str) -> None:
        # To every renderer of the app, on every replica.
        await ipc_main.broadcast("news", f"{text} (from replica {name})")

    async with ipc_main:
        await ipc_main.join(url, app="shop")  # returns once NATS has our subscriptions
        print("joined", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])
