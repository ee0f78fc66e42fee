"""A replica of an app in a child process: ``python replica_child.py URL APP NAME``.

Prints ``joined`` once the NATS server has its subscriptions, then serves
until killed: ``where`` answers NAME, ``block`` says ``blocked`` to its
caller and never returns.
"""

from __future__ import annotations

import sys

import anyio

import ipcbus


async def main(url: str, app: str, name: str) -> None:
    async with ipcbus.IpcMain(heartbeat_interval=0.5, shutdown_grace=0.5) as ipc_main:
        ipc_main.handle("where", lambda event: name)
        ipc_main.handle("add", lambda event, a, b: a + b)

        @ipc_main.handle("block")
        async def block(event: ipcbus.IpcMainInvokeEvent) -> None:
            await event.sender.send("blocked")  # the caller knows its call is here
            await anyio.sleep_forever()

        await ipc_main.join(url, app=app)
        print("joined", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:4])
