"""How long a message port lives, as in Electron: a started end is kept, an end nobody
can reach is collected, and its channel closes (the other end hears ``"close"``).

Electron's specs: api-ipc-spec.ts, describe('close event'): it('is emitted when the
other end of a port is garbage-collected') and it('is emitted when the other end of a
port is sent to nowhere'); describe('GC behavior') is in test_electron_ports.py.
"""

from __future__ import annotations

import gc
import threading
import weakref
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

import ipcbus
from ipcbus import IpcMainEvent, MessageChannelMain, MessageEvent, MessagePortMain

from .helpers import running_main
from .test_backends import LOOPS as ALL_LOOPS
from .test_ports_anywhere import LOOPS, run_on


def _started_with_a_dropped_peer(closed: anyio.Event) -> weakref.ref[MessagePortMain]:
    """Start port2 of a new channel, listening for "close"; nothing keeps port1."""
    channel = MessageChannelMain()
    channel.port2.on("close", closed.set)
    channel.port2.start()
    return weakref.ref(channel.port1)


@pytest.mark.parametrize("loop", LOOPS)
def test_close_is_emitted_when_the_other_end_is_garbage_collected(loop: str) -> None:
    async def scenario() -> None:
        closed = anyio.Event()
        port1 = _started_with_a_dropped_peer(closed)
        gc.collect()
        assert port1() is None
        await closed.wait()

    run_on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_close_is_emitted_when_the_collected_end_was_in_a_cycle(loop: str) -> None:
    """An end that refers to itself (a listener's closure) goes at the next collection."""

    async def scenario() -> None:
        closed = anyio.Event()

        def make() -> weakref.ref[MessagePortMain]:
            channel = MessageChannelMain()
            port1 = channel.port1
            port1.on("message", lambda event: port1.post_message(event.data))  # not started
            channel.port2.on("close", closed.set)
            channel.port2.start()
            return weakref.ref(port1)

        port1 = make()
        assert port1() is not None  # the cycle keeps it until the collector runs
        await anyio.lowlevel.checkpoint()
        assert not closed.is_set()
        gc.collect()
        assert port1() is None
        await closed.wait()

    run_on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_an_end_collected_in_another_thread_closes_on_the_loop(loop: str) -> None:
    async def scenario() -> None:
        closed = anyio.Event()
        on_loop = threading.get_ident()
        heard_in: list[int] = []

        def heard() -> None:
            heard_in.append(threading.get_ident())
            closed.set()

        def make() -> list[MessagePortMain]:
            channel = MessageChannelMain()
            channel.port2.on("close", heard)
            channel.port2.start()
            return [channel.port1]

        held = make()
        await anyio.to_thread.run_sync(held.clear)  # the last reference goes in a thread
        await closed.wait()
        assert heard_in == [on_loop]

    run_on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_started_end_is_let_go_once_its_channel_is_closed(loop: str) -> None:
    async def scenario() -> None:
        closed = anyio.Event()

        def make() -> weakref.ref[MessagePortMain]:
            channel = MessageChannelMain()
            channel.port2.on("close", closed.set)
            channel.port2.start()
            return weakref.ref(channel.port2)

        port2 = make()  # port1 goes at once: port2 closes
        await closed.wait()
        await anyio.lowlevel.checkpoint()  # the task that emitted "close" ends
        gc.collect()
        assert port2() is None

    run_on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_posting_towards_a_collected_end_does_nothing_and_close_follows(loop: str) -> None:
    async def scenario() -> None:
        port1 = MessageChannelMain().port1  # port2: never started, nothing refers to it
        gc.collect()
        assert "closed" in repr(port1)
        port1.post_message("to nobody")  # does nothing, as on any closed port
        closed = anyio.Event()
        port1.on("close", closed.set)
        port1.start()
        await closed.wait()

    run_on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_ends_that_are_both_referred_to_stay_open(loop: str) -> None:
    async def scenario() -> None:
        channel = MessageChannelMain()
        port1, port2 = channel.port1, channel.port2
        del channel
        gc.collect()
        port1.post_message("still here")
        async for event in port2:
            assert event.data == "still here"
            break
        port1.close()

    run_on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_an_end_moved_into_a_message_is_kept_by_it(loop: str) -> None:
    """An end in a message that waits in an inbox lives as long as the message."""

    async def scenario() -> None:
        outer = MessageChannelMain()
        inner = MessageChannelMain()
        inner_port2 = weakref.ref(inner.port2)
        outer.port1.post_message("take this", [inner.port2])
        closed = anyio.Event()
        inner.port1.on("close", closed.set)
        inner.port1.start()
        inner_port1 = inner.port1
        del inner
        gc.collect()
        assert inner_port2() is None  # moved: a fresh object travels in the message
        assert not closed.is_set()
        event = await _first(outer.port2)
        event.ports[0].post_message("back")
        async for reply in inner_port1:
            assert reply.data == "back"
            break
        del event
        gc.collect()  # now nothing refers to the end that came in the message
        await closed.wait()

    run_on(loop, scenario)


async def _first(port: MessagePortMain) -> MessageEvent:
    async for event in port:
        return event
    raise AssertionError("the port closed")


# ---- across a connection --------------------------------------------------------------


@pytest.mark.parametrize("loop", ALL_LOOPS)
def test_an_end_a_renderer_ignores_closes_its_channel_in_main(loop: str) -> None:
    """Main sends port2 to a renderer whose listener ignores ``event.ports``."""

    async def scenario() -> None:
        with anyio.fail_after(5):
            async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
                arrived = anyio.Event()
                renderer.on("port", lambda event, *args: arrived.set())
                closed = anyio.Event()
                channel = MessageChannelMain()
                channel.port1.on("close", closed.set)
                channel.port1.start()
                contents = ipc_main.from_id(renderer.id)
                assert contents is not None
                await contents.post_message("port", None, [channel.port2])
                await arrived.wait()
                gc.collect()
                await closed.wait()

    ipcbus.run(scenario, loop=loop)


@pytest.mark.parametrize("loop", ALL_LOOPS)
def test_an_end_main_ignores_closes_its_channel_in_the_renderer(loop: str) -> None:
    """api-ipc-spec.ts, close event: the other end of a port sent to a listener that
    does nothing with it: collected in main, so the renderer's end hears "close"."""

    async def scenario() -> None:
        with anyio.fail_after(5):
            async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
                ipc_main.on("port", lambda event, *args: None)
                closed = anyio.Event()
                channel = MessageChannelMain()
                channel.port2.on("close", closed.set)
                channel.port2.start()
                await renderer.post_message("port", None, [channel.port1])
                await closed.wait()

    ipcbus.run(scenario, loop=loop)


@pytest.mark.parametrize("loop", ALL_LOOPS)
def test_ends_main_ignores_leave_its_table_and_the_renderers_budget(loop: str) -> None:
    """Both ends of a renderer's channels, sent to a listener that ignores them: main
    lets them go, so a renderer can do so forever without reaching max_open_ports."""

    async def scenario() -> None:
        limit = 8
        with anyio.fail_after(20):
            async with (
                running_main(max_open_ports=limit) as ipc_main,
                ipc_main.connect_local() as renderer,
            ):
                heard = 0

                def ignore(event: IpcMainEvent, *args: Any) -> None:
                    nonlocal heard
                    heard += len(event.ports)

                ipc_main.on("pair", ignore)

                @ipc_main.handle("ends")
                async def ends(event: Any) -> int:
                    gc.collect()  # the reader may still refer to the last event
                    await anyio.lowlevel.checkpoint()  # the ends collected close first
                    return len(ipc_main._ports)

                # In one burst: each event goes once its listener returns, and its ends
                # with it, before the next frame's ends are counted.
                for _ in range(50 * limit):
                    channel = MessageChannelMain()
                    await renderer.post_message("pair", None, [channel.port1, channel.port2])
                assert await renderer.invoke("ends") == 0  # still connected: never over the limit
                assert heard == 100 * limit

    ipcbus.run(scenario, loop=loop)


@pytest.mark.parametrize("loop", ALL_LOOPS)
def test_an_end_main_keeps_is_not_closed(loop: str) -> None:
    async def scenario() -> None:
        with anyio.fail_after(5):
            async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
                kept: list[MessagePortMain] = []
                ipc_main.on("port", lambda event, *args: kept.extend(event.ports))
                channel = MessageChannelMain()
                await renderer.post_message("port", None, [channel.port1])

                @ipc_main.handle("collect")
                def collect(event: Any) -> None:
                    gc.collect()

                await renderer.invoke("collect")
                assert len(kept) == 1
                kept[0].post_message("from main")
                event: MessageEvent
                async for event in channel.port2:
                    assert event.data == "from main"
                    break
                kept[0].close()

    ipcbus.run(scenario, loop=loop)
