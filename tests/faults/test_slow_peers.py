"""Slow or silent peers (issue 3, second bullet).

A connection that never finishes its handshake is dropped after
``handshake_timeout``; heartbeats drop a peer that is gone without a FIN; an
idle but healthy renderer is never dropped.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import ipcbus
from ipcbus._sending import MAX_CANCELLED
from ipcbus._wire import (
    PROTOCOL_VERSION,
    Cancel,
    CloseCode,
    Hello,
    Ping,
    Pong,
    Reply,
    Request,
    RequestKind,
    Welcome,
)

from ._raw import RawPeer, bench, frames, raw_args, warnings_logged


@pytest.fixture(autouse=True)
def _capture_ipcbus_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="ipcbus")


@pytest.mark.parametrize("sends", ["nothing", "half-a-hello"])
async def test_no_handshake_in_time_is_dropped(
    sends: str, caplog: pytest.LogCaptureFixture
) -> None:
    with anyio.fail_after(10):
        async with bench(handshake_timeout=0.3) as setup:
            async with RawPeer.connect(setup.listener.address) as peer:
                if sends == "half-a-hello":
                    hello = frames(Hello(PROTOCOL_VERSION, setup.listener.token, os.getpid()))
                    await peer.send(hello[: len(hello) // 2])
                started = anyio.current_time()
                with anyio.fail_after(2):
                    goodbye = await peer.goodbye()
                assert anyio.current_time() - started >= 0.25
            assert goodbye.code is CloseCode.PROTOCOL_ERROR
            assert "no handshake within 0.3 s" in goodbye.reason
            assert warnings_logged(caplog, "no handshake within 0.3 s")
            assert setup.gone == {}
            await setup.check_healthy()


async def test_one_handshake_watchdog_serves_connections_one_after_another() -> None:
    """A connected renderer costs no handshake timer, and renderers that come one
    after another share one watching task: with no connection left in its
    handshake, the task waits with no deadline for the next one rather than
    ending and being started again for it."""

    def watchdogs() -> list[int]:
        # By what each task is awaiting (a task started with start_soon may
        # run inside a wrapper, with no name of its own).
        found = []
        for task in anyio.get_running_tasks():
            coro: Any = task.coro
            while coro is not None:
                if getattr(coro, "__qualname__", "") == "HandshakeDeadlines._sweep":
                    found.append(task.id)
                coro = getattr(coro, "cr_await", None)
        return found

    with anyio.fail_after(10):
        async with bench(handshake_timeout=60) as setup:
            deadlines = setup.ipc_main._handshakes
            seen: set[int] = set()
            for _ in range(5):
                async with RawPeer.connect(setup.listener.address) as peer:
                    while not (len(deadlines) and watchdogs()):  # main takes it on a later turn
                        await anyio.lowlevel.checkpoint()
                    seen.update(watchdogs())
                    await peer.handshake(setup.listener.token)
                    await setup.check_healthy()  # main has handled the Hello by now
                    for _ in range(100):  # the task lets go of its timer on a later turn
                        if deadlines._waking == math.inf:
                            break
                        await anyio.lowlevel.checkpoint()
                    assert len(deadlines) == 0
                    assert deadlines._sleep is None  # no timer while none is due
                    assert deadlines._waking == math.inf
                    seen.update(watchdogs())
            assert len(seen) == 1  # the same task throughout


async def test_many_silent_connections_are_all_dropped() -> None:
    """Fifty sockets that say nothing cost nothing after the handshake timeout."""
    with anyio.fail_after(15):
        async with bench(handshake_timeout=0.5) as setup:

            async def silent() -> None:
                async with RawPeer.connect(setup.listener.address) as peer:
                    assert (await peer.goodbye()).code is CloseCode.PROTOCOL_ERROR

            async with anyio.create_task_group() as tg:
                for _ in range(50):
                    tg.start_soon(silent)
                await setup.check_healthy()
            await setup.check_healthy()
            assert len(setup.ipc_main._handshakes) == 0  # no deadline left behind


async def test_each_connection_gets_its_own_handshake_deadline() -> None:
    """One task watches every connection's deadline, in the order they came: a
    connection that came later is dropped later, one that said Hello in between
    is never dropped, and one that left before its deadline leaves no entry."""
    timeout = 0.6
    with anyio.fail_after(15):
        async with bench(handshake_timeout=timeout) as setup:
            address, token = setup.listener.address, setup.listener.token
            async with RawPeer.connect(address) as first:
                started_first = anyio.current_time()
                async with RawPeer.connect(address) as leaving:
                    await leaving.send(b"\x00\x00")  # half a header, then gone
                async with RawPeer.connect(address) as honest:
                    await honest.handshake(token)
                    await anyio.sleep(timeout / 2)  # stands for the time between arrivals
                    async with RawPeer.connect(address) as second:
                        started_second = anyio.current_time()
                        await first.goodbye()
                        dropped_first = anyio.current_time()
                        await second.goodbye()
                        dropped_second = anyio.current_time()
                    await setup.check_healthy()
                    assert len(setup.ipc_main.get_all_web_contents()) == 2  # honest is still here
            assert dropped_first - started_first >= timeout * 0.9
            assert dropped_second - started_second >= timeout * 0.9
            assert dropped_second - dropped_first >= timeout / 2 * 0.9
            assert len(setup.ipc_main._handshakes) == 0


async def test_a_timeout_lowered_while_connections_wait_applies_to_the_next_one() -> None:
    """Deadlines are kept in arrival order, which is due order only while the
    timeout stays: one lowered at run time still drops the next silent
    connection at its own, earlier deadline."""
    with anyio.fail_after(15):
        async with bench(handshake_timeout=30) as setup:
            async with RawPeer.connect(setup.listener.address):  # patient: due in 30 s
                while not len(setup.ipc_main._handshakes):  # main accepts it on a later turn
                    await anyio.lowlevel.checkpoint()
                setup.ipc_main.handshake_timeout = 0.3
                async with RawPeer.connect(setup.listener.address) as hasty:
                    started = anyio.current_time()
                    goodbye = await hasty.goodbye()
                    assert anyio.current_time() - started < 5
                assert goodbye.code is CloseCode.PROTOCOL_ERROR
                assert "no handshake within 0.3 s" in goodbye.reason
                assert len(setup.ipc_main._handshakes) == 1  # the patient one, due later


async def test_no_handshake_timeout_keeps_a_silent_connection_and_main(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``handshake_timeout=None`` (or infinity) sets no deadline, as anyio's
    ``move_on_after(None)`` would: the silent connection stays, main serves on."""
    for timeout in (None, math.inf):
        with anyio.fail_after(10):
            async with bench(handshake_timeout=timeout) as setup:
                async with RawPeer.connect(setup.listener.address) as silent:
                    await silent.send(b"\x00")
                    async with RawPeer.connect(setup.listener.address) as honest:
                        await honest.handshake(setup.listener.token)
                    await setup.check_healthy()
                    assert len(setup.ipc_main._handshakes) == 0
    assert not warnings_logged(caplog, "no handshake within")


async def test_heartbeat_drops_a_peer_gone_without_a_fin(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A peer that completed the handshake and then says nothing (not even Pong)."""
    with anyio.fail_after(10):
        async with bench(heartbeat_interval=0.1, heartbeat_timeout=0.4) as setup:
            async with RawPeer.connect(setup.listener.address) as peer:
                welcome = await peer.handshake(setup.listener.token)
                started = anyio.current_time()
                bodies = await peer.until_closed()  # reads, never answers
                elapsed = anyio.current_time() - started
            assert any(isinstance(body, Ping) for body in bodies), bodies
            assert 0.35 <= elapsed < 2, elapsed
            details = await setup.disconnected(welcome.renderer_id)
            assert details.reason == "connection-lost", details
            assert "heartbeat" in details.message
            assert warnings_logged(caplog, "heartbeat")
            await setup.check_healthy()


async def test_a_lost_link_is_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    """Heartbeat timeout with half a frame buffered: one WARNING, not "lost" then "ended"."""
    with anyio.fail_after(10):
        async with bench(heartbeat_interval=0.1, heartbeat_timeout=0.4) as setup:
            async with RawPeer.connect(setup.listener.address) as peer:
                welcome = await peer.handshake(setup.listener.token)
                await peer.send((100).to_bytes(4, "big") + b"\x95\x04")  # then silence
                await peer.until_closed()
            details = await setup.disconnected(welcome.renderer_id)
            assert "heartbeat" in details.message
            about_it = warnings_logged(caplog, f"renderer {welcome.renderer_id}")
            assert len(about_it) == 1, about_it
            assert "heartbeat" in about_it[0]
            await setup.check_healthy()


async def test_heartbeat_fails_main_pending_invoke_to_a_vanished_renderer() -> None:
    """main waits on a renderer that is gone without a FIN: the invoke fails, no hang."""
    with anyio.fail_after(10):
        async with bench(heartbeat_interval=0.1, heartbeat_timeout=0.4) as setup:
            async with RawPeer.connect(setup.listener.address) as peer:
                contents = await peer.web_contents(setup.ipc_main, setup.listener.token)
                with pytest.raises(ipcbus.ConnectionClosedError):
                    await contents.invoke("never-answered")
            await setup.check_healthy()


async def test_idle_healthy_renderer_is_never_dropped() -> None:
    """Four heartbeat timeouts of silence from the application: pongs keep it alive."""
    with anyio.fail_after(15):
        async with bench(heartbeat_interval=0.1, heartbeat_timeout=0.5) as setup:
            async with ipcbus.connect(
                setup.listener.address,
                token=setup.listener.token,
            ) as renderer:
                await anyio.sleep(2.0)  # four heartbeat timeouts idle: the period under test
                assert renderer.is_connected()
                assert setup.gone == {}
                assert await renderer.invoke("add", 1, 1) == 2
            await setup.check_healthy()


async def test_idle_renderer_with_its_own_heartbeat_is_never_dropped() -> None:
    """Both sides ping; neither drops the other while both are alive."""
    with anyio.fail_after(15):
        async with bench(heartbeat_interval=0.1, heartbeat_timeout=0.5) as setup:
            renderer = ipcbus.IpcRenderer(heartbeat_interval=0.1, heartbeat_timeout=0.5)
            async with renderer.connect(setup.listener.address, token=setup.listener.token):
                await anyio.sleep(2.0)  # the idle period under test
                assert renderer.is_connected()
                assert await renderer.invoke("add", 1, 1) == 2
            assert (await setup.disconnected(renderer.id)).reason == "clean-exit"
            assert setup.gone.keys() == {renderer.id}  # only once it left


async def test_busy_handler_does_not_get_its_renderer_dropped() -> None:
    """A handler that runs for many heartbeat timeouts is not a dead peer."""
    with anyio.fail_after(15):
        async with bench(heartbeat_interval=0.1, heartbeat_timeout=0.5) as setup:

            @setup.ipc_main.handle("slow")
            async def slow(event: ipcbus.IpcMainInvokeEvent) -> str:
                await anyio.sleep(2.0)  # four heartbeat timeouts
                return "done"

            async with ipcbus.connect(
                setup.listener.address, token=setup.listener.token
            ) as renderer:
                assert await renderer.invoke("slow") == "done"
            await setup.check_healthy()


@contextlib.asynccontextmanager
async def mute_main(tmp_path: Path) -> AsyncIterator[str]:
    """The address of a fake main that completes the handshake and then neither
    reads nor says anything, for as long as the block runs."""
    path = tmp_path / "fake.sock"
    async with await anyio.create_unix_listener(path) as fake, anyio.create_task_group() as tg:
        stop = anyio.Event()

        async def mute() -> None:
            async with await fake.accept() as stream:
                peer = RawPeer(stream)
                assert isinstance(await peer.receive(), Hello)
                await peer.send(frames(Welcome(PROTOCOL_VERSION, 1)))
                await stop.wait()  # alive, reading nothing, answering nothing

        tg.start_soon(mute)
        try:
            yield f"unix:{path}"
        finally:
            stop.set()


async def test_renderer_heartbeat_detects_a_silent_main(tmp_path: Path) -> None:
    """The renderer's side: main goes silent after the handshake; calls fail, no hang."""
    with anyio.fail_after(10):
        async with mute_main(tmp_path) as address:
            renderer = ipcbus.IpcRenderer(heartbeat_interval=0.1, heartbeat_timeout=0.4)
            async with renderer.connect(address, token="t"):
                started = anyio.current_time()
                with pytest.raises(ipcbus.ConnectionClosedError):
                    await renderer.invoke("anything")
                assert anyio.current_time() - started < 2


async def test_renderer_send_timeout_drops_a_main_that_stopped_reading(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The renderer's side of ``send_timeout``: main takes the handshake, then
    reads nothing; the renderer's send fails within a few ticks, saying why."""
    with anyio.fail_after(15):
        async with mute_main(tmp_path) as address:
            renderer = ipcbus.IpcRenderer(send_timeout=0.5)
            async with renderer.connect(address, token="t"):
                blob = b"x" * 65536
                with pytest.raises(ipcbus.ConnectionClosedError) as caught:
                    while True:  # until the socket and the high-water mark are full
                        await renderer.send("blob", blob)
                assert "main stopped reading" in str(caught.value)
                assert "0.5 s" in str(caught.value)
            assert warnings_logged(caplog, "main stopped reading")


async def test_tcp_connections_get_heartbeats_by_default() -> None:
    """heartbeat_interval="auto": main pings a TCP renderer every 5 s."""
    with anyio.fail_after(15):
        async with bench("tcp://127.0.0.1:0") as setup:
            async with RawPeer.connect(setup.listener.address) as peer:
                await peer.handshake(setup.listener.token)
                started = anyio.current_time()
                body = await peer.receive()
                assert isinstance(body, Ping), body
                assert 4 <= anyio.current_time() - started < 7
            await setup.check_healthy()


async def test_stalled_request_frame_after_handshake_is_dropped_by_heartbeat() -> None:
    """Half a frame, then silence: caught by the heartbeat, not held forever."""
    with anyio.fail_after(10):
        async with bench(heartbeat_interval=0.1, heartbeat_timeout=0.4) as setup:
            async with RawPeer.connect(setup.listener.address) as peer:
                welcome = await peer.handshake(setup.listener.token)
                whole = frames(Request(1, RequestKind.INVOKE, "add", raw_args(1, 2)))
                await peer.send(whole[:-2])
                await peer.until_closed()
            details = await setup.disconnected(welcome.renderer_id)
            assert details.reason in ("connection-lost", "protocol-error"), details
            await setup.check_healthy()


async def test_a_peer_that_never_answers_or_acknowledges_costs_main_a_bounded_table() -> None:
    # Main gives up on its calls to a renderer that reads them and never
    # answers, not even the Cancels: main's table of cancelled calls stays at
    # MAX_CANCELLED, the late acknowledgements are dropped quietly, and main
    # serves on.
    calls = MAX_CANCELLED + 200
    with anyio.fail_after(20):
        async with bench() as setup:
            async with RawPeer.connect(setup.listener.address) as peer:
                contents = await peer.web_contents(setup.ipc_main, setup.listener.token)
                requests: list[Request] = []
                with anyio.CancelScope() as given_up:
                    async with anyio.create_task_group() as tg:
                        for i in range(calls):
                            tg.start_soon(contents.invoke, "stuck", i)
                        while len(requests) < calls:  # every call reached the peer
                            body = await peer.receive()
                            assert isinstance(body, Request), body
                            requests.append(body)
                        given_up.cancel()
                endpoint = contents._endpoint
                assert endpoint is not None
                cancels = [await peer.receive() for _ in range(calls)]
                assert all(isinstance(body, Cancel) for body in cancels), cancels[-1]
                assert len(endpoint.conn._cancelled) == MAX_CANCELLED
                acks = [Reply(r.request_id, False, raw_args(None)) for r in requests]
                await peer.send(frames(*acks, Ping(9)))
                assert await peer.receive() == Pong(9)  # main read every late answer
                assert endpoint.conn._cancelled == {}
                assert not contents.is_destroyed()
            await setup.check_healthy()
