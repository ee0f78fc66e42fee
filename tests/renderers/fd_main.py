"""A main process with few file descriptors: ``fd_main.py NOFILE BACKEND ADDRESS``.

Lowers its own ``RLIMIT_NOFILE`` to NOFILE, listens on ADDRESS (``unix`` for a
private unix socket, or ``tcp://host:port``) on BACKEND (``asyncio`` or
``trio``; ``IPCBUS_NO_FASTPATH=1`` picks anyio's streams on asyncio), prints
``ADDRESS TOKEN`` and serves ``echo`` and ``fds`` (its open descriptors) until
its stdin closes. Warnings go to stderr, one per line.
"""

from __future__ import annotations

import logging
import os
import resource
import sys

import anyio

import ipcbus

nofile, backend, address = int(sys.argv[1]), sys.argv[2], sys.argv[3]
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

# Idle sockets may pile up past the descriptors (max_pending_handshakes would
# otherwise drop the oldest long before): that is what is tested.
ipc_main = ipcbus.IpcMain(
    handshake_timeout=60.0, heartbeat_interval=None, max_pending_handshakes=10_000
)
ipc_main.handle("echo", lambda event, value: value)


@ipc_main.handle("fds")
def fds(event: ipcbus.IpcMainInvokeEvent) -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # listing them takes a descriptor too
        return nofile


async def main() -> None:
    async with ipc_main:
        listener = await ipc_main.listen(None if address == "unix" else address)
        print(listener.address, listener.token, flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)


anyio.run(main, backend=backend)
