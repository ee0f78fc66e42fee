"""ipcbus.sync: the blocking facade as a client of the normal ipcbus main (scenario S).

The server is the ``ipcbus`` contestant's (``IpcMain`` with plain handlers,
on the loop given); the client is a plain blocking program:
``ipcbus.sync.connect(address, token=...)`` and sequential ``invoke("inc", i)``,
timed exactly as ``mpconn``'s blocking client is in the same scenario.
"""

from __future__ import annotations

from typing import Any

from _common import BenchError, Params, round_trips

import ipcbus.sync
from contestants.ipcbus_ import serve

__all__ = ("LOOPS", "run_client", "serve")

LOOPS = ("asyncio", "uvloop")  # main's loop; the client runs its own (or none)


def run_client(
    info: dict[str, Any], scenario: str, p: Params, index: int, conns: int
) -> dict[str, Any]:
    if scenario != "S":
        raise BenchError(f"ipcbus-sync runs scenario S only, not {scenario}")
    with ipcbus.sync.connect(info["address"], token=info["token"]) as ipc:
        return round_trips(lambda i: ipc.invoke("inc", i), p)
