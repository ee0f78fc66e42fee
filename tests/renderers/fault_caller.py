"""A renderer that makes one call to main (argv[1]: invoke | send_sync) and waits forever.

main's handler for ``block`` / listener for ``block-sync`` never answers; the
test kills this process while the call is pending.
"""

from __future__ import annotations

import sys

import anyio

import ipcbus


async def main() -> None:
    async with ipcbus.connect() as ipc_renderer:
        if sys.argv[1] == "invoke":
            await ipc_renderer.invoke("block")
        else:
            await ipc_renderer.send_sync("block-sync")
        await anyio.sleep_forever()


anyio.run(main)
