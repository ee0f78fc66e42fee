"""Dying processes (issue 3, third bullet).

Renderers SIGKILLed mid-invoke, mid-send_sync and mid-large-frame; a renderer
that crashes; main SIGKILLed while renderers wait. Every pending call on the
surviving side fails within a second with ``ConnectionClosedError``; spawned
children are reported ``"killed"`` / ``"crashed"`` with their exit code; no
zombie (the autouse fixture in tests/conftest.py), no leaked fd or task.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
from collections import Counter
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

import ipcbus

from ..helpers import RENDERERS, child_env, spawn_renderer
from ._raw import Bench, bench, fd_count, wait_until


class Outcome:
    """The end of one call made in a background task: its exception and when."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.error: BaseException | None = None
        self.value: Any = None
        self.at = 0.0

    async def run(self, call: Any) -> None:
        try:
            self.value = await call
        except Exception as exc:
            self.error = exc
        finally:
            self.at = anyio.current_time()
            self.done.set()


async def kill(pid: int) -> float:
    os.kill(pid, signal.SIGKILL)
    return anyio.current_time()


async def assert_failed_within_a_second(outcome: Outcome, killed_at: float) -> None:
    with anyio.fail_after(1):
        await outcome.done.wait()
    assert isinstance(outcome.error, ipcbus.ConnectionClosedError), outcome.error
    assert outcome.at - killed_at < 1


async def assert_killed(setup: Bench, contents: ipcbus.WebContents) -> None:
    details = await setup.disconnected(contents.id)
    assert details.reason == "killed", details
    assert details.exit_code == -signal.SIGKILL
    assert contents.is_destroyed()
    assert setup.ipc_main.from_id(contents.id) is None


async def test_renderer_killed_while_main_invokes_it() -> None:
    with anyio.fail_after(20):
        async with bench() as setup:
            blocking = anyio.Event()
            setup.ipc_main.on("blocking", lambda event: blocking.set())
            contents = await spawn_renderer(setup.ipc_main, "fault_blocker")
            outcome = Outcome()
            async with anyio.create_task_group() as tg:
                tg.start_soon(outcome.run, contents.invoke("block"))
                await blocking.wait()
                killed_at = await kill(contents.process_id)
                await assert_failed_within_a_second(outcome, killed_at)
            assert "renderer" in str(outcome.error)
            await assert_killed(setup, contents)
            with pytest.raises(ipcbus.ConnectionClosedError):
                await contents.send("anything")
            with pytest.raises(ipcbus.ConnectionClosedError):
                await contents.invoke("anything")
            await setup.check_healthy()


@pytest.mark.parametrize("call", ["invoke", "send_sync"])
async def test_renderer_killed_while_waiting_for_main(call: str) -> None:
    """main's handler (or send_sync listener) is running when its caller dies."""
    with anyio.fail_after(20):
        async with bench() as setup:
            started, finished = anyio.Event(), anyio.Event()
            release = anyio.Event()
            ended: list[str] = []

            @setup.ipc_main.handle("block")
            async def block(event: ipcbus.IpcMainInvokeEvent) -> None:
                started.set()
                try:
                    await anyio.sleep_forever()
                except anyio.get_cancelled_exc_class():
                    ended.append("cancelled")
                    raise
                finally:
                    finished.set()

            @setup.ipc_main.on("block-sync")
            async def block_sync(event: ipcbus.IpcMainEvent) -> None:
                started.set()
                try:
                    await release.wait()
                    event.return_value = "too late"  # the caller is gone: no error here
                    try:
                        await event.reply("too-late")
                    except ipcbus.ConnectionClosedError:
                        ended.append("reply refused")
                except anyio.get_cancelled_exc_class():
                    ended.append("cancelled")
                    raise
                finally:
                    finished.set()

            contents = await spawn_renderer(setup.ipc_main, "fault_caller", call)
            await started.wait()
            await kill(contents.process_id)
            await assert_killed(setup, contents)
            release.set()
            with anyio.fail_after(1):
                await finished.wait()
            assert ended in (["cancelled"], ["reply refused"]), ended
            await setup.check_healthy()


async def test_renderer_killed_in_the_middle_of_a_large_frame() -> None:
    with anyio.fail_after(20):
        async with bench() as setup:
            ready = anyio.Event()
            setup.ipc_main.on("ready", lambda event: ready.set())
            contents = await spawn_renderer(setup.ipc_main, "fault_partial_frame")
            await ready.wait()
            await kill(contents.process_id)
            details = await setup.disconnected(contents.id)
            assert details.exit_code == -signal.SIGKILL, details
            assert details.reason == "killed", details
            assert "middle of a frame" in details.message
            await setup.check_healthy()


async def test_renderer_that_crashes_is_reported_with_its_exit_code() -> None:
    with anyio.fail_after(20):
        async with bench() as setup:
            contents = await spawn_renderer(setup.ipc_main, "fault_blocker")
            with pytest.raises(ipcbus.ConnectionClosedError):
                await contents.invoke("exit", 3)
            details = await setup.disconnected(contents.id)
            assert details.reason == "crashed", details
            assert details.exit_code == 3
            await setup.check_healthy()


async def test_many_renderers_killed_at_once_leak_no_fd_and_no_task() -> None:
    with anyio.fail_after(30):
        fds_before = fd_count()
        async with bench() as setup:
            tasks_before = len(asyncio.all_tasks())
            blocking = anyio.Event()
            count = 0

            def on_blocking(event: ipcbus.IpcMainEvent) -> None:
                nonlocal count
                count += 1
                if count == 8:
                    blocking.set()

            setup.ipc_main.on("blocking", on_blocking)
            with anyio.fail_after(20):  # eight python startups on a busy machine
                renderers = [
                    await spawn_renderer(setup.ipc_main, "fault_blocker") for _ in range(8)
                ]
            outcomes = [Outcome() for _ in renderers]
            async with anyio.create_task_group() as tg:
                for contents, outcome in zip(renderers, outcomes, strict=True):
                    tg.start_soon(outcome.run, contents.invoke("block"))
                await blocking.wait()
                for contents in renderers:
                    killed_at = await kill(contents.process_id)
                for outcome in outcomes:
                    await assert_failed_within_a_second(outcome, killed_at)
            for contents in renderers:
                await assert_killed(setup, contents)
            await setup.check_healthy()
            await wait_until(lambda: len(asyncio.all_tasks()) <= tasks_before)
        assert fd_count() <= fds_before


async def test_killed_renderers_leave_no_objects_behind() -> None:
    """Spawn, kill, repeat: no WebContents, Endpoint or Process survives its renderer."""
    with anyio.fail_after(30):
        async with bench() as setup:

            async def cycle() -> None:
                contents = await spawn_renderer(setup.ipc_main, "echo")
                assert await contents.invoke("echo", 1) == [1]
                await kill(contents.process_id)
                await assert_killed(setup, contents)

            def alive() -> Counter[str]:
                gc.collect()
                return Counter(type(o).__name__ for o in gc.get_objects())

            for _ in range(6):
                await cycle()
            # The last one's tasks end a few checkpoints after it is reported gone.
            await wait_until(lambda: alive()["WebContents"] <= 1)
            left = alive()
            assert left["WebContents"] == 1, left["WebContents"]  # the healthy one
            assert left["Endpoint"] == 2, left["Endpoint"]  # its two ends
            assert left["Process"] == 0, left["Process"]
            await setup.check_healthy()


# ---- main dies --------------------------------------------------------------


async def _start_main(address: str) -> tuple[anyio.abc.Process, str, str]:
    process = await anyio.open_process(
        [sys.executable, str(RENDERERS / "fault_main.py"), address], env=child_env()
    )
    assert process.stdout is not None
    line = await BufferedByteReceiveStream(process.stdout).receive_until(b"\n", 4096)
    main_address, token = line.decode().split()
    return process, main_address, token


@pytest.mark.parametrize("address", ["unix", "tcp://127.0.0.1:0"])
@pytest.mark.parametrize("call", ["invoke", "send_sync"])
async def test_main_killed_while_renderers_wait(address: str, call: str) -> None:
    with anyio.fail_after(20):
        process, main_address, token = await _start_main(address)
        try:
            renderers = [ipcbus.IpcRenderer() for _ in range(3)]
            blocking = [anyio.Event() for _ in renderers]
            outcomes = [Outcome() for _ in renderers]
            for renderer, event in zip(renderers, blocking, strict=True):
                renderer.on("blocking", lambda _e, event=event: event.set())
            async with (
                renderers[0].connect(main_address, token=token),
                renderers[1].connect(main_address, token=token),
                renderers[2].connect(main_address, token=token),
            ):
                async with anyio.create_task_group() as tg:
                    for renderer, outcome in zip(renderers, outcomes, strict=True):
                        pending = (
                            renderer.invoke("block")
                            if call == "invoke"
                            else renderer.send_sync("block-sync")
                        )
                        tg.start_soon(outcome.run, pending)
                    for event in blocking:
                        await event.wait()
                    killed_at = await kill(process.pid)
                    for outcome in outcomes:
                        await assert_failed_within_a_second(outcome, killed_at)
                for renderer in renderers:
                    assert not renderer.is_connected()
                    with pytest.raises(ipcbus.ConnectionClosedError):
                        await renderer.invoke("anything")
            assert await process.wait() == -signal.SIGKILL
        finally:
            if process.returncode is None:
                process.kill()
            with anyio.CancelScope(shield=True):
                await process.aclose()


async def test_renderer_connecting_to_a_dead_main_fails_clearly() -> None:
    with anyio.fail_after(20):
        process, main_address, token = await _start_main("tcp://127.0.0.1:0")
        try:
            await kill(process.pid)
            await process.wait()
        finally:
            with anyio.CancelScope(shield=True):
                await process.aclose()
        with pytest.raises(ipcbus.ConnectionClosedError, match="cannot connect"):
            async with ipcbus.connect(main_address, token=token):
                pass
