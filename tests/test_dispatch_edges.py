"""Dispatch edge cases: callables that are not ``async def`` but return coroutines."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel

import ipcbus

from .helpers import running_main


async def test_plain_callable_returning_a_coroutine_can_still_answer_send_sync() -> None:
    async def answer(event: ipcbus.IpcMainEvent, arg: str) -> None:
        await anyio.lowlevel.checkpoint()
        event.return_value = arg * 2

    def looks_sync(event: ipcbus.IpcMainEvent, arg: str) -> Any:
        return answer(event, arg)  # a coroutine, from a plain function

    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            ipc_main.on("double", looks_sync)
            async with ipc_main.connect_local() as renderer:
                assert await renderer.send_sync("double", "ab") == "abab"


async def test_plain_callable_returning_a_coroutine_as_a_handler() -> None:
    async def add(event: ipcbus.IpcMainInvokeEvent, a: int, b: int) -> int:
        await anyio.lowlevel.checkpoint()
        return a + b

    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            ipc_main.handle("add", lambda event, a, b: add(event, a, b))
            async with ipc_main.connect_local() as renderer:
                assert await renderer.invoke("add", 2, 3) == 5
