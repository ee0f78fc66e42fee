"""The blocking facade, driven from a plain thread against a live main."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest

import ipcbus
import ipcbus.sync

from .helpers import running_main


async def test_blocking_renderer_in_a_thread() -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            ipc_main.handle("add", lambda event, a, b: a + b)

            @ipc_main.on("sync")
            def on_sync(event: ipcbus.IpcMainEvent, arg: str) -> None:
                event.return_value = arg.upper()

            @ipc_main.on("hello")
            async def on_hello(event: ipcbus.IpcMainEvent, arg: str) -> None:
                await event.reply("world", arg + "!")

            listener = await ipc_main.listen()
            results: dict[str, Any] = {}

            def blocking_client() -> None:
                got = threading.Event()
                with ipcbus.sync.connect(listener.address, token=listener.token) as ipc:
                    ipc.on("world", lambda event, arg: (results.update(pushed=arg), got.set()))
                    results["id"] = ipc.id
                    results["invoke"] = ipc.invoke("add", 2, 3)
                    results["send_sync"] = ipc.send_sync("sync", "ping")
                    ipc.send("hello", "hi")
                    results["got"] = got.wait(10)
                    with pytest.raises(ipcbus.NoHandlerError):
                        ipc.invoke("missing")

            await anyio.to_thread.run_sync(blocking_client)
            assert results == {
                "id": results["id"],
                "invoke": 5,
                "send_sync": "PING",
                "pushed": "hi!",
                "got": True,
            }
            assert results["id"] > 0


def test_connect_to_nothing_raises_and_leaves_no_thread(tmp_path: Any) -> None:
    before = set(threading.enumerate())
    with pytest.raises(ipcbus.ConnectionClosedError, match="cannot connect"):
        ipcbus.sync.connect(f"unix:{tmp_path}/missing.sock", token="x", timeout=5)
    # Compare identities, not counts: a thread of an earlier test may end meanwhile.
    assert set(threading.enumerate()) - before == set()
