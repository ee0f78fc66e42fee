"""What one idle connection costs main (issue 12): few objects, no task.

An idle renderer must not give main's cycle collector much to walk: on the
asyncio fast path the stream hands reads to the endpoint from the loop's
callback, so no task waits per connection, and events, the writer task and
per-renderer registries are made only when needed. benchmarks/census.py
prints the same census with its largest contributors.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import sys
import textwrap
from typing import Any

import anyio
import pytest

import ipcbus

from .helpers import general_reads

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("IPCBUS_NO_FASTPATH")), reason="a fast-path feature"
)

CONNECTIONS = 40

CHILD = textwrap.dedent(
    """
    import sys, anyio, ipcbus
    from contextlib import AsyncExitStack

    async def main(address, token, n):
        async with AsyncExitStack() as stack:
            for _ in range(n):
                await stack.enter_async_context(ipcbus.connect(address, token=token))
            await anyio.to_thread.run_sync(sys.stdin.read)   # until the test closes stdin

    anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
    """
)


async def test_an_idle_connection_costs_main_few_objects_and_no_task() -> None:
    with anyio.fail_after(60):
        async with ipcbus.IpcMain() as ipc_main:
            listener = await ipc_main.listen()
            # Warm up one-off caches and imports with one renderer first.
            async with ipcbus.connect(listener.address, token=listener.token) as warm:
                await warm.send("warm-up")
            up, seen = anyio.Event(), itertools.count(1)
            ipc_main.on_connect(lambda contents: next(seen) == CONNECTIONS and up.set())
            gc.collect()
            objects_before = len(gc.get_objects())
            tasks_before = len(asyncio.all_tasks())
            argv = [sys.executable, "-c", CHILD, listener.address, listener.token]
            async with await anyio.open_process([*argv, str(CONNECTIONS)]) as child:
                await up.wait()
                # Each connection's handshake watchdog ends with its handshake...
                await anyio.wait_all_tasks_blocked()
                # ...and no task stays behind for a connection.
                assert len(asyncio.all_tasks()) == tasks_before
                gc.collect()
                per_connection = (len(gc.get_objects()) - objects_before) / CONNECTIONS
                assert len(ipc_main.get_all_web_contents()) == CONNECTIONS
                # And they all still work: a broadcast reaches every one.
                await ipc_main.broadcast("ping")
                assert child.stdin is not None
                await child.stdin.aclose()
            # 30 when this test was written (from 154 before issue 12).
            assert per_connection <= 40, f"{per_connection:.1f} tracked objects per connection"


async def test_a_call_alone_in_its_read_skips_the_general_walk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One invoke, or its reply, alone in a read is every read of a caller that waits
    for each answer: both ends take it with ``Connection.receive_alone``, and
    ``receive_data`` (the general walk) is left for everything else; a reply
    wakes its caller without going through the dispatcher."""
    from ipcbus._dispatch import Dispatcher
    from ipcbus._events import ReplyReceived

    dispatched: list[object] = []
    dispatch_batch = Dispatcher.dispatch_batch

    def watched(self: Dispatcher, events: list[Any]) -> None:
        dispatched.extend(events)
        dispatch_batch(self, events)

    ipc_main = ipcbus.IpcMain(heartbeat_interval=None)  # no Ping in a read of its own
    ipc_main.handle("inc", lambda event, i: i + 1)
    with anyio.fail_after(30):
        async with ipc_main, ipc_main.connect_local() as renderer:
            assert await renderer.invoke("inc", 0) == 1
            monkeypatch.setattr(Dispatcher, "dispatch_batch", watched)
            with general_reads() as general:
                for i in range(50):
                    assert await renderer.invoke("inc", i) == i + 1
            monkeypatch.undo()
    assert general == [0]  # 100 reads: 50 calls read by main, 50 replies by the renderer
    assert len(dispatched) == 50  # main's calls
    assert not any(type(event) is ReplyReceived for event in dispatched)
