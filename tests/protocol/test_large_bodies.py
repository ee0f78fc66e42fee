"""Large split bodies are assembled in a reused buffer, never one still in use.

The core assembles a split body in the buffer its ``new_buffer`` gives; the
driver's (``ipcbus._buffers.body_buffer``) reuses one spare buffer for bodies
of 1 MiB or more while nothing refers to the last body assembled there: a
``Raw`` argument or view still alive keeps it from being reused.
"""

from __future__ import annotations

import gc

import msgspec

from ipcbus._buffers import body_buffer
from ipcbus._framing import FrameDecoder
from ipcbus._wire import Message, raw_args

from .helpers import frame

_DECODER = msgspec.msgpack.Decoder(Message)


def _assemble(decoder: FrameDecoder, data: bytes) -> memoryview | bytearray:
    decoder.feed(data[:1000])
    assert decoder.next_body() is None
    decoder.feed(data[1000:])
    body = decoder.next_body()
    assert body is not None
    return body


def _big(fill: int) -> bytes:
    return frame(Message("blob", raw_args([bytes([fill]) * (2 * 1024 * 1024)])))


def test_a_body_still_referenced_is_never_overwritten() -> None:
    decoder = FrameDecoder(1 << 30, body_buffer)
    first = _DECODER.decode(_assemble(decoder, _big(1)))  # its Raw args refer to the body
    second = _DECODER.decode(_assemble(decoder, _big(2)))
    assert msgspec.msgpack.decode(first.args) == [b"\x01" * (2 * 1024 * 1024)]
    assert msgspec.msgpack.decode(second.args) == [b"\x02" * (2 * 1024 * 1024)]


def test_a_released_body_buffer_is_reused() -> None:
    decoder = FrameDecoder(1 << 30, body_buffer)
    body = _assemble(decoder, _big(1))
    base = id(memoryview(body).obj)  # not the object: a reference would keep it in use
    message = _DECODER.decode(body)
    assert msgspec.msgpack.decode(message.args)[0][:1] == b"\x01"
    del body, message
    gc.collect()
    again = _assemble(decoder, _big(3))
    assert id(memoryview(again).obj) == base  # the same memory, not a fresh allocation
    assert msgspec.msgpack.decode(_DECODER.decode(again).args) == [b"\x03" * (2 * 1024 * 1024)]


def test_small_bodies_are_not_assembled_in_the_spare() -> None:
    decoder = FrameDecoder(1 << 30, body_buffer)
    data = frame(Message("small", raw_args([b"x" * 5000])))
    body = _assemble(decoder, data)
    assert isinstance(body, bytearray) and len(body) == len(data) - 4
