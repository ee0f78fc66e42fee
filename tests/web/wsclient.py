"""A small WebSocket client for the tests: wsproto over an anyio TCP stream.

It speaks to ``serve_web`` (and to uvicorn) the way a page does: an HTTP
upgrade to ``/ipcbus`` with an optional ``Origin``, then binary messages,
each one frame body. :class:`ClientFrames` is a ``FrameStream``, so a Python
``IpcRenderer`` can run over it and act as the page.
"""

from __future__ import annotations

import anyio
import anyio.abc
from wsproto import WSConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    RejectConnection,
    RejectData,
    Request,
)

from ipcbus._framestream import FrameStream


class Rejected(Exception):
    """The server refused the upgrade with this HTTP status."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"upgrade refused: {status} {body!r}")
        self.status = status
        self.body = body


class ClientFrames(FrameStream):
    """The client end of a page's WebSocket; records how the server closed it."""

    def __init__(self, stream: anyio.abc.ByteStream, ws: WSConnection) -> None:
        self.stream = stream
        self.ws = ws
        self.parts: list[bytes] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.closed = anyio.Event()

    async def receive_frame(self) -> bytes:
        while True:
            for event in self.ws.events():
                if isinstance(event, BytesMessage):
                    self.parts.append(event.data)
                    if event.message_finished:
                        body, self.parts = b"".join(self.parts), []
                        return body
                elif isinstance(event, CloseConnection):
                    self.close_code, self.close_reason = event.code, event.reason
                    self.closed.set()
                    if self.ws.state is ConnectionState.REMOTE_CLOSING:
                        await self.stream.send(self.ws.send(event.response()))
                    raise anyio.EndOfStream
            try:
                data = await self.stream.receive()
            except anyio.EndOfStream:
                self.closed.set()
                raise
            self.ws.receive_data(data)

    async def send_frame(self, body: memoryview) -> None:
        await self.send_raw(bytes(body))

    async def send_raw(self, data: bytes, *, finished: bool = True) -> None:
        """One binary message (or a fragment of one: ``finished=False``)."""
        if self.ws.state is not ConnectionState.OPEN:
            # closed (or closing) already: as an anyio stream says it, which is
            # what the renderer's endpoint expects from a FrameStream
            raise anyio.ClosedResourceError
        await self.stream.send(self.ws.send(Message(data=data, message_finished=finished)))

    async def send_eof(self) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self.ws.state is ConnectionState.OPEN:
            try:
                await self.stream.send(self.ws.send(CloseConnection(code=1000)))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
        await self.stream.aclose()

    async def wait_closed(self) -> tuple[int | None, str | None]:
        """Read until the server closes; the close code and reason it sent."""
        try:
            while True:
                await self.receive_frame()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
        return self.close_code, self.close_reason


async def open_websocket(
    host: str,
    port: int,
    *,
    origin: str | None = None,
    path: str = "/ipcbus",
    stream: anyio.abc.ByteStream | None = None,
) -> ClientFrames:
    """Upgrade to a WebSocket; raises :class:`Rejected` with the status if refused."""
    if stream is None:
        stream = await anyio.connect_tcp(host, port)
    ws = WSConnection(ConnectionType.CLIENT)
    headers = [(b"origin", origin.encode())] if origin is not None else []
    try:
        await stream.send(
            ws.send(Request(host=f"{host}:{port}", target=path, extra_headers=headers))
        )
        status, body = 0, b""
        while True:
            for event in _events(ws):
                if isinstance(event, AcceptConnection):
                    return ClientFrames(stream, ws)
                if isinstance(event, RejectConnection):
                    status = event.status_code
                    if not event.has_body:
                        raise Rejected(status, body)
                elif isinstance(event, RejectData):
                    body += event.data
                    if event.body_finished:
                        raise Rejected(status, body)
            ws.receive_data(await stream.receive())
    except BaseException:
        await stream.aclose()
        raise


def _events(ws: WSConnection) -> list[Event]:
    return list(ws.events())
