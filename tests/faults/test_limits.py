"""Backpressure and limits (issue 3, fourth bullet).

A renderer flooding ``invoke``/``send`` gets at most ``max_in_flight`` calls
running; main then stops reading its socket, so the flood fills the flooder's
own socket buffer, not main's memory. A renderer that never reads makes main's
sends block, then fail after ``send_timeout`` with a clear error. Beyond
``max_connections`` a new connection is refused with a Goodbye that says so.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import anyio
import pytest

import ipcbus
import ipcbus.sync
from ipcbus._wire import PROTOCOL_VERSION, CloseCode, Hello, Request, RequestKind

from ._raw import RawPeer, bench, frames, raw_args, wait_until, warnings_logged


@pytest.fixture(autouse=True)
def _capture_ipcbus_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="ipcbus")


class Gate:
    """Counts calls running in main, and holds them until released."""

    def __init__(self, threshold: int) -> None:
        self.running = 0
        self.peak = 0
        self.started = 0
        self.finished = 0
        self.release = anyio.Event()
        self.reached = anyio.Event()
        self._threshold = threshold

    async def hold(self) -> None:
        self.running += 1
        self.started += 1
        self.peak = max(self.peak, self.running)
        if self.started >= self._threshold:
            self.reached.set()
        try:
            await self.release.wait()
        finally:
            self.running -= 1
            self.finished += 1


async def test_invoke_flood_runs_at_most_max_in_flight_handlers() -> None:
    with anyio.fail_after(20):
        async with bench(max_in_flight=4) as setup:
            gate = Gate(threshold=4)

            @setup.ipc_main.handle("hold")
            async def hold(event: ipcbus.IpcMainInvokeEvent, n: int) -> int:
                await gate.hold()
                return n

            async with ipcbus.connect(
                setup.listener.address, token=setup.listener.token
            ) as flooder:
                results: list[int] = []

                async def call(n: int) -> None:
                    results.append(await flooder.invoke("hold", n))

                async with anyio.create_task_group() as tg:
                    for n in range(100):
                        tg.start_soon(call, n)
                    await gate.reached.wait()
                    with anyio.move_on_after(0.3):  # bounded look for a fifth one
                        while gate.started <= 4:  # noqa: ASYNC110 - looking for what must not happen
                            await anyio.sleep(0.01)
                    assert gate.started == 4
                    await setup.check_healthy()  # the limit is per connection
                    gate.release.set()
                assert sorted(results) == list(range(100))
                assert gate.peak == 4
            await setup.check_healthy()


async def test_send_flood_runs_at_most_max_in_flight_async_listeners() -> None:
    with anyio.fail_after(20):
        async with bench(max_in_flight=4) as setup:
            gate = Gate(threshold=4)
            got: list[int] = []
            all_in = anyio.Event()

            @setup.ipc_main.on("note")
            async def note(event: ipcbus.IpcMainEvent, n: int) -> None:
                await gate.hold()
                got.append(n)
                if len(got) == 100:
                    all_in.set()

            async with ipcbus.connect(
                setup.listener.address, token=setup.listener.token
            ) as flooder:
                for n in range(100):
                    await flooder.send("note", n)
                await gate.reached.wait()
                with anyio.move_on_after(0.3):
                    while gate.started <= 4:  # noqa: ASYNC110 - looking for what must not happen
                        await anyio.sleep(0.01)
                assert gate.started == 4
                await setup.check_healthy()
                gate.release.set()
                await all_in.wait()
                assert got == list(range(100))  # listeners were called in send order
                assert gate.peak == 4
            await setup.check_healthy()


async def test_raw_flood_fills_the_flooders_buffer_not_mains_memory() -> None:
    """A hostile peer writes requests as fast as it can while main's limit is reached.

    main stops reading: the peer's writes stall once the kernel buffers are
    full, at a few hundred KiB, and main has started exactly max_in_flight
    handlers however many requests were written.
    """
    with anyio.fail_after(20):
        async with bench(max_in_flight=4) as setup:
            gate = Gate(threshold=4)

            @setup.ipc_main.handle("hold")
            async def hold(event: ipcbus.IpcMainInvokeEvent, *args: object) -> None:
                await gate.hold()

            async with RawPeer.connect(setup.listener.address) as peer:
                welcome = await peer.handshake(setup.listener.token)
                written = 0
                request_id = 0
                with anyio.move_on_after(1.0):
                    while True:
                        batch = bytearray()
                        for _ in range(100):
                            request_id += 1
                            batch += frames(
                                Request(request_id, RequestKind.INVOKE, "hold", raw_args(0))
                            )
                        if not await peer.send(bytes(batch)):
                            break
                        written += len(batch)
                assert gate.started == 4, gate.started
                assert written < 16 * 1024 * 1024, written  # the writes stalled
                assert request_id > 1000  # well past the limit
                await setup.check_healthy()
                gate.release.set()
            await setup.disconnected(welcome.renderer_id)
            await setup.check_healthy()


async def test_raw_flood_while_main_awaits_the_flooder_is_still_bounded() -> None:
    """main has an invoke out to the flooder (which never answers it) during the flood.

    Waiting for a reply must not switch backpressure off: main reads on (the
    reply it waits for may be behind the flood) but holds at most a bounded
    backlog of calls, starts only max_in_flight handlers, and the flood
    stalls in the kernel.
    """
    with anyio.fail_after(20):
        async with bench(max_in_flight=4) as setup:
            gate = Gate(threshold=4)

            @setup.ipc_main.handle("hold")
            async def hold(event: ipcbus.IpcMainInvokeEvent, *args: object) -> None:
                await gate.hold()

            async with RawPeer.connect(setup.listener.address) as peer:
                contents = await peer.web_contents(setup.ipc_main, setup.listener.token)
                async with anyio.create_task_group() as tg:

                    async def unanswered() -> None:
                        with pytest.raises(ipcbus.ConnectionClosedError):
                            await contents.invoke("never-answered")

                    tg.start_soon(unanswered)
                    written = 0
                    request_id = 0
                    with anyio.move_on_after(1.0):
                        while True:
                            batch = bytearray()
                            for _ in range(100):
                                request_id += 1
                                batch += frames(
                                    Request(request_id, RequestKind.INVOKE, "hold", raw_args(0))
                                )
                            if not await peer.send(bytes(batch)):
                                break
                            written += len(batch)
                    started = gate.started
                    gate.release.set()
                    await peer.stream.aclose()
                assert started == 4, f"{started} handlers started at once (limit 4)"
                assert written < 16 * 1024 * 1024, written
            await setup.check_healthy()


async def test_renderer_that_never_reads_makes_sends_fail_after_send_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with anyio.fail_after(20):
        async with bench(send_timeout=0.5) as setup:
            async with RawPeer.connect(setup.listener.address) as peer:
                welcome = await peer.handshake(setup.listener.token)
                contents = setup.ipc_main.from_id(welcome.renderer_id)
                assert contents is not None
                blob = b"x" * 65536
                sent = 0
                with pytest.raises(ipcbus.ConnectionClosedError) as caught:
                    while True:
                        began = anyio.current_time()
                        await contents.send("blob", blob)
                        assert anyio.current_time() - began < 0.5 + 1  # blocked, then gone
                        sent += len(blob)
                        if sent % (1024 * 1024) == 0:
                            await setup.check_healthy()  # others are served meanwhile
                assert "stopped reading" in str(caught.value)
                assert sent < 32 * 1024 * 1024, sent  # bounded by the socket buffers
                with pytest.raises(ipcbus.ConnectionClosedError):
                    await contents.send("blob", b"")
            details = await setup.disconnected(welcome.renderer_id)
            assert "stopped reading" in details.message
            assert warnings_logged(caplog, "stopped reading")
            await setup.check_healthy()


async def test_invoke_to_a_renderer_that_never_reads_fails_after_send_timeout() -> None:
    """Invokes pile up in a write that makes no progress: all of them fail, none hangs."""
    with anyio.fail_after(20):
        async with bench(send_timeout=0.5) as setup:
            async with RawPeer.connect(setup.listener.address) as peer:
                contents = await peer.web_contents(setup.ipc_main, setup.listener.token)
                errors: list[Exception] = []

                async def call() -> None:
                    try:
                        await contents.invoke("never", b"x" * 65536, timeout=30)
                    except Exception as exc:
                        errors.append(exc)

                with anyio.fail_after(3):
                    async with anyio.create_task_group() as tg:
                        for _ in range(200):
                            tg.start_soon(call)
                assert len(errors) == 200
                assert all(isinstance(e, ipcbus.ConnectionClosedError) for e in errors), errors
                assert all("stopped reading" in str(e) for e in errors), errors[:3]
            await setup.check_healthy()


async def test_max_connections_refuses_the_next_one_with_a_clear_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The healthy connect_local renderer counts: with 3, two more fit.
    with anyio.fail_after(20):
        async with bench(max_connections=3) as setup:
            address, token = setup.listener.address, setup.listener.token
            async with ipcbus.connect(address, token=token), ipcbus.connect(address, token=token):
                with pytest.raises(ipcbus.ConnectionClosedError, match="too many connections"):
                    async with ipcbus.connect(address, token=token):
                        pass
                async with RawPeer.connect(address) as peer:
                    goodbye = await peer.goodbye()
                    assert goodbye.code is CloseCode.TOO_MANY_CONNECTIONS
                    assert "at most 3" in goodbye.reason
                await setup.check_healthy()
            await wait_until_connections(setup.ipc_main, 1)
            async with ipcbus.connect(address, token=token) as renderer:  # room again
                assert await renderer.invoke("add", 1, 1) == 2
            await setup.check_healthy()


async def test_a_refused_renderer_can_still_send_its_hello_after_the_goodbye(
    tmp_path: Path,
) -> None:
    """Main closes a refused connection lingering: the renderer speaks first, and
    its Hello may come after main's Goodbye; had main closed outright, that write
    would fail (a broken pipe), and a renderer could lose the Goodbye still
    unread on its side. Here the peer reads the Goodbye and main's end of
    stream, then writes its Hello: main must still be reading."""
    with anyio.fail_after(20):
        async with bench(max_connections=1) as setup:  # the healthy renderer fills it
            listener = await setup.ipc_main.listen(f"unix:{tmp_path / 'main.sock'}")
            async with RawPeer.connect(listener.address) as peer:
                goodbye = await peer.goodbye()  # reads to main's end of stream
                assert goodbye.code is CloseCode.TOO_MANY_CONNECTIONS
                hello = Hello(PROTOCOL_VERSION, listener.token, os.getpid(), 0)
                assert await peer.send(frames(hello))  # main half-closed: no EPIPE
            await setup.check_healthy()


@pytest.mark.parametrize("where", ["unix", "tcp"])
async def test_a_refused_renderer_whose_hello_crosses_the_goodbye_gets_the_reason(
    tmp_path: Path, where: str
) -> None:
    """The usual race, run many times: Hello sent at once, Goodbye already on
    its way. The renderer always reads the reason, never a reset."""
    with anyio.fail_after(30):
        async with bench(max_connections=1) as setup:
            address = f"unix:{tmp_path / 'main.sock'}" if where == "unix" else "tcp://127.0.0.1:0"
            listener = await setup.ipc_main.listen(address)
            hello = frames(Hello(PROTOCOL_VERSION, listener.token, os.getpid(), 0))
            for _ in range(20):
                async with RawPeer.connect(listener.address) as peer:
                    await peer.send(hello)
                    goodbye = await peer.goodbye()
                    assert goodbye.code is CloseCode.TOO_MANY_CONNECTIONS
                with pytest.raises(ipcbus.ConnectionClosedError, match="too many connections"):
                    async with ipcbus.connect(listener.address, token=listener.token):
                        pass
            await setup.check_healthy()


async def wait_until_connections(ipc_main: ipcbus.IpcMain, count: int) -> None:
    await wait_until(lambda: len(ipc_main.get_all_web_contents()) <= count)


async def test_many_connections_up_to_the_limit_are_all_served() -> None:
    with anyio.fail_after(30):
        async with bench(max_connections=101) as setup:
            address, token = setup.listener.address, setup.listener.token
            answers: list[int] = []

            async def one(n: int) -> None:
                async with ipcbus.connect(address, token=token) as renderer:
                    answers.append(await renderer.invoke("add", n, 0))

            async with anyio.create_task_group() as tg:
                for n in range(100):
                    tg.start_soon(one, n)
            assert sorted(answers) == list(range(100))
            await setup.check_healthy()


async def test_frame_over_max_frame_size_from_a_real_renderer() -> None:
    """main announced its limit: the renderer refuses the frame itself, clearly,
    sends nothing, and both it and main go on. (A peer that sends such a frame
    anyway is cut off: test_hostile's oversize-header tests.)"""
    with anyio.fail_after(20):
        async with bench(max_frame_size=4096) as setup:
            async with ipcbus.connect(
                setup.listener.address, token=setup.listener.token
            ) as renderer:
                with pytest.raises(ipcbus.FrameTooLargeError, match="limit of 4096 bytes"):
                    await renderer.invoke("add", b"x" * 8192, b"")
                assert renderer.is_connected()
                assert await renderer.invoke("add", b"x", b"y") == b"xy"
            await setup.check_healthy()


async def test_frame_over_the_renderers_max_frame_size_from_main() -> None:
    with anyio.fail_after(20):
        async with bench() as setup:
            renderer = ipcbus.IpcRenderer(max_frame_size=4096)
            async with renderer.connect(setup.listener.address, token=setup.listener.token):
                contents = setup.ipc_main.from_id(renderer.id)
                assert contents is not None
                with pytest.raises(ipcbus.FrameTooLargeError, match="limit of 4096 bytes"):
                    await contents.send("big", b"x" * 8192)
                assert renderer.is_connected() and not contents.is_destroyed()
            await setup.check_healthy()


def test_limit_defaults_are_the_documented_ones() -> None:
    ipc_main = ipcbus.IpcMain()
    assert ipc_main.max_frame_size == 64 * 1024 * 1024
    assert ipc_main.max_in_flight == 256
    assert ipc_main.max_connections == 1024
    assert ipc_main.handshake_timeout == 10.0
    assert ipc_main.heartbeat_interval == "auto"
    assert ipc_main.heartbeat_timeout is None  # three intervals
    assert ipc_main.send_timeout == 30.0
    assert ipc_main.shutdown_grace == 5.0


@pytest.mark.parametrize("renderer_class", [ipcbus.IpcRenderer, ipcbus.sync.IpcRenderer])
@pytest.mark.parametrize("value", [0, -1])
def test_a_renderer_refuses_a_max_in_flight_below_one(renderer_class: Any, value: int) -> None:
    """As IpcMain does: with none in flight no async handler could ever run."""
    with pytest.raises(ValueError, match=f"max_in_flight must be >= 1, not {value}"):
        renderer_class(max_in_flight=value)
