"""Guards and channel allowlists (SPEC section 9), over real sockets and processes."""

from __future__ import annotations

import logging
import os
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import ipcbus
from ipcbus import MessageChannelMain

from .helpers import child_env, running_main, spawn_script
from .test_ports import reports

# A renderer that makes the calls main asks for and reports each outcome.
CALLER = """
import anyio, ipcbus
r = ipcbus.IpcRenderer()

@r.on("call")
async def call(event, how, channel, args):
    try:
        if how == "invoke":
            result = await r.invoke(channel, *args)
        elif how == "send_sync":
            result = await r.send_sync(channel, *args)
        elif how == "stream":
            result = [x async for x in r.stream(channel, *args)]
        elif how == "send":
            result = await r.send(channel, *args)
        else:
            channel_ = ipcbus.MessageChannelMain()
            closed = anyio.Event()
            channel_.port1.on("close", closed.set)
            channel_.port1.start()
            await r.post_message(channel, args[0], [channel_.port2])
            await closed.wait()
            result = "port closed"
        await r.send("report", ["ok", result])
    except ipcbus.IpcError as exc:
        await r.send("report", [type(exc).__name__, str(exc)])

async def main():
    async with r.connect():
        await r.wait_closed()
anyio.run(main)
"""


async def test_a_guard_rejects_before_arguments_are_decoded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main, reports(ipc_main) as seen:
            called: list[str] = []

            @ipc_main.handle("add")
            def add(event: ipcbus.IpcMainInvokeEvent, a: int, b: int) -> int:
                called.append("add")
                return a + b

            @ipc_main.on("note")
            def note(event: ipcbus.IpcMainEvent, text: str) -> None:
                called.append(text)
                event.return_value = "noted"

            @ipc_main.handle("numbers")
            async def numbers(event: ipcbus.IpcMainInvokeEvent) -> AsyncIterator[int]:
                called.append("numbers")
                yield 1

            @ipc_main.add_guard
            def only_trusted(event: ipcbus.IpcMainEvent | ipcbus.IpcMainInvokeEvent) -> None:
                assert event.process_id == event.sender.process_id
                if event.channel in ("add", "numbers") and event.sender.id != trusted.id:
                    raise PermissionError(f"{event.channel} is for renderer {trusted.id} only")

            trusted = await spawn_script(ipc_main, tmp_path, CALLER)
            other = await spawn_script(ipc_main, tmp_path, CALLER)
            # Arguments that would fail validation: a rejected call never gets that far.
            await other.send("call", "invoke", "add", ["not", "ints"])
            assert await seen.receive() == [
                "RemoteError",
                f"Error invoking remote method 'add': PermissionError: "
                f"add is for renderer {trusted.id} only",
            ]
            await other.send("call", "stream", "numbers", [])
            assert (await seen.receive())[0] == "RemoteError"
            await trusted.send("call", "invoke", "add", [1, 2])
            assert await seen.receive() == ["ok", 3]
            await trusted.send("call", "invoke", "add", ["not", "ints"])
            assert (await seen.receive())[0] == "ValidationError"
            await other.send("call", "send_sync", "note", ["hello"])
            assert await seen.receive() == ["ok", "noted"]
            assert called == ["add", "hello"]
            assert "rejected a request on 'add' from renderer" in caplog.text


async def test_a_guard_added_after_renderers_connected_applies_to_them(tmp_path: Path) -> None:
    """Without guards or allowlists a connection has no gate; adding a guard installs one."""
    with anyio.fail_after(20):
        async with running_main() as ipc_main, reports(ipc_main) as seen:
            ipc_main.handle("add", lambda event, a, b: a + b)
            renderer = await spawn_script(ipc_main, tmp_path, CALLER)
            await renderer.send("call", "invoke", "add", [1, 2])
            assert await seen.receive() == ["ok", 3]

            def closed(event: ipcbus.IpcMainEvent | ipcbus.IpcMainInvokeEvent) -> None:
                if event.channel == "add":
                    raise PermissionError("add is closed")

            ipc_main.add_guard(closed)
            await renderer.send("call", "invoke", "add", [1, 2])
            assert await seen.receive() == [
                "RemoteError",
                "Error invoking remote method 'add': PermissionError: add is closed",
            ]
            ipc_main.remove_guard(closed)
            await renderer.send("call", "invoke", "add", [2, 2])
            assert await seen.receive() == ["ok", 4]


async def test_rejected_sends_are_dropped_logged_and_their_ports_closed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ipcbus")
    with anyio.fail_after(20):
        async with running_main() as ipc_main, reports(ipc_main) as seen:
            got: list[Any] = []
            ipc_main.on("data", lambda event, value: got.append(value))
            ipc_main.on("mail", lambda event, value: got.append(value))

            def no_ports(event: ipcbus.IpcMainEvent) -> None:
                if isinstance(event, ipcbus.IpcMainEvent) and event.ports:
                    raise PermissionError("no ports today")

            ipc_main.add_guard(no_ports)
            contents = await spawn_script(ipc_main, tmp_path, CALLER)
            await contents.send("call", "post_message", "mail", ["with a port"])
            assert await seen.receive() == ["ok", "port closed"]
            await contents.send("call", "send", "data", [1])
            assert await seen.receive() == ["ok", None]
            await contents.send("call", "invoke", "missing", [])
            assert (await seen.receive())[0] == "NoHandlerError"  # the send came first
            assert got == [1]
            assert "rejected a message on 'mail'" in caplog.text
            assert "PermissionError: no ports today" in caplog.text
            assert "with a port" not in caplog.text  # payloads are never logged


async def test_async_guards_keep_the_order_of_messages(tmp_path: Path) -> None:
    source = """
    import anyio, ipcbus
    async def main():
        async with ipcbus.connect() as r:
            for i in range(60):
                await r.send("seq", i)
            await r.send("report", "sent")
            await r.wait_closed()
    anyio.run(main)
    """
    with anyio.fail_after(20):
        async with running_main() as ipc_main, reports(ipc_main) as seen:
            got: list[int] = []
            ipc_main.on("seq", lambda event, i: got.append(i))

            @ipc_main.add_guard
            async def takes_its_time(event: ipcbus.IpcMainEvent) -> None:
                if event.channel == "seq":
                    for _ in range(3):
                        await anyio.lowlevel.checkpoint()

            def returns_an_awaitable(event: ipcbus.IpcMainEvent) -> Any:
                async def check() -> None:
                    await anyio.lowlevel.checkpoint()

                return check()  # a plain function returning an awaitable works too

            ipc_main.add_guard(returns_an_awaitable)
            await spawn_script(ipc_main, tmp_path, source)
            assert await seen.receive() == "sent"
            assert got == list(range(60))
            ipc_main.remove_guard(takes_its_time)
            ipc_main.remove_guard(returns_an_awaitable)
            assert ipc_main._guards.callbacks == ()


async def test_async_guard_rejections(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main, reports(ipc_main) as seen:
            ipc_main.handle("echo", lambda event, x: x)

            @ipc_main.add_guard
            async def deny_even(event: ipcbus.IpcMainInvokeEvent) -> None:
                await anyio.lowlevel.checkpoint()
                if event.channel == "echo" and event.sender.id % 2 == 0:
                    raise LookupError("even renderers may not echo")

            first = await spawn_script(ipc_main, tmp_path, CALLER)
            second = await spawn_script(ipc_main, tmp_path, CALLER)
            odd, even = (first, second) if first.id % 2 else (second, first)
            await even.send("call", "invoke", "echo", ["x"])
            assert await seen.receive() == [
                "RemoteError",
                "Error invoking remote method 'echo': LookupError: even renderers may not echo",
            ]
            await odd.send("call", "invoke", "echo", ["x"])
            assert await seen.receive() == ["ok", "x"]


async def test_allowed_channels_of_main_spawn_and_listen(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with running_main(allowed_channels=["report", "call", "echo", "sum"]) as ipc_main:
            async with reports(ipc_main) as seen:
                called: list[str] = []

                def handler(event: ipcbus.IpcMainInvokeEvent, *args: Any) -> str:
                    called.append(event.channel)
                    return event.channel

                for channel in ("echo", "sum", "other"):
                    ipc_main.handle(channel, handler)

                wide = await spawn_script(ipc_main, tmp_path, CALLER)
                narrow = await ipc_main.spawn(
                    [*_python(), str(_script(tmp_path, CALLER))],
                    env=child_env(),
                    allowed_channels={"report", "echo"},
                )
                await wide.send("call", "invoke", "other", [])
                assert await seen.receive() == [
                    "RemoteError",
                    f"Error invoking remote method 'other': PermissionError: channel 'other' "
                    f"is not allowed for renderer {wide.id} (see allowed_channels)",
                ]
                await wide.send("call", "invoke", "sum", [])
                assert await seen.receive() == ["ok", "sum"]
                await narrow.send("call", "invoke", "sum", [])
                assert "channel 'sum' is not allowed" in (await seen.receive())[1]
                await narrow.send("call", "invoke", "echo", [1])
                assert await seen.receive() == ["ok", "echo"]
                assert called == ["sum", "echo"]

                listener = await ipc_main.listen(allowed_channels=["echo"])
                source = f"""
                import anyio, ipcbus
                async def main():
                    async with ipcbus.connect({listener.address!r}, token={listener.token!r}) as r:
                        try:
                            await r.invoke("sum")
                        except ipcbus.RemoteError as exc:
                            print(exc.type_name, exc.remote_message, flush=True)
                        print(await r.invoke("echo"), flush=True)
                anyio.run(main)
                """
                script = _script(tmp_path, source)
                result = await anyio.run_process([*_python(), str(script)], env=child_env())
                lines = result.stdout.decode().splitlines()
                assert lines[0].startswith("PermissionError channel 'sum' is not allowed")
                assert lines[1] == "echo"


async def test_allowlists_reject_sends_and_port_messages_too(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with running_main(allowed_channels=["report", "ok"]) as ipc_main:
            async with reports(ipc_main) as seen:
                got: list[Any] = []
                ipc_main.on("blocked", lambda event, *args: got.append(args))
                ipc_main.on("ok", lambda event, *args: got.append(args))
                contents = await spawn_script(ipc_main, tmp_path, CALLER)
                await contents.send("call", "send", "blocked", [1])
                assert await seen.receive() == ["ok", None]
                await contents.send("call", "post_message", "blocked", ["x"])
                assert await seen.receive() == ["ok", "port closed"]
                await contents.send("call", "send", "ok", [2])
                assert await seen.receive() == ["ok", None]
                await contents.send("call", "send_sync", "ok", [3])
                assert (await seen.receive())[0] == "ok"
                assert got == [(2,), (3,)]
                # Allowlists screen what renderers send; main's messages and port
                # frames are not screened: the renderer has no "anything" listener,
                # closes the port, and main's end hears it.
                channel = MessageChannelMain()
                await contents.post_message("anything", None, [channel.port2])
                assert [event async for event in channel.port1] == []


def test_allowed_channels_must_be_channel_names() -> None:
    with pytest.raises(TypeError, match="not a str"):
        ipcbus.IpcMain(allowed_channels="echo")
    with pytest.raises(ValueError, match="non-empty"):
        ipcbus.IpcMain(allowed_channels=[""])
    with pytest.raises(TypeError, match="callable"):
        ipcbus.IpcMain().add_guard(3)  # type: ignore[type-var]


def _python() -> list[str]:
    return [sys.executable]


def _script(tmp_path: Path, source: str) -> Path:
    script = tmp_path / f"script_{os.urandom(4).hex()}.py"
    script.write_text(textwrap.dedent(source))
    return script
