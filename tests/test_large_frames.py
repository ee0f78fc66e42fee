"""Frames larger than the unsent-output bound (4 MiB), back to back, over a real socket.

A reply that large makes the reader pause until the output drains; the
write that drains it must wake the reader again (it once did not, and the
connection stalled until send_timeout).
"""

from __future__ import annotations

import hashlib
import os

import anyio
import pytest

import ipcbus

from .helpers import running_main, spawn_renderer

SIZE = 8 * 1024 * 1024


@pytest.mark.parametrize("rounds", [3])
async def test_large_echo_back_to_back_renderer_to_main(rounds: int) -> None:
    with anyio.fail_after(30):
        async with running_main() as ipc_main:
            ipc_main.handle("echo", lambda event, blob: blob)
            listener = await ipc_main.listen()
            async with ipcbus.connect(listener.address, token=listener.token) as renderer:
                for i in range(rounds):
                    blob = bytes([i]) * SIZE
                    assert hashlib.sha256(await renderer.invoke("echo", blob)).digest() == (
                        hashlib.sha256(blob).digest()
                    )


async def test_large_echo_back_to_back_main_to_child() -> None:
    with anyio.fail_after(30):
        async with running_main() as ipc_main:
            contents = await spawn_renderer(ipc_main, "echo")
            for i in range(3):
                blob = bytes([i + 1]) * SIZE
                assert await contents.invoke("echo", blob) == [blob]


@pytest.mark.skipif(bool(os.environ.get("IPCBUS_NO_FASTPATH")), reason="a fast-path feature")
async def test_large_frames_are_read_straight_into_their_buffer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On the asyncio fast path, the rest of a large frame is read into the frame itself."""
    from ipcbus._protocol import Connection

    reads_into = bytes_into = 0
    received_into = Connection.received_into

    def counting(self: Connection, n: int) -> bool:
        nonlocal reads_into, bytes_into
        reads_into += 1
        bytes_into += n
        return received_into(self, n)

    monkeypatch.setattr(Connection, "received_into", counting)
    with anyio.fail_after(30):
        async with running_main() as ipc_main:
            ipc_main.handle("echo", lambda event, blob: blob)
            listener = await ipc_main.listen()
            async with ipcbus.connect(listener.address, token=listener.token) as renderer:
                blob = bytes(range(256)) * (SIZE // 256)
                assert await renderer.invoke("echo", blob) == blob
    assert reads_into > 2  # both ends, several reads each
    # Once a frame is under way every later read of it goes into it, not just
    # some: all but the first read's worth of each of the two frames.
    assert bytes_into > 2 * (SIZE - 1024 * 1024)
