"""``listen()`` + ``connect()``: renderers that main did not spawn.

Main listens on a private unix socket (and on loopback TCP), then starts
children the ordinary way. Each child finds main through ``$IPCBUS_ADDRESS``
and ``$IPCBUS_TOKEN`` (``ipcbus.connect()`` with no arguments reads them).
Last, the ``ipcbus call`` command line invokes a handler the same way.

Run: ``python examples/listen_connect.py``
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import anyio

import ipcbus
from ipcbus import DisconnectDetails, IpcMain, IpcMainInvokeEvent, WebContents

EXPECTED = """
[main    ] listening on unix:<private dir>/main.sock
[main    ] directory mode 0o700, socket mode 0o600
[main    ] renderer 1 connected
[main    ] hello; event.process_id is the renderer's pid: True
[child   ] main answered 'hello, renderer 1'
[main    ] renderer 1 gone: clean-exit
[main    ] listening on tcp://127.0.0.1:<port> (a real port, not 0: True)
[main    ] renderer 2 connected
[main    ] hello; event.process_id is the renderer's pid: True
[child   ] main answered 'hello, renderer 2'
[main    ] renderer 2 gone: clean-exit
[main    ] renderer 3 connected
[main    ] renderer 3 gone: clean-exit
[main    ] `ipcbus call ADDRESS add 1 2` printed: 3
[main    ] after close, the socket and its directory exist: False
"""


def say(side: str, text: str) -> None:
    print(f"[{side:8}] {text}", flush=True)


async def main() -> None:
    ipc_main = IpcMain()
    gone = anyio.Event()

    @ipc_main.on_connect
    def connected(contents: WebContents) -> None:
        say("main", f"renderer {contents.id} connected")

    @ipc_main.on_disconnect
    def disconnected(contents: WebContents, details: DisconnectDetails) -> None:
        say("main", f"renderer {contents.id} gone: {details.reason}")
        gone.set()

    @ipc_main.handle("hello")
    def hello(event: IpcMainInvokeEvent, claimed_pid: int) -> str:
        # On a Linux unix socket process_id comes from the kernel (SO_PEERCRED);
        # over TCP it is the pid the renderer announced in its handshake.
        same = event.process_id == claimed_pid
        say("main", f"hello; event.process_id is the renderer's pid: {same}")
        return f"hello, renderer {event.sender.id}"

    ipc_main.handle("add", lambda event, a, b: a + b)

    async def run_child(address: str, token: str) -> None:
        nonlocal gone
        gone = anyio.Event()
        # Hand the address and token over in the environment, not on the command
        # line: other users can read a process's argv.
        env = {**os.environ, "IPCBUS_ADDRESS": address, "IPCBUS_TOKEN": token}
        await anyio.run_process([sys.executable, __file__, "--child"], env=env, stdout=None)
        await gone.wait()

    async with ipc_main:
        listener = await ipc_main.listen()  # private 0700 directory, 0600 socket, random token
        socket_path = Path(listener.address.removeprefix("unix:"))
        say("main", f"listening on unix:<private dir>/{socket_path.name}")
        dir_mode = stat.S_IMODE((await anyio.Path(socket_path.parent).stat()).st_mode)
        sock_mode = stat.S_IMODE((await anyio.Path(socket_path).stat()).st_mode)
        say("main", f"directory mode {dir_mode:#o}, socket mode {sock_mode:#o}")
        await run_child(listener.address, listener.token)

        tcp = await ipc_main.listen("tcp://127.0.0.1:0")  # loopback only, unless TLS
        real_port = tcp.address.rpartition(":")[2]
        say("main", f"listening on tcp://127.0.0.1:<port> (a real port, not 0: {real_port != '0'})")
        await run_child(tcp.address, tcp.token)

        gone = anyio.Event()
        result = await anyio.run_process(
            [sys.executable, "-m", "ipcbus", "call", listener.address, "add", "1", "2"],
            env={**os.environ, "IPCBUS_TOKEN": listener.token},
        )
        await gone.wait()
        say("main", f"`ipcbus call ADDRESS add 1 2` printed: {result.stdout.decode().strip()}")

        await listener.aclose()
        exists = await anyio.Path(socket_path.parent).exists()  # the socket is inside
        say("main", f"after close, the socket and its directory exist: {exists}")


async def child() -> None:
    async with ipcbus.connect() as renderer:  # reads $IPCBUS_ADDRESS and $IPCBUS_TOKEN
        answer = await renderer.invoke("hello", os.getpid())
        say("child", f"main answered {answer!r}")


if __name__ == "__main__":
    anyio.run(child if sys.argv[1:] == ["--child"] else main)
