"""Every error of SPEC section 6, with its exact message, over real sockets."""

from __future__ import annotations

import inspect
import logging
import os
import signal
from typing import Any

import anyio
import pytest

import ipcbus
from ipcbus import (
    ConnectionClosedError,
    HandlerExistsError,
    IpcError,
    IpcTimeoutError,
    NoHandlerError,
    RemoteError,
    SerializationError,
    ValidationError,
)

from .helpers import running_main, spawn_renderer, wait_for


def _boom(event: Any) -> None:
    raise ValueError("boom")


_BOOM_LINE = 'raise ValueError("boom")'


# ---- registration errors --------------------------------------------------


async def test_second_handler_raises_handler_exists_error() -> None:
    with anyio.fail_after(5):
        async with running_main() as ipc_main:
            ipc_main.handle("ch", lambda event: 1)
            with pytest.raises(HandlerExistsError) as info:
                ipc_main.handle("ch", lambda event: 2)
            assert str(info.value) == "Attempted to register a second handler for 'ch'"
            with pytest.raises(HandlerExistsError):
                ipc_main.handle_once("ch", lambda event: 3)
            with pytest.raises(HandlerExistsError):
                ipc_main.handle("ch")(lambda event: 4)
            # The first handler is still the one that answers.
            async with ipc_main.connect_local() as renderer:
                assert await renderer.invoke("ch") == 1


def test_handler_exists_on_every_registry() -> None:
    registries: list[Any] = [ipcbus.IpcMain(), ipcbus.IpcRenderer()]
    for registry in registries:
        registry.handle("ch", lambda event: None)
        with pytest.raises(HandlerExistsError, match=r"^Attempted to register a second handler"):
            registry.handle("ch", lambda event: None)


@pytest.mark.parametrize("method", ["on", "once", "handle", "handle_once"])
def test_non_callable_raises_type_error_at_registration(method: str) -> None:
    for registry in (ipcbus.IpcMain(), ipcbus.IpcRenderer()):
        with pytest.raises(TypeError, match="callable"):
            getattr(registry, method)("ch", 42)
        with pytest.raises(TypeError, match="callable"):
            getattr(registry, method)("ch")("not a function")
        assert registry.listener_count("ch") == 0


def test_non_callable_hook_raises_type_error() -> None:
    ipc_main = ipcbus.IpcMain()
    with pytest.raises(TypeError):
        ipc_main.on_connect(42)  # type: ignore[type-var]
    with pytest.raises(TypeError):
        ipc_main.on_disconnect("x")  # type: ignore[type-var]


@pytest.mark.parametrize("method", ["on", "once", "handle", "handle_once"])
def test_empty_channel_raises_value_error(method: str) -> None:
    for registry in (ipcbus.IpcMain(), ipcbus.IpcRenderer()):
        with pytest.raises(ValueError, match="non-empty"):
            getattr(registry, method)("", lambda event: None)


async def test_empty_channel_in_calls_raises_value_error() -> None:
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            contents = ipc_main.from_id(renderer.id)
            assert contents is not None
            for call in (
                renderer.send,
                renderer.send_sync,
                renderer.invoke,
                contents.send,
                contents.invoke,
                ipc_main.broadcast,
            ):
                with pytest.raises(ValueError, match="non-empty"):
                    await call("")


# ---- no handler -------------------------------------------------------------


async def test_invoke_without_handler_raises_no_handler_error() -> None:
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.on("ch", lambda event: None)  # a listener is not a handler
            with pytest.raises(NoHandlerError) as info:
                await renderer.invoke("ch")
            assert str(info.value) == "No handler registered for 'ch'"
            assert isinstance(info.value, IpcError)


async def test_send_sync_without_listener_raises_no_handler_error() -> None:
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle("ch", lambda event: 1)  # a handler is not a listener
            with pytest.raises(NoHandlerError) as info:
                await renderer.send_sync("ch")
            assert str(info.value) == "No listeners registered for 'ch'"


async def test_main_invoke_without_renderer_handler_raises_no_handler_error() -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            contents = await spawn_renderer(ipc_main, "worker")
            with pytest.raises(NoHandlerError) as info:
                await contents.invoke("nobody-serves-this")
            assert str(info.value) == "No handler registered for 'nobody-serves-this'"


# ---- RemoteError --------------------------------------------------------------


async def test_remote_error_from_main_handler() -> None:
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle("ch", _boom)
            with pytest.raises(RemoteError) as info:
                await renderer.invoke("ch")
            err = info.value
            assert str(err) == "Error invoking remote method 'ch': ValueError: boom"
            assert err.channel == "ch"
            assert err.type_name == "ValueError"
            assert err.remote_message == "boom"
            assert err.remote_traceback is not None
            assert _BOOM_LINE in err.remote_traceback
            assert "_boom" in err.remote_traceback
            assert err.remote_traceback.rstrip().endswith("ValueError: boom")
            # The connection lives on.
            ipc_main.handle("ok", lambda event: "still here")
            assert await renderer.invoke("ok") == "still here"


async def test_remote_error_from_async_main_handler() -> None:
    async def boom(event: Any) -> None:
        await anyio.lowlevel.checkpoint()
        raise KeyError("missing")

    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle("ch", boom)
            with pytest.raises(RemoteError) as info:
                await renderer.invoke("ch")
            assert str(info.value) == "Error invoking remote method 'ch': KeyError: 'missing'"
            assert info.value.remote_traceback is not None
            assert 'raise KeyError("missing")' in info.value.remote_traceback


async def test_remote_error_without_tracebacks() -> None:
    with anyio.fail_after(5):
        async with (
            running_main(send_tracebacks=False) as ipc_main,
            ipc_main.connect_local() as renderer,
        ):
            ipc_main.handle("ch", _boom)
            with pytest.raises(RemoteError) as info:
                await renderer.invoke("ch")
            assert str(info.value) == "Error invoking remote method 'ch': ValueError: boom"
            assert info.value.remote_traceback is None
            assert info.value.type_name == "ValueError"
            assert info.value.remote_message == "boom"


async def test_remote_error_from_renderer_handler_in_child() -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            contents = await spawn_renderer(ipc_main, "worker")
            with pytest.raises(RemoteError) as info:
                await contents.invoke("boom")
            err = info.value
            assert str(err) == (
                "Error invoking remote method 'boom': ValueError: boom from the renderer"
            )
            assert err.channel == "boom"
            assert err.remote_traceback is not None
            assert 'raise ValueError("boom from the renderer")' in err.remote_traceback
            assert "worker.py" in err.remote_traceback
            assert await contents.invoke("echo", 1) == [1]


async def test_remote_error_reaches_child_caller() -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            ipc_main.handle("ch", _boom)
            contents = await spawn_renderer(ipc_main, "worker")
            result = await contents.invoke("call-main", "invoke", "ch")
            assert result == {
                "error": "RemoteError",
                "message": "Error invoking remote method 'ch': ValueError: boom",
            }
            result = await contents.invoke("call-main", "invoke", "nothing")
            assert result == {
                "error": "NoHandlerError",
                "message": "No handler registered for 'nothing'",
            }
            result = await contents.invoke("call-main", "send_sync", "nothing")
            assert result == {
                "error": "NoHandlerError",
                "message": "No listeners registered for 'nothing'",
            }


# ---- timeout --------------------------------------------------------------------


async def test_invoke_timeout_raises_ipc_timeout_error_which_is_a_timeout_error() -> None:
    release = anyio.Event()

    async def slow(event: Any) -> str:
        await release.wait()
        return "late"

    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle("slow", slow)
            with pytest.raises(TimeoutError) as info:
                await renderer.invoke("slow", timeout=0.1)
            assert isinstance(info.value, IpcTimeoutError)
            assert isinstance(info.value, IpcError)
            assert "'slow'" in str(info.value)

            async def slow_listener(event: Any) -> None:
                await release.wait()

            ipc_main.on("slow-sync", slow_listener)
            with pytest.raises(IpcTimeoutError, match="'slow-sync'"):
                await renderer.send_sync("slow-sync", timeout=0.1)
            release.set()


async def test_main_invoke_timeout_against_child() -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            contents = await spawn_renderer(ipc_main, "worker")
            with pytest.raises(IpcTimeoutError):
                await contents.invoke("hang", "t", timeout=0.5)
            assert await contents.invoke("echo", "alive") == ["alive"]


# ---- connection closed ------------------------------------------------------------


async def test_calls_after_close_raise_connection_closed_error() -> None:
    with anyio.fail_after(5):
        async with running_main() as ipc_main:
            ipc_main.handle("ch", lambda event: 1)
            ipc_main.on("ch", lambda event: None)
            async with ipc_main.connect_local() as renderer:
                contents = ipc_main.from_id(renderer.id)
                assert contents is not None
                assert await renderer.invoke("ch") == 1
            for call in (renderer.send, renderer.send_sync, renderer.invoke):
                with pytest.raises(ConnectionClosedError):
                    await call("ch")
            await contents.wait_closed()
            with pytest.raises(ConnectionClosedError):
                await contents.send("ch")
            with pytest.raises(ConnectionClosedError):
                await contents.invoke("ch")


async def test_calls_on_never_connected_renderer_raise_connection_closed_error() -> None:
    renderer = ipcbus.IpcRenderer()
    with anyio.fail_after(5):
        for call in (renderer.send, renderer.send_sync, renderer.invoke):
            with pytest.raises(ConnectionClosedError, match="not connected"):
                await call("ch")


async def test_pending_renderer_calls_fail_when_main_closes_the_connection() -> None:
    entered = anyio.Event()
    never = anyio.Event()
    errors: list[BaseException] = []

    async def block(event: Any) -> None:
        entered.set()
        await never.wait()

    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            ipc_main.handle("block", block)
            async with ipc_main.connect_local() as renderer:
                contents = ipc_main.from_id(renderer.id)
                assert contents is not None

                async def call(kind: str) -> None:
                    try:
                        if kind == "invoke":
                            await renderer.invoke("block")
                        else:
                            await renderer.send_sync("block-async-listener")
                    except ConnectionClosedError as exc:
                        errors.append(exc)

                async def listener(event: Any) -> None:
                    await never.wait()

                ipc_main.on("block-async-listener", listener)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(call, "invoke")
                    tg.start_soon(call, "send_sync")
                    await wait_for(entered)
                    await contents.close()
            assert len(errors) == 2
            assert all(isinstance(e, ConnectionClosedError) for e in errors)
            assert contents.is_destroyed()


async def test_pending_main_invoke_fails_when_child_exits() -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            contents = await spawn_renderer(ipc_main, "worker")
            pid = contents.process_id

            async def kill_when_started(event: Any, tag: str) -> None:
                os.kill(pid, signal.SIGTERM)

            ipc_main.on("hang-started", kill_when_started)
            with pytest.raises(ConnectionClosedError):
                await contents.invoke("hang", "x")
            await contents.wait_closed()


# ---- serialization --------------------------------------------------------------


class _Opaque:
    pass


async def test_serialization_error_names_channel_position_and_type_and_sends_nothing() -> None:
    received: list[tuple[str, tuple[Any, ...]]] = []
    done = anyio.Event()

    def record(event: Any, *args: Any) -> str:
        received.append((event.channel, args))
        if args == ("sentinel",):
            done.set()
        if isinstance(event, ipcbus.IpcMainEvent):
            event.return_value = "ok"
        return "ok"

    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.on("ch", record)
            ipc_main.handle("ch", record)
            calls = (renderer.send, renderer.send_sync, renderer.invoke)
            for call in calls:
                with pytest.raises(SerializationError) as info:
                    await call("ch", 1, "two", _Opaque())
                err = info.value
                assert isinstance(err, TypeError)
                assert isinstance(err, IpcError)
                message = str(err)
                assert "'ch'" in message
                assert "argument 2" in message
                assert "_Opaque" in message
            # Nested: the position inside the argument is named.
            with pytest.raises(SerializationError, match=r"argument 0\['k'\]"):
                await renderer.send("ch", {"k": _Opaque()})
            with pytest.raises(SerializationError, match=r"outside msgpack's range"):
                await renderer.invoke("ch", 2**64)
            # Everything after still works, and main saw none of the failed calls.
            assert await renderer.invoke("ch", "fine") == "ok"
            await renderer.send("ch", "sentinel")
            await wait_for(done)
            assert received == [("ch", ("fine",)), ("ch", ("sentinel",))]


async def test_serialization_error_in_main_send_and_invoke() -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            contents = await spawn_renderer(ipc_main, "worker")
            with pytest.raises(SerializationError, match=r"'echo'.*argument 1.*_Opaque"):
                await contents.invoke("echo", 1, _Opaque())
            with pytest.raises(SerializationError, match=r"'echo'.*argument 0"):
                await contents.send("echo", _Opaque())
            with pytest.raises(SerializationError):
                await ipc_main.broadcast("echo", _Opaque())
            assert await contents.invoke("echo", "ok") == ["ok"]


async def test_unencodable_result_is_remote_error_naming_the_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle("bad", lambda event: {"x": _Opaque()})

            async def bad_async(event: Any) -> Any:
                await anyio.lowlevel.checkpoint()
                return _Opaque()

            ipc_main.handle("bad-async", bad_async)
            ipc_main.handle("good", lambda event: "fine")
            for channel in ("bad", "bad-async"):
                with caplog.at_level(logging.ERROR, logger="ipcbus"):
                    with pytest.raises(RemoteError) as info:
                        await renderer.invoke(channel)
                assert info.value.type_name == "SerializationError"
                assert "_Opaque" in str(info.value)
                assert f"'{channel}'" in str(info.value)
                assert await renderer.invoke("good") == "fine"


def _nested(depth: int) -> list[Any]:
    """A list ``depth`` levels deep (no cycle): deeper than msgspec and Python recurse."""
    outer: list[Any] = []
    inner = outer
    for _ in range(depth):
        inner.append([])
        inner = inner[0]
    return outer


async def test_a_value_nested_too_deeply_fails_the_call_not_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Too deep to encode, and too deep to walk for the error message: the call fails
    with SerializationError at the caller (RemoteError for a result), never a bare
    RecursionError, and the connection lives on. (Building the message used to
    recurse again: a deep result ended the renderer's connection.)"""
    deep = _nested(5000)
    with anyio.fail_after(10):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle("deep", lambda event: deep)
            ipc_main.handle("echo", lambda event, value: value)
            renderer.handle("echo", lambda event, value: value)
            contents = ipc_main.get_all_web_contents()[0]
            for call in (
                lambda: renderer.invoke("echo", deep),
                lambda: renderer.send("echo", deep),
                lambda: ipc_main.broadcast("echo", deep),
                lambda: contents.send("echo", deep),
            ):
                with pytest.raises(SerializationError, match=r"argument 0: .*nested too deeply"):
                    await call()
            with caplog.at_level(logging.ERROR, logger="ipcbus"):
                with pytest.raises(RemoteError, match=r"the value: .*nested too deeply") as info:
                    await renderer.invoke("deep")
            assert info.value.type_name == "SerializationError"
            assert await renderer.invoke("echo", "alive") == "alive"
            assert await contents.invoke("echo", "alive") == "alive"


class _BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr here")


@pytest.mark.parametrize(
    "value",
    [10**5000, {10**5000: 1}, {_BrokenRepr(): 1}],
    ids=["an int too long to print", "such an int as a key", "a key whose repr raises"],
)
async def test_a_value_that_breaks_its_own_error_message_fails_only_the_call(value: Any) -> None:
    """Writing where the bad part is must not fail in turn (Python refuses to print
    an int of over 4,300 digits; a repr may raise): SerializationError at the caller,
    RemoteError for a result, and the connection lives on."""
    with anyio.fail_after(10):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle("bad", lambda event: value)
            ipc_main.handle("echo", lambda event, v: v)
            with pytest.raises(SerializationError, match="argument 0"):
                await renderer.invoke("echo", value)
            with pytest.raises(RemoteError, match="the value") as info:
                await renderer.invoke("bad")
            assert info.value.type_name == "SerializationError"
            assert await renderer.invoke("echo", "alive") == "alive"


async def test_a_result_that_cannot_be_sent_is_named_as_the_value() -> None:
    """A list result is one value, not an argument list: the message points into it."""
    looped: list[Any] = [5]
    looped.append(looped)
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle("looped", lambda event: looped)
            ipc_main.handle("opaque", lambda event: [1, _Opaque()])
            with pytest.raises(RemoteError, match=r"the value\[1\]: it contains itself"):
                await renderer.invoke("looped")
            with pytest.raises(RemoteError, match=r"the value\[1\]: objects of type .*_Opaque"):
                await renderer.invoke("opaque")


async def test_unencodable_send_sync_return_value_is_remote_error() -> None:
    def listener(event: Any) -> None:
        event.return_value = _Opaque()

    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.on("bad", listener)
            with pytest.raises(RemoteError, match="_Opaque"):
                await renderer.send_sync("bad")
            ipc_main.on("good", lambda event: setattr(event, "return_value", 5))
            assert await renderer.send_sync("good") == 5


async def test_unencodable_result_from_child_handler() -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            ipc_main.handle("bad", lambda event: _Opaque())
            contents = await spawn_renderer(ipc_main, "worker")
            result = await contents.invoke("call-main", "invoke", "bad")
            assert result["error"] == "RemoteError"
            assert "_Opaque" in result["message"]
            assert await contents.invoke("echo", 1) == [1]


# ---- validation ----------------------------------------------------------------


async def test_validation_error_and_handler_never_runs() -> None:
    calls: list[tuple[int, int]] = []

    def add(event: Any, a: int, b: int) -> int:
        calls.append((a, b))
        return a + b

    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle("add", add)
            with pytest.raises(ValidationError) as info:
                await renderer.invoke("add", "one", 2)
            assert "'add'" in str(info.value)
            assert isinstance(info.value, IpcError)
            with pytest.raises(ValidationError, match="expected 2 arguments, got 1"):
                await renderer.invoke("add", 1)
            with pytest.raises(ValidationError, match="expected 2 arguments, got 3"):
                await renderer.invoke("add", 1, 2, 3)
            assert calls == []
            assert await renderer.invoke("add", 1, 2) == 3
            assert calls == [(1, 2)]


async def test_validation_error_for_typed_send_sync_listener() -> None:
    calls: list[int] = []

    def listener(event: Any, n: int) -> None:
        calls.append(n)
        event.return_value = n * 2

    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.on("double", listener)
            with pytest.raises(ValidationError, match="'double'"):
                await renderer.send_sync("double", "x")
            assert calls == []
            assert await renderer.send_sync("double", 4) == 8


@pytest.mark.parametrize("listeners", [1, 2], ids=["one-listener", "two-listeners"])
async def test_typed_send_that_does_not_fit_is_skipped_and_logged(
    listeners: int, caplog: pytest.LogCaptureFixture
) -> None:
    """One-way sends to typed listeners: only those that fit are delivered, in order."""
    calls: list[tuple[int, int]] = []
    done = anyio.Event()

    def make(index: int) -> Any:
        def listener(event: Any, n: int) -> None:
            calls.append((index, n))
            if n == 3:
                done.set()

        return listener

    caplog.set_level(logging.DEBUG, logger="ipcbus")  # the reasons are logged at DEBUG
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            for index in range(listeners):
                ipc_main.on("count", make(index))
            await renderer.send("count", 1)
            await renderer.send("count", "two")  # wrong type
            await renderer.send("count", 2, 2)  # one too many
            await renderer.send("count")  # one too few
            await renderer.send("count", 3)
            await wait_for(done)
    assert calls == [(i, n) for n in (1, 3) for i in range(listeners)]
    skipped = [r.getMessage() for r in caplog.records if "do not fit" in r.getMessage()]
    assert len(skipped) == 3 * listeners
    reasons = " ".join(r.getMessage() for r in caplog.records)
    for reason in (
        "argument 0 (n: int) does not fit its annotation",
        "expected 1 argument, got 2",
        "got 0",
    ):
        assert reason in reasons


async def test_validation_error_from_child_caller() -> None:
    calls: list[object] = []

    def typed(event: Any, n: int) -> int:
        calls.append(n)
        return n

    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            ipc_main.handle("typed", typed)
            contents = await spawn_renderer(ipc_main, "worker")
            result = await contents.invoke("call-main", "invoke", "typed", "nope")
            assert result["error"] == "ValidationError"
            assert "'typed'" in result["message"]
            assert calls == []
            assert await contents.invoke("call-main", "invoke", "typed", 7) == {"ok": 7}


async def test_error_classes_are_public_and_documented() -> None:
    for cls in (
        ipcbus.HandlerExistsError,
        ipcbus.NoHandlerError,
        ipcbus.RemoteError,
        ipcbus.ValidationError,
        ipcbus.SerializationError,
        ipcbus.IpcTimeoutError,
        ipcbus.ConnectionClosedError,
        ipcbus.ProtocolError,
        ipcbus.AuthenticationError,
        ipcbus.FrameTooLargeError,
    ):
        assert issubclass(cls, IpcError)
        assert inspect.getdoc(cls)
