"""The endpoint drives a transport of whole frames (``FrameStream``) like a socket.

The transport here is an in-memory pair of message queues: it proves the seam
(bodies in through ``Connection.receive_frame``, the core's frames out one
message each) independently of any WebSocket or NATS library, which have
their own end-to-end tests over real connections.
"""

from __future__ import annotations

import math
import os
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

import ipcbus
from ipcbus._framestream import FrameStream

from .helpers import running_main, wait_for

TOKEN = "t" * 64


class QueueFrames(FrameStream):
    """One end of an in-memory message transport; records every message it sends."""

    def __init__(
        self, send: MemoryObjectSendStream[bytes], receive: MemoryObjectReceiveStream[bytes]
    ) -> None:
        self._send, self._receive = send, receive
        self.sent: list[bytes] = []

    async def receive_frame(self) -> bytes:
        return await self._receive.receive()

    async def send_frame(self, body: memoryview) -> None:
        self.sent.append(bytes(body))
        await self._send.send(bytes(body))

    async def send_eof(self) -> None:
        await self._send.aclose()

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._receive.aclose()


def frame_pair() -> tuple[QueueFrames, QueueFrames]:
    a_send, b_receive = anyio.create_memory_object_stream[bytes](math.inf)
    b_send, a_receive = anyio.create_memory_object_stream[bytes](math.inf)
    return QueueFrames(a_send, a_receive), QueueFrames(b_send, b_receive)


async def test_a_renderer_over_whole_frames_is_a_renderer() -> None:
    connected, gone = anyio.Event(), anyio.Event()
    details: list[Any] = []
    async with running_main() as ipc_main:
        ipc_main.handle("add", lambda event, a, b: a + b)

        @ipc_main.on_connect
        async def pushed(contents: ipcbus.WebContents) -> None:
            await contents.send("hello", "early")
            connected.set()

        @ipc_main.on_disconnect
        def disconnected(contents: ipcbus.WebContents, d: Any) -> None:
            details.append(d)
            gone.set()

        main_end, renderer_end = frame_pair()
        ipc_main._require_running("test").start_soon(ipc_main._serve, main_end, TOKEN, 0, None)
        renderer = ipcbus.IpcRenderer()
        early: list[str] = []
        renderer.on("hello", lambda event, arg: early.append(arg))
        renderer.handle("title", lambda event: "page title")
        with anyio.fail_after(10):
            async with renderer._connect_stream(renderer_end, TOKEN):
                await wait_for(connected)
                assert await renderer.invoke("add", 1, 2) == 3
                with pytest.raises(ipcbus.NoHandlerError):
                    await renderer.invoke("nobody")
                (contents,) = ipc_main.get_all_web_contents()
                # No kernel to ask: the pid is the renderer's claim, as over TCP.
                assert contents.process_id == os.getpid()
                assert await contents.invoke("title") == "page title"
                assert early == ["early"]
        await wait_for(gone)
    assert details[0].reason == "clean-exit"
    # Every message was one whole frame body: the msgpack array, no length prefix.
    assert renderer_end.sent and all(body[0] & 0xF0 == 0x90 for body in renderer_end.sent)
    assert main_end.sent and all(body[0] & 0xF0 == 0x90 for body in main_end.sent)


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"\xc1", "malformed"), (b"\x92\x03" + b"\xc4\xff" + b"x" * 255, "malformed")],
)
async def test_a_bad_message_ends_only_that_connection(body: bytes, reason: str) -> None:
    gone = anyio.Event()
    details: list[Any] = []
    async with running_main(max_frame_size=1024) as ipc_main:
        ipc_main.handle("ping", lambda event: "pong")
        ipc_main.on_disconnect(lambda contents, d: (details.append(d), gone.set()))
        main_end, renderer_end = frame_pair()
        ipc_main._require_running("test").start_soon(ipc_main._serve, main_end, TOKEN, 0, None)
        async with ipc_main.connect_local() as healthy:
            with anyio.fail_after(10):
                async with ipcbus.IpcRenderer()._connect_stream(renderer_end, TOKEN):
                    await renderer_end._send.send(body)
                    await wait_for(gone)
                assert await healthy.invoke("ping") == "pong"
    assert details[0].reason == "protocol-error"
    assert reason in details[0].message
