"""A renderer child that main drives through invoke: it reports who it is, calls main
on request, moves blobs both ways, serves typed handlers and hangs until cancelled.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import anyio
from samples import SAMPLES, typed_handler

import ipcbus

ipc_renderer = ipcbus.IpcRenderer()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@ipc_renderer.handle("echo")
def echo(event: ipcbus.IpcRendererEvent, *args: Any) -> list[Any]:
    return list(args)


@ipc_renderer.handle("whoami")
def whoami(event: ipcbus.IpcRendererEvent) -> list[int]:
    return [os.getpid(), ipc_renderer.id]


@ipc_renderer.handle("boom")
def boom(event: ipcbus.IpcRendererEvent) -> None:
    raise ValueError("boom from the renderer")  # the line the traceback must show


@ipc_renderer.handle("hang")
async def hang(event: ipcbus.IpcRendererEvent, tag: str) -> None:
    await ipc_renderer.send("hang-started", tag)
    try:
        await anyio.sleep_forever()
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):
            await ipc_renderer.send("hang-cancelled", tag)
        raise


@ipc_renderer.handle("call-main")
async def call_main(event: ipcbus.IpcRendererEvent, kind: str, channel: str, *args: Any) -> Any:
    """Make one call to main; errors come back as {"error": type name, "message": str}."""
    try:
        if kind == "invoke":
            return {"ok": await ipc_renderer.invoke(channel, *args)}
        if kind == "send_sync":
            return {"ok": await ipc_renderer.send_sync(channel, *args)}
        await ipc_renderer.send(channel, *args)
        return {"ok": None}
    except ipcbus.IpcError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}


@ipc_renderer.on("blob")
async def blob(event: ipcbus.IpcRendererEvent, data: bytes) -> None:
    await ipc_renderer.send("blob-digest", len(data), digest(data))


@ipc_renderer.handle("blob-echo")
def blob_echo(event: ipcbus.IpcRendererEvent, data: bytes) -> bytes:
    return data


@ipc_renderer.handle("blobs-to-main")
async def blobs_to_main(event: ipcbus.IpcRendererEvent, size: int) -> list[str]:
    """Send ``size`` random bytes to main by send, send_sync and invoke.

    Returns the digest of what was sent and of the two replies (main echoes).
    """
    data = os.urandom(size)
    await ipc_renderer.send("blob", data)
    synced = await ipc_renderer.send_sync("blob-sync", data)
    invoked = await ipc_renderer.invoke("blob-invoke", data)
    return [digest(data), digest(synced), digest(invoked)]


for _sample in SAMPLES:
    ipc_renderer.handle(f"typed:{_sample.name}", typed_handler(_sample))


async def main() -> None:
    async with ipc_renderer.connect():
        await ipc_renderer.wait_closed()


anyio.run(main)
