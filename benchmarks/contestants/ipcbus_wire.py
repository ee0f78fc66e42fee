"""A blocking client of ipcbus's main with no loop and no thread: the bound for ipcbus.sync.

Scenario S only. The client speaks ipcbus's protocol with the sans-I/O core
(``Connection``) over a plain blocking socket, in the calling thread, as
``multiprocessing.connection`` does: send the Request, ``recv`` until the
Reply. No facade can do better against the same main; the gap between this
and ``mpconn`` is main's, the gap between this and ``ipcbus-sync`` is the
facade's (its locks, and the bookkeeping that lets threads share the socket).
"""

from __future__ import annotations

import os
import socket
from typing import Any

from _common import BenchError, Params, round_trips

from contestants.ipcbus_ import serve
from ipcbus._events import HandshakeCompleted, ReplyReceived
from ipcbus._protocol import Connection, Role
from ipcbus._values import decode_value
from ipcbus._wire import INVOKE

__all__ = ("LOOPS", "run_client", "serve")

LOOPS = ("asyncio", "uvloop")  # main's loop; the client runs its own (or none)


def run_client(
    info: dict[str, Any], scenario: str, p: Params, index: int, conns: int
) -> dict[str, Any]:
    if scenario != "S":
        raise BenchError(f"ipcbus-wire runs scenario S only, not {scenario}")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(info["address"].removeprefix("unix:"))
        conn = Connection(Role.RENDERER, token=info["token"], process_id=os.getpid())
        sock.sendall(conn.data_to_send())
        while not any(isinstance(e, HandshakeCompleted) for e in conn.events_received()):
            data = sock.recv(65536)
            if not data:
                raise BenchError("main closed the connection during the handshake")
            conn.receive_data(data)

        def call(x: int) -> Any:
            request_id = conn.start_request(INVOKE, "inc", (x,))
            sock.sendall(conn.data_to_send())
            while True:
                data = sock.recv(65536)
                if not data:
                    raise BenchError("main closed the connection")
                conn.receive_data(data)
                for event in conn.events_received():
                    if isinstance(event, ReplyReceived) and event.request_id == request_id:
                        if not event.ok:
                            raise BenchError(f"remote error: {bytes(event.value)!r}")
                        return decode_value(event.value)

        return round_trips(call, p)
