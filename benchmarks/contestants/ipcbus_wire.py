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
from collections.abc import Callable
from typing import Any

from _common import BenchError, Params, round_trips

from contestants.ipcbus_ import serve
from ipcbus._events import HandshakeCompleted, ReplyReceived
from ipcbus._protocol import Connection, Role
from ipcbus._values import decode_value
from ipcbus._wire import INVOKE

__all__ = ("LOOPS", "bare_client", "run_client", "serve")

LOOPS = ("asyncio", "uvloop")  # main's loop; the client runs its own (or none)


def run_client(
    info: dict[str, Any], scenario: str, p: Params, index: int, conns: int
) -> dict[str, Any]:
    if scenario != "S":
        raise BenchError(f"ipcbus-wire runs scenario S only, not {scenario}")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(info["address"].removeprefix("unix:"))
        return round_trips(bare_client(sock, info["token"]), p)


def bare_client(sock: socket.socket, token: str, *, poll: bool = False) -> Callable[[int], Any]:
    """Run the handshake on ``sock``; return ``call(x)``, an ``inc`` invoke.

    ``call`` sleeps in ``recv`` for its reply, as ``mpconn``'s client does, or
    (``poll``) reads without blocking until it comes (benchmarks/poll_vs_sleep.py).
    """
    conn = Connection(Role.RENDERER, token=token, process_id=os.getpid())
    sock.sendall(conn.data_to_send())
    while not any(isinstance(e, HandshakeCompleted) for e in conn.events_received()):
        data = sock.recv(65536)
        if not data:
            raise BenchError("main closed the connection during the handshake")
        conn.receive_data(data)
    flags = socket.MSG_DONTWAIT if poll else 0

    def call(x: int) -> Any:
        request_id = conn.start_request(INVOKE, "inc", (x,))
        sock.sendall(conn.data_to_send())
        while True:
            try:
                data = sock.recv(65536, flags)
            except BlockingIOError:
                continue  # polling: nothing yet
            if not data:
                raise BenchError("main closed the connection")
            conn.receive_data(data)
            for event in conn.events_received():
                if isinstance(event, ReplyReceived) and event.request_id == request_id:
                    if not event.ok:
                        raise BenchError(f"remote error: {bytes(event.value)!r}")
                    return decode_value(event.value)

    return call
