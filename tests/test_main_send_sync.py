"""``send_sync`` reply rules (SPEC section 2, "send_sync reply rules")."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from ipcbus import IpcMainEvent, NoHandlerError, RemoteError

from .helpers import running_main, spawn_renderer, wait_for


async def test_first_assignment_replies_at_once_from_an_async_listener() -> None:
    gate = anyio.Event()
    finished = anyio.Event()
    seen_after: list[Any] = []

    async def listener(event: IpcMainEvent, arg: str) -> None:
        await anyio.lowlevel.checkpoint()
        event.return_value = f"first {arg}"
        event.return_value = "second"  # ignored: the reply already went out
        await gate.wait()  # only set once send_sync has returned
        event.return_value = "third"
        seen_after.append(event.return_value)
        finished.set()

    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.on("ch", listener)
            assert await renderer.send_sync("ch", "ping") == "first ping"
            assert not finished.is_set()
            gate.set()
            await wait_for(finished)
            assert seen_after == ["first ping"]


async def test_first_assignment_replies_at_once_to_a_child() -> None:
    gate = anyio.Event()
    finished = anyio.Event()

    async def listener(event: IpcMainEvent, arg: str) -> None:
        event.return_value = arg.upper()
        await gate.wait()
        finished.set()

    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            ipc_main.on("ch", listener)
            contents = await spawn_renderer(ipc_main, "worker")
            result = await contents.invoke("call-main", "send_sync", "ch", "ping")
            assert result == {"ok": "PING"}
            assert not finished.is_set()
            gate.set()
            await wait_for(finished)


async def test_first_listener_to_assign_wins_among_several() -> None:
    order: list[str] = []
    third_ran = anyio.Event()

    def first(event: IpcMainEvent) -> None:
        order.append("first")

    def second(event: IpcMainEvent) -> None:
        order.append("second")
        event.return_value = "from second"

    async def third(event: IpcMainEvent) -> None:
        order.append("third")
        event.return_value = "from third"
        third_ran.set()

    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.on("ch", first)
            ipc_main.on("ch", second)
            ipc_main.on("ch", third)
            assert await renderer.send_sync("ch") == "from second"
            await wait_for(third_ran)  # the reply went out first, but it still ran
            assert order == ["first", "second", "third"]


@pytest.mark.parametrize("style", ["sync", "async"])
async def test_reply_is_none_when_no_listener_assigns(style: str) -> None:
    ran: list[int] = []

    def sync_listener(event: IpcMainEvent, n: int) -> None:
        ran.append(n)

    async def async_listener(event: IpcMainEvent, n: int) -> None:
        await anyio.lowlevel.checkpoint()
        ran.append(n)

    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            listener = sync_listener if style == "sync" else async_listener
            ipc_main.on("ch", listener)
            ipc_main.on("ch", listener)
            assert await renderer.send_sync("ch", 7) is None
            assert ran == [7, 7]


async def test_listener_raising_before_assignment_gives_remote_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    def raises(event: IpcMainEvent) -> None:
        ran.append("raises")
        raise ValueError("boom")

    def assigns(event: IpcMainEvent) -> None:
        ran.append("assigns")
        event.return_value = "too late"

    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.on("ch", raises)
            ipc_main.on("ch", assigns)
            with caplog.at_level(logging.ERROR, logger="ipcbus"):
                with pytest.raises(RemoteError) as info:
                    await renderer.send_sync("ch")
            assert str(info.value) == "Error invoking remote method 'ch': ValueError: boom"
            assert info.value.remote_traceback is not None
            assert 'raise ValueError("boom")' in info.value.remote_traceback
            assert ran == ["raises", "assigns"]  # the others still ran


async def test_async_listener_raising_before_assignment_gives_remote_error() -> None:
    async def raises(event: IpcMainEvent) -> None:
        await anyio.lowlevel.checkpoint()
        raise LookupError("nothing here")

    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.on("ch", raises)
            with pytest.raises(RemoteError, match="LookupError: nothing here"):
                await renderer.send_sync("ch")


@pytest.mark.parametrize("style", ["sync", "async"])
async def test_listener_raising_after_assignment_does_not_change_the_reply(
    style: str, caplog: pytest.LogCaptureFixture
) -> None:
    def sync_listener(event: IpcMainEvent) -> None:
        event.return_value = "value"
        raise ValueError("after")

    async def async_listener(event: IpcMainEvent) -> None:
        event.return_value = "value"
        await anyio.lowlevel.checkpoint()
        raise ValueError("after")

    def later(event: IpcMainEvent) -> None:
        raise RuntimeError("a later listener")

    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.on("ch", sync_listener if style == "sync" else async_listener)
            ipc_main.on("ch", later)
            with caplog.at_level(logging.ERROR, logger="ipcbus"):
                assert await renderer.send_sync("ch") == "value"
                # Later calls still work: the connection is fine.
                assert await renderer.send_sync("ch") == "value"


async def test_no_listener_gives_no_handler_error_instead_of_hanging() -> None:
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            with pytest.raises(NoHandlerError) as info:
                await renderer.send_sync("nobody")
            assert str(info.value) == "No listeners registered for 'nobody'"
            # A listener removed again leaves the channel without listeners.
            fn = ipc_main.on("gone", lambda event: None)
            ipc_main.off("gone", fn)
            with pytest.raises(NoHandlerError, match="'gone'"):
                await renderer.send_sync("gone")


@pytest.mark.parametrize("kind", ["send", "send_sync"])
async def test_all_listeners_run_when_one_raises_and_the_error_is_logged(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []
    done = anyio.Event()

    def one(event: IpcMainEvent) -> None:
        ran.append("one")

    def bad(event: IpcMainEvent) -> None:
        ran.append("bad")
        raise ValueError("listener exploded")

    async def bad_async(event: IpcMainEvent) -> None:
        ran.append("bad_async")
        raise KeyError("async listener exploded")

    async def last(event: IpcMainEvent) -> None:
        ran.append("last")
        event.return_value = "done"
        done.set()

    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            for fn in (one, bad, bad_async, last):
                ipc_main.on("ch", fn)
            with caplog.at_level(logging.ERROR, logger="ipcbus"):
                if kind == "send":
                    await renderer.send("ch")
                else:
                    with pytest.raises(RemoteError, match="listener exploded"):
                        await renderer.send_sync("ch")
                await wait_for(done)
                # The connection goes on.
                ipc_main.handle("alive", lambda event: True)
                assert await renderer.invoke("alive") is True
            assert ran == ["one", "bad", "bad_async", "last"]
            errors = [r for r in caplog.records if r.name == "ipcbus" and r.exc_info]
            logged = {type(r.exc_info[1]).__name__ for r in errors if r.exc_info}
            assert {"ValueError", "KeyError"} <= logged
            assert 'raise ValueError("listener exploded")' in caplog.text
            assert "'ch'" in caplog.text


async def test_send_sync_listener_sees_the_sender() -> None:
    def listener(event: IpcMainEvent, *args: Any) -> None:
        event.return_value = [event.channel, event.sender.id, event.process_id, list(args)]

    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            ipc_main.on("who", listener)
            contents = await spawn_renderer(ipc_main, "worker")
            result = await contents.invoke("call-main", "send_sync", "who", 1, "a")
            assert result == {"ok": ["who", contents.id, contents.process_id, [1, "a"]]}
