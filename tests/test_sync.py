"""The blocking facade, driven from a plain thread against a live main."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import ipcbus
import ipcbus.sync

from .helpers import running_main, spawn_renderer, spawn_script


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


# ---- listeners and handlers first, then connect ----------------------------------------


async def _hello_on_connect(contents: ipcbus.WebContents) -> None:
    await contents.send("hello", contents.id)


async def test_what_main_sends_in_on_connect_reaches_a_listener_registered_first() -> None:
    """Was lost 24 times in 30: ``on`` could only be called after connecting."""
    with anyio.fail_after(60):
        async with running_main() as ipc_main:
            ipc_main.on_connect(_hello_on_connect)
            listener = await ipc_main.listen()

            def one_run() -> tuple[object, int]:
                got: list[object] = []
                arrived = threading.Event()
                ipc = ipcbus.sync.IpcRenderer()

                @ipc.on("hello")
                def on_hello(event: ipcbus.IpcRendererEvent, renderer_id: int) -> None:
                    got.append(renderer_id)
                    arrived.set()

                with ipc.connect(listener.address, token=listener.token):
                    arrived.wait(10)
                    return (got[0] if got else "lost"), ipc.id

            for _ in range(30):
                got, renderer_id = await anyio.to_thread.run_sync(one_run)
                assert got == renderer_id


async def test_main_invokes_sync_handlers_of_a_renderer_in_a_thread() -> None:
    with anyio.fail_after(30):
        async with running_main() as ipc_main:
            ipc_main.handle("add", lambda event, a, b: a + b)
            connected = anyio.Event()
            contents_of: list[ipcbus.WebContents] = []
            ipc_main.on_connect(lambda contents: (contents_of.append(contents), connected.set()))
            listener = await ipc_main.listen()
            threads: dict[str, int] = {}
            seen: list[object] = []

            def client() -> bool:
                ipc = ipcbus.sync.IpcRenderer()

                @ipc.handle("title")
                def title(event: ipcbus.IpcRendererEvent, suffix: str) -> str:
                    threads["handler"] = threading.get_ident()
                    assert event.sender is ipc
                    return "window" + suffix

                ipc.handle("boom", _boom)
                ipc.handle_once("once", lambda event: "only once")
                ipc.handle("callback", lambda event, a, b: event.sender.invoke("add", a, b))

                @ipc.once("note")
                def first_note(event: ipcbus.IpcRendererEvent, n: int) -> None:
                    threads["listener"] = threading.get_ident()
                    seen.append(n)
                    try:
                        event.sender.send("not", "from a listener")
                    except RuntimeError as exc:
                        seen.append(str(exc))

                ipc.on("note", lambda event, n: seen.append(("on", n)))
                assert ipc.listener_count("note") == 2
                with ipc.connect(listener.address, token=listener.token):
                    threads["caller"] = threading.get_ident()
                    return ipc.wait_closed(20)  # main closes when it is done

            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: anyio.to_thread.run_sync(client))
                await connected.wait()
                contents = contents_of[0]
                assert await contents.invoke("title", "!") == "window!"
                assert await contents.invoke("once") == "only once"
                with pytest.raises(ipcbus.NoHandlerError):
                    await contents.invoke("once")
                with pytest.raises(ipcbus.RemoteError) as info:
                    await contents.invoke("boom")
                assert info.value.type_name == "ValueError"
                assert "sync handler failed" in str(info.value)
                assert await contents.invoke("callback", 2, 3) == 5  # blocking call from a handler
                await contents.send("note", 1)
                await contents.send("note", 2)
                await contents.close()  # read after the notes: they are dispatched first
            assert seen[0] == 1
            assert "cannot be called from a listener" in str(seen[1])
            assert seen[2:] == [("on", 1), ("on", 2)]
            # Listeners on the loop's thread, plain handlers in a worker thread.
            assert len({threads["caller"], threads["listener"], threads["handler"]}) == 3


@asynccontextmanager
async def connected_from_a_thread(
    ipc_main: ipcbus.IpcMain, ipc: ipcbus.sync.IpcRenderer
) -> AsyncIterator[ipcbus.WebContents]:
    """``ipc`` connected to ``ipc_main`` from a thread; its WebContents, until the block ends."""
    connected, done = anyio.Event(), threading.Event()
    contents_of: list[ipcbus.WebContents] = []
    ipc_main.on_connect(lambda contents: (contents_of.append(contents), connected.set()))
    listener = await ipc_main.listen()

    def client() -> None:
        with ipc.connect(listener.address, token=listener.token):
            done.wait(60)

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: anyio.to_thread.run_sync(client))
        await connected.wait()
        try:
            yield contents_of[0]
        finally:
            done.set()  # and the renderer closes


async def test_a_listener_whose_annotations_do_not_fit_is_skipped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As in the async renderer: the message is not passed on, the next one is."""
    seen: list[object] = []
    arrived = threading.Event()
    ipc = ipcbus.sync.IpcRenderer()

    @ipc.on("count")
    def count(event: ipcbus.IpcRendererEvent, n: int) -> None:
        seen.append(n)

    @ipc.on("count")
    def untyped(event: ipcbus.IpcRendererEvent, n: Any) -> None:
        seen.append(("untyped", n))
        if n == 4:
            arrived.set()

    with anyio.fail_after(30):
        async with running_main() as ipc_main, connected_from_a_thread(ipc_main, ipc) as contents:
            await contents.send("count", "three")
            await contents.send("count", 4)
            await anyio.to_thread.run_sync(arrived.wait, 20)
    assert seen == [("untyped", "three"), 4, ("untyped", 4)]
    skipped = [r for r in caplog.records if "do not fit its annotations" in r.getMessage()]
    assert len(skipped) == 1
    assert skipped[0].levelname == "WARNING"
    assert "'count'" in skipped[0].getMessage()


async def test_a_listener_that_falls_behind_stops_the_reading_instead_of_buffering() -> None:
    """What main sends and the loop has not taken up is bounded (``max_in_flight``):
    with the listener stuck, the renderer stops reading, so main's writes stall
    and ``send_timeout`` drops the renderer, instead of the renderer's memory
    growing with all main sends (it took 500 MiB for 50,000 sends of 10 kB)."""
    blob = b"x" * 65536
    gone = anyio.Event()
    reasons: list[str] = []
    release = threading.Event()
    ipc = ipcbus.sync.IpcRenderer(max_in_flight=4)
    ipc.on("blob", lambda event, data: release.wait(30))  # stuck until released
    with anyio.fail_after(60):
        async with running_main(send_timeout=1.0) as ipc_main:

            @ipc_main.on_disconnect
            def left(contents: ipcbus.WebContents, details: ipcbus.DisconnectDetails) -> None:
                reasons.append(details.message)
                gone.set()

            async with connected_from_a_thread(ipc_main, ipc) as contents:
                sent = 0
                with pytest.raises(ipcbus.ConnectionClosedError):
                    for _ in range(2000):  # 128 MiB
                        await contents.send("blob", blob)
                        sent += 1
                await gone.wait()
                queued = ipc._queued  # what waits for the loop: the bound and one read
                release.set()  # and the renderer closes, its reading thread waiting for room
    assert sent < 2000
    assert "stopped reading" in reasons[0]
    assert queued <= 64


async def test_a_cancel_from_main_reaches_a_handler_while_calls_wait_for_room() -> None:
    """With ``max_in_flight`` handlers running and main's next calls waiting, the
    reading goes on far enough to see main's Cancel of a running one: else that
    handler, which ends only when cancelled, would hold its slot for good."""
    cancelled = threading.Event()
    ipc = ipcbus.sync.IpcRenderer(max_in_flight=1)

    @ipc.handle("block")
    async def block(event: ipcbus.IpcRendererEvent) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    ipc.handle("quick", lambda event, n: n)
    with anyio.fail_after(30):
        async with running_main() as ipc_main, connected_from_a_thread(ipc_main, ipc) as contents:
            results: list[int] = []

            async def blocked() -> None:
                with pytest.raises(ipcbus.IpcTimeoutError):
                    await contents.invoke("block", timeout=0.5)

            async def quick(n: int) -> None:
                results.append(await contents.invoke("quick", n))

            async with anyio.create_task_group() as calls:
                calls.start_soon(blocked)
                await anyio.wait_all_tasks_blocked()  # "block" left first
                for n in range(3):  # these wait for its slot
                    calls.start_soon(quick, n)
            assert sorted(results) == [0, 1, 2]
            assert cancelled.is_set()


async def test_a_call_main_cancelled_before_its_turn_never_starts() -> None:
    """The reading goes on while the loop is busy, so main's call and its Cancel
    can wait in the inbox together: the Cancel is handled first (the call's task
    has no scope yet), and the call must not start when its turn comes."""
    from .faults._raw import wait_until

    release, started = threading.Event(), threading.Event()
    ipc = ipcbus.sync.IpcRenderer(max_in_flight=1)
    ipc.on("busy", lambda event: release.wait(20))  # holds the loop (a plain listener)

    @ipc.handle("h")
    async def h(event: ipcbus.IpcRendererEvent) -> None:
        started.set()
        await anyio.sleep_forever()

    ipc.handle("quick", lambda event: "quick")
    with anyio.fail_after(30):
        async with running_main() as ipc_main, connected_from_a_thread(ipc_main, ipc) as contents:
            await contents.send("busy")
            with pytest.raises(ipcbus.IpcTimeoutError):
                await contents.invoke("h", timeout=0.2)
            async with anyio.create_task_group() as tg:
                quick: list[str] = []

                async def ask() -> None:
                    quick.append(await contents.invoke("quick"))

                tg.start_soon(ask)
                await wait_until(lambda: ipc._queued == 4, 10)  # busy, h, its Cancel, quick
                release.set()
            assert quick == ["quick"]
            assert not started.is_set()


async def test_handlers_that_invoke_main_get_their_replies_while_calls_wait_for_room() -> None:
    """The bound must not hold back a reply a running handler waits for: with two
    handlers at a time, each invoking main, main's many calls all get answered."""
    ipc = ipcbus.sync.IpcRenderer(max_in_flight=2)
    ipc.handle("work", lambda event, n: event.sender.invoke("add", n, 1))
    results: list[int] = []
    with anyio.fail_after(60):
        async with running_main() as ipc_main, connected_from_a_thread(ipc_main, ipc) as contents:
            ipc_main.handle("add", lambda event, a, b: a + b)

            async def work(n: int) -> None:
                results.append(await contents.invoke("work", n))

            async with anyio.create_task_group() as calls:
                for n in range(200):
                    calls.start_soon(work, n)
    assert sorted(results) == list(range(1, 201))


async def test_a_handler_that_invokes_main_after_reading_stopped_gets_its_reply() -> None:
    """The reading thread waits for room while the handler running makes its own call:
    that call's reply needs a read, so waiting for room must give way to it."""
    go, reading_waits = threading.Event(), threading.Event()
    ipc = ipcbus.sync.IpcRenderer(max_in_flight=1)

    class Room(threading.Condition):
        def wait(self, timeout: float | None = None) -> bool:
            reading_waits.set()
            return super().wait(timeout)

    ipc._room = Room()

    @ipc.handle("work")
    def work(event: ipcbus.IpcRendererEvent, n: int) -> int:
        go.wait(30)  # the first holds the only slot until the reading has stopped
        return event.sender.invoke("add", n, 1)

    results: list[int] = []
    with anyio.fail_after(60):
        async with running_main() as ipc_main, connected_from_a_thread(ipc_main, ipc) as contents:
            ipc_main.handle("add", lambda event, a, b: a + b)

            async def call(n: int) -> None:
                results.append(await contents.invoke("work", n))

            async def more() -> None:  # reads after the calls, which find no room
                blob = b"x" * 65536  # past the read-ahead's bytes (READ_AHEAD_BYTES) soon
                while True:
                    await contents.send("nobody-listens", blob)
                    await anyio.lowlevel.checkpoint()

            async with anyio.create_task_group() as calls:
                for n in range(20):
                    calls.start_soon(call, n)
                async with anyio.create_task_group() as flood:
                    flood.start_soon(more)
                    await anyio.to_thread.run_sync(reading_waits.wait, 30)
                    flood.cancel_scope.cancel()
                assert reading_waits.is_set()  # the reading waits for room
                go.set()
    assert sorted(results) == list(range(1, 21))


def _boom(event: ipcbus.IpcRendererEvent) -> None:
    raise ValueError("sync handler failed")


async def test_a_sync_renderer_child_process_gets_on_connect_and_serves_invoke() -> None:
    with anyio.fail_after(60):
        async with running_main() as ipc_main:
            ipc_main.on_connect(_hello_on_connect)
            ipc_main.handle("add", lambda event, a, b: a + b)
            for _ in range(3):
                greeted: list[object] = []
                done = anyio.Event()
                ipc_main.once(
                    "greeted", lambda event, arg, g=greeted, d=done: (g.append(arg), d.set())
                )
                contents = await spawn_renderer(ipc_main, "sync_worker")
                await done.wait()
                assert greeted == [contents.id]
                assert await contents.invoke("title", "?") == "sync window?"
                assert await contents.invoke("once") == "only once"
                with pytest.raises(ipcbus.NoHandlerError):
                    await contents.invoke("once")
                with pytest.raises(ipcbus.RemoteError, match="ValueError: sync handler failed"):
                    await contents.invoke("boom")
                assert await contents.invoke("add-via-main", 20, 22) == 42
                await contents.send("quit")
                await contents.wait_closed()
                assert contents.disconnect_details is not None
                assert contents.disconnect_details.exit_code == 0


def test_registration_and_calls_need_the_right_state() -> None:
    ipc = ipcbus.sync.IpcRenderer()
    ipc.handle("x", lambda event: 1)
    with pytest.raises(ipcbus.HandlerExistsError):
        ipc.handle("x", lambda event: 2)
    ipc.remove_handler("x")
    ipc.handle("x", lambda event: 3)
    listener = ipc.on("y", print)
    assert ipc.listener_count("y") == 1
    ipc.off("y", listener)
    ipc.on("y", print)
    ipc.remove_all_listeners()
    assert ipc.listener_count("y") == 0
    with pytest.raises(ipcbus.ConnectionClosedError, match="not connected"):
        ipc.invoke("anything")
    ipc.close()  # nothing to close: fine
    with pytest.raises(TypeError, match="must be callable"):
        ipc.on("y", 42)  # type: ignore[call-overload]


# ---- a blocking call stopped early ----------------------------------------------


async def test_a_blocking_invoke_that_times_out_stops_mains_handler() -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            cancelled = anyio.Event()

            @ipc_main.handle("slow")
            async def slow(event: ipcbus.IpcMainEvent) -> None:
                try:
                    await anyio.sleep_forever()
                finally:
                    cancelled.set()

            ipc_main.handle("add", lambda event, a, b: a + b)
            listener = await ipc_main.listen()

            def client() -> int:
                with ipcbus.sync.connect(listener.address, token=listener.token) as ipc:
                    with pytest.raises(ipcbus.IpcTimeoutError, match="'slow'"):
                        ipc.invoke("slow", timeout=0.2)
                    return int(ipc.invoke("add", 1, 2))  # the connection goes on

            assert await anyio.to_thread.run_sync(client) == 3
            await cancelled.wait()


async def test_close_from_another_thread_ends_a_blocked_invoke() -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            started = threading.Event()

            @ipc_main.handle("forever")
            async def forever(event: ipcbus.IpcMainEvent) -> None:
                started.set()
                await anyio.sleep_forever()

            listener = await ipc_main.listen()
            ipc = await anyio.to_thread.run_sync(
                lambda: ipcbus.sync.connect(listener.address, token=listener.token)
            )

            def blocked() -> None:
                with pytest.raises(ipcbus.ConnectionClosedError):
                    ipc.invoke("forever")

            def closer() -> None:
                assert started.wait(10)
                ipc.close()

            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.to_thread.run_sync, blocked)
                tg.start_soon(anyio.to_thread.run_sync, closer)
            assert not ipc.is_connected()


INTERRUPTED = """
    import ipcbus.sync

    with ipcbus.sync.connect() as ipc:
        try:
            ipc.invoke("slow")
        except KeyboardInterrupt:
            # main's handler is told to stop now, not when we disconnect
            assert ipc.invoke("was-cancelled") == "yes"
"""


async def test_ctrl_c_in_a_blocking_invoke_cancels_it_in_main(tmp_path: Path) -> None:
    """Was left running in main until the renderer disconnected."""
    with anyio.fail_after(30):
        async with running_main() as ipc_main:
            started, cancelled = anyio.Event(), anyio.Event()

            @ipc_main.handle("slow")
            async def slow(event: ipcbus.IpcMainEvent) -> None:
                started.set()
                try:
                    await anyio.sleep_forever()
                finally:
                    cancelled.set()

            @ipc_main.handle("was-cancelled")
            async def was_cancelled(event: ipcbus.IpcMainEvent) -> str:
                with anyio.move_on_after(10):
                    await cancelled.wait()
                return "yes" if cancelled.is_set() else "no"

            contents = await spawn_script(ipc_main, tmp_path, INTERRUPTED)
            await started.wait()
            os.kill(contents.process_id, signal.SIGINT)
            await contents.wait_closed()
            assert contents.disconnect_details is not None
            assert contents.disconnect_details.exit_code == 0


INTERRUPTED_OFTEN = """
    import signal, threading
    import ipcbus.sync

    big = b"x" * (4 << 20)  # written in many pieces: interrupts land mid-frame
    stop = threading.Event()
    ok = interrupted = 0
    armed = False

    def checked_invoke(*args):
        global armed, ok, interrupted
        while True:  # until it is answered
            try:
                try:
                    armed = True
                    result = ipc.invoke(*args)
                finally:
                    armed = False
                ok += 1
                return result
            except KeyboardInterrupt:
                interrupted += 1

    with ipcbus.sync.connect() as ipc:
        ours = signal.getsignal(signal.SIGINT)  # ipcbus's, while the link is open
        assert ours is not signal.default_int_handler
        # Interrupts go to ipcbus's handler only inside the invoke, so every
        # KeyboardInterrupt is raised where the try above catches it.
        signal.signal(signal.SIGINT, lambda signum, frame: armed and ours(signum, frame))
        ipc.on("stop", lambda event: stop.set())
        ipc.send("ready")
        while not stop.is_set():
            assert checked_invoke("size", big) == len(big)
        # every frame so far arrived whole: the link still works
        assert checked_invoke("size", big) == len(big)
        checked_invoke("report", ok, interrupted)
        signal.signal(signal.SIGINT, ours)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
"""


async def test_interrupts_in_the_middle_of_big_writes_leave_the_link_whole(
    tmp_path: Path,
) -> None:
    """An interrupt that lands while a frame is half written (or just after a
    write or read returned) must not cost the stream a byte: the next frame
    would be misread and main would end the link."""
    with anyio.fail_after(60):
        async with running_main(max_frame_size=8 << 20) as ipc_main:
            ready, reported = anyio.Event(), anyio.Event()
            report: list[int] = []
            ipc_main.handle("size", lambda event, data: len(data))
            ipc_main.on("ready", lambda event: ready.set())

            @ipc_main.handle("report")
            def on_report(event: ipcbus.IpcMainEvent, ok: int, interrupted: int) -> None:
                report.extend((ok, interrupted))
                reported.set()

            contents = await spawn_script(ipc_main, tmp_path, INTERRUPTED_OFTEN)
            await ready.wait()
            for _ in range(300):
                os.kill(contents.process_id, signal.SIGINT)
                await anyio.sleep(0.004)  # pacing the signals, not waiting for anything
            await contents.send("stop")
            await reported.wait()
            await contents.wait_closed()
            assert contents.disconnect_details is not None
            assert contents.disconnect_details.exit_code == 0
            ok, interrupted = report
            assert ok > 0 and interrupted > 0, report


STALLED = """
    import time
    import ipcbus.sync

    with ipcbus.sync.connect() as ipc:
        ipc.send("hang")  # main's loop stops: it reads nothing for a while
        started = time.monotonic()
        try:
            ipc.send("big", b"x" * (8 << 20))  # stalls once the socket buffers are full
        except KeyboardInterrupt:
            took = time.monotonic() - started
            assert took < 4, f"Ctrl-C took {took:.1f} s to get out of a stalled write"
            assert not ipc.is_connected()  # the frame could not be finished
        else:
            raise SystemExit("the send was not interrupted")
"""


async def test_ctrl_c_gets_out_of_a_write_main_does_not_take(tmp_path: Path) -> None:
    """A frame is finished before Ctrl-C is raised, but not for ever: a peer that
    takes nothing more ends the link about a second after the interrupt."""
    with anyio.fail_after(30):
        async with running_main() as ipc_main:

            @ipc_main.on("hang")
            def hang(event: ipcbus.IpcMainEvent) -> None:
                # Main's loop hangs (a bug in a handler, say); the interrupt comes meanwhile.
                pid = event.sender.process_id
                threading.Timer(1.0, os.kill, (pid, signal.SIGINT)).start()
                time.sleep(6)

            contents = await spawn_script(ipc_main, tmp_path, STALLED)
            await contents.wait_closed()
            assert contents.disconnect_details is not None
            assert contents.disconnect_details.exit_code == 0
