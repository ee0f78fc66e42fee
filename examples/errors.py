"""Every error ipcbus raises on purpose, where it is raised, and what it says.

All of them derive from ``ipcbus.IpcError``. Problems found on this side
(bad registration, a value that cannot be encoded) raise before anything is
sent; problems on the other side come back as the caller's exception; a
listener that raises is logged on the ``ipcbus`` logger. The last part shows
how a renderer's end is reported to ``on_disconnect`` hooks.

Run: ``python examples/errors.py``
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import anyio

import ipcbus
from ipcbus import (
    AuthenticationError,
    ConnectionClosedError,
    DisconnectDetails,
    HandlerExistsError,
    IpcError,
    IpcMain,
    IpcMainEvent,
    IpcMainInvokeEvent,
    NoHandlerError,
    RemoteError,
    SerializationError,
    ValidationError,
    WebContents,
)

EXPECTED = """
== registration and lifecycle
HandlerExistsError: Attempted to register a second handler for 'add'
TypeError: listener must be callable, not str
RuntimeError: IpcMain.listen() needs a running IpcMain: call it inside 'async with ipc_main:'
== calls
NoHandlerError: No handler registered for 'nope'
NoHandlerError: No listeners registered for 'nope'
ValidationError: Invalid arguments for 'add': argument 0 (a: int) does not fit its \
annotation (Expected `int`, got `str` - at `$[0]`)
ValidationError: Invalid arguments for 'add': expected 2 arguments, got 1
SerializationError: Cannot invoke on channel 'add': argument 1: objects of type \
builtins.object cannot be sent.
SerializationError: Cannot send on channel 'log': argument 0['a'][1]: objects of type \
builtins.object cannot be sent.
SerializationError: Cannot invoke on channel 'add': argument 0: the integer \
18446744073709551616 is outside msgpack's range (-2**63 to 2**64-1).
   a SerializationError is also a TypeError: True
RemoteError: Error invoking remote method 'fail': KeyError: 'missing'
   log ERROR: the result for 'bad-result' (of type object) cannot be sent; the \
caller gets a RemoteError
RemoteError: Error invoking remote method 'bad-result': SerializationError: \
Cannot return a value on channel 'bad-result': the value: objects of type \
builtins.object cannot be sent.
   the connection lives on: add(1, 2) = 3
   log ERROR: listener for 'log' from renderer 1 raised
   the second 'log' listener still ran: 'hello'
   log ERROR: listener for 'ask' from renderer 1 raised
RemoteError: Error invoking remote method 'ask': RuntimeError: no answer today
ConnectionClosedError: connection to main is closed (the renderer disconnected); \
connect again to send more
   all of them are IpcError: True
== wrong token
   log WARNING: connection to a renderer before its handshake ended: \
authentication failed: wrong token
AuthenticationError: main refused the connection: authentication failed: wrong token; \
check the token (Listener.token in main, token= or $IPCBUS_TOKEN here)
== shutdown while a handler runs
[child   ] RemoteError: Error invoking remote method 'forever': CancelledError: the \
handler for 'forever' was cancelled before it replied; the reply was never sent
renderer 1 gone: clean-exit, exit code 0
== how renderers end
renderer 1 gone: clean-exit, exit code 0
renderer 2 gone: crashed, exit code 3
renderer 3 gone: killed, exit code -9
"""


class PrintLogs(logging.Handler):
    """Show ipcbus's log records as one line each (no tracebacks) on stdout."""

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage().partition(" Supported types")[0]
        print(f"   log {record.levelname}: {text}", flush=True)


def show(exc: BaseException) -> None:
    # The long "Supported types are ..." tail of SerializationError is cut here.
    print(f"{type(exc).__name__}: {str(exc).partition(' Supported types')[0]}", flush=True)


async def registration() -> None:
    print("== registration and lifecycle")
    ipc_main = IpcMain()
    ipc_main.handle("add", lambda event, a, b: a + b)
    try:
        ipc_main.handle("add", lambda event, a, b: a - b)
    except HandlerExistsError as exc:
        show(exc)
    try:
        ipc_main.on("log", "not a function")  # type: ignore[call-overload]
    except TypeError as exc:
        show(exc)
    try:
        await ipc_main.listen()  # not inside `async with ipc_main:`
    except RuntimeError as exc:
        show(exc)


async def calls() -> None:
    print("== calls")
    ipc_main = IpcMain()
    errors: list[IpcError] = []
    second_listener_ran = anyio.Event()
    heard: list[str] = []

    @ipc_main.handle("add")
    def add(event: IpcMainInvokeEvent, a: int, b: int) -> int:
        return a + b

    @ipc_main.handle("fail")
    def fail(event: IpcMainInvokeEvent) -> None:
        raise KeyError("missing")

    @ipc_main.handle("bad-result")
    def bad_result(event: IpcMainInvokeEvent) -> object:
        return object()

    @ipc_main.on("log")
    def broken_listener(event: IpcMainEvent, text: str) -> None:
        raise ValueError("this listener is broken")

    @ipc_main.on("log")
    def good_listener(event: IpcMainEvent, text: str) -> None:
        heard.append(text)
        second_listener_ran.set()

    @ipc_main.on("ask")
    def ask(event: IpcMainEvent) -> None:
        raise RuntimeError("no answer today")  # before any return_value: RemoteError

    async with ipc_main:
        async with ipc_main.connect_local() as renderer:
            for call in (
                lambda: renderer.invoke("nope"),
                lambda: renderer.send_sync("nope"),
                lambda: renderer.invoke("add", "one", 2),
                lambda: renderer.invoke("add", 1),
                lambda: renderer.invoke("add", 1, object()),
                lambda: renderer.send("log", {"a": [1, object()]}),
                lambda: renderer.invoke("add", 2**64, 1),
            ):
                try:
                    await call()
                except (NoHandlerError, ValidationError, SerializationError) as exc:
                    show(exc)
                    errors.append(exc)
            also_type_error = isinstance(errors[-1], TypeError)
            print(f"   a SerializationError is also a TypeError: {also_type_error}")

            for channel in ("fail", "bad-result"):
                try:
                    await renderer.invoke(channel)
                except RemoteError as exc:
                    show(exc)
                    errors.append(exc)
            print(f"   the connection lives on: add(1, 2) = {await renderer.invoke('add', 1, 2)}")

            await renderer.send("log", "hello")
            await second_listener_ran.wait()
            print(f"   the second 'log' listener still ran: {heard[0]!r}")
            try:
                await renderer.send_sync("ask")
            except RemoteError as exc:
                show(exc)
                errors.append(exc)
        try:
            await renderer.invoke("add", 1, 2)  # after the connection closed
        except ConnectionClosedError as exc:
            show(exc)
            errors.append(exc)
    print(f"   all of them are IpcError: {all(isinstance(e, IpcError) for e in errors)}")


async def wrong_token() -> None:
    print("== wrong token")
    ipc_main = IpcMain()
    async with ipc_main:
        listener = await ipc_main.listen()
        try:
            async with ipcbus.connect(listener.address, token="wrong"):
                pass
        except AuthenticationError as exc:
            show(exc)


async def shutdown_while_handler_runs() -> None:
    print("== shutdown while a handler runs")
    ipc_main = IpcMain(shutdown_grace=0.2)  # handlers get 0.2 s, then are cancelled
    started = anyio.Event()

    @ipc_main.handle("forever")
    async def forever(event: IpcMainInvokeEvent) -> None:
        started.set()
        await anyio.sleep_forever()

    async with ipc_main:
        contents = await ipc_main.spawn([sys.executable, __file__, "--child", "pending"])
        await started.wait()
    details = contents.disconnect_details
    assert details is not None
    print(f"renderer {contents.id} gone: {details.reason}, exit code {details.exit_code}")


async def how_renderers_end() -> None:
    print("== how renderers end")
    ipc_main = IpcMain()
    gone = anyio.Event()

    @ipc_main.on_disconnect
    def on_gone(contents: WebContents, details: DisconnectDetails) -> None:
        print(f"renderer {contents.id} gone: {details.reason}, exit code {details.exit_code}")
        gone.set()

    async with ipc_main:
        for how in ("clean", "crash", "kill"):
            gone = anyio.Event()
            await ipc_main.spawn([sys.executable, __file__, "--child", how])
            await gone.wait()


async def main() -> None:
    log = logging.getLogger("ipcbus")
    log.addHandler(PrintLogs())
    log.setLevel(logging.INFO)
    log.propagate = False
    await registration()
    await calls()
    await wrong_token()
    await shutdown_while_handler_runs()
    await how_renderers_end()


async def child(how: str) -> None:
    async with ipcbus.connect() as renderer:
        if how == "pending":
            try:
                await renderer.invoke("forever")
            except RemoteError as exc:
                print(f"[child   ] RemoteError: {exc}", flush=True)
        elif how == "crash":
            os._exit(3)  # no Goodbye, exit code 3
        elif how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        anyio.run(child, sys.argv[2])
    else:
        anyio.run(main)
