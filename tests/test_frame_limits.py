"""Frames over the receiver's max_frame_size are refused by the sender.

Each side announces its limit in the handshake; a send, invoke or reply over
the peer's limit fails at once with FrameTooLargeError naming the channel and
both sizes, nothing is sent, and the connection carries on.
"""

from __future__ import annotations

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
