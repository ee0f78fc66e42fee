"""A page's WebSocket as a :class:`~ipcbus._framestream.FrameStream`, driven over wsproto.

Each binary WebSocket message is one frame body (docs/protocol.md,
"Transports that carry whole frames"); the core does the rest. What this
module adds is what only the WebSocket knows:

* **Size while fragments arrive.** wsproto hands over a message's payload as
  it comes; the bytes of the message so far are counted, and the moment they
  pass ``max_frame_size`` (64 KiB for the first message, the ``Hello``, as
  the core's handshake limit) they are dropped and the core is told the frame is
  too large (it answers ``Goodbye(FRAME_TOO_LARGE)``). A page can never make
  main hold more than ``max_frame_size`` of one message.
* **Closing in WebSocket terms.** The core's last frame, a ``Goodbye``, goes
  out as a message, then a close frame whose code says the same thing
  (:func:`close_code`: 1009 frame too large, 1002 protocol error, 1008 wrong
  token, 1001 shutting down, 1000 normal), with the reason.
* **The page's own close.** A close frame from the page (a closed or reloaded
  tab: 1000/1001) is that page saying goodbye: the core hears a
  ``Goodbye(NORMAL)``. A page that breaks the WebSocket protocol itself, or
  sends a text message, is heard as ``Goodbye(PROTOCOL_ERROR, why)``, so
  ``on_disconnect`` reports ``"protocol-error"``; its WebSocket is closed with
  1002 or 1003 and the reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import anyio
import anyio.abc
import anyio.lowlevel
import msgspec
from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage
from wsproto.utilities import LocalProtocolError

from .._framestream import FrameStream
from .._framing import split_frames
from .._protocol import HANDSHAKE_MAX_FRAME_SIZE
from .._wire import CloseCode, Goodbye

if TYPE_CHECKING:
    from .._aio import AsyncioSocketStream

__all__ = (
    "EVENTS_PER_TURN",
    "FastWebSocketFrames",
    "WebSocketFrames",
    "close_code",
    "goodbye_in",
    "oversized",
    "said_goodbye",
)

_READ_SIZE = 65536
#: What a fragment of a message in several costs against the size limit beyond
#: its payload (its header, at least 6 bytes from a page, and its handling), so
#: that fragments carrying nothing still reach the limit.
FRAGMENT_COST = 16
#: WebSocket events taken per turn of the loop: a read of 64 KiB can hold 30,000
#: empty fragments or 3,000 small messages, and nothing else may wait for them all.
EVENTS_PER_TURN = 256
_CLOSE_CODES = {
    CloseCode.NORMAL: 1000,
    CloseCode.SHUTDOWN: 1001,
    CloseCode.PROTOCOL_ERROR: 1002,
    CloseCode.VERSION_MISMATCH: 1002,
    CloseCode.AUTHENTICATION_FAILED: 1008,
    CloseCode.FRAME_TOO_LARGE: 1009,
    CloseCode.TOO_MANY_CONNECTIONS: 1013,
}
_ENCODER = msgspec.msgpack.Encoder()
_GOODBYE = msgspec.msgpack.Decoder(Goodbye)


def close_code(goodbye: Goodbye | None) -> tuple[int, str]:
    """The WebSocket close (code, reason) that says what ``goodbye`` says."""
    if goodbye is None:
        return 1000, ""
    return _CLOSE_CODES.get(goodbye.code, 1000), goodbye.reason


def goodbye_in(body: memoryview) -> Goodbye | None:
    """The ``Goodbye`` this outgoing body is, if it is one (tag 7: ``[7, code, reason]``)."""
    if len(body) < 3 or body[0] != 0x93 or body[1] != 7:
        return None
    try:
        return _GOODBYE.decode(body)
    except msgspec.DecodeError:
        return None


def said_goodbye(code: CloseCode, reason: str) -> bytes:
    """A ``Goodbye`` body, spoken on the page's behalf (its close frame, or its fault)."""
    return _ENCODER.encode(Goodbye(code, reason))


class _Oversized(bytes):
    """Stands for a message that passed the limit, without holding its bytes.

    The core judges a body by ``len()`` before it reads a byte of it, so this
    empty ``bytes`` that reports the size seen so far makes it answer
    ``Goodbye(FRAME_TOO_LARGE)`` exactly as for a frame cut from a socket.
    """

    size: int

    def __len__(self) -> int:
        return self.size


def oversized(size: int) -> bytes:
    """A stand-in body of ``size`` bytes (see :class:`_Oversized`)."""
    body = _Oversized()
    body.size = size
    return body


class WebSocketFrames(FrameStream):
    """One page's WebSocket, after the HTTP upgrade, over an anyio byte stream."""

    def __init__(
        self, stream: anyio.abc.ByteStream, trailing_data: bytes, max_frame_size: int
    ) -> None:
        self._stream = stream
        self._ws = WsConnection(ConnectionType.SERVER)
        self._ws.receive_data(trailing_data)
        # Until the Hello has come, the core takes no frame over the handshake
        # limit; nor is more of one buffered here (an unauthenticated page).
        self._max = min(max_frame_size, HANDSHAKE_MAX_FRAME_SIZE)
        self._max_after_hello = max_frame_size
        self._parts: bytearray | None = None  # a message in fragments, so far
        self._size = 0  # of the message being assembled, with FRAGMENT_COST per part
        self._events = 0  # taken since the last turn of the loop (EVENTS_PER_TURN)
        self._close: tuple[int, str] | None = None  # what our close frame will say
        self._write = anyio.Lock()  # the reader answers pings; the writer sends frames
        self._closed = False

    async def receive_frame(self) -> bytes:
        # A turn of the loop only where nothing is in hand (a cancellation
        # there loses no message): here, or once an event has been taken into
        # ``_parts``.
        await self._turn_if_due()
        while True:
            for event in self._ws.events():
                self._events += 1
                body = await self._take(event)
                if body is not None:
                    return body
                await self._turn_if_due()
            try:
                data = await self._stream.receive(_READ_SIZE)
            except anyio.EndOfStream:
                self._ws.receive_data(None)
                raise
            self._ws.receive_data(data)

    async def _turn_if_due(self) -> None:
        """Give the loop a turn every ``EVENTS_PER_TURN`` events taken."""
        if self._events >= EVENTS_PER_TURN:
            self._events = 0
            await anyio.lowlevel.checkpoint()

    async def _take(self, event: object) -> bytes | None:
        """A whole body when ``event`` completes one, else ``None``."""
        if isinstance(event, BytesMessage):
            data, parts = event.data, self._parts
            if event.message_finished and parts is None:  # one frame: the usual case
                if len(data) > self._max:
                    return oversized(len(data))  # the core's Goodbye then closes with 1009
                self._max = self._max_after_hello
                return data if isinstance(data, bytes) else bytes(data)
            # Fragments go into one buffer: main holds their payload, not an object
            # per fragment, whatever their number. wsproto hands a frame over in
            # pieces as they are read: only a whole frame that does not end the
            # message is a fragment and costs more than its payload.
            self._size += len(data)
            if event.frame_finished and not event.message_finished:
                self._size += FRAGMENT_COST
            if self._size > self._max:
                size, self._parts, self._size = self._size, None, 0
                return oversized(size)
            if parts is None:
                parts = self._parts = bytearray()
            parts += data
            if not event.message_finished:
                return None
            self._parts, self._size = None, 0
            self._max = self._max_after_hello
            return bytes(parts)
        if isinstance(event, Ping):
            await self._write_bytes(self._ws.send(event.response()))
            return None
        if isinstance(event, TextMessage):
            return self._fault(1003, "text message: ipcbus speaks binary WebSocket messages")
        if isinstance(event, CloseConnection):
            return self._page_closed(event)
        return None  # a Pong

    def _page_closed(self, event: CloseConnection) -> bytes:
        if event.code in (1000, 1001, 1005):
            reason = f"the page closed its WebSocket ({event.code} {event.reason})".strip()
            self._close = (1000, "")
            return said_goodbye(CloseCode.NORMAL, reason)
        if event.code == 1006:  # no close frame: the TCP connection just ended
            raise anyio.EndOfStream
        # wsproto reports a page's malformed WebSocket frames the same way.
        return self._fault(1002, f"WebSocket close {event.code}: {event.reason}")

    def _fault(self, code: int, reason: str) -> bytes:
        self._close = (code, reason)
        return said_goodbye(CloseCode.PROTOCOL_ERROR, f"protocol error: {reason}")

    async def send_frame(self, body: memoryview) -> None:
        await self._write_bytes(self._message(body))

    async def send(self, item: bytes) -> None:
        """The core's run of frames as one write: each body one binary message."""
        await self._write_bytes(self._messages(item))

    def _messages(self, frames: bytes | bytearray) -> bytearray:
        """The WebSocket bytes of the core's run of frames: each body one binary message."""
        out = bytearray()
        bodies = split_frames(frames)
        try:
            for body in bodies:
                out += self._message(body)
        finally:
            for body in bodies:
                body.release()
        return out

    def _message(self, body: memoryview) -> bytes:
        """The WebSocket bytes of one frame body; a Goodbye also picks the close code."""
        if (goodbye := goodbye_in(body)) is not None and self._close is None:
            self._close = close_code(goodbye)
        try:
            return self._ws.send(Message(data=bytes(body)))
        except LocalProtocolError:
            raise anyio.ClosedResourceError from None

    async def _write_bytes(self, data: bytes | bytearray) -> None:
        async with self._write:
            # anyio's streams take any bytes-like object; no copy of a long run
            await self._stream.send(cast(bytes, data))

    async def send_eof(self) -> None:
        await self._send_close()

    async def _send_close(self) -> None:
        if self._ws.state not in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            return
        code, reason = self._close or (1000, "")
        try:
            await self._write_bytes(self._ws.send(CloseConnection(code, reason)))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass

    async def aclose(self) -> None:
        """Send the close frame, give the page a moment to answer it, close the socket."""
        if self._closed:
            return
        self._closed = True
        try:
            with anyio.move_on_after(1, shield=True):
                await self._send_close()
                await self._await_close_reply()
        finally:
            await anyio.aclose_forcefully(self._stream)

    async def _await_close_reply(self) -> None:
        # RFC 6455 section 7.1.1: the server closes TCP after the close
        # handshake, so the page sees a clean close rather than 1006.
        while self._ws.state is ConnectionState.LOCAL_CLOSING:
            try:
                data = await self._stream.receive(_READ_SIZE)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                return
            self._ws.receive_data(data)
            for _ in self._ws.events():
                self._events += 1
                await self._turn_if_due()  # also lets aclose's move_on_after end it


class FastWebSocketFrames(WebSocketFrames):
    """A page's WebSocket over the asyncio fast path's stream (``ipcbus._aio``).

    It offers the endpoint what that stream offers (``write_nowait`` and
    friends), so a reply made while reading goes out at once, from the
    reader, as over a unix socket: no hop through the writer task, no lock,
    no turn of the loop per reply. What cannot go out that way (the lock is
    held by a write in progress, the WebSocket is closing, the transport is
    over its high-water mark) goes through the writer task and :meth:`send`,
    in order, as before.
    """

    def __init__(
        self, stream: AsyncioSocketStream, trailing_data: bytes, max_frame_size: int
    ) -> None:
        super().__init__(stream, trailing_data, max_frame_size)
        self._direct = stream
        self.new_waiter = stream.new_waiter  # the fast path's reply waiter (MakesWaiters)
        self.call_soon = stream.call_soon  # run a callback on the loop's next turn

    def can_write_nowait(self) -> bool:
        """Whether :meth:`write_nowait` may be called now."""
        return (
            self._ws.state is ConnectionState.OPEN
            and not self._write.locked()
            and self._direct.can_write_nowait()
            and not self._direct.closing()
        )

    def closing(self) -> bool:
        """Whether the page's transport is closing (see ``AsyncioSocketStream.closing``)."""
        return self._direct.closing()

    def write_nowait(self, data: bytes | bytearray) -> None:
        """Hand the core's run of frames to the transport now (after :meth:`can_write_nowait`).

        As :meth:`send`, without waiting: the WebSocket is open (no
        ``LocalProtocolError``) and nothing else is being written.
        """
        self._direct.write_nowait(self._messages(data))

    def try_write(self, data: bytes | bytearray) -> bool:
        """:meth:`write_nowait` if :meth:`can_write_nowait`; whether it wrote."""
        if not self.can_write_nowait():
            return False
        self.write_nowait(data)
        return True

    def unsent(self) -> int:
        """Bytes the transport holds that the kernel has not taken yet."""
        return self._direct.unsent()
