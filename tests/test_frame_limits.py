"""Frames over the receiver's max_frame_size are refused by the sender.

Each side announces its limit in the handshake; a send, invoke or reply over
the peer's limit fails at once with FrameTooLargeError naming the channel and
both sizes, nothing is sent, and the connection carries on.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

import ipcbus

from .helpers import running_main

LIMIT = 64 * 1024


async def test_renderer_cannot_send_main_more_than_main_accepts() -> None:
    with anyio.fail_after(10):
        async with running_main(max_frame_size=LIMIT) as ipc_main:
            got = anyio.Event()
            ipc_main.handle("echo", lambda event, blob: blob)
            ipc_main.on("ping", lambda event: got.set())
            async with ipc_main.connect_local() as renderer:
                for call in (renderer.send, renderer.invoke, renderer.send_sync):
                    with pytest.raises(ipcbus.FrameTooLargeError) as info:
                        await call("echo", b"x" * (LIMIT + 1))
                    message = str(info.value)
                    assert "'echo'" in message and f"limit of {LIMIT} bytes" in message
                    assert "max_frame_size" in message
                # the connection is fine
                assert await renderer.invoke("echo", b"small") == b"small"
                await renderer.send("ping")
                await got.wait()


async def test_main_cannot_send_a_renderer_more_than_it_accepts() -> None:
    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            listener = await ipc_main.listen()
            renderer = ipcbus.IpcRenderer(max_frame_size=LIMIT)
            renderer.handle("echo", lambda event, blob: blob)
            async with renderer.connect(listener.address, token=listener.token):
                [contents] = ipc_main.get_all_web_contents()
                with pytest.raises(ipcbus.FrameTooLargeError, match="'big'"):
                    await contents.send("big", b"x" * (LIMIT + 1))
                assert await contents.invoke("echo", b"ok") == b"ok"


async def test_a_result_over_the_callers_limit_fails_that_call_only() -> None:
    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            ipc_main.handle("big", lambda event: b"x" * (LIMIT + 1))
            ipc_main.handle("small", lambda event: "ok")
            listener = await ipc_main.listen()
            renderer = ipcbus.IpcRenderer(max_frame_size=LIMIT)
            async with renderer.connect(listener.address, token=listener.token):
                with pytest.raises(ipcbus.RemoteError) as info:
                    await renderer.invoke("big")
                assert info.value.type_name == "FrameTooLargeError"
                assert await renderer.invoke("small") == "ok"


async def test_post_message_over_the_peers_limit_sends_nothing_and_keeps_the_ports() -> None:
    with anyio.fail_after(10):
        async with running_main(max_frame_size=LIMIT) as ipc_main:
            listener = await ipc_main.listen()
            renderer = ipcbus.IpcRenderer(max_frame_size=LIMIT)
            got: list[Any] = []
            arrived = anyio.Event()

            def keep(event: Any, message: Any) -> None:
                got.append((message, event.ports))
                arrived.set()

            ipc_main.on("ch", keep)
            renderer.on("ch", keep)
            async with renderer.connect(listener.address, token=listener.token):
                [contents] = ipc_main.get_all_web_contents()
                for post in (renderer.post_message, contents.post_message):
                    channel = ipcbus.MessageChannelMain()
                    with pytest.raises(ipcbus.FrameTooLargeError) as info:
                        await post("ch", b"x" * LIMIT, transfer=[channel.port1])
                    message = str(info.value)
                    assert "post_message on channel 'ch'" in message
                    assert f"limit of {LIMIT} bytes" in message
                    # the port was not claimed: it still reaches its peer
                    heard = anyio.Event()
                    channel.port2.on("message", lambda event, heard=heard: heard.set())
                    channel.port2.start()
                    channel.port1.post_message("still mine")
                    await heard.wait()
                    # the connection is fine: a message that fits goes, with its port
                    arrived = anyio.Event()
                    await post("ch", b"small", transfer=[channel.port1])
                    await arrived.wait()
                    assert got[-1][0] == b"small" and len(got[-1][1]) == 1


async def test_a_port_message_over_the_peers_limit_raises_and_the_link_lives() -> None:
    """Posting on a port whose other end is across a connection checks that
    connection's limit, in main and in a renderer, before any port moves."""
    with anyio.fail_after(10):
        async with running_main(max_frame_size=LIMIT) as ipc_main:
            listener = await ipc_main.listen()
            renderer = ipcbus.IpcRenderer(max_frame_size=LIMIT)
            in_renderer: list[ipcbus.MessagePortMain] = []
            in_main: list[ipcbus.MessagePortMain] = []
            landed = anyio.Event()

            def land(into: list[ipcbus.MessagePortMain]) -> Any:
                def listener(event: Any, message: Any) -> None:
                    into.extend(event.ports)
                    landed.set()

                return listener

            renderer.on("to-renderer", land(in_renderer))
            ipc_main.on("to-main", land(in_main))
            async with renderer.connect(listener.address, token=listener.token):
                [contents] = ipc_main.get_all_web_contents()
                from_main = ipcbus.MessageChannelMain()
                await contents.post_message("to-renderer", None, transfer=[from_main.port2])
                await landed.wait()
                landed = anyio.Event()
                from_renderer = ipcbus.MessageChannelMain()
                await renderer.post_message("to-main", None, transfer=[from_renderer.port2])
                await landed.wait()
                # main's end of the first channel talks to the renderer; the
                # renderer's end of the second talks to main
                for near, far in (
                    (from_main.port1, in_renderer[0]),
                    (from_renderer.port1, in_main[0]),
                ):
                    spare = ipcbus.MessageChannelMain()
                    with pytest.raises(ipcbus.FrameTooLargeError) as info:
                        near.post_message(b"x" * LIMIT, transfer=[spare.port1])
                    assert "post_message on a port" in str(info.value)
                    assert f"limit of {LIMIT} bytes" in str(info.value)
                    heard: list[Any] = []
                    done = anyio.Event()
                    far.on(
                        "message",
                        lambda event, heard=heard, done=done: (
                            heard.append(event.data),
                            done.set(),
                        ),
                    )
                    far.start()
                    near.post_message("fits", transfer=[spare.port1])  # not transferred before
                    await done.wait()
                    assert heard == ["fits"]
                ipc_main.handle("ping", lambda event: "pong")
                assert await renderer.invoke("ping") == "pong"


@asynccontextmanager
async def _small_b_shares_a_channel_with_a(
    ipc_main: ipcbus.IpcMain,
) -> AsyncIterator[tuple[ipcbus.IpcRenderer, ipcbus.IpcRenderer, list[Any]]]:
    """Renderers a and b (b's ``max_frame_size`` is ``LIMIT``), connected, each
    holding one end of a channel main made: yields a, b and their ends, a's first."""
    listener = await ipc_main.listen()
    a, b = ipcbus.IpcRenderer(), ipcbus.IpcRenderer(max_frame_size=LIMIT)
    ends: dict[str, ipcbus.MessagePortMain] = {}
    both = anyio.Event()

    def land(name: str) -> Any:
        def listener(event: Any, message: Any) -> None:
            ends[name] = event.ports[0]
            if len(ends) == 2:
                both.set()

        return listener

    a.on("port", land("a"))
    b.on("port", land("b"))
    async with (
        a.connect(listener.address, token=listener.token),
        b.connect(listener.address, token=listener.token),
    ):
        channel = ipcbus.MessageChannelMain()
        # a connected first, so it has the lower id
        first, second = sorted(ipc_main.get_all_web_contents(), key=lambda c: c.id)
        await first.post_message("port", None, transfer=[channel.port1])
        await second.post_message("port", None, transfer=[channel.port2])
        await both.wait()
        yield a, b, [ends["a"], ends["b"]]


async def test_a_relayed_port_message_over_the_next_peers_limit_is_dropped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Renderer A's end talks to renderer B's, and B's limit is lower: main cannot
    raise in A, so it drops that message (logged); later ones and both links live."""
    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            async with _small_b_shares_a_channel_with_a(ipc_main) as (a, b, (end_a, end_b)):
                heard: list[Any] = []
                done = anyio.Event()
                end_b.on("message", lambda event: (heard.append(event.data), done.set()))
                end_b.start()
                with caplog.at_level(logging.WARNING, logger="ipcbus"):
                    end_a.post_message(b"x" * LIMIT)  # fits main's limit, not b's
                    end_a.post_message("fits")
                    await done.wait()
                assert heard == ["fits"]
                assert any(
                    "dropped a port message" in r.getMessage()
                    and f"limit of {LIMIT}" in r.getMessage()
                    for r in caplog.records
                )
                ipc_main.handle("ping", lambda event: "pong")
                assert await a.invoke("ping") == await b.invoke("ping") == "pong"


async def test_ports_carried_by_a_dropped_relayed_message_are_closed_and_forgotten() -> None:
    """The message main drops for the next peer's limit carried a port: that end is
    closed (its other end, still in the sender, hears "close") and main forgets
    both ends, rather than keeping them until the connection ends."""
    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            ipc_main.handle("ping", lambda event: "pong")
            async with _small_b_shares_a_channel_with_a(ipc_main) as (a, _, (end_a, end_b)):
                end_b.start()
                known = len(ipc_main._ports)
                extra = ipcbus.MessageChannelMain()  # made in renderer a
                closed = anyio.Event()
                extra.port2.on("close", closed.set)
                extra.port2.start()
                end_a.post_message(b"x" * LIMIT, transfer=[extra.port1])  # over b's limit
                await closed.wait()
                # a acknowledges main's PortClose before this call's request: by the
                # reply, main has read it
                assert await a.invoke("ping") == "pong"
                assert len(ipc_main._ports) == known


async def test_a_queued_port_message_over_mains_limit_is_dropped_before_the_port_moves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A renderer's port carries, queued, a message main's limit refuses: it is
    dropped (logged) before the port goes, so the frames the renderer says it gives
    back are the ones that follow, and main does not cut it off for a missing one."""
    with anyio.fail_after(10):
        async with running_main(max_frame_size=LIMIT) as ipc_main:
            heard: list[Any] = []
            got = [anyio.Event(), anyio.Event()]

            def take(event: ipcbus.IpcMainEvent, _: Any) -> None:
                port = event.ports[0]
                port.on("message", lambda m: (heard.append(m.data), got[len(heard) - 1].set()))
                port.start()

            ipc_main.on("take", take)
            ipc_main.handle("ping", lambda event: "pong")
            async with ipc_main.connect_local() as renderer:
                channel = ipcbus.MessageChannelMain()  # made in the renderer
                channel.port1.post_message(b"x" * LIMIT)  # queued at port2, too large for main
                channel.port1.post_message("small")
                with caplog.at_level(logging.WARNING, logger="ipcbus"):
                    await renderer.post_message("take", None, transfer=[channel.port2])
                    await got[0].wait()
                channel.port1.post_message("later")  # routed through main now
                await got[1].wait()
                assert heard == ["small", "later"]
                assert any("dropped a port message" in r.getMessage() for r in caplog.records)
                assert await renderer.invoke("ping") == "pong"


def _first_port_hears_close(closed: anyio.Event) -> Any:
    """A listener that starts the first port it gets and sets ``closed`` on its "close"."""

    def listener(event: ipcbus.IpcMainEvent, _: Any) -> None:
        event.ports[0].on("close", closed.set)
        event.ports[0].start()

    return listener


@pytest.mark.parametrize("nested", [False, True], ids=["queued at the port", "one port deeper"])
async def test_ports_of_a_dropped_queued_message_close_after_the_move(nested: bool) -> None:
    """The dropped message carried a port main routes: it is closed (its other end,
    in main, hears "close"), but only after every frame given back has gone, so the
    renderer keeps its word to main and is not cut off."""
    with anyio.fail_after(10):
        async with running_main(max_frame_size=LIMIT) as ipc_main:
            closed = anyio.Event()
            ipc_main.on("keep", _first_port_hears_close(closed))
            ipc_main.on("take", lambda event, _: event.ports[0].start())
            ipc_main.handle("ping", lambda event: "pong")
            async with ipc_main.connect_local() as renderer:
                routed = ipcbus.MessageChannelMain()
                await renderer.post_message("keep", None, transfer=[routed.port1])
                queued = ipcbus.MessageChannelMain()
                queued.port1.post_message(b"x" * LIMIT, [routed.port2])  # too large for main
                moving = queued.port2
                if nested:
                    outer = ipcbus.MessageChannelMain()
                    outer.port1.post_message("carrier", [queued.port2])
                    moving = outer.port2
                await renderer.post_message("take", None, transfer=[moving])
                await closed.wait()
                assert await renderer.invoke("ping") == "pong"


async def test_the_peer_of_a_moving_port_inside_a_dropped_message_is_closed() -> None:
    """Both ends leave in one transfer, one of them inside a message main refuses:
    the end main gets hears "close" (its peer's close used to go out before main
    knew the peer, and was lost)."""
    with anyio.fail_after(10):
        async with running_main(max_frame_size=LIMIT) as ipc_main:
            closed = anyio.Event()
            ipc_main.on("take", _first_port_hears_close(closed))
            async with ipc_main.connect_local() as renderer:
                pair = ipcbus.MessageChannelMain()
                carrier = ipcbus.MessageChannelMain()
                carrier.port1.post_message(b"x" * LIMIT, [pair.port2])  # too large for main
                await renderer.post_message("take", None, transfer=[pair.port1, carrier.port2])
                await closed.wait()
