"""A main process for "main killed while renderers wait" (argv[1]: unix | tcp://host:port).

Prints ``ADDRESS TOKEN`` on one line, then serves until killed. Its ``block``
handler and ``block-sync`` listener tell the caller "blocking" and never answer.
"""

from __future__ import annotations

import sys

import anyio

import ipcbus

ipc_main = ipcbus.IpcMain()


@ipc_main.handle("block")
async def block(event: ipcbus.IpcMainInvokeEvent) -> None:
    await event.sender.send("blocking")
    await anyio.sleep_forever()


@ipc_main.on("block-sync")
async def block_sync(event: ipcbus.IpcMainEvent) -> None:
    await event.reply("blocking")
    await anyio.sleep_forever()


async def main() -> None:
    async with ipc_main:
        listener = await ipc_main.listen(None if sys.argv[1] == "unix" else sys.argv[1])
        print(listener.address, listener.token, flush=True)
        await anyio.sleep_forever()


anyio.run(main)
