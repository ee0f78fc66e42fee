"""How long a message port lives, as in Electron: a started end is kept, an end nobody
can reach is collected, and its channel closes (the other end hears ``"close"``).

Electron's specs: api-ipc-spec.ts, describe('close event'): it('is emitted when the
other end of a port is garbage-collected') and it('is emitted when the other end of a
port is sent to nowhere'); describe('GC behavior') is in test_electron_ports.py.
"""

from __future__ import annotations

import asyncio
import dis
import gc
import inspect
import sys
import threading
import warnings
import weakref
from collections.abc import Callable
from typing import Any, ClassVar

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

import ipcbus
from ipcbus import IpcMainEvent, MessageChannelMain, MessageEvent, MessagePortMain, _portroute
from ipcbus._loop import LoopHold
from ipcbus._portparts import Reaper

from .helpers import running_main
from .test_backends import LOOPS as ALL_LOOPS
from .test_ports_anywhere import LOOPS, run_on


def _started_end_and_peer(
    on_close: Callable[[], object],
) -> tuple[MessagePortMain, list[MessagePortMain]]:
    """port2 of a new channel, started and listening for "close", and port1 alone in a
    list: clearing the list lets port1 go (no channel object keeps it)."""
    channel = MessageChannelMain()
    channel.port2.on("close", on_close)
    channel.port2.start()
    return channel.port2, [channel.port1]


def _started_with_a_dropped_peer(closed: anyio.Event) -> weakref.ref[MessagePortMain]:
    """Start port2 of a new channel, listening for "close"; nothing keeps port1."""
    _, held = _started_end_and_peer(closed.set)
    return weakref.ref(held.pop())


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

        _, held = _started_end_and_peer(heard)
        await anyio.to_thread.run_sync(held.clear)  # the last reference goes in a thread
        await closed.wait()
        assert heard_in == [on_loop]

    run_on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_started_end_is_let_go_once_its_channel_is_closed(loop: str) -> None:
    async def scenario() -> None:
        closed = anyio.Event()
        survivor, held = _started_end_and_peer(closed.set)
        port2 = weakref.ref(survivor)
        del survivor
        held.clear()  # port1 goes at once: port2 closes
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
                    for _ in range(100):  # their close runs in a task of its own, soon
                        if not len(ipc_main._ports):
                            break
                        await anyio.lowlevel.checkpoint()
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


# ---- a collection in another thread, at the worst moment ------------------------------
#
# ``__del__`` may run in any thread, at any point. These pause it there (a tracer on the
# collecting thread) while the loop's thread acts on the surviving end, then let it go.


def _drop_paused_in(code: Any, line_text: str, held: list[Any]) -> tuple[threading.Thread, Any]:
    """Drop ``held``'s last item in a thread that pauses in ``code`` at ``line_text``.

    Returns the thread and the event that lets it go on.
    """
    source = inspect.getsource(code).splitlines()
    first = code.co_firstlineno

    def at_line(frame: Any, event: str) -> bool:
        return event == "line" and line_text in source[frame.f_lineno - first]

    return _drop_paused(code, at_line, f"reached {line_text!r}", held)


def _drop_paused_on_return(code: Any, held: list[Any]) -> tuple[threading.Thread, Any]:
    """Drop ``held``'s last item in a thread that pauses as ``code`` returns."""
    return _drop_paused(code, lambda frame, event: event == "return", "returned", held)


def _drop_paused(
    code: Any, pause: Callable[[Any, str], bool], what: str, held: list[Any]
) -> tuple[threading.Thread, Any]:
    paused, resume = threading.Event(), threading.Event()

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code is not code:
            return None

        def local(frame: Any, event: str, arg: Any) -> Any:
            if pause(frame, event):
                paused.set()
                resume.wait(5)
            return local

        return local

    def drop() -> None:
        sys.settrace(tracer)
        try:
            held.clear()
        finally:
            sys.settrace(None)

    thread = threading.Thread(target=drop)
    thread.start()
    assert paused.wait(5), f"{code.co_name} never {what}"
    return thread, resume


@pytest.mark.parametrize("started", [True, False], ids=["started", "not-started"])
@pytest.mark.parametrize("loop", LOOPS)
def test_an_end_moved_while_its_peer_is_collected_elsewhere_hears_close(
    loop: str, started: bool
) -> None:
    async def scenario() -> None:
        channel = MessageChannelMain()
        survivor, held = channel.port2, [channel.port1]
        del channel
        if started:
            survivor.start()
        thread, resume = _drop_paused_in(
            MessagePortMain.__del__.__code__, "(hold := peer._hold)", held
        )
        outer = MessageChannelMain()
        outer.port1.post_message("take it", [survivor])  # moved while __del__ is paused
        resume.set()
        await anyio.to_thread.run_sync(thread.join)
        moved = (await _first(outer.port2)).ports[0]
        closed = anyio.Event()
        moved.on("close", closed.set)
        moved.start()
        await closed.wait()

    run_on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_close_is_emitted_once_when_closed_here_while_the_peer_is_collected(
    loop: str,
) -> None:
    async def scenario() -> None:
        heard: list[str] = []
        closed = anyio.Event()
        survivor, held = _started_end_and_peer(lambda: (heard.append("close"), closed.set()))
        thread, resume = _drop_paused_in(
            MessagePortMain.__del__.__code__, "hold.wake(peer._pair_gone)", held
        )
        survivor.close()  # closed here while the collection is under way
        resume.set()
        await anyio.to_thread.run_sync(thread.join)
        await closed.wait()
        for _ in range(10):
            await anyio.lowlevel.checkpoint()  # a second "close" would have come by now
        assert heard == ["close"]

    run_on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_every_end_collected_elsewhere_while_main_reaps_is_closed(loop: str) -> None:
    """Two ends in main go, the second in another thread paused inside
    ``Reaper.collected`` after it read the queue of collected ends, while the loop reaps
    the first."""
    code = Reaper.collected.__code__
    reads = [i for i in dis.get_instructions(code) if i.argval == "_queue"]
    after_read = next(i.offset for i in dis.get_instructions(code) if i.offset > reads[0].offset)

    async def scenario() -> None:
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            held: list[MessagePortMain] = []
            both = anyio.Event()

            def keep(event: IpcMainEvent, *args: Any) -> None:
                held.extend(event.ports)
                both.set()

            ipc_main.on("ends", keep)
            heard = [anyio.Event(), anyio.Event()]
            channels = [MessageChannelMain(), MessageChannelMain()]
            for channel, closed in zip(channels, heard, strict=True):
                channel.port2.on("close", closed.set)
                channel.port2.start()
            await renderer.post_message("ends", None, [c.port1 for c in channels])
            await both.wait()
            second = [held.pop()]
            paused, resume = threading.Event(), threading.Event()

            def tracer(frame: Any, event: str, arg: Any) -> Any:
                if frame.f_code is not code:
                    return None
                frame.f_trace_opcodes = True

                def local(frame: Any, event: str, arg: Any) -> Any:
                    if event == "opcode" and frame.f_lasti == after_read:
                        paused.set()
                        resume.wait(5)
                    return local

                return local

            def drop() -> None:
                sys.settrace(tracer)
                try:
                    second.clear()
                finally:
                    sys.settrace(None)

            held.clear()  # the first end goes here: a reap is on its way
            thread = threading.Thread(target=drop)
            thread.start()
            assert paused.wait(5)
            await heard[0].wait()  # the loop reaped the first meanwhile
            resume.set()
            await anyio.to_thread.run_sync(thread.join)
            await heard[1].wait()

    run_on(loop, scenario)


# ---- ports an IpcMain or a connection hosts, on plain asyncio (pytest-asyncio) ----------
#
# A collected end's peer hears "close" in a task of its host's task group, which anyio
# can only start from a task: never from the bare callback the collector's wake-up is.


async def test_a_local_pair_made_in_main_closes_when_an_end_is_collected() -> None:
    with anyio.fail_after(5):
        async with running_main():
            closed = anyio.Event()
            _started_with_a_dropped_peer(closed)
            await closed.wait()


async def test_a_local_pair_made_in_a_renderer_closes_when_an_end_is_collected() -> None:
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local():
            closed = anyio.Event()
            _started_with_a_dropped_peer(closed)
            await closed.wait()


async def test_an_end_in_main_dropped_in_another_thread_closes_its_channel() -> None:
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            closed = anyio.Event()
            held: list[MessagePortMain] = []
            arrived = anyio.Event()

            def keep_one(event: IpcMainEvent, *args: Any) -> None:
                port1, port2 = event.ports
                event.ports.clear()  # the reader may keep the event a while: only held keeps it
                port1.on("close", closed.set)
                port1.start()
                held.append(port2)
                arrived.set()

            ipc_main.on("pair", keep_one)
            channel = MessageChannelMain()
            await renderer.post_message("pair", None, [channel.port1, channel.port2])
            del channel
            await arrived.wait()
            thread = threading.Thread(target=held.clear)
            thread.start()
            await anyio.to_thread.run_sync(thread.join)
            await closed.wait()


# ---- what is kept, and for how long ---------------------------------------------------


def test_started_ends_are_let_go_when_their_loop_ends() -> None:
    """A started end is kept while its loop runs (it could receive), not after."""
    ends: list[weakref.ref[MessagePortMain]] = []

    async def once() -> None:
        channel = MessageChannelMain()
        channel.port1.on("message", lambda event: None)
        channel.port1.start()
        channel.port1.post_message("one")
        async for _ in channel.port2:  # started by async for, left after one
            break
        ends.append(weakref.ref(channel.port1))
        channel.port2.post_message("unread")

    async def scenario() -> None:
        await once()
        gc.collect()
        assert ends[-1]() is not None  # still pinned: the loop runs

    for _ in range(5):
        asyncio.run(scenario())
    gc.collect()
    assert [end() for end in ends] == [None] * 5


async def test_a_local_pair_carried_in_a_queued_message_still_works_once_routed() -> None:
    """A port posted on a local channel waits in the other end's inbox; that end is then
    sent to a renderer: the carried port must travel as the live end it is."""
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            outer, inner = MessageChannelMain(), MessageChannelMain()
            outer.port1.post_message("carrying", [inner.port1])  # waits in outer.port2
            arrived: list[MessagePortMain] = []
            got = anyio.Event()

            def take(event: Any, *args: Any) -> None:
                arrived.extend(event.ports)
                got.set()

            renderer.on("outer", take)
            contents = ipc_main.from_id(renderer.id)
            assert contents is not None
            await contents.post_message("outer", None, [outer.port2])
            await got.wait()
            carried = (await _first(arrived[0])).ports[0]  # inner.port1, in the renderer
            carried.post_message("to main")
            assert (await _first(inner.port2)).data == "to main"
            inner.port2.post_message("to the renderer")
            assert (await _first(carried)).data == "to the renderer"


@pytest.mark.parametrize("loop", LOOPS)
def test_a_peer_that_looks_before_the_collection_is_over_still_closes(loop: str) -> None:
    """The wake-up lets the loop run while ``__del__`` is still under way, so the weak
    reference to the end being collected still answers: it must count as gone."""

    async def scenario() -> None:
        closed = anyio.Event()
        _, held = _started_end_and_peer(closed.set)
        thread, resume = _drop_paused_on_return(LoopHold.wake.__code__, held)
        await closed.wait()  # heard while the collecting thread is still paused
        resume.set()
        await anyio.to_thread.run_sync(thread.join)

    run_on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_main_reaps_an_end_whose_collection_is_not_over(loop: str) -> None:
    async def scenario() -> None:
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            held: list[MessagePortMain] = []
            arrived = anyio.Event()

            def keep(event: IpcMainEvent, *args: Any) -> None:
                held.extend(event.ports)
                event.ports.clear()  # the reader may keep the event a while
                arrived.set()

            ipc_main.on("end", keep)
            channel = MessageChannelMain()
            closed = anyio.Event()
            channel.port2.on("close", closed.set)
            channel.port2.start()
            await renderer.post_message("end", None, [channel.port1])
            await arrived.wait()
            thread, resume = _drop_paused_on_return(
                _portroute.MainPortRouter.collected.__code__, held
            )
            await closed.wait()  # the renderer's end hears it while main's is mid-collection
            resume.set()
            await anyio.to_thread.run_sync(thread.join)

    run_on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_transferred_port_the_sender_keeps_does_not_keep_its_successor(loop: str) -> None:
    """Code may keep the neutered object it transferred (``channel.port2``): the end that
    travelled on is still collected, and closes the channel, when its receiver drops it."""

    async def scenario() -> None:
        channel, outer = MessageChannelMain(), MessageChannelMain()
        closed = anyio.Event()
        channel.port1.on("close", closed.set)
        channel.port1.start()
        outer.port1.post_message("take it", [channel.port2])  # channel keeps the old object
        event = await _first(outer.port2)
        moved = weakref.ref(event.ports[0])
        del event
        gc.collect()
        assert moved() is None
        await closed.wait()
        assert "neutered" in repr(channel.port2)

    run_on(loop, scenario)


def test_started_ports_add_no_task_that_user_code_could_wait_for_or_cancel() -> None:
    """On asyncio, what keeps started ports alive is no task: code that waits for, or
    cancels, every other task (shutdown helpers) neither hangs nor breaks ports."""

    async def scenario() -> None:
        channel = MessageChannelMain()
        heard: list[Any] = []
        closed = asyncio.Event()
        channel.port2.on("message", lambda event: heard.append(event.data))
        channel.port2.on("close", closed.set)
        channel.port2.start()
        channel.port1.post_message("before")
        for _ in range(5):
            await asyncio.sleep(0)
        others = asyncio.all_tasks() - {asyncio.current_task()}
        assert others == set()
        for task in others:
            task.cancel()
        channel.port1.post_message("after")
        channel.port1.close()
        await asyncio.wait_for(closed.wait(), 5)
        assert heard == ["before", "after"]

    asyncio.run(scenario())


def test_a_loop_closed_without_cancelling_its_tasks_lets_its_started_ports_go() -> None:
    async def start_one() -> tuple[weakref.ref[MessagePortMain], MessagePortMain]:
        channel = MessageChannelMain()
        channel.port2.on("message", lambda event: None)
        channel.port2.start()  # pinned while the loop lives
        return weakref.ref(channel.port2), channel.port1  # port1 kept: the channel stays open

    loop = asyncio.new_event_loop()
    port, _other = loop.run_until_complete(start_one())
    gc.collect()
    assert port() is not None
    loop.close()
    del loop
    gc.collect()
    assert port() is None


def test_a_loop_closed_with_a_delivery_still_pending_lets_its_ports_go() -> None:
    """The delivery task (an async listener's) never ran: it, and through it the
    port, are the closed loop's to drop, not a table's of ipcbus for ever."""

    async def start_one() -> tuple[weakref.ref[MessagePortMain], MessagePortMain]:
        channel = MessageChannelMain()

        async def on_message(event: MessageEvent) -> None:
            pass

        channel.port2.on("message", on_message)
        channel.port2.start()
        channel.port1.post_message("never delivered")  # a task, not run before the close
        return weakref.ref(channel.port2), channel.port1

    loop = asyncio.new_event_loop()
    port, _other = loop.run_until_complete(start_one())
    loop.close()
    del loop
    with warnings.catch_warnings():  # the never-run coroutine, collected with its task
        warnings.simplefilter("ignore", RuntimeWarning)
        gc.collect()
    assert port() is None


@pytest.mark.parametrize("loop", ALL_LOOPS)
def test_an_end_in_main_collected_after_main_stopped_still_closes_its_channel(
    loop: str,
) -> None:
    """Both ends of a renderer's channel are kept in main; one is let go after
    ``async with ipc_main`` has ended: the other still hears "close"."""

    async def scenario() -> None:
        held: list[MessagePortMain] = []
        closed = anyio.Event()
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            arrived = anyio.Event()

            def keep(event: IpcMainEvent, *args: Any) -> None:
                kept, let_go = event.ports
                event.ports.clear()  # the reader may keep the event a while
                kept.on("close", closed.set)
                kept.start()
                held.append(let_go)
                arrived.set()

            ipc_main.on("pair", keep)
            channel = MessageChannelMain()
            await renderer.post_message("pair", None, [channel.port1, channel.port2])
            del channel
            await arrived.wait()
        assert not closed.is_set()
        held.clear()  # collected now, main having stopped
        with anyio.fail_after(5):
            await closed.wait()

    ipcbus.run(scenario, loop=loop)


async def _cancel_the_others() -> None:
    """What shutdown helpers do on asyncio: cancel every task but this one, and wait."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


@pytest.mark.parametrize("loop", [loop for loop in ALL_LOOPS if loop != "trio"])
def test_a_close_on_its_way_survives_code_that_cancels_every_other_task(loop: str) -> None:
    """Shutdown helpers cancel every task but their own: the wake-up a collection
    sets off is a loop callback, not a task, so such a helper run before it cannot
    lose it. (The delivery it then starts is a task like any other of ipcbus's.)"""

    async def scenario() -> None:
        closed = anyio.Event()
        _started_with_a_dropped_peer(closed)  # port1 goes here: the close is on its way
        await _cancel_the_others()
        with anyio.fail_after(5):
            await closed.wait()

    ipcbus.run(scenario, loop=loop)


@pytest.mark.parametrize("loop", [loop for loop in ALL_LOOPS if loop != "trio"])
def test_a_delivery_cancelled_before_it_ran_is_started_again(loop: str) -> None:
    """A helper that cancels every other task can cancel a port's delivery task
    before its first step, so that none of its code runs: the port notices by
    itself, and delivers what was queued, then what comes next, in order (it
    used to believe a delivery was still on its way, and delivered nothing ever
    again)."""

    async def scenario() -> None:
        channel = MessageChannelMain()
        got: list[Any] = []
        arrived = [anyio.Event(), anyio.Event()]

        async def on_message(event: MessageEvent) -> None:  # async: delivered by a task
            got.append(event.data)
            arrived[len(got) - 1].set()

        channel.port2.on("message", on_message)
        channel.port2.start()
        channel.port1.post_message("first")  # its delivery task is created, not run yet
        await _cancel_the_others()
        with anyio.fail_after(5):
            await arrived[0].wait()  # with nothing more posted
        channel.port1.post_message("second")
        with anyio.fail_after(5):
            await arrived[1].wait()
        assert got == ["first", "second"]

    ipcbus.run(scenario, loop=loop)


@pytest.mark.parametrize("loop", [loop for loop in ALL_LOOPS if loop != "trio"])
def test_a_close_whose_delivery_was_cancelled_before_it_ran_is_still_emitted(
    loop: str,
) -> None:
    """Nothing can be posted to a closed port to set it going again."""

    async def scenario() -> None:
        channel = MessageChannelMain()
        closed = anyio.Event()
        channel.port2.on("close", closed.set)
        channel.port2.start()
        channel.port1.close()  # port2's "close" is on its way, in a task
        await _cancel_the_others()
        with anyio.fail_after(5):
            await closed.wait()

    ipcbus.run(scenario, loop=loop)


@pytest.mark.parametrize("loop", [loop for loop in ALL_LOOPS if loop != "trio"])
def test_a_delivery_in_mains_task_group_cancelled_before_it_ran_is_started_again(
    loop: str,
) -> None:
    """In an ``IpcMain``'s task group anyio runs the delivery inside a coroutine
    of its own, which is what a cancel before the first step closes: the port's
    own coroutine is left never started. (anyio then stops the group, so main.)"""

    async def scenario() -> None:
        got: list[Any] = []
        arrived = anyio.Event()

        async def on_message(event: MessageEvent) -> None:
            got.append(event.data)
            arrived.set()

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "coroutine ... was never awaited" included
            try:
                async with ipcbus.IpcMain(shutdown_grace=1.0):
                    channel = MessageChannelMain()
                    channel.port2.on("message", on_message)
                    channel.port2.start()
                    before = asyncio.all_tasks()
                    channel.port1.post_message("first")
                    for task in asyncio.all_tasks() - before:  # the delivery task
                        task.cancel()
                    with anyio.fail_after(5):
                        await arrived.wait()
            except asyncio.CancelledError:  # main's group was cancelled with its task
                current = asyncio.current_task()
                assert current is not None
                current.uncancel()
                with anyio.fail_after(5):
                    await arrived.wait()
            gc.collect()
        assert got == ["first"]

    ipcbus.run(scenario, loop=loop)


class _LoopThatSlipsACallbackIn(asyncio.SelectorEventLoop):
    """Queues one callback right after a task is made: what another thread's
    ``call_soon_threadsafe`` does when the GIL switches to it just then."""

    slip: ClassVar[list[Callable[[], object]]] = []

    def create_task(self, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:  # type: ignore[override]
        task = super().create_task(coro, **kwargs)
        if self.slip:
            self.call_soon(self.slip.pop())
        return task


@pytest.mark.parametrize("in_main", [False, True], ids=["no owner", "in main"])
def test_a_check_left_over_from_a_delivery_leaves_the_next_one_alone(in_main: bool) -> None:
    """The check queued after a delivery task looks at that delivery only: a post
    that slips in between (from another thread) starts the next delivery, which
    the check used to close before it ran, and every later one after it."""
    errors: list[dict[str, Any]] = []

    async def scenario() -> list[Any]:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
        got: list[Any] = []

        async def body() -> None:
            channel = MessageChannelMain()
            channel.port2.on("message", lambda event: got.append(event.data))
            channel.port2.start()
            await asyncio.sleep(0)
            _LoopThatSlipsACallbackIn.slip.append(lambda: channel.port1.post_message("second"))
            channel.port1.post_message("first")
            for _ in range(10):
                await asyncio.sleep(0)

        if in_main:
            async with ipcbus.IpcMain(shutdown_grace=1.0):
                await body()
        else:
            await body()
        return got

    got = anyio.run(
        scenario, backend="asyncio", backend_options={"loop_factory": _LoopThatSlipsACallbackIn}
    )
    assert got == ["first", "second"]
    assert not errors


def test_a_delivery_in_trio_as_a_guest_of_asyncio_is_left_to_trio() -> None:
    """asyncio's loop is running there too, but the delivery is a trio task that
    starts later: a check on asyncio's loop would close it before it ran."""
    trio = pytest.importorskip("trio")

    async def trio_main() -> list[Any]:
        got: list[Any] = []
        async with ipcbus.IpcMain(shutdown_grace=1.0):
            channel = MessageChannelMain()
            arrived = anyio.Event()

            async def on_message(event: MessageEvent) -> None:
                got.append(event.data)
                arrived.set()

            channel.port2.on("message", on_message)
            channel.port2.start()
            channel.port1.post_message("hello")
            with anyio.fail_after(5):
                await arrived.wait()
        return got

    async def host() -> list[Any]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        trio.lowlevel.start_guest_run(
            trio_main,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=done.set_result,
            host_uses_signal_set_wakeup_fd=True,
        )
        outcome = await done
        result: list[Any] = outcome.unwrap()
        return result

    assert asyncio.run(host()) == ["hello"]


def test_a_delivery_started_from_a_loop_callback_leaves_no_coroutine_behind() -> None:
    """Under ``asyncio.run`` anyio may make the delivery's coroutine and then refuse
    to start it from a bare callback: that coroutine is closed, not left to warn."""

    async def scenario() -> None:
        async with ipcbus.IpcMain(shutdown_grace=1.0):
            channel = MessageChannelMain()
            arrived = anyio.Event()

            async def on_message(event: MessageEvent) -> None:
                arrived.set()

            channel.port2.on("message", on_message)
            channel.port2.start()
            asyncio.get_running_loop().call_soon(channel.port1.post_message, "x")
            with anyio.fail_after(5):
                await arrived.wait()

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine ... was never awaited"
        asyncio.run(scenario())
        gc.collect()


class _LoopWithoutAttributes(asyncio.SelectorEventLoop):
    """A loop that refuses the attribute ipcbus keeps started ports in (none known does)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_ipcbus_hold":
            raise AttributeError(name)
        super().__setattr__(name, value)


def test_a_loop_that_takes_no_attributes_still_keeps_started_ports_while_it_lives() -> None:
    kept: list[MessagePortMain] = []  # port1: the channel stays open

    async def start_one() -> weakref.ref[MessagePortMain]:
        channel = MessageChannelMain()
        channel.port2.on("message", lambda event: None)
        channel.port2.start()
        kept.append(channel.port1)
        port = weakref.ref(channel.port2)
        del channel
        gc.collect()
        assert port() is not None  # kept: started, and the channel is open
        return port

    loop = _LoopWithoutAttributes()
    port = loop.run_until_complete(start_one())
    loop.close()
    del loop
    gc.collect()
    assert port() is None  # the loop went, and what it kept with it


# ---- closes a renderer has not answered yet --------------------------------------------


async def _all_until_close(port: MessagePortMain) -> list[Any]:
    """Everything ``port`` delivers until its close."""
    return [event.data async for event in port]


async def _held_by(
    renderer: ipcbus.IpcRenderer, contents: ipcbus.WebContents, n: int
) -> tuple[list[MessageChannelMain], list[MessagePortMain]]:
    """``n`` channels made in main, each ``port2`` sent to ``renderer`` and held there."""
    held: list[MessagePortMain] = []
    all_held = anyio.Event()

    def on_port(event: Any, *args: Any) -> None:
        held.extend(event.ports)
        if len(held) == n:
            all_held.set()

    renderer.on("port", on_port)
    channels = [MessageChannelMain() for _ in range(n)]
    for channel in channels:
        await contents.post_message("port", None, [channel.port2])
    await all_held.wait()
    return channels, held


async def test_an_end_moved_before_its_renderer_read_its_close_still_closes_in_main() -> None:
    """An honest renderer keeps its end of a channel whose other end main closes, in
    a burst of closes, and moves it to main before it reads the close: main's new
    port must see the close (main keeps the end until the renderer answers)."""
    burst = 8
    with anyio.fail_after(10):
        async with running_main(max_open_ports=4) as ipc_main:
            taken: list[MessagePortMain] = []
            back: list[MessagePortMain] = []
            ipc_main.on("take", lambda event, *args: taken.extend(event.ports))
            ipc_main.on("back", lambda event, *args: back.extend(event.ports))
            ipc_main.handle("ping", lambda event: None)
            async with ipc_main.connect_local() as renderer:
                contents = ipc_main.get_all_web_contents()[0]
                mains, _ = await _held_by(renderer, contents, burst)
                mine = MessageChannelMain()  # made in the renderer
                await renderer.post_message("take", None, [mine.port1])
                await renderer.invoke("ping")
                for channel in mains:
                    channel.port1.close()  # a burst of closes, none answered yet
                taken[0].close()
                await renderer.post_message("back", None, [mine.port2])  # before it read it
                await renderer.invoke("ping")
                with anyio.fail_after(3):
                    assert await _all_until_close(back[0]) == []


async def test_what_main_sent_before_a_close_survives_a_move_back_in_a_burst() -> None:
    """Main posts a message on a channel and closes it, among a burst of closes; the
    renderer moves its end back to main before it read either: main's new port gets
    the message, then the close."""
    burst = 8
    with anyio.fail_after(10):
        async with running_main(max_open_ports=4) as ipc_main:
            back: list[MessagePortMain] = []
            ipc_main.on("back", lambda event, *args: back.extend(event.ports))
            ipc_main.handle("ping", lambda event: None)
            async with ipc_main.connect_local() as renderer:
                contents = ipc_main.get_all_web_contents()[0]
                channels, held = await _held_by(renderer, contents, burst + 1)
                for channel in channels[:-1]:
                    channel.port1.close()
                channels[-1].port1.post_message("hello")
                channels[-1].port1.close()
                await renderer.post_message("back", None, [held[-1]])  # before it read them
                await renderer.invoke("ping")
                with anyio.fail_after(3):
                    assert await _all_until_close(back[0]) == ["hello"]
