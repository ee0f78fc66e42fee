"""What one idle connection costs main (issue 12): few objects, no task.

An idle renderer must not give main's cycle collector much to walk: on the
asyncio fast path the stream hands reads to the endpoint from the loop's
callback, so no task waits per connection, and events, the writer task and
per-renderer registries are made only when needed. benchmarks/census.py
prints the same census with its largest contributors.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import itertools
import os
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
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


@contextlib.contextmanager
def tasks_made() -> Iterator[list[asyncio.Task[Any]]]:
    """The asyncio tasks made in this loop while the block runs. Their names
    (anyio's: the function's) are set only after the factory made them."""
    loop = asyncio.get_running_loop()
    made: list[asyncio.Task[Any]] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        made.append(task)
        return task

    loop.set_task_factory(factory)
    try:
        yield made
    finally:
        loop.set_task_factory(None)


async def test_an_idle_connection_costs_main_few_objects_and_no_task() -> None:
    with anyio.fail_after(60):
        async with ipcbus.IpcMain() as ipc_main:
            listener = await ipc_main.listen()
            # Warm up one-off caches and imports with one renderer first.
            async with ipcbus.connect(listener.address, token=listener.token) as warm:
                await warm.send("warm-up")
            up, seen = anyio.Event(), itertools.count(1)
            ipc_main.on_connect(lambda contents: next(seen) == CONNECTIONS and up.set())
            await anyio.wait_all_tasks_blocked()  # the warm-up's end has run its course
            gc.collect()
            objects_before = len(gc.get_objects())
            tasks_before = asyncio.all_tasks()
            argv = [sys.executable, "-c", CHILD, listener.address, listener.token]
            async with await anyio.open_process([*argv, str(CONNECTIONS)]) as child:
                await up.wait()
                # Each connection's handshake watchdog ends with its handshake...
                await anyio.wait_all_tasks_blocked()
                # ...and no task stays behind for a connection: at most the one
                # sweeper that watches them all (it runs while any is connected).
                new_tasks = [task.get_name() for task in asyncio.all_tasks() - tasks_before]
                assert new_tasks in ([], ["ipcbus._liveness.Sweeper._sweep"])
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


MAIN_CHILD = textwrap.dedent(
    """
    import json, sys, anyio, ipcbus

    async def main():
        async with ipcbus.IpcMain() as ipc_main:
            ipc_main.handle("inc", lambda event, x: x + 1)
            listener = await ipc_main.listen()
            print(json.dumps([listener.address, listener.token]), flush=True)
            await anyio.to_thread.run_sync(sys.stdin.read)   # until the test closes stdin

    anyio.run(main)
    """
)


async def test_a_renderer_leaving_ends_its_connection_in_no_task_of_its_own() -> None:
    """Leaving ``connect()`` says Goodbye and closes in the leaving task: a task per
    end (and the cancelled scopes it took) was most of what a renderer's leaving
    cost when many come and go (benchmarks E and G). Main runs in a child, so
    every task made here is the renderer's."""
    with anyio.fail_after(30):
        async with main_in_a_child() as (address, token):
            renderer = ipcbus.IpcRenderer()
            with tasks_made() as made:
                async with renderer.connect(address, token=token):
                    assert await renderer.invoke("inc", 1) == 2
                    made.clear()  # connecting's own tasks: only leaving's count
            assert not renderer.is_connected()
            assert made == []


@pytest.mark.parametrize("heartbeat", [None, 0.02])
async def test_a_renderer_watches_its_link_from_the_loops_timer_not_a_task(
    heartbeat: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``send_timeout`` (and heartbeats, if asked for) need a look at the link now
    and then. main's one sweeper task looks at all its connections; a renderer
    has one, and a task of its own for it was about 40 objects per connection
    for the cycle collector of a process holding many (scenario E's clients),
    and a task to end on leaving. On the fast path the loop's timer calls the
    look instead (``_liveness.TimedLooks``)."""
    from ipcbus._liveness import Liveness

    looks = 0
    enough = anyio.Event()
    check = Liveness.check

    def counted(self: Liveness, now: float) -> None:
        nonlocal looks
        looks += 1
        if looks == 3:
            enough.set()
        check(self, now)

    monkeypatch.setattr(Liveness, "check", counted)
    with anyio.fail_after(30):
        async with main_in_a_child() as (address, token):
            # Short ticks, generous limits: a loaded machine must not end the link.
            renderer = ipcbus.IpcRenderer(
                heartbeat_interval=heartbeat, heartbeat_timeout=5, send_timeout=0.2
            )
            with tasks_made() as made:
                async with renderer.connect(address, token=token):
                    await enough.wait()  # looked at three times (a tick is 20 or 50 ms)
                    assert await renderer.invoke("inc", 1) == 2  # pings answered, still up
                    endpoint = renderer._endpoint
                    assert endpoint is not None
            names = [task.get_name() for task in made]
            assert not any("sweep" in name for name in names), names
            assert endpoint._sweeper is not None and endpoint._sweeper._handle is None  # type: ignore[union-attr]


@contextlib.asynccontextmanager
async def main_in_a_child() -> AsyncIterator[tuple[str, str]]:
    """An ``IpcMain`` serving ``inc`` in a child process: its address and token.
    Every task made in this process meanwhile is a renderer's."""
    import json

    argv = [sys.executable, "-c", MAIN_CHILD]
    async with await anyio.open_process(argv, stderr=None) as child:
        assert child.stdout is not None and child.stdin is not None
        line = b""
        async for chunk in child.stdout:
            line += chunk
            if line.endswith(b"\n"):
                break
        address, token = json.loads(line)
        try:
            yield address, token
        finally:
            await child.stdin.aclose()


async def test_main_has_nothing_to_drain_for_a_renderer_that_said_goodbye(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A renderer's Goodbye leaves main nothing to send, and the renderer's own
    Goodbye went out as it left: neither end waits a loop turn (and a cancel
    scope) in ``Outbox.drain`` for nothing."""
    from ipcbus._outbox import Outbox

    drains: list[Outbox] = []
    drain = Outbox.drain

    async def counted(self: Outbox) -> None:
        drains.append(self)
        await drain(self)

    monkeypatch.setattr(Outbox, "drain", counted)
    ipc_main = ipcbus.IpcMain()
    ipc_main.handle("inc", lambda event, x: x + 1)
    gone = anyio.Event()
    ipc_main.on_disconnect(lambda contents, details: gone.set())
    with anyio.fail_after(30):
        async with ipc_main:
            async with ipc_main.connect_local() as renderer:
                assert await renderer.invoke("inc", 1) == 2
            await gone.wait()
            assert drains == []


async def test_leaving_closes_the_stream_even_if_the_last_words_fail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The last words (a Goodbye still queued) can meet a write still under way (on
    trio a ``BusyResourceError``, now suppressed there). Whatever they meet, the
    stream is closed and ``closed`` set: before, the leaving task waited in
    ``close()`` for ever."""
    from ipcbus._outbox import Outbox

    async def failing(self: Outbox) -> None:
        raise anyio.BusyResourceError("writing")

    gone = anyio.Event()
    ipc_main = ipcbus.IpcMain()
    ipc_main.on_disconnect(lambda contents, details: gone.set())
    with anyio.fail_after(10):
        async with ipc_main:
            renderer = ipcbus.IpcRenderer()
            with pytest.raises(anyio.BusyResourceError):
                async with ipc_main.connect_local() as renderer:
                    endpoint = renderer._endpoint
                    assert endpoint is not None
                    monkeypatch.setattr(Outbox, "last_words", failing)
            monkeypatch.undo()
            assert endpoint.closed.is_set()
            await gone.wait()


async def test_the_objects_every_call_touches_keep_their_attributes_in_slots() -> None:
    """Each object a call touches is a likely cache miss once a process holds many
    connections (docs/performance.md, "Cache misses per call"); one with a
    ``__dict__`` keeps its values in a second block, a second miss. The
    connection's core, its endpoint, its outbox and the fast path's protocol
    have slots, and a call writes without touching the stream object."""
    from ipcbus._aioprotocol import SocketProtocol

    ipc_main = ipcbus.IpcMain()
    ipc_main.handle("inc", lambda event, x: x + 1)
    with anyio.fail_after(10):
        async with ipc_main:
            listener = await ipc_main.listen()
            async with ipcbus.connect(listener.address, token=listener.token) as renderer:
                assert await renderer.invoke("inc", 1) == 2
                endpoint = renderer._endpoint
                assert endpoint is not None
                protocol = endpoint.stream._protocol  # type: ignore[attr-defined]
                assert isinstance(protocol, SocketProtocol)
                for part in (endpoint, endpoint.conn, endpoint.outbox, protocol):
                    assert not hasattr(part, "__dict__"), type(part).__name__
                # The write of a call goes to the protocol's own method.
                assert endpoint.stream.try_write.__self__ is protocol  # type: ignore[attr-defined]


async def test_invoke_does_nothing_until_awaited_and_says_why_not_there() -> None:
    """``invoke`` is a coroutine function: calling it sends nothing and raises
    nothing; awaiting it does both, over the connection of that moment (a plain
    method returning the call's coroutine, tried for a frame fewer per call,
    was neither)."""
    calls: list[int] = []
    ipc_main = ipcbus.IpcMain()
    ipc_main.handle("inc", lambda event, x: calls.append(x) or x + 1)
    renderer = ipcbus.IpcRenderer()
    early = renderer.invoke("inc", 1)  # not connected yet: fine until awaited
    bad = renderer.invoke("", 2)  # not a channel: fine until awaited
    with anyio.fail_after(10):
        async with ipc_main:
            listener = await ipc_main.listen()
            async with renderer.connect(listener.address, token=listener.token):
                made = renderer.invoke("inc", 3)
                assert await renderer.invoke("inc", 4) == 5
                assert calls == [4]  # ``made`` has not been sent
                assert await made == 4
                assert await early == 2  # connected by the time it is awaited
                with pytest.raises(ValueError):
                    await bad
                assert calls == [4, 3, 1]
                later = renderer.invoke("inc", 6)  # awaited on the next connection
            async with renderer.connect(listener.address, token=listener.token):
                assert await later == 7
    with pytest.raises(ipcbus.ConnectionClosedError):
        await renderer.invoke("inc", 5)
    assert inspect.iscoroutinefunction(ipcbus.IpcRenderer.invoke)


async def test_main_ends_the_connection_of_a_renderer_that_left_in_no_task() -> None:
    """A renderer that says Goodbye leaves main nothing to send, nothing to wait for
    (no child to reap) and, here, no ``on_disconnect`` hook to run: main ends the
    connection and forgets it in the read that brought the Goodbye, with no task
    of its own, which with its cancel scopes was most of what an end cost main.
    The renderers run in a child, so every task made here is main's."""
    n = 5
    with anyio.fail_after(30):
        async with ipcbus.IpcMain() as ipc_main:
            listener = await ipc_main.listen()
            up = anyio.Event()
            contents: list[ipcbus.WebContents] = []
            ipc_main.on_connect(lambda c: contents.append(c) or (len(contents) == n and up.set()))
            argv = [sys.executable, "-c", CHILD, listener.address, listener.token, str(n)]
            async with await anyio.open_process(argv, stderr=None) as child:
                await up.wait()
                await anyio.wait_all_tasks_blocked()
                with tasks_made() as made:
                    assert child.stdin is not None
                    await child.stdin.aclose()  # the renderers leave
                    for each in contents:
                        await each.wait_closed()
            assert made == []
            assert [each.disconnect_details.reason for each in contents] == ["clean-exit"] * n
            assert ipc_main.get_all_web_contents() == []


async def test_on_disconnect_runs_after_what_the_renderers_last_frames_started() -> None:
    """An async listener of the renderer's last message, and a handler it left
    running (cancelled), both finish before ``on_disconnect`` runs, and hooks run
    in a task, as before main learned to end a connection without one: a hook
    that cleans up what they recorded finds it recorded."""
    order: list[str] = []
    ipc_main = ipcbus.IpcMain()
    started = anyio.Event()

    @ipc_main.on("last")
    async def last(event: ipcbus.IpcMainEvent, n: int) -> None:
        order.append(f"listener {n}")

    @ipc_main.handle("wait")
    async def wait(event: ipcbus.IpcMainInvokeEvent) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            order.append("handler cancelled")

    gone = anyio.Event()

    def hook(contents: ipcbus.WebContents, details: ipcbus.DisconnectDetails) -> None:
        order.append(f"hook, in a task: {asyncio.current_task() is not None}")
        gone.set()

    ipc_main.on_disconnect(hook)
    with anyio.fail_after(10):
        async with ipc_main:
            listener = await ipc_main.listen()
            async with anyio.create_task_group() as tg:
                async with ipcbus.connect(listener.address, token=listener.token) as renderer:

                    async def call() -> None:
                        with pytest.raises(ipcbus.ConnectionClosedError):
                            await renderer.invoke("wait")  # still running as we leave

                    tg.start_soon(call)
                    await started.wait()
                    # No await between this and leaving: the message and the
                    # Goodbye go out in one write, and main reads them in one read.
                    await renderer.send("last", 1)
            await gone.wait()
    assert order.index("listener 1") < order.index("hook, in a task: True")
    assert order.index("handler cancelled") < order.index("hook, in a task: True")
