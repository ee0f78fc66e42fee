"""A renderer joined through NATS in a child process: ``python renderer_child.py URL APP``.

Prints its ``WebContents`` id once connected, then waits until killed.
"""

from __future__ import annotations

import sys

import anyio

import ipcbus


async def main(url: str, app: str) -> None:
    renderer = ipcbus.IpcRenderer(heartbeat_interval=0.5)
    async with renderer.connect(url, app=app):
        print(renderer.id, flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:3])
