"""Cancelling a call reaches the handler on the other side (SPEC section 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

import ipcbus
from ipcbus import IpcMainEvent, IpcTimeoutError, RemoteError

from .faults._raw import wait_until
from .helpers import Blocker, running_main, spawn_renderer, spawn_script, stop_main_while, wait_for

# ---- renderer -> main ------------------------------------------------------------------


async def test_invoke_timeout_cancels_the_main_handler() -> None:
    blocker = Blocker()
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle("block", blocker)
            with pytest.raises(IpcTimeoutError) as caught:
                await renderer.invoke("block", timeout=0.2)
            assert str(caught.value) == (
                "invoke 'block' to main got no reply within 0.2 s; "
                "the remote handler was told to stop"
            )
            await wait_for(blocker.cancelled)
            await wait_for(blocker.finalized)
            # The connection is fine afterwards.
            ipc_main.handle("ok", lambda event: "ok")
            assert await renderer.invoke("ok") == "ok"


async def test_cancelling_the_callers_task_cancels_the_main_handler() -> None:
    blocker = Blocker()
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle("block", blocker)
            outcome: list[str] = []

            async def caller(scope: anyio.CancelScope) -> None:
                with scope:
                    await renderer.invoke("block")
                    outcome.append("returned")
                outcome.append("cancelled" if scope.cancelled_caught else "?")

            scope = anyio.CancelScope()
            async with anyio.create_task_group() as tg:
                tg.start_soon(caller, scope)
                await wait_for(blocker.started)
                scope.cancel()
            assert outcome == ["cancelled"]
            await wait_for(blocker.cancelled)
            ipc_main.handle("ok", lambda event: "ok")
            assert await renderer.invoke("ok") == "ok"


async def _cancelled_as_the_link_ends() -> list[str]:
    """A caller cancelled in the same loop turn as its connection ends: what it saw."""
    blocker = Blocker()
    seen: list[str] = []
    async with ipcbus.IpcMain(shutdown_grace=1.0) as ipc_main:
        ipc_main.handle("block", blocker)
        async with ipc_main.connect_local() as renderer:

            async def caller() -> None:
                try:
                    await renderer.invoke("block")
                except BaseException as exc:
                    seen.append(type(exc).__name__)
                    raise

            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(caller)
                    await blocker.started.wait()  # the call is in flight
                    tg.cancel_scope.cancel()  # the caller is cancelled...
                    assert renderer._endpoint is not None
                    renderer._endpoint.link_lost("dropped")  # ...and its link ends, same turn
    return seen


@pytest.mark.parametrize("loop", ["asyncio", "asyncio-no-fastpath", "trio"])
def test_a_cancelled_caller_whose_link_ends_sees_its_cancellation(
    loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not ``ConnectionClosedError``: the end of the link wakes the caller with no
    reply, which must not pass for a reply that came (the task group would fail)."""
    if loop == "asyncio-no-fastpath":
        monkeypatch.setenv("IPCBUS_NO_FASTPATH", "1")  # the waiter is an EventWaiter
        loop = "asyncio"
    assert ipcbus.run(_cancelled_as_the_link_ends, loop=loop) == [
        "Cancelled" if loop == "trio" else "CancelledError"
    ]


async def test_a_task_cancelled_after_its_link_ended_raises_cancelled_error() -> None:
    """The link ends (its future gets no reply), then the task is cancelled before
    it runs again: ``CancelledError``, as for any awaited future."""
    import asyncio

    blocker = Blocker()
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle("block", blocker)
            task = asyncio.create_task(renderer.invoke("block"))
            await wait_for(blocker.started)
            assert renderer._endpoint is not None
            renderer._endpoint.link_lost("dropped")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


async def test_move_on_after_around_invoke_cancels_the_handler() -> None:
    blocker = Blocker()
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle("block", blocker)
            with anyio.move_on_after(0.2) as scope:
                await renderer.invoke("block")
            assert scope.cancelled_caught
            await wait_for(blocker.cancelled)


async def test_timeout_of_one_invoke_leaves_concurrent_ones_alone() -> None:
    blocker = Blocker()
    release = anyio.Event()

    async def slow(event: Any) -> str:
        await release.wait()
        return "slow result"

    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle("block", blocker)
            ipc_main.handle("slow", slow)
            results: list[str] = []

            async def call_slow() -> None:
                results.append(await renderer.invoke("slow"))

            async with anyio.create_task_group() as tg:
                tg.start_soon(call_slow)
                with pytest.raises(IpcTimeoutError):
                    await renderer.invoke("block", timeout=0.2)
                await wait_for(blocker.cancelled)
                release.set()
            assert results == ["slow result"]


async def test_child_caller_timeout_cancels_the_main_handler(tmp_path: Path) -> None:
    blocker = Blocker()
    outcome: list[str] = []
    reported = anyio.Event()

    def report(event: IpcMainEvent, what: str) -> None:
        outcome.append(what)
        reported.set()

    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            ipc_main.handle("block", blocker)
            ipc_main.on("report", report)
            contents = await spawn_script(
                ipc_main,
                tmp_path,
                """
                import anyio, ipcbus
                async def main():
                    async with ipcbus.connect() as r:
                        try:
                            await r.invoke("block", timeout=0.3)
                        except TimeoutError as exc:
                            await r.send("report", type(exc).__name__)
                        await r.wait_closed()  # stays connected until main closes
                anyio.run(main)
                """,
            )
            await wait_for(blocker.cancelled, 10)  # by the Cancel, not a disconnect
            assert not contents.is_destroyed()
            await wait_for(reported, 10)
            assert outcome[0] == "IpcTimeoutError"


async def test_cancelled_send_sync_discards_the_late_reply() -> None:
    gate = anyio.Event()
    assigned = anyio.Event()

    async def late(event: IpcMainEvent, n: int) -> None:
        await gate.wait()
        event.return_value = f"late {n}"
        assigned.set()

    def quick(event: IpcMainEvent, n: int) -> None:
        event.return_value = f"quick {n}"

    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.on("late", late)
            ipc_main.on("quick", quick)
            with pytest.raises(IpcTimeoutError):
                await renderer.send_sync("late", 1, timeout=0.2)
            gate.set()
            await wait_for(assigned)  # its reply is dropped, not misdelivered
            assert await renderer.send_sync("quick", 2) == "quick 2"
            ipc_main.handle("ok", lambda event: "ok")
            assert await renderer.invoke("ok") == "ok"
            assert renderer.is_connected()


async def test_a_cancel_reaches_the_handler_of_a_connection_at_max_in_flight() -> None:
    """With ``max_in_flight`` handlers running, main holds new calls back; it must
    still read the Cancel of a running one, or a handler that ends only when
    cancelled holds its slot, and the connection, for good."""
    blocker = Blocker()
    with anyio.fail_after(10):
        async with running_main(max_in_flight=1) as ipc_main:
            ipc_main.handle("block", blocker)
            ipc_main.handle("quick", lambda event: "quick")
            async with ipc_main.connect_local() as renderer:
                with pytest.raises(IpcTimeoutError, match="told to stop"):
                    await renderer.invoke("block", timeout=0.2)
                await wait_for(blocker.cancelled)
                assert await renderer.invoke("quick") == "quick"


async def test_a_call_cancelled_while_held_back_never_starts() -> None:
    """A Cancel read while its call waits behind ``max_in_flight``: the call is
    dropped (its caller has the acknowledgement), not started later for nobody."""
    release, late = anyio.Event(), []

    async def block(event: IpcMainEvent) -> str:
        await release.wait()
        return "released"

    with anyio.fail_after(10):
        async with running_main(max_in_flight=1) as ipc_main:
            ipc_main.handle("block", block)
            # A plain handler: run at once when admitted, with nothing else to
            # ask whether its caller still wants it.
            ipc_main.handle("late", lambda event: late.append("ran"))
            ipc_main.handle("quick", lambda event: "quick")
            async with ipc_main.connect_local() as renderer, anyio.create_task_group() as tg:
                replies: list[str] = []

                async def call(channel: str) -> None:
                    replies.append(await renderer.invoke(channel))

                tg.start_soon(call, "block")
                await anyio.wait_all_tasks_blocked()  # "block" runs: the one slot
                with pytest.raises(IpcTimeoutError):
                    await renderer.invoke("late", timeout=0.2)  # held back, then cancelled
                tg.start_soon(call, "quick")
                endpoint = ipc_main.get_all_web_contents()[0]._endpoint
                assert endpoint is not None
                held = endpoint.dispatcher._backlog
                # "quick" held back: the Cancel sent before it was read
                await wait_until(lambda: any(e.channel == "quick" for e in held))
                release.set()
            assert replies == ["released", "quick"]
            assert late == []


async def _stopped_while_serving(what: str) -> tuple[list[ipcbus.IpcError], bool]:
    """Main stops while its handler (or generator) for the renderer runs past the grace."""
    blocker = Blocker()

    async def generator(event: Any) -> Any:
        yield 1
        await blocker(event)

    async def act(renderer: ipcbus.IpcRenderer) -> None:
        if what == "invoke":
            await renderer.invoke("block")
        else:
            async for _ in renderer.stream("block"):
                pass

    with anyio.fail_after(10):
        errors = await stop_main_while(
            lambda ipc_main: ipc_main.handle("block", blocker if what == "invoke" else generator),
            act,
            lambda: wait_for(blocker.started),
        )
    return errors, blocker.cancelled.is_set()


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
@pytest.mark.parametrize("what", ["invoke", "stream"])
def test_handler_cancelled_by_shutdown_tells_the_caller(loop: str, what: str) -> None:
    """The caller hears why, in the same words on every backend (guide, section 14):
    not a lost connection (on trio the reply could not be made, and the
    connection ended with an internal error)."""
    errors, cancelled = ipcbus.run(_stopped_while_serving, what, loop=loop)
    assert cancelled
    assert len(errors) == 1 and type(errors[0]) is RemoteError, errors
    if what == "invoke":
        assert "CancelledError: the handler for 'block' was cancelled before it replied" in str(
            errors[0]
        )
        assert "the reply was never sent" in str(errors[0])
    else:
        assert "CancelledError: the generator for 'block' was cancelled before it finished" in str(
            errors[0]
        )


# ---- main -> renderer (handler in a child) --------------------------------------------------


async def _child_with_hang_reporting(
    ipc_main: Any,
) -> tuple[Any, dict[str, anyio.Event]]:
    events = {"started": anyio.Event(), "cancelled": anyio.Event()}
    ipc_main.on("hang-started", lambda event, tag: events["started"].set())
    ipc_main.on("hang-cancelled", lambda event, tag: events["cancelled"].set())
    contents = await spawn_renderer(ipc_main, "worker")
    return contents, events


async def test_main_invoke_timeout_cancels_the_renderer_handler() -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            contents, events = await _child_with_hang_reporting(ipc_main)
            with pytest.raises(IpcTimeoutError):
                await contents.invoke("hang", "t1", timeout=0.5)
            await wait_for(events["started"], 10)
            await wait_for(events["cancelled"], 10)
            assert await contents.invoke("echo", "alive") == ["alive"]


async def test_a_cancel_from_main_reaches_a_renderer_at_max_in_flight() -> None:
    """The same rule on the renderer's side: main's Cancel is read while the
    renderer's ``max_in_flight`` handlers run."""
    blocker = Blocker()
    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            listener = await ipc_main.listen()
            renderer = ipcbus.IpcRenderer(max_in_flight=1)
            async with renderer.connect(listener.address, token=listener.token):
                renderer.handle("block", blocker)
                renderer.handle("quick", lambda event: "quick")
                contents = ipc_main.from_id(renderer.id)
                assert contents is not None
                with pytest.raises(IpcTimeoutError, match=f"'block' to renderer {renderer.id} got"):
                    await contents.invoke("block", timeout=0.2)
                await wait_for(blocker.cancelled)
                assert await contents.invoke("quick") == "quick"


async def test_cancelling_main_task_cancels_the_renderer_handler() -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            contents, events = await _child_with_hang_reporting(ipc_main)
            scope = anyio.CancelScope()

            async def caller() -> None:
                with scope:
                    await contents.invoke("hang", "t2")

            async with anyio.create_task_group() as tg:
                tg.start_soon(caller)
                await wait_for(events["started"], 10)
                scope.cancel()
            assert scope.cancelled_caught
            await wait_for(events["cancelled"], 10)
            assert await contents.invoke("echo", "alive") == ["alive"]
