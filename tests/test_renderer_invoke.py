"""Main -> renderer: ``WebContents.invoke`` answered by ``ipc_renderer.handle`` in a child."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from ipcbus import IpcTimeoutError, NoHandlerError, RemoteError, ValidationError

from .helpers import running_main, spawn_renderer, wait_for


async def test_main_invokes_a_spawned_renderer() -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            contents = await spawn_renderer(ipc_main, "worker")
            assert await contents.invoke("echo") == []
            assert await contents.invoke("echo", 1, "two", [3], {"four": 4}, None) == [
                1,
                "two",
                [3],
                {"four": 4},
                None,
            ]
            assert await contents.invoke("whoami") == [contents.process_id, contents.id]


async def test_main_invoke_errors_from_a_child() -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            contents = await spawn_renderer(ipc_main, "worker")
            with pytest.raises(RemoteError) as info:
                await contents.invoke("boom")
            assert info.value.type_name == "ValueError"
            assert info.value.remote_message == "boom from the renderer"
            with pytest.raises(NoHandlerError, match="No handler registered for 'missing'"):
                await contents.invoke("missing")
            with pytest.raises(ValidationError, match="'typed:int'"):
                await contents.invoke("typed:int", "not an int")
            with pytest.raises(IpcTimeoutError):
                await contents.invoke("hang", "timeout", timeout=0.3)
            # After each error the renderer still serves.
            assert await contents.invoke("echo", "alive") == ["alive"]


async def test_many_concurrent_main_invokes_to_two_children() -> None:
    results: dict[tuple[int, int], Any] = {}
    with anyio.fail_after(30):
        async with running_main() as ipc_main:
            children = [await spawn_renderer(ipc_main, "worker") for _ in range(2)]

            async def call(index: int, n: int) -> None:
                results[index, n] = await children[index].invoke("echo", n, index)

            async with anyio.create_task_group() as tg:
                for n in range(100):
                    for index in range(2):
                        tg.start_soon(call, index, n)
            assert results == {(i, n): [n, i] for i in range(2) for n in range(100)}


async def test_main_handler_invokes_the_calling_renderer_back() -> None:
    async def nested(event: Any, value: str) -> Any:
        echoed = await event.sender.invoke("echo", value, "via main")
        return {"nested": echoed}

    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            ipc_main.handle("nested", nested)
            contents = await spawn_renderer(ipc_main, "worker")
            result = await contents.invoke("call-main", "invoke", "nested", "x")
            assert result == {"ok": {"nested": ["x", "via main"]}}


async def test_main_send_reaches_child_listener_and_reply_comes_back() -> None:
    got: list[tuple[int, tuple[Any, ...]]] = []
    done = anyio.Event()

    def pong(event: Any, *args: Any) -> None:
        got.append((event.sender.id, args))
        done.set()

    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            ipc_main.on("pong", pong)
            contents = await spawn_renderer(ipc_main, "echo")
            await contents.send("ping", "hello", 2)
            await wait_for(done)
            assert got == [(contents.id, ("hello", 2))]


async def test_main_send_to_channel_without_listener_is_dropped() -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            contents = await spawn_renderer(ipc_main, "worker")
            await contents.send("nobody-listens", 1)
            assert await contents.invoke("echo", "after") == ["after"]
