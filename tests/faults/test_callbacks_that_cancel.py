"""Callbacks that raise ``CancelledError`` themselves, with nothing cancelling them.

A handler that awaits a task someone else cancelled raises ``CancelledError``
(and plain code may raise it too). It is that callback's failure, like any
other exception: its caller gets ``RemoteError``, a listener's is logged,
and main, the connection and the other callbacks carry on. It must not
reach main's task group, which would take it for its own cancellation and
end every connection (found by translating Electron's api-ipc-spec.ts, "throws
an error in the renderer if the reply callback is dropped").
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import anyio
import anyio.abc
import pytest

import ipcbus
from ipcbus import RemoteError

from ..helpers import running_main, stop_main_while
from ._raw import warnings_logged

pytestmark = pytest.mark.filterwarnings("error")


async def _await_a_cancelled_task() -> None:
    task = asyncio.create_task(asyncio.sleep(10))
    task.cancel()
    await task  # CancelledError, though nothing cancels the task awaiting it


def _raise_cancelled(*args: Any) -> None:
    raise asyncio.CancelledError()


@pytest.fixture(autouse=True)
def _capture_ipcbus_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="ipcbus")


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_handler_that_raises_cancelled_error_fails_its_call_only(kind: str) -> None:
    async def async_handler(event: Any) -> None:
        await _await_a_cancelled_task()

    with anyio.fail_after(10):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle("test", async_handler if kind == "async" else _raise_cancelled)
            ipc_main.handle("ok", lambda event: "ok")
            with pytest.raises(RemoteError, match="Error invoking remote method 'test'") as info:
                await renderer.invoke("test")
            assert info.value.type_name == "CancelledError"
            assert await renderer.invoke("ok") == "ok"  # the connection and main carry on


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_listener_that_raises_cancelled_error_is_logged_and_the_rest_run(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    heard: list[int] = []
    done = anyio.Event()

    async def async_listener(event: Any, n: int) -> None:
        await _await_a_cancelled_task()

    def after(event: Any, n: int) -> None:
        heard.append(n)
        if n == 2:
            done.set()

    with anyio.fail_after(10):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.on("m", async_listener if kind == "async" else _raise_cancelled)
            ipc_main.on("m", after)
            await renderer.send("m", 1)
            await renderer.send("m", 2)
            await done.wait()
            assert heard == [1, 2]
            ipc_main.handle("ok", lambda event: "ok")
            assert await renderer.invoke("ok") == "ok"
    assert len(warnings_logged(caplog, "listener for 'm'", "raised")) == 2


async def test_a_send_sync_listener_that_raises_cancelled_error_fails_the_call() -> None:
    async def listener(event: ipcbus.IpcMainEvent) -> None:
        await _await_a_cancelled_task()

    with anyio.fail_after(10):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.on("sync", listener)
            with pytest.raises(RemoteError, match="CancelledError"):
                await renderer.send_sync("sync")
            ipc_main.handle("ok", lambda event: "ok")
            assert await renderer.invoke("ok") == "ok"


async def test_a_renderer_handler_that_raises_cancelled_error_fails_mains_call() -> None:
    with anyio.fail_after(10):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:

            @renderer.handle("test")
            async def handler(event: Any) -> None:
                await _await_a_cancelled_task()

            renderer.handle("ok", lambda event: "ok")
            contents = ipc_main.get_all_web_contents()[0]
            with pytest.raises(RemoteError, match="CancelledError"):
                await contents.invoke("test")
            assert await contents.invoke("ok") == "ok"


async def test_a_hook_or_guard_that_raises_cancelled_error_is_its_own_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def async_hook(contents: ipcbus.WebContents) -> None:
        await _await_a_cancelled_task()

    async def guard(event: Any) -> None:
        await _await_a_cancelled_task()

    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            ipc_main.on_connect(_raise_cancelled)
            ipc_main.on_connect(async_hook)
            ipc_main.handle("ok", lambda event: "ok")
            ipc_main.handle("guarded", lambda event: "passed")
            async with ipc_main.connect_local() as renderer:
                assert await renderer.invoke("ok") == "ok"
                ipc_main.add_guard(guard)
                with pytest.raises(RemoteError, match="CancelledError"):
                    await renderer.invoke("guarded")  # refused by the guard's failure
    assert len(warnings_logged(caplog, "lifecycle hook", "raised")) == 2


def test_on_trio_a_callback_raising_asyncios_cancelled_error_is_its_failure() -> None:
    """Trio cancels with its own exception: an asyncio ``CancelledError`` there can
    only be the callback's."""

    async def main() -> None:
        async with ipcbus.IpcMain() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle("test", _raise_cancelled)
            ipc_main.handle("ok", lambda event: "ok")
            with pytest.raises(RemoteError, match="CancelledError"):
                await renderer.invoke("test")
            assert await renderer.invoke("ok") == "ok"

    anyio.run(main, backend="trio")


async def test_a_real_cancellation_is_not_taken_for_the_callbacks_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Shutdown cancels a running handler and a running async listener: that
    ``CancelledError`` is a real cancellation. The handler's caller is told its
    reply was never sent (not "CancelledError" as the handler's own failure),
    and the listener's cancellation is not logged as an error it raised."""
    started, handling = anyio.Event(), anyio.Event()

    async def handler(event: Any) -> None:
        handling.set()
        await anyio.sleep(30)

    async def listener(event: Any) -> None:
        started.set()
        await anyio.sleep(30)

    def register(ipc_main: ipcbus.IpcMain) -> None:
        ipc_main.handle("slow", handler)
        ipc_main.on("slow", listener)

    async def act(renderer: ipcbus.IpcRenderer) -> None:
        await renderer.send("slow")
        await renderer.invoke("slow")

    async def both_running() -> None:
        await started.wait()
        await handling.wait()

    with anyio.fail_after(10):
        errors = await stop_main_while(register, act, both_running)
    assert len(errors) == 1
    assert "never sent" in str(errors[0]), errors[0]
    assert not warnings_logged(caplog, "listener for 'slow'")
