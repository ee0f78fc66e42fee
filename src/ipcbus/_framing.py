"""Length-prefixed framing (docs/protocol.md, "Frames").

A frame is a 4-byte big-endian unsigned length followed by that many bytes of
msgpack body. The size limit is judged from the header alone: a frame that
announces more than ``max_frame_size`` bytes is refused before a byte of its
body is buffered, so a hostile peer cannot make us hold 4 GiB.

This module imports only the standard library and msgspec.
"""

from __future__ import annotations

from typing import Final

import msgspec

from ._errors import FrameTooLargeError

__all__ = ("HEADER_SIZE", "FrameDecoder", "append_frame")

HEADER_SIZE: Final = 4


def append_frame(encoder: msgspec.msgpack.Encoder, body: object, out: bytearray) -> None:
    """Encode ``body`` as one frame at the end of ``out``.

    On an encoding error ``out`` is left exactly as it was and the error
    (``TypeError``, ``OverflowError`` or ``msgspec.EncodeError``) propagates.
    """
    start = len(out)
    try:
        encoder.encode_into(body, out, start + HEADER_SIZE)
    except BaseException:
        del out[start:]
        raise
    out[start : start + HEADER_SIZE] = (len(out) - start - HEADER_SIZE).to_bytes(HEADER_SIZE, "big")


class FrameDecoder:
    """Turns a byte stream into frame bodies, one complete frame at a time."""

    def __init__(self, max_frame_size: int) -> None:
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._offset = 0  # start of the first unconsumed byte in _buffer

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buffer) - self._offset

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        if self._offset == len(self._buffer):
            self._buffer.clear()
        elif self._offset:
            del self._buffer[: self._offset]  # compact once per feed, not per frame
        self._offset = 0
        self._buffer += data

    def next_body(self) -> bytes | None:
        """Return the next complete body, or ``None`` if more bytes are needed.

        The body is a copy: decoded ``Raw`` arguments point into it and may
        outlive the next :meth:`feed`, which resizes the buffer.

        Raises:
            FrameTooLargeError: the next frame's header announces more than
                ``max_frame_size`` bytes.
        """
        start = self._offset
        if len(self._buffer) - start < HEADER_SIZE:
            return None
        size = int.from_bytes(self._buffer[start : start + HEADER_SIZE], "big")
        if size > self.max_frame_size:
            raise FrameTooLargeError(
                f"frame of {size} bytes exceeds the limit of {self.max_frame_size} bytes"
            )
        end = start + HEADER_SIZE + size
        if len(self._buffer) < end:
            return None
        self._offset = end
        with memoryview(self._buffer) as view:
            return bytes(view[start + HEADER_SIZE : end])
