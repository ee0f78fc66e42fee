"""ipcbus: ``IpcMain.handle`` / ``on`` in the server, ``IpcRenderer.invoke`` / ``send``.

The server is a main process that ``listen()``s on a unix socket and prints
the address and token; clients ``connect(address, token=...)``. Both run
under ``anyio.run`` (uvloop through ``backend_options={"use_uvloop": True}``).

Contestant ``ipcbus`` registers plain (sync) handlers, which ipcbus runs
inline in the reader; ``ipcbus-async`` registers ``async def`` handlers, which
ipcbus runs each in a task: the cost of the Electron-style spelling.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
from _common import BenchError, Service, emit, stdin_closed

from ipcbus import IpcMain, IpcRenderer

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

    async def bcast(event: Any, m: int, expected: int) -> float:
        connected = len(ipc_main.get_all_web_contents())
        if connected != expected:
            raise BenchError(f"{connected} renderers connected, expected {expected}")
        t0 = time.monotonic()
        for seq in range(m):
            await ipc_main.broadcast("tick", seq)
        return t0

    ipc_main.handle("inc", inc)
    ipc_main.on("sink", sink)
    ipc_main.handle("totals", totals)
    ipc_main.handle("echo", echo)
    ipc_main.handle("bcast", bcast)


async def _serve(run_dir: str) -> None:
    ipc_main = IpcMain(shutdown_grace=1.0)
    _register(ipc_main, Service())
    async with ipc_main:
        listener = await ipc_main.listen(f"unix:{os.path.join(run_dir, 'ipcbus.sock')}")
        emit({"address": listener.address, "token": listener.token})
        await stdin_closed()


def serve(run_dir: str, loop: str) -> None:
    run(lambda: _serve(run_dir), loop)


# ---- client ---------------------------------------------------------------------


class BusClient:
    """The benchmark's interface, bound straight to the renderer's methods."""

    def __init__(self, renderer: IpcRenderer) -> None:
        self.call = partial(renderer.invoke, "inc")
        self.send = partial(renderer.send, "sink")
        self.totals = partial(renderer.invoke, "totals")
        self.echo = partial(renderer.invoke, "echo")
        self.broadcast = partial(renderer.invoke, "bcast")


@asynccontextmanager
async def connect(
    info: dict[str, Any], on_tick: Callable[[int], None] | None
) -> AsyncIterator[BusClient]:
    renderer = IpcRenderer()
    if on_tick is not None:
        renderer.on("tick", lambda event, seq: on_tick(seq))
    async with renderer.connect(info["address"], token=info["token"], timeout=30):
        yield BusClient(renderer)
