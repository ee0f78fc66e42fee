"""A renderer whose handlers block forever or end the process (for kill/crash tests).

``block``: tells main "blocking", then never returns. ``exit``: ``os._exit(code)``.
"""

from __future__ import annotations

import os

import anyio

import ipcbus

ipc_renderer = ipcbus.IpcRenderer()


@ipc_renderer.handle("block")
async def block(event: ipcbus.IpcRendererEvent) -> None:
    await ipc_renderer.send("blocking")
    await anyio.sleep_forever()


@ipc_renderer.handle("exit")
def exit_now(event: ipcbus.IpcRendererEvent, code: int) -> None:
    os._exit(code)


async def main() -> None:
    async with ipc_renderer.connect():
        await ipc_renderer.wait_closed()


anyio.run(main)
