"""Memory a peer did not send (issue 10, section 3).

A frame's 4-byte header announces its size before any of its body arrives. main
must not hold memory for bytes that never came: announcing 64 MiB and sending
64 bytes costs about 64 bytes, and the partial body of a connection that closes
(or whose renderer is SIGKILLed) is freed when it closes, by reference counting
alone: these tests run with the cycle collector off.

Memory is main's resident set (main runs in this process), measured with
margins far wider than the noise of a test process.
"""

from __future__ import annotations

import gc
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio

from ipcbus._wire import Ping, Pong

from ..helpers import spawn_renderer
from ._raw import RawPeer, bench, frames, wait_until

MiB = 1024 * 1024


def rss() -> int:
    """This process's resident set, in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def no_cycle_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def announce(peer: RawPeer, token: str, size: int, sent: int) -> int:
    """Authenticate, then send a frame header announcing ``size`` bytes and ``sent`` of them.

    Returns the renderer id. A Ping rides in front of the header: its Pong says
    main has read the write that carries the header.
    """
    welcome = await peer.handshake(token)
    await peer.send(frames(Ping(7)) + size.to_bytes(4, "big") + b"\x93\x03\xa3big" + b"x" * 56)
    assert await peer.receive() == Pong(7)
    if sent:
        await peer.send(bytes(sent))
    return welcome.renderer_id


async def test_a_header_announcing_64_mib_does_not_cost_64_mib() -> None:
    with anyio.fail_after(20):
        async with bench() as setup:
            token = setup.listener.token
            before = rss()
            async with (
                RawPeer.connect(setup.listener.address) as a,
                RawPeer.connect(setup.listener.address) as b,
                RawPeer.connect(setup.listener.address) as c,
                RawPeer.connect(setup.listener.address) as d,
            ):
                for peer in (a, b, c, d):
                    await announce(peer, token, 64 * MiB, 0)
                await setup.check_healthy()
                grown = rss() - before
                # 4 x 64 MiB announced, 4 x 64 bytes sent (it was 256 MiB).
                assert grown < 32 * MiB, f"main grew by {grown // MiB} MiB"


async def settled_rss() -> tuple[int, int]:
    """Resident set now, and after a full collection: equal if closing freed everything."""
    now = rss()
    gc.collect()
    return now, rss()


async def test_closing_frees_a_partial_frame_without_the_cycle_collector() -> None:
    with anyio.fail_after(30), no_cycle_collector():
        async with bench() as setup:
            token = setup.listener.token
            ids = []
            for _ in range(2):
                async with RawPeer.connect(setup.listener.address) as peer:
                    ids.append(await announce(peer, token, 64 * MiB, 24 * MiB))
            for renderer_id in ids:
                details = await setup.disconnected(renderer_id)
                assert "middle of a frame" in details.message
            await setup.check_healthy()
            closed, collected = await settled_rss()
            # 2 x 24 MiB were received: the cycle collector must find none of it.
            # (The spare buffer of _buffers may keep one body's pages, by design.)
            assert closed - collected < 8 * MiB, (
                f"{(closed - collected) // MiB} MiB were held until gc.collect()"
            )


async def test_a_renderer_killed_mid_frame_leaves_no_buffer_behind(tmp_path: Path) -> None:
    sent = tmp_path / "sent"
    with anyio.fail_after(30), no_cycle_collector():
        async with bench() as setup:
            ready = anyio.Event()
            setup.ipc_main.on("ready", lambda event: ready.set())
            async with RawPeer.connect(setup.listener.address) as peer:
                # This peer's frame takes the spare buffer (whose pages stay, by
                # design), so the child's frame gets memory of its own.
                await announce(peer, setup.listener.token, 64 * MiB, 0)
                before = rss()
                contents = await spawn_renderer(
                    setup.ipc_main, "fault_partial_frame", "64", "24", str(sent)
                )
                await ready.wait()
                await wait_until(sent.exists)  # its socket took all but a few 100 KiB
                os.kill(contents.process_id, signal.SIGKILL)
                details = await setup.disconnected(contents.id)
                assert details.reason == "killed" and "middle of a frame" in details.message
                await setup.check_healthy()
                closed, collected = await settled_rss()
                # Freed at once, though this test still holds the dead renderer's
                # WebContents, and not just by the cycle collector.
                assert closed - before < 8 * MiB, f"{(closed - before) // MiB} MiB still held"
                assert closed - collected < 8 * MiB
