"""Reading a large frame straight into its buffer (``receive_buffer``/``received_into``).

The driver may read the rest of a large frame into the buffer the core
offers instead of handing it chunks; the events must be the same as if the
bytes had come through ``receive_data``.
"""

from __future__ import annotations

import pytest

from ipcbus._events import MessageReceived, RequestReceived
from ipcbus._protocol import State
from ipcbus._wire import Message, Request, RequestKind, raw_args

from .helpers import frame, handshake, raw

BIG = bytes(range(256)) * 2048  # 512 KiB


def _read_into(conn, data: bytes, chunk: int) -> int:  # type: ignore[no-untyped-def]
    """Give ``data`` to ``conn`` as a driver with a receive buffer would; how many reads
    went into the buffer."""
    pos = reads = 0
    while pos < len(data):
        window = conn.receive_buffer()
        if window is None:
            conn.receive_data(data[pos : pos + chunk])
            pos += chunk
        else:
            n = min(len(window), chunk, len(data) - pos)
            window[:n] = data[pos : pos + n]
            conn.received_into(n)
            pos += n
            reads += 1
    return reads


@pytest.mark.parametrize("chunk", [1000, 65536, 200_000])
def test_a_large_frame_read_into_the_buffer_gives_the_same_events(chunk: int) -> None:
    pair = handshake()
    pair.renderer.send_message("blob", [BIG])
    pair.renderer.start_request(RequestKind.INVOKE, "echo", [BIG, 1])
    pair.renderer.send_message("after", [2])
    data = bytes(pair.renderer.data_to_send())
    reads = _read_into(pair.main, data, chunk)
    assert reads > 0  # the buffer was offered and used
    assert pair.main.events_received() == [
        MessageReceived("blob", raw([BIG])),
        RequestReceived(1, RequestKind.INVOKE, "echo", raw([BIG, 1])),
        MessageReceived("after", raw([2])),
    ]
    assert pair.main.state is State.OPEN


def test_no_buffer_for_small_frames_or_with_unparsed_input() -> None:
    pair = handshake()
    assert pair.main.receive_buffer() is None  # nothing in progress
    small = frame(Message("small", raw_args([b"x" * 1000])))
    pair.main.receive_data(small[:10])
    assert pair.main.receive_buffer() is None  # less than the minimum still to come
    assert pair.main.receive_buffer(minimum=1) is not None
    pair.main.receive_data(small[10:])
    big = frame(Request(1, RequestKind.INVOKE, "echo", raw_args([BIG])))
    pair.main.receive_data(big[:100])
    window = pair.main.receive_buffer()
    assert window is not None and len(window) == len(big) - 100
    pair.main.received_into(0)  # a read of nothing changes nothing
    assert pair.main.receive_buffer() is not None
    window[: len(big) - 100] = big[100:]
    pair.main.received_into(len(big) - 100)
    assert pair.main.receive_buffer() is None
    assert [type(e) for e in pair.main.events_received()] == [MessageReceived, RequestReceived]


def test_no_buffer_once_closed() -> None:
    pair = handshake()
    big = frame(Message("blob", raw_args([BIG])))
    pair.main.receive_data(big[:100])
    assert pair.main.receive_buffer() is not None
    pair.main.receive_eof()
    assert pair.main.state is State.CLOSED
    assert pair.main.receive_buffer() is None
    pair.main.received_into(10)  # ignored, like receive_data after the end
