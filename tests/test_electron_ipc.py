"""Electron's IPC specs, mirrored where the existing tests do not cover them.

Each test names the Electron spec file and ``it(...)`` it mirrors. Electron's
``ipcMain``/``ipcRenderer``/``webContents`` become ``IpcMain``/``IpcRenderer``/
``WebContents``; a ``BrowserWindow`` running a script becomes a
``connect_local()`` renderer or a spawned child.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import hashlib
import logging
import socket
from collections.abc import Generator
from pathlib import Path
from typing import Any

import anyio
import pytest

import ipcbus
from ipcbus import (
    HandlerExistsError,
    IpcMain,
    IpcMainEvent,
    IpcRenderer,
    IpcRendererEvent,
    RemoteError,
    SerializationError,
)

from .helpers import running_main, spawn_script, wait_for


class Captured:
    """The arguments of the messages main receives on one channel."""

    def __init__(self, ipc_main: IpcMain, channel: str) -> None:
        self.args: list[tuple[Any, ...]] = []
        self.arrived = anyio.Event()
        ipc_main.on(channel, self._listener)

    def _listener(self, event: IpcMainEvent, *args: Any) -> None:
        self.args.append(args)
        self.arrived.set()

    async def first(self) -> tuple[Any, ...]:
        await wait_for(self.arrived)
        return self.args[0]


async def renderer_invoke(renderer: IpcRenderer, *args: Any) -> dict[str, Any]:
    """Electron's ``rendererInvoke``: the result, or the error's message."""
    try:
        return {"result": await renderer.invoke("test", *args)}
    except ipcbus.IpcError as exc:
        return {"error": str(exc)}


# ---- spec/api-ipc-spec.ts: describe('invoke') ---------------------------------------


async def test_invoke_receives_a_response_from_a_synchronous_handler() -> None:
    """api-ipc-spec.ts, invoke: it('receives a response from a synchronous handler')."""
    seen: list[Any] = []

    def handler(event: ipcbus.IpcMainInvokeEvent, arg: int) -> int:
        seen.append(arg)
        return 3

    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle_once("test", handler)
            assert await renderer_invoke(renderer, 123) == {"result": 3}
            assert seen == [123]
            # handle_once: gone after its first call.
            assert await renderer_invoke(renderer, 123) == {
                "error": "No handler registered for 'test'"
            }


async def test_invoke_receives_a_response_from_a_lazy_awaitable() -> None:
    """Beside api-ipc-spec.ts, invoke: it('receives a response from an asynchronous
    handler'): the handler returns a lazy awaitable (no Electron test of that name).

    Python's thenable is an awaitable that is not a coroutine: an object whose
    ``__await__`` only starts the work. The reply must come from awaiting it.
    """

    class Lazy:
        started = False

        def __await__(self) -> Generator[Any, None, int]:
            self.started = True
            yield from asyncio.sleep(0).__await__()
            return 3

    returned: list[Lazy] = []

    def handler(event: ipcbus.IpcMainInvokeEvent) -> Lazy:
        returned.append(Lazy())
        return returned[-1]

    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle_once("test", handler)
            assert await renderer_invoke(renderer) == {"result": 3}
            assert returned[0].started


async def test_invoke_handler_returning_a_future() -> None:
    """api-ipc-spec.ts, invoke: it('receives a response from an asynchronous handler'),
    with a plain handler returning an ``asyncio.Future`` (a Promise, not an async
    function)."""

    async def later() -> int:
        await asyncio.sleep(0)
        return 3

    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle_once("test", lambda event, arg: asyncio.ensure_future(later()))
            assert await renderer_invoke(renderer, 123) == {"result": 3}


async def test_invoke_error_when_the_result_cannot_be_cloned() -> None:
    """Beside api-ipc-renderer-spec.ts, send(): it('does not crash when sending external
    objects'), for a result (no Electron test of that name): a dict holding a function."""
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle_once("test", lambda event: {"not_cloneable": lambda: None})
            with pytest.raises(RemoteError, match="function") as info:
                await renderer.invoke("test")
            assert info.value.channel == "test"
            assert info.value.type_name == "SerializationError"
            # The connection lives on.
            ipc_main.handle_once("test", lambda event: "fine")
            assert await renderer.invoke("test") == "fine"


async def test_invoke_handler_that_raises_before_its_first_await_is_not_unhandled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Beside api-ipc-spec.ts, invoke: it('receives an error from an asynchronous
    handler'): and nothing is reported as unhandled (no Electron test of that name).

    Python's unhandled rejection is asyncio's "Task exception was never
    retrieved" (logged on the ``asyncio`` logger when the task is collected)
    or an exception reaching the loop's exception handler.
    """

    async def handler(event: ipcbus.IpcMainInvokeEvent) -> None:
        raise ValueError("some error")

    loop_errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda loop, context: loop_errors.append(context))
    try:
        with caplog.at_level(logging.DEBUG), anyio.fail_after(5):
            async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
                ipc_main.handle_once("test", handler)
                result = await renderer_invoke(renderer)
                assert "some error" in result["error"]
                await asyncio.sleep(0)
            gc.collect()
            await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert loop_errors == []
    assert not [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]


async def test_invoke_a_removed_handler_and_a_second_handler() -> None:
    """api-ipc-spec.ts, invoke: it('throws an error when invoking a handler that was
    removed') and it('forbids multiple handlers')."""
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle("test", lambda event: None)
            with pytest.raises(HandlerExistsError, match="second handler"):
                ipc_main.handle("test", lambda event: None)
            assert await renderer_invoke(renderer) == {"result": None}
            ipc_main.remove_handler("test")
            result = await renderer_invoke(renderer)
            assert "No handler registered" in result["error"]


# ---- spec/api-ipc-spec.ts: describe('payloads across the shared-memory threshold') ---

SIZES = [0, 1, 65535, 65536, 65537, 256 * 1024 + 3, 3 * 1024 * 1024 + 1]


def _digest(value: Any) -> Any:
    if isinstance(value, str):
        return {"string": len(value), "ends": value[:4] + value[-4:]}
    if isinstance(value, bytes):
        return {"bytes": len(value), "sha": hashlib.sha256(value).hexdigest()}
    return {"text": _digest(value["text"]), "bytes": _digest(value["bytes"]), "meta": value["meta"]}


_PATTERN = bytes((i * 7) & 255 for i in range(256))


def _samples(n: int) -> list[Any]:
    text = "<" + "x" * n + ">"
    data = (_PATTERN * (n // 256 + 1))[:n]
    return [
        text,
        data,
        {"text": text, "bytes": data, "meta": {"n": n, "list": [1, "two", {"3": True}]}},
    ]


async def test_payloads_round_trip_through_invoke_send_sync_and_send() -> None:
    """api-ipc-spec.ts, payloads across the shared-memory threshold: it('round trips
    strings, typed arrays and nested objects of each size through invoke, sendSync and
    send')."""

    def echo_sync(event: IpcMainEvent, arg: Any) -> None:
        event.return_value = arg

    async def echo_send(event: IpcMainEvent, arg: Any) -> None:
        await event.sender.send("echo-large-reply", arg)

    with anyio.fail_after(60):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle("echo-large", lambda event, arg: arg)
            ipc_main.on("echo-large-sync", echo_sync)
            ipc_main.on("echo-large-send", echo_send)
            replies = anyio.create_memory_object_stream[Any](10)
            send_reply, receive_reply = replies
            renderer.on("echo-large-reply", lambda event, value: send_reply.send_nowait(value))
            with send_reply, receive_reply:
                for n in SIZES:
                    for value in _samples(n):
                        expected = _digest(value)
                        assert _digest(await renderer.invoke("echo-large", value)) == expected
                        assert _digest(await renderer.send_sync("echo-large-sync", value)) == (
                            expected
                        )
                        await renderer.send("echo-large-send", value)
                        assert _digest(await receive_reply.receive()) == expected


# ---- spec/api-ipc-main-spec.ts -----------------------------------------------------


async def test_send_sync_reply_after_the_renderer_is_gone_does_not_crash_main() -> None:
    """api-ipc-main-spec.ts, ipc.sendSync: it('does not crash when reply is not sent and
    browser is destroyed').

    The listener assigns ``return_value`` only after its renderer has left; main
    carries on serving the next renderer. (ipcbus cancels a connection's async
    listeners when it ends, hence the shield.)
    """
    entered, release, finished = anyio.Event(), anyio.Event(), anyio.Event()
    caller_failed = anyio.Event()

    async def listener(event: IpcMainEvent) -> None:
        entered.set()
        # An async listener is cancelled when its connection ends; shield the
        # wait so that the reply really is assigned after the renderer left.
        with anyio.CancelScope(shield=True), anyio.fail_after(5):
            await release.wait()
        event.return_value = None
        finished.set()

    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            ipc_main.once("send-sync-message", listener)
            async with ipc_main.connect_local() as renderer:
                contents = ipc_main.from_id(renderer.id)
                assert contents is not None

                async def call() -> None:
                    with pytest.raises(ipcbus.ConnectionClosedError):
                        await renderer.send_sync("send-sync-message")
                    caller_failed.set()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(call)
                    await entered.wait()
                    tg.start_soon(contents.close)  # the "browser" is destroyed
                    await caller_failed.wait()
                    assert contents.is_destroyed()
                    release.set()  # now the listener replies, to nobody
                    await finished.wait()
            await contents.wait_closed()
            ipc_main.on("send-sync-message", lambda event: setattr(event, "return_value", "ok"))
            async with ipc_main.connect_local() as other:
                assert await other.send_sync("send-sync-message") == "ok"


async def test_ipc_main_and_ipc_renderer_have_no_internal_listeners(tmp_path: Path) -> None:
    """api-ipc-main-spec.ts, ipcMain.on: it('is not used for internals'), and
    api-ipc-renderer-spec.ts, ipcRenderer.on: it('is not used for internals')."""
    source = """
    import anyio, ipcbus
    async def main():
        async with ipcbus.connect() as r:
            await r.send("names", r.event_names())
            await r.wait_closed()
    anyio.run(main)
    """
    with anyio.fail_after(20):
        ipc_main = IpcMain(shutdown_grace=2.0)
        assert ipc_main.event_names() == []
        async with ipc_main:
            async with ipc_main.connect_local() as renderer:
                assert ipc_main.event_names() == []
                assert renderer.event_names() == []
            names = anyio.Event()
            got: list[Any] = []

            def on_names(event: IpcMainEvent, value: Any) -> None:
                got.append(value)
                names.set()

            ipc_main.once("names", on_names)
            await spawn_script(ipc_main, tmp_path, source)
            await wait_for(names, 15)
            assert got == [[]]
            assert ipc_main.event_names() == []


async def test_ipc_main_on_can_be_replied_to() -> None:
    """api-ipc-main-spec.ts, ipcMain.on: it('can be replied to')."""

    async def echo(event: IpcMainEvent, arg: Any) -> None:
        await event.reply("test-echo", arg)

    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.on("test-echo", echo)
            got: list[Any] = []
            done = anyio.Event()

            def on_echo(event: IpcRendererEvent, value: Any) -> None:
                got.append((value, event.sender_id))
                done.set()

            renderer.on("test-echo", on_echo)
            await renderer.send("test-echo", "hello")
            await wait_for(done)
            assert got == [("hello", 0)]


def test_remove_all_listeners_of_one_channel_or_all() -> None:
    """api-ipc-main-spec.ts, ipcMain.removeAllListeners: it('removes only the given
    channel') and it('removes all channels if no channel is specified')."""
    for registry in (IpcMain(), IpcRenderer()):
        registry.on("channel1", lambda event: None)
        registry.on("channel2", lambda event: None)
        registry.remove_all_listeners("channel1")
        assert registry.event_names() == ["channel2"]
        registry.on("channel1", lambda event: None)
        registry.remove_all_listeners()
        assert registry.event_names() == []


# ---- spec/api-ipc-renderer-spec.ts: describe('send()') -----------------------------


async def test_send_values_like_electron() -> None:
    """api-ipc-renderer-spec.ts, send(): it('should work when sending an object containing
    id property'), it('can send instances of Date as Dates'), it('can send instances of
    Buffer') and it('can send objects that both reference the same object').

    A JS ``Date`` is an instant: its Python match is an aware ``datetime``,
    which arrives as a ``datetime`` in UTC (a naive one arrives as an ISO
    string; docs/guide.md section 11).
    """
    when = dt.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    child = {"hello": "world"}
    foo = {"name": "foo", "child": child}
    bar = {"name": "bar", "child": child}
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            captured = Captured(ipc_main, "message")
            await renderer.send("message", {"id": 1, "name": "ly"}, when, b"hello")
            await renderer.send("message", [foo, bar], foo, bar, child)
            await renderer.send_sync("message")  # both sends were dispatched before this
            obj, date, buffer = captured.args[0]
            assert obj == {"id": 1, "name": "ly"}
            assert isinstance(date, dt.datetime)
            assert date == when
            assert date.isoformat() == "2024-05-06T05:08:09.123000+00:00"
            assert type(buffer) is bytes
            assert buffer == b"hello"
            assert captured.args[1] == ([foo, bar], foo, bar, child)


async def test_send_of_unsendable_objects_raises_and_the_connection_lives_on() -> None:
    """api-ipc-renderer-spec.ts, send(): it('throws when sending objects with DOM class
    prototypes') and it('does not crash when sending external objects')."""

    class Location:
        href = "about:blank"

    with anyio.fail_after(5), socket.socket() as external:
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            captured = Captured(ipc_main, "message")
            with pytest.raises(SerializationError, match=r"'message'.*Location"):
                await renderer.send("message", Location())
            with pytest.raises(SerializationError, match=r"'message'.*socket"):
                await renderer.send("message", external)
            await renderer.send("message", "still here")
            assert await captured.first() == ("still here",)


async def test_send_of_a_cyclic_value_fails_at_the_caller_and_the_connection_lives_on() -> None:
    """api-ipc-renderer-spec.ts, send(): it('can handle cyclic references').

    Deliberate difference: msgpack has no references, so ipcbus cannot send a
    cyclic value (Electron's structured clone can). It must fail at the caller
    with nothing sent, and the connection must live on.
    """
    array: list[Any] = [5]
    array.append(array)
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            captured = Captured(ipc_main, "message")
            with pytest.raises(SerializationError, match=r"'message'.*contains itself"):
                await renderer.send("message", array)
            await renderer.send("message", "after")
            assert await captured.first() == ("after",)


async def test_send_of_a_cyclic_value_raises_serialization_error() -> None:
    """api-ipc-renderer-spec.ts, send(): it('can handle cyclic references') -- what
    ipcbus must raise instead (SPEC sections 5 and 6)."""
    child: dict[str, Any] = {"hello": "world"}
    child["child"] = child
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            with pytest.raises(SerializationError, match="'message'"):
                await renderer.send("message", child)
            with pytest.raises(SerializationError, match="'message'"):
                await renderer.invoke("message", child)
            contents = ipc_main.from_id(renderer.id)
            assert contents is not None
            with pytest.raises(SerializationError, match="'message'"):
                await contents.send("message", child)


async def test_non_ascii_channel_names() -> None:
    """api-ipc-renderer-spec.ts, sendTo() (removed from Electron since): it('sends message
    on channel with non-ASCII characters to WebContents'): ``ping-æøåü`` /
    ``pong-æøåü``, through every call kind."""
    ping, pong = "ping-æøåü", "pong-æøåü"
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:

            async def on_ping(event: IpcMainEvent, payload: str) -> None:
                event.return_value = payload
                await event.reply(pong, payload)

            ipc_main.on(ping, on_ping)
            ipc_main.handle(ping, lambda event, payload: payload.upper())
            got: list[Any] = []
            done = anyio.Event()

            def on_pong(event: IpcRendererEvent, payload: str) -> None:
                got.append((event.channel, payload))
                done.set()

            renderer.on(pong, on_pong)
            renderer.handle(ping, lambda event, payload: [event.channel, payload])
            assert await renderer.send_sync(ping, "Hello World!") == "Hello World!"
            await wait_for(done)
            assert got == [(pong, "Hello World!")]
            assert await renderer.invoke(ping, "æøåü") == "ÆØÅÜ"
            contents = ipc_main.from_id(renderer.id)
            assert contents is not None
            assert await contents.invoke(ping, "x") == [ping, "x"]


# ---- spec/api-web-contents-spec.ts ---------------------------------------------------


async def test_web_contents_send_requires_a_channel_and_from_id_of_unknown_id() -> None:
    """api-web-contents-spec.ts, webContents.send(channel, args...): it('throws an error
    when the channel is missing'), and fromId(): it('returns undefined for an unknown
    id')."""
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            contents = ipc_main.from_id(renderer.id)
            assert contents is not None
            with pytest.raises(TypeError):
                await contents.send()  # type: ignore[call-arg]
            with pytest.raises(TypeError, match="channel must be a str"):
                await contents.send(None)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="channel must be a str"):
                await renderer.send(None)  # type: ignore[arg-type]
            assert ipc_main.from_id(12345) is None
