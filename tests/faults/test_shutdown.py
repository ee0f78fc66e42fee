"""Shutdown (issue 3, fifth bullet).

Leaving ``async with ipc_main:`` stops accepting, lets in-flight handlers
finish within ``shutdown_grace``, then cancels them; renderers see a clean
close and nothing hangs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

import ipcbus

from ..helpers import Blocker, spawn_renderer
from ._raw import RawPeer, wait_until


class Outcome:
    def __init__(self) -> None:
        self.done = anyio.Event()
        self.value: Any = None
        self.error: Exception | None = None
        self.at = 0.0

    async def run(self, call: Any) -> None:
        try:
            self.value = await call
        except Exception as exc:
            self.error = exc
        finally:
            self.at = anyio.current_time()
            self.done.set()


async def test_shutdown_finishes_handlers_within_grace_then_cancels_the_rest() -> None:
    grace = 1.0
    with anyio.fail_after(20):
        ipc_main = ipcbus.IpcMain(shutdown_grace=grace)
        quick_started, stuck_started, release = anyio.Event(), anyio.Event(), anyio.Event()
        stop, main_done = anyio.Event(), anyio.Event()

        @ipc_main.handle("quick")
        async def quick(event: ipcbus.IpcMainInvokeEvent) -> str:
            quick_started.set()
            await release.wait()
            return "done"

        @ipc_main.handle("stuck")
        async def stuck(event: ipcbus.IpcMainInvokeEvent) -> None:
            stuck_started.set()
            await anyio.sleep_forever()

        async def run_main(
            *, task_status: anyio.abc.TaskStatus[tuple[ipcbus.Listener, ipcbus.WebContents]]
        ) -> None:
            async with ipc_main:
                listener = await ipc_main.listen()
                child = await spawn_renderer(ipc_main, "echo")
                task_status.started((listener, child))
                await stop.wait()
            main_done.set()

        async with anyio.create_task_group() as outer:
            listener, child = await outer.start(run_main)
            socket_path = Path(listener.address.removeprefix("unix:"))
            async with ipcbus.connect(listener.address, token=listener.token) as renderer:
                quick_call, stuck_call = Outcome(), Outcome()
                outer.start_soon(quick_call.run, renderer.invoke("quick"))
                outer.start_soon(stuck_call.run, renderer.invoke("stuck"))
                await quick_started.wait()
                await stuck_started.wait()

                stop.set()
                stopped_at = anyio.current_time()
                await wait_until(lambda: not socket_path.exists())  # stops accepting
                with pytest.raises(ipcbus.ConnectionClosedError):
                    async with ipcbus.connect(listener.address, token=listener.token):
                        pass

                release.set()  # the quick handler finishes inside the grace period
                await quick_call.done.wait()
                assert quick_call.error is None and quick_call.value == "done"

                await stuck_call.done.wait()  # the stuck one is cancelled after it
                assert isinstance(
                    stuck_call.error, ipcbus.RemoteError | ipcbus.ConnectionClosedError
                ), stuck_call.error
                assert "never sent" in str(stuck_call.error)
                assert grace - 0.2 <= stuck_call.at - stopped_at < grace + 1.5

                with anyio.fail_after(3):
                    await renderer.wait_closed()
                with pytest.raises(ipcbus.ConnectionClosedError, match="shutting down"):
                    await renderer.invoke("quick")
            await main_done.wait()
        assert child.disconnect_details is not None
        assert child.disconnect_details.reason == "clean-exit", child.disconnect_details
        assert child.disconnect_details.exit_code == 0


class MainInTask:
    """An IpcMain run in a task, so a test can end it and time its exit."""

    def __init__(self, ipc_main: ipcbus.IpcMain) -> None:
        self.ipc_main = ipc_main
        self.stop = anyio.Event()
        self.exited = anyio.Event()
        self.exit_took = 0.0

    async def run(self, *, task_status: anyio.abc.TaskStatus[ipcbus.Listener]) -> None:
        async with self.ipc_main:
            task_status.started(await self.ipc_main.listen())
            await self.stop.wait()
            started = anyio.current_time()
        self.exit_took = anyio.current_time() - started
        self.exited.set()

    async def end(self) -> float:
        """Leave the ``async with``; return how long leaving took."""
        self.stop.set()
        await self.exited.wait()
        return self.exit_took


async def test_shutdown_without_work_in_flight_does_not_wait_for_the_grace() -> None:
    with anyio.fail_after(20):
        ipc_main = ipcbus.IpcMain(shutdown_grace=5.0)
        ipc_main.handle("add", lambda event, a, b: a + b)
        main = MainInTask(ipc_main)
        async with anyio.create_task_group() as tg:
            listener = await tg.start(main.run)
            renderer = ipcbus.IpcRenderer()
            async with renderer.connect(listener.address, token=listener.token):
                assert await renderer.invoke("add", 1, 2) == 3
                assert await main.end() < 1.5
                with anyio.fail_after(1):
                    await renderer.wait_closed()
                with pytest.raises(ipcbus.ConnectionClosedError, match="shutting down"):
                    await renderer.invoke("add", 1, 2)


async def test_shutdown_with_a_renderer_that_never_reads_is_bounded() -> None:
    """main is blocked writing to a peer that stopped reading; exit still ends soon."""
    with anyio.fail_after(20):
        errors: list[Exception] = []
        main = MainInTask(ipcbus.IpcMain(shutdown_grace=0.5))
        async with anyio.create_task_group() as tg:
            listener = await tg.start(main.run)
            async with RawPeer.connect(listener.address) as peer:
                contents = await peer.web_contents(main.ipc_main, listener.token)
                progress = anyio.current_time()

                async def flood() -> None:
                    nonlocal progress
                    try:
                        while True:
                            await contents.send("blob", b"x" * 65536)
                            progress = anyio.current_time()
                    except Exception as exc:
                        errors.append(exc)

                tg.start_soon(flood)
                await wait_until(lambda: anyio.current_time() - progress > 0.3)
                assert await main.end() < 5
        assert errors and isinstance(errors[0], ipcbus.ConnectionClosedError), errors


async def test_shutdown_gives_async_listeners_the_grace_as_it_gives_handlers() -> None:
    """An async listener running at shutdown may finish, and reply, within the grace."""
    with anyio.fail_after(20):
        ipc_main = ipcbus.IpcMain(shutdown_grace=5.0)
        started, release = anyio.Event(), anyio.Event()
        finished: list[str] = []

        @ipc_main.on("work")
        async def work(event: ipcbus.IpcMainEvent, n: int) -> None:
            started.set()
            await release.wait()
            await event.reply("worked", n)
            finished.append("work")

        main = MainInTask(ipc_main)
        async with anyio.create_task_group() as tg:
            listener = await tg.start(main.run)
            socket_path = Path(listener.address.removeprefix("unix:"))
            renderer = ipcbus.IpcRenderer()
            replies: list[int] = []
            renderer.on("worked", lambda event, n: replies.append(n))
            async with renderer.connect(listener.address, token=listener.token):
                await renderer.send("work", 7)
                await started.wait()
                tg.start_soon(main.end)
                await wait_until(lambda: not socket_path.exists())  # main is shutting down
                release.set()
                await main.exited.wait()
                await renderer.wait_closed()  # the reply came before the Goodbye
        assert finished == ["work"]
        assert replies == [7]
        assert main.exit_took < 3


async def test_shutdown_cancels_an_async_listener_that_outlasts_the_grace() -> None:
    grace = 0.5
    with anyio.fail_after(20):
        ipc_main = ipcbus.IpcMain(shutdown_grace=grace)
        stuck = Blocker()
        ipc_main.on("stuck", stuck)
        main = MainInTask(ipc_main)
        async with anyio.create_task_group() as tg:
            listener = await tg.start(main.run)
            renderer = ipcbus.IpcRenderer()
            async with renderer.connect(listener.address, token=listener.token):
                await renderer.send("stuck")
                await stuck.started.wait()
                took = await main.end()
        assert stuck.cancelled.is_set()
        assert grace - 0.1 <= took < grace + 3


async def test_a_handler_that_starts_after_the_grace_is_cancelled_as_it_starts() -> None:
    """At the end of the grace main cancels every handler, then waits for them. A
    call held back by ``max_in_flight`` starts as the cancelled ones end, and a
    call read meanwhile starts too; whether one starts before that wait returns
    depends on the scheduler (trio's may run it first). Such a handler must be
    cancelled as it starts, or the exit waits for it for ever. Driven directly:
    after ``cancel_handlers`` a new call is cancelled at once."""
    with anyio.fail_after(10):
        ipc_main = ipcbus.IpcMain(shutdown_grace=0.5)
        stuck = Blocker()
        ipc_main.handle("stuck", stuck)
        async with ipc_main, ipc_main.connect_local() as renderer:
            (contents,) = ipc_main.get_all_web_contents()
            assert contents._endpoint is not None
            contents._endpoint.cancel_handlers()  # as _close_link does
            with pytest.raises(ipcbus.RemoteError, match="never sent"):
                await renderer.invoke("stuck", timeout=5)
            assert stuck.cancelled.is_set()
