"""Tools for fault tests: raw hostile peers, a main with a healthy renderer, log checks.

A ``RawPeer`` speaks bytes, not ipcbus: it writes whatever frames (or garbage)
a test builds and reads back what the other side sends, until EOF. It is how
a buggy or hostile local process looks to ``IpcMain`` (any local process can
reach a TCP port, or a unix socket it may open).
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import msgspec
import pytest

import ipcbus
from ipcbus._addresses import UnixAddress, parse_address
from ipcbus._framing import FrameDecoder, append_frame
from ipcbus._wire import PROTOCOL_VERSION, Body, Goodbye, Hello, Message, Welcome

from ..helpers import running_main

ENCODER = msgspec.msgpack.Encoder()
_BODY_DECODER: msgspec.msgpack.Decoder[Body] = msgspec.msgpack.Decoder(Body)
_STREAM_ENDED = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


def frames(*bodies: object) -> bytes:
    """The wire bytes of ``bodies``, one frame each."""
    out = bytearray()
    for body in bodies:
        append_frame(ENCODER, body, out)
    return bytes(out)


def raw_frame(payload: bytes) -> bytes:
    """A frame around an arbitrary body (for bodies no Struct can express)."""
    return len(payload).to_bytes(4, "big") + payload


def raw_args(*values: Any) -> msgspec.Raw:
    """An argument list as the ``Raw`` a Message/Request carries."""
    return msgspec.Raw(ENCODER.encode(list(values)))


def fd_count() -> int:
    """Open file descriptors of this process."""
    return len(os.listdir("/proc/self/fd"))


class RawPeer:
    """One end of a connection driven by hand."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.eof = False
        self._frames = FrameDecoder(2**32)

    @classmethod
    @asynccontextmanager
    async def connect(cls, address: str) -> AsyncIterator[RawPeer]:
        parsed = parse_address(address)
        stream: anyio.abc.ByteStream
        if isinstance(parsed, UnixAddress):
            stream = await anyio.connect_unix(parsed.path)
        else:
            stream = await anyio.connect_tcp(parsed.host, parsed.port)
        try:
            yield cls(stream)
        finally:
            await stream.aclose()

    async def send(self, data: bytes) -> bool:
        """Write ``data``; ``False`` if the other side had already closed."""
        try:
            await self.stream.send(data)
        except _STREAM_ENDED:
            return False
        return True

    async def send_eof(self) -> None:
        """Half-close: the other side reads EOF after what we sent."""
        try:
            await self.stream.send_eof()
        except _STREAM_ENDED:
            pass

    async def receive(self) -> Body | None:
        """The next frame the other side sent, or ``None`` once its stream ended."""
        while (body := self._frames.next_body()) is None:
            if self.eof:
                return None
            try:
                data = await self.stream.receive()
            except _STREAM_ENDED:
                self.eof = True
            else:
                self._frames.feed(data)
        return _BODY_DECODER.decode(body)

    async def messages(self, channel: str, n: int) -> list[list[Any]]:
        """The decoded arguments of the next ``n`` frames, each a Message on ``channel``."""
        got = []
        for _ in range(n):
            body = await self.receive()
            assert isinstance(body, Message) and body.channel == channel, body
            got.append(msgspec.msgpack.decode(body.args))
        return got

    async def handshake(self, token: str, version: int = PROTOCOL_VERSION) -> Welcome:
        """Send a Hello and return main's Welcome."""
        await self.send(frames(Hello(version, token, os.getpid())))
        body = await self.receive()
        assert isinstance(body, Welcome), f"expected Welcome, got {body!r}"
        return body

    async def web_contents(self, ipc_main: ipcbus.IpcMain, token: str) -> ipcbus.WebContents:
        """Send a Hello; return the ``WebContents`` main made for this connection."""
        welcome = await self.handshake(token)
        contents = ipc_main.from_id(welcome.renderer_id)
        assert contents is not None, f"main has no renderer {welcome.renderer_id}"
        return contents

    async def until_closed(self) -> list[Body]:
        """Every frame the other side sends until its stream ends."""
        bodies: list[Body] = []
        while (body := await self.receive()) is not None:
            bodies.append(body)
        return bodies

    async def goodbye(self) -> Goodbye:
        """Read to EOF; return the Goodbye that came last (fails if there was none)."""
        bodies = await self.until_closed()
        assert bodies and isinstance(bodies[-1], Goodbye), f"no closing Goodbye in {bodies!r}"
        return bodies[-1]


@dataclass
class Bench:
    """A running main with a listener and a healthy renderer beside the faulty one."""

    ipc_main: ipcbus.IpcMain
    listener: ipcbus.Listener
    healthy: ipcbus.IpcRenderer
    gone: dict[int, ipcbus.DisconnectDetails] = field(default_factory=dict)
    _gone_events: defaultdict[int, anyio.Event] = field(
        default_factory=lambda: defaultdict(anyio.Event)
    )

    def _on_disconnect(
        self, contents: ipcbus.WebContents, details: ipcbus.DisconnectDetails
    ) -> None:
        self.gone[contents.id] = details
        self._gone_events[contents.id].set()

    async def check_healthy(self) -> None:
        """The healthy renderer still gets answers."""
        with anyio.fail_after(5):
            assert await self.healthy.invoke("add", 2, 3) == 5

    async def disconnected(
        self, renderer_id: int, timeout: float = 5.0
    ) -> ipcbus.DisconnectDetails:
        """The details on_disconnect got for ``renderer_id`` (waits for them)."""
        with anyio.fail_after(timeout):
            await self._gone_events[renderer_id].wait()
        return self.gone[renderer_id]


@asynccontextmanager
async def bench(
    address: str | None = None, *, token: str | None = None, **options: Any
) -> AsyncIterator[Bench]:
    """``IpcMain(**options)`` listening, with a healthy ``connect_local`` renderer.

    main serves ``add`` (a + b) to everyone.
    """
    async with running_main(**options) as ipc_main:
        ipc_main.handle("add", lambda event, a, b: a + b)
        listener = await ipc_main.listen(address, token=token)
        async with ipc_main.connect_local() as healthy:
            setup = Bench(ipc_main, listener, healthy)
            ipc_main.on_disconnect(setup._on_disconnect)
            await setup.check_healthy()
            yield setup
            await setup.check_healthy()


def warnings_logged(caplog: pytest.LogCaptureFixture, *parts: str) -> list[str]:
    """Messages logged on ``ipcbus`` at WARNING or above that contain every part."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("ipcbus")
        and record.levelno >= logging.WARNING
        and all(part in record.getMessage() for part in parts)
    ]


def all_logged(caplog: pytest.LogCaptureFixture, *parts: str) -> list[str]:
    """Messages logged on ``ipcbus`` at any level that contain every part."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("ipcbus") and all(part in record.getMessage() for part in parts)
    ]


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout`` seconds.

    Only for state no event reports (a file vanishing, a task count).
    """
    with anyio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - no event reports this state
            await anyio.sleep(0.01)


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost, made with the openssl tool."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
