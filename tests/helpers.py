"""Shared test helpers: a running IpcMain, renderer child scripts, bounded waits,
main's end of a connection driven by hand."""

from __future__ import annotations

import dis
import os
import socket
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

import ipcbus
import ipcbus.sync
from ipcbus._events import HandshakeCompleted
from ipcbus._protocol import Connection, Role
from ipcbus._wire import Pong

RENDERERS = Path(__file__).parent / "renderers"
SRC = Path(__file__).resolve().parent.parent / "src"


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a renderer child: finds this checkout's ipcbus first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@asynccontextmanager
async def running_main(**options: Any) -> AsyncIterator[ipcbus.IpcMain]:
    """An ``IpcMain`` inside ``async with``, with a short shutdown grace."""
    options.setdefault("shutdown_grace", 2.0)
    async with ipcbus.IpcMain(**options) as ipc_main:
        yield ipc_main


async def stop_main_while(
    register: Callable[[ipcbus.IpcMain], None],
    act: Callable[[ipcbus.IpcRenderer], Awaitable[object]],
    running: Callable[[], Awaitable[object]],
) -> list[ipcbus.IpcError]:
    """Main leaves its ``async with`` while a renderer's call runs; what the renderer met.

    Main (``shutdown_grace=0.2``) serves what ``register`` adds; a renderer
    connects and runs ``act``; once ``running()`` returns (the handler is
    running), main stops. Returns the ``IpcError``s ``act`` raised.
    """
    errors: list[ipcbus.IpcError] = []
    stop = anyio.Event()

    async def run_main(*, task_status: anyio.abc.TaskStatus[ipcbus.Listener]) -> None:
        async with running_main(shutdown_grace=0.2) as ipc_main:
            register(ipc_main)
            task_status.started(await ipc_main.listen())
            await stop.wait()

    async def call(listener: ipcbus.Listener) -> None:
        try:
            async with ipcbus.connect(listener.address, token=listener.token) as renderer:
                await act(renderer)
        except ipcbus.IpcError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, await tg.start(run_main))
        await running()
        stop.set()  # main leaves ``async with`` while the call runs
    return errors


async def spawn_script(
    ipc_main: ipcbus.IpcMain, tmp_path: Path, source: str, *args: str
) -> ipcbus.WebContents:
    """Write ``source`` (dedented) to a file and spawn it as a renderer."""
    script = tmp_path / f"renderer_{os.urandom(4).hex()}.py"
    script.write_text(textwrap.dedent(source))
    return await ipc_main.spawn([sys.executable, str(script), *args], env=child_env())


async def spawn_renderer(ipc_main: ipcbus.IpcMain, name: str, *args: str) -> ipcbus.WebContents:
    """Spawn ``tests/renderers/<name>.py`` as a renderer."""
    return await ipc_main.spawn(
        [sys.executable, str(RENDERERS / f"{name}.py"), *args], env=child_env()
    )


class Blocker:
    """An async handler (or listener) that waits forever and records how it ended."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.cancelled = anyio.Event()
        self.finalized = anyio.Event()
        self.calls = 0

    async def __call__(self, event: Any, *args: Any) -> None:
        self.calls += 1
        self.started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            self.cancelled.set()
            raise
        finally:
            self.finalized.set()


class LoopTurns:
    """``async with LoopTurns() as loop:`` counts in ``loop.turns`` the turns the
    event loop took while the block ran (a task that counts and yields at once)."""

    def __init__(self) -> None:
        self.turns = 0
        self._tg: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> LoopTurns:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._count)
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        return await self._tg.__aexit__(*exc_info)

    async def _count(self) -> None:
        while True:
            self.turns += 1
            await anyio.lowlevel.checkpoint()


async def wait_for(event: anyio.Event, timeout: float = 5.0) -> None:
    """Wait for ``event``; fail the test (not hang) after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        await event.wait()


@contextmanager
def each_instruction(code: CodeType, step: Callable[[FrameType], None]) -> Iterator[None]:
    """Call ``step(frame)`` before each instruction of ``code`` a signal could land on.

    That is every one but a NOP (Python runs a signal's handler at a call or a
    jump), so a ``step`` that raises KeyboardInterrupt at the n-th is a Ctrl-C
    landing there.
    """
    nops = {i.offset for i in dis.get_instructions(code) if i.opname == "NOP"}

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode" and frame.f_lasti not in nops:
            step(frame)
        return local

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code is not code:
            return None
        frame.f_trace_opcodes, frame.f_trace_lines = True, False
        return local

    sys.settrace(tracer)
    try:
        yield
    finally:
        sys.settrace(None)


class HandDrivenMain:
    """Main's end of one connection, driven by hand: a test decides when each frame goes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.conn = Connection(Role.MAIN, token="t", renderer_id=7)

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def next_event(self) -> Any:
        while True:
            for event in self.conn.events_received():
                return event
            data = self.sock.recv(65536)
            assert data, "the renderer closed the connection"
            self.conn.receive_data(data)
            self.flush()  # Welcome, Pong

    def ping(self, nonce: int) -> None:
        """Send a Ping and wait for the renderer's Pong (the core keeps Pongs to itself)."""
        self.conn.send_ping(nonce)
        self.flush()
        self.sock.settimeout(10)
        data = self.sock.recv(65536)
        pong = Connection(Role.MAIN, token="t")
        pong._queue(Pong(nonce))
        assert data == bytes(pong.data_to_send()), data


@contextmanager
def connected_by_hand(
    server: socket.socket, address: str
) -> Iterator[tuple[ipcbus.sync.IpcRenderer, HandDrivenMain]]:
    """A blocking renderer connected to ``address``, where ``server`` listens, and
    main's end of its connection driven by hand, past the handshake."""
    server.settimeout(10)
    ipc = ipcbus.sync.IpcRenderer(heartbeat_interval=None)
    connecting = threading.Thread(target=ipc.connect, args=(address,), kwargs={"token": "t"})
    connecting.start()
    sock, _ = server.accept()
    with sock:
        sock.settimeout(10)
        main = HandDrivenMain(sock)
        assert isinstance(main.next_event(), HandshakeCompleted)
        connecting.join(10)
        try:
            yield ipc, main
        finally:
            ipc.close()


def patch_link_writes(monkeypatch: Any, replacement: Callable[..., None]) -> None:
    """Every write of a blocking link goes through ``replacement``, called as
    ``ipcbus._blockio.send_all`` is: a call's request (written in ``_blockcall``)
    and everything flushed (``_blocking``)."""
    from ipcbus import _blockcall, _blocking

    for module in (_blocking, _blockcall):
        monkeypatch.setattr(module, "send_all", replacement)


@contextmanager
def general_reads() -> Iterator[list[int]]:
    """While inside, count the reads that go the general way, through
    ``Connection.receive_data`` (in every connection of this process): ``[n]``."""
    count = [0]
    receive_data = Connection.receive_data

    def counted(self: Connection, data: bytes | bytearray | memoryview) -> bool:
        count[0] += 1
        return receive_data(self, data)

    Connection.receive_data = counted  # type: ignore[method-assign]
    try:
        yield count
    finally:
        Connection.receive_data = receive_data  # type: ignore[method-assign]
