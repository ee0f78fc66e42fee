"""ipcbus.sync with polling off (``spin=0``): each call sleeps in ``recv``, as ``mpconn``'s does.

Scenario S only, beside ``ipcbus-sync`` (whose calls first poll the socket
for their reply, ``ipcbus._spin``): the difference is what polling buys, and
this row compares the facade with ``mpconn`` on the same terms.
"""

from __future__ import annotations

from typing import Any

from _common import BenchError, Params, round_trips

import ipcbus.sync
from contestants.ipcbus_ import serve

__all__ = ("LOOPS", "run_client", "serve")

LOOPS = ("asyncio", "uvloop")  # main's loop; the client runs none


def run_client(
    info: dict[str, Any], scenario: str, p: Params, index: int, conns: int
) -> dict[str, Any]:
    if scenario != "S":
        raise BenchError(f"ipcbus-sync-sleep runs scenario S only, not {scenario}")
    ipc = ipcbus.sync.IpcRenderer(spin=0)
    with ipc.connect(info["address"], token=info["token"]):
        return round_trips(lambda i: ipc.invoke("inc", i), p)
