"""The library on every loop it supports: asyncio, uvloop and trio, with a real child."""

from __future__ import annotations

import importlib.util
import sys

import anyio
import pytest

import ipcbus

from .helpers import RENDERERS, child_env

LOOPS = ["asyncio", "trio"]
if importlib.util.find_spec("uvloop") is not None:
    LOOPS.append("uvloop")


async def _scenario() -> list[object]:
    """invoke both ways, send_sync and a push, across a spawned child process."""
    results: list[object] = []
    ipc_main = ipcbus.IpcMain(shutdown_grace=2.0)
    ipc_main.handle("add", lambda event, a, b: a + b)

    @ipc_main.on("sync")
    def on_sync(event: ipcbus.IpcMainEvent, arg: int) -> None:
        event.return_value = arg * 2

    with anyio.fail_after(20):
        async with ipc_main:
            async with ipc_main.connect_local() as renderer:
                results.append(await renderer.invoke("add", 1, 2))
                results.append(await renderer.send_sync("sync", 21))
            contents = await ipc_main.spawn(
                [sys.executable, str(RENDERERS / "echo.py")], env=child_env()
            )
            results.append(await contents.invoke("echo", "x", 1))
            pong = anyio.Event()
            ipc_main.once("pong", lambda event, *args: pong.set())
            await contents.send("ping", "hello")
            await pong.wait()
            results.append("pong")
    return results


@pytest.mark.parametrize("loop", LOOPS)
def test_full_round_trip_on_each_loop(loop: str) -> None:
    assert ipcbus.run(_scenario, loop=loop) == [3, 42, ["x", 1], "pong"]


def test_full_round_trip_on_asyncio_without_the_fast_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """anyio's own socket streams, as under trio, but on asyncio."""
    monkeypatch.setenv("IPCBUS_NO_FASTPATH", "1")
    assert ipcbus.run(_scenario, loop="asyncio") == [3, 42, ["x", 1], "pong"]


def test_run_refuses_uvloop_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="pip install 'ipcbus\\[uvloop\\]'"):
        ipcbus.run(_scenario, loop="uvloop")


@pytest.mark.parametrize("loop", ["curio", "Trio", "", "uvloop "])
def test_run_refuses_an_unknown_loop_naming_the_valid_ones(loop: str) -> None:
    """A typo must not silently run asyncio."""
    ran: list[str] = []

    async def record() -> None:
        ran.append("ran")

    with pytest.raises(ValueError, match=f"unknown loop {loop!r}") as info:
        ipcbus.run(record, loop=loop)  # type: ignore[arg-type]
    assert "'auto', 'asyncio', 'uvloop', 'trio'" in str(info.value)
    assert ran == []
