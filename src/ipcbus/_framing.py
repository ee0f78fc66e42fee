"""Length-prefixed framing (docs/protocol.md, "Frames").

A frame is a 4-byte big-endian unsigned length followed by that many bytes of
msgpack body. The size limit is judged from the header alone: a frame that
announces more than ``max_frame_size`` bytes is refused before a byte of its
body is buffered, so a hostile peer cannot make us hold 4 GiB.

This module imports only the standard library and msgspec.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

import msgspec

from ._errors import FrameTooLargeError

__all__ = (
    "HEADER_SIZE",
    "SMALL_BODY",
    "FrameDecoder",
    "append_frame",
    "read_size",
    "split_frames",
    "write_size",
)

HEADER_SIZE: Final = 4
read_size = struct.Struct(">I").unpack_from  # (size,) of the header at an offset
write_size = struct.Struct(">I").pack_into  # writes a header at an offset
#: Bodies up to this size are best sliced out of the input as ``bytes``: a
#: copy of a few bytes costs less than a view, and the cycle collector does
#: not track ``bytes`` (a long read of small frames held as views would set off
#: a collection every few hundred frames).
SMALL_BODY: Final = 512


def append_frame(encoder: msgspec.msgpack.Encoder, body: object, out: bytearray) -> int:
    """Encode ``body`` as one frame at the end of ``out``; return the body's size.

    On an encoding error ``out`` is left exactly as it was and the error
    (``TypeError``, ``OverflowError`` or ``msgspec.EncodeError``) propagates.
    """
    start = len(out)
    try:
        encoder.encode_into(body, out, start + HEADER_SIZE)
    except BaseException:
        del out[start:]
        raise
    size = len(out) - start - HEADER_SIZE
    write_size(out, start, size)
    return size


def split_frames(data: bytes | bytearray | memoryview) -> list[memoryview]:
    """The bodies of a run of whole frames, as views of ``data`` (no copies).

    For transports whose messages are frames (a WebSocket, NATS): the core
    writes length-prefixed frames, and such a transport sends each body as
    one message of its own. ``data`` must be whole frames, as
    ``Connection.data_to_send`` gives them.
    """
    view = memoryview(data)
    bodies = []
    pos, end = 0, len(view)
    while pos < end:
        (size,) = read_size(view, pos)
        pos += HEADER_SIZE
        bodies.append(view[pos : pos + size])
        pos += size
    return bodies


_NOTHING = memoryview(b"")  # the view of no input, shared


class FrameDecoder:
    """Turns a byte stream into frame bodies, one complete frame at a time.

    Copies as little as it can. A frame that lies wholly inside one fed chunk
    is returned as a read-only view of that chunk (no copy; the chunk is
    immutable, so the view stays valid for as long as anyone holds it, as
    decoded ``Raw`` arguments do). Only a frame split across chunks is
    assembled, into a buffer allocated once at the size its header announced.
    """

    def __init__(
        self,
        max_frame_size: int,
        new_buffer: Callable[[int], bytearray | memoryview] = bytearray,
    ) -> None:
        self.max_frame_size = max_frame_size
        self._new_buffer = new_buffer  # makes the buffer a split body is assembled in
        self._data = b""  # the input being parsed...
        self._chunk = _NOTHING  # ...and a view of it
        self._pos = 0  # next unparsed byte in _chunk
        self._head = bytearray()  # a header split across chunks
        self._body: bytearray | memoryview | None = None  # a body split across chunks
        self._filled = 0  # bytes of _body received so far

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        partial = len(self._head) + (HEADER_SIZE + self._filled if self._body is not None else 0)
        return partial + len(self._chunk) - self._pos

    def feed(self, data: bytes | bytearray | memoryview, start: int = 0) -> None:
        """Add received bytes from ``start`` on (copied only if mutable, or if
        unparsed input remains)."""
        chunk, pos = self._chunk, self._pos
        if pos < len(chunk):  # unparsed input remains (no slice made otherwise)
            data = b"".join((chunk[pos:], memoryview(data)[start:] if start else data))
            start = 0
        elif type(data) is not bytes:
            data = bytes(memoryview(data)[start:] if start else data)
            start = 0
        self._data = data
        self._chunk = memoryview(data)
        self._pos = start

    def window(self, minimum: int) -> memoryview | None:
        """Where the next received bytes belong, if they can go there directly.

        While a body of which at least ``minimum`` bytes are still missing is
        being assembled and no received input waits to be parsed, this is the
        missing part of that body: the driver may read straight into it and
        report with :meth:`filled`, which saves copying every chunk into it.
        Otherwise ``None``: use :meth:`feed`.
        """
        body = self._body
        if body is None or len(body) - self._filled < minimum or self._pos < len(self._chunk):
            return None
        return memoryview(body)[self._filled :]

    def filled(self, n: int) -> None:
        """``n`` bytes were written at the start of the last :meth:`window`."""
        assert self._body is not None and 0 <= n <= len(self._body) - self._filled
        self._filled += n

    def next_body(self) -> memoryview | bytearray | None:
        """Return the next complete body, or ``None`` if more bytes are needed.

        Raises:
            FrameTooLargeError: the next frame's header announces more than
                ``max_frame_size`` bytes (judged before any of its body is kept).
        """
        # Whole frames of an open connection are taken by Connection._parse_open;
        # this serves the handshake, frames split across reads, and refusals.
        chunk, pos = self._chunk, self._pos
        available = len(chunk) - pos
        body = self._body
        if not available and body is None:
            if chunk is not _NOTHING:
                # All parsed, the usual end of a read: let go of the read (an
                # idle connection holds no input, nor a view for the collector).
                self._data, self._chunk, self._pos = b"", _NOTHING, 0
            return None
        if body is not None:  # continuing a split body
            take = min(len(body) - self._filled, available)
            body[self._filled : self._filled + take] = chunk[pos : pos + take]
            self._filled += take
            self._pos = pos + take
            if self._filled < len(body):
                return None
            self._body = None
            return body
        if self._head or available < HEADER_SIZE:  # a header split across chunks
            take = min(HEADER_SIZE - len(self._head), available)
            self._head += chunk[pos : pos + take]
            pos += take
            self._pos = pos
            if len(self._head) < HEADER_SIZE:
                return None
            size = int.from_bytes(self._head, "big")
            self._head.clear()
        else:
            (size,) = read_size(chunk, pos)
            pos += HEADER_SIZE
        if size > self.max_frame_size:
            raise FrameTooLargeError(
                f"frame of {size} bytes exceeds the limit of {self.max_frame_size} bytes"
            )
        available = len(chunk) - pos
        if available >= size:
            self._pos = pos + size
            return chunk[pos : pos + size]
        body = self._body = self._new_buffer(size)
        body[:available] = chunk[pos:]
        self._filled = available
        self._pos = len(chunk)
        return None

    def discard(self) -> None:
        """Let go of every byte held: the connection is closed, and a partial body's
        buffer must be freed now, not whenever a cycle holding the decoder is collected."""
        self._data = b""
        self._chunk = _NOTHING
        self._pos = 0
        self._head.clear()
        self._body = None
        self._filled = 0

    def unparsed(self) -> tuple[bytes, memoryview, int]:
        """``(input, a view of it, offset)``: where the next frame starts in the fed input.

        For a driver that walks a read of whole frames itself, in one loop
        (:meth:`Connection._parse_open`): it splits frames as :meth:`next_body`
        would (a small body is best copied out as ``bytes``: :data:`SMALL_BODY`),
        then reports how far it got with :meth:`parsed_to`, and leaves any frame
        it did not take to :meth:`next_body`. While a frame split across feeds
        is being assembled the offset is the input's end: nothing to walk.
        """
        if self._body is not None or self._head:
            return self._data, self._chunk, len(self._data)
        return self._data, self._chunk, self._pos

    def idle(self) -> bool:
        """Whether nothing is held: no unparsed input, no frame partly received."""
        return self._chunk is _NOTHING and self._body is None and not self._head

    def parsed_to(self, offset: int) -> None:
        """The frames before ``offset`` (a frame boundary from :meth:`unparsed`) are taken."""
        if self._body is None and not self._head:
            self._pos = offset
            if offset == len(self._chunk):
                self._data, self._chunk, self._pos = b"", _NOTHING, 0  # see next_body
