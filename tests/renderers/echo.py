"""A renderer that serves a few handlers and exits when main closes the connection."""

from __future__ import annotations

import os

import anyio

import ipcbus

ipc_renderer = ipcbus.IpcRenderer()


@ipc_renderer.handle("echo")
def echo(event: ipcbus.IpcRendererEvent, *args: object) -> list[object]:
    return list(args)


@ipc_renderer.handle("pid")
def pid(event: ipcbus.IpcRendererEvent) -> int:
    return os.getpid()


@ipc_renderer.on("ping")
async def ping(event: ipcbus.IpcRendererEvent, *args: object) -> None:
    await event.sender.send("pong", *args)


async def main() -> None:
    async with ipc_renderer.connect():
        await ipc_renderer.wait_closed()


anyio.run(main)
