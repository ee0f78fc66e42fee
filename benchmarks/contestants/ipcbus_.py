"""ipcbus: ``IpcMain.handle`` / ``on`` in the server, ``IpcRenderer.invoke`` / ``send``.

The server is a main process that ``listen()``s on a unix socket and prints
the address and token; clients ``connect(address, token=...)``. Both run
under ``anyio.run`` (uvloop through ``backend_options={"use_uvloop": True}``).

Contestant ``ipcbus`` registers plain (sync) handlers, which ipcbus runs
inline in the reader; ``ipcbus-async`` registers ``async def`` handlers, which
ipcbus runs each in a task: the cost of the Electron-style spelling.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import anyio.lowlevel
from _common import BenchError, Service, emit, stdin_closed

from ipcbus import IpcMain, IpcRenderer
from ipcbus._events import ConnectionTerminated, HandshakeCompleted
from ipcbus._protocol import Connection, Role
from ipcbus._wire import CloseCode

LOOPS = ("asyncio", "uvloop")
_async_handlers = False


def configure(name: str) -> None:
    global _async_handlers
    _async_handlers = name == "ipcbus-async"


def run(main: Callable[[], Coroutine[Any, Any, Any]], loop: str) -> Any:
    return anyio.run(main, backend="asyncio", backend_options={"use_uvloop": loop == "uvloop"})


# ---- server ---------------------------------------------------------------------


def _register(ipc_main: IpcMain, svc: Service) -> None:
    if _async_handlers:

        async def inc(event: Any, x: Any) -> Any:
            return x + 1

        async def sink(event: Any, x: Any) -> None:
            svc.sink(x)

        async def totals(event: Any) -> Any:
            return svc.totals()

        async def echo(event: Any, data: Any) -> Any:
            return data

    else:

        def inc(event: Any, x: Any) -> Any:  # type: ignore[misc]
            return x + 1

        def sink(event: Any, x: Any) -> None:  # type: ignore[misc]
            svc.sink(x)

        def totals(event: Any) -> Any:  # type: ignore[misc]
            return svc.totals()

        def echo(event: Any, data: Any) -> Any:  # type: ignore[misc]
            return data

    async def bcast(event: Any, m: int, expected: int, paced: bool = False) -> float:
        connected = len(ipc_main.get_all_web_contents())
        if connected != expected:
            raise BenchError(f"{connected} renderers connected, expected {expected}")
        t0 = time.monotonic()
        for seq in range(m):
            await ipc_main.broadcast("tick", seq)
            if paced:
                await anyio.lowlevel.checkpoint()  # scenario H: each broadcast in its own turn
        return t0

    ipc_main.handle("inc", inc)
    ipc_main.on("sink", sink)
    ipc_main.handle("totals", totals)
    ipc_main.handle("echo", echo)
    ipc_main.handle("bcast", bcast)


async def _serve(run_dir: str, options: dict[str, Any]) -> None:
    ipc_main = IpcMain(shutdown_grace=1.0, **options)
    _register(ipc_main, Service())
    async with ipc_main:
        listener = await ipc_main.listen(f"unix:{os.path.join(run_dir, 'ipcbus.sock')}")
        emit({"address": listener.address, "token": listener.token})
        await stdin_closed()


def serve(run_dir: str, loop: str, **options: Any) -> None:
    """Serve until stdin closes; ``options`` go to ``IpcMain`` (G: ``max_connections``)."""
    run(lambda: _serve(run_dir, options), loop)


# ---- client ---------------------------------------------------------------------


class BusClient:
    """The benchmark's interface, bound straight to the renderer's methods."""

    def __init__(self, renderer: IpcRenderer) -> None:
        self.call = partial(renderer.invoke, "inc")
        self.send = partial(renderer.send, "sink")
        self.totals = partial(renderer.invoke, "totals")
        self.echo = partial(renderer.invoke, "echo")
        self.broadcast = partial(renderer.invoke, "bcast")


async def refusal(info: dict[str, Any]) -> str:
    """Scenario G: open one connection past main's ``max_connections``; it must be refused.

    Spoken with ipcbus's sans-I/O core over a plain socket, so the Goodbye's
    code itself is checked (``IpcRenderer.connect`` would turn it into an
    exception). Returns ``"CODE: reason"``.
    """
    reader, writer = await asyncio.open_unix_connection(info["address"].removeprefix("unix:"))
    try:
        conn = Connection(Role.RENDERER, token=info["token"], process_id=os.getpid())
        writer.write(bytes(conn.data_to_send()))
        while True:
            data = await reader.read(65536)
            if data:
                conn.receive_data(data)
            else:
                conn.receive_eof()
            for event in conn.events_received():
                if isinstance(event, HandshakeCompleted):
                    raise BenchError("G: main accepted a connection past max_connections")
                if isinstance(event, ConnectionTerminated):
                    if event.code is not CloseCode.TOO_MANY_CONNECTIONS:
                        raise BenchError(f"G: the connection too many got {event}")
                    return f"{event.code.name}: {event.reason}"
    finally:
        writer.close()


@asynccontextmanager
async def connect(
    info: dict[str, Any], on_tick: Callable[[int], None] | None
) -> AsyncIterator[BusClient]:
    renderer = IpcRenderer()
    if on_tick is not None:
        renderer.on("tick", lambda event, seq: on_tick(seq))
    async with renderer.connect(info["address"], token=info["token"], timeout=30):
        yield BusClient(renderer)
