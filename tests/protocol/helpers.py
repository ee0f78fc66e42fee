"""Socket-free helpers for the protocol core's tests.

``ConnectionPair`` holds a renderer ``Connection`` and a main ``Connection``
and moves bytes between them in one of three ``Feed`` modes, as h11's
``ConnectionPair`` does: each frame whole, one byte at a time, or glued to the
start of the next frame (STYLE section 3.13).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from ipcbus._events import (
    ConnectionTerminated,
    Event,
    HandshakeCompleted,
    MessageReceived,
)
from ipcbus._framing import FrameDecoder, append_frame
from ipcbus._protocol import Connection, Role, State
from ipcbus._wire import Body, CloseCode, Goodbye, Message, raw_args

TOKEN = "correct-horse-battery-staple"
RENDERER_ID = 7
PROCESS_ID = 4242

#: One encoder for building frames by hand and encoding expected arguments.
ENC = msgspec.msgpack.Encoder()
_BODY_DECODER: msgspec.msgpack.Decoder[Body] = msgspec.msgpack.Decoder(Body)

#: Channel of the frame ``Feed.GLUED`` appends; the helpers strip its event.
GLUE_CHANNEL = "tests.protocol.glue"


class Feed(enum.Enum):
    """How bytes reach the receiving connection."""

    WHOLE = "whole"  # one receive_data call per transfer
    BYTEWISE = "bytewise"  # one receive_data call per byte
    GLUED = "glued"  # the data plus the head of one more frame, then its tail
    FRAMES = "frames"  # one receive_frame call per body, as a WebSocket or NATS delivers


FEEDS = tuple(Feed)
#: The feeds of a byte stream, for cases only a byte stream can carry (a header alone).
BYTE_FEEDS = (Feed.WHOLE, Feed.BYTEWISE, Feed.GLUED)


def frame(body: Any) -> bytes:
    """One frame: a 4-byte length prefix and ``body`` encoded (a Struct, or any value)."""
    out = bytearray()
    append_frame(ENC, body, out)
    return bytes(out)


def raw_frame(body: bytes) -> bytes:
    """A frame around an already-encoded (possibly invalid) body."""
    return len(body).to_bytes(4, "big") + body


def raw(value: Any) -> msgspec.Raw:
    """``value`` encoded as the receiver sees it: a Raw of its msgpack bytes."""
    return msgspec.Raw(ENC.encode(value))


def decode_frames(data: bytes | bytearray) -> list[Body]:
    """Split a byte stream into its frame bodies; fails on a partial frame."""
    frames = FrameDecoder(2**32)
    frames.feed(data)
    bodies = []
    while (body := frames.next_body()) is not None:
        bodies.append(_BODY_DECODER.decode(body))
    assert frames.buffered == 0, "stream ends in the middle of a frame"
    return bodies


def whole_bodies(data: bytes) -> list[bytes]:
    """The bodies of ``data`` as a message transport delivers them, one per message.

    A trailing partial frame (no message transport sends one) becomes a last,
    short body: whatever it is, the receiver must not choke on it.
    """
    bodies, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        bodies.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return bodies


def feed_in_pieces(conn: Connection, data: bytes | bytearray, cuts: Iterable[int]) -> None:
    """Feed ``data`` to ``conn`` split at the offsets in ``cuts`` (any ints; clamped)."""
    data = bytes(data)
    start = 0
    for cut in sorted({min(max(cut, 0), len(data)) for cut in cuts}):
        conn.receive_data(data[start:cut])
        start = cut
    conn.receive_data(data[start:])


def feed(conn: Connection, data: bytes | bytearray, mode: Feed) -> list[Event]:
    """Feed ``data`` to ``conn`` as ``mode`` says; return the events it produced.

    In ``Feed.GLUED`` mode a Message on ``GLUE_CHANNEL`` follows the data in the
    same ``receive_data`` call (its first 3 bytes; the rest comes next). If
    ``conn`` is still open afterwards that message must be the last event, and
    it is removed from the result; if ``conn`` closed it must not appear at all:
    nothing is read after the end.
    """
    data = bytes(data)
    if not data:
        return conn.events_received()
    if mode is Feed.WHOLE:
        conn.receive_data(data)
    elif mode is Feed.BYTEWISE:
        for i in range(len(data)):
            conn.receive_data(data[i : i + 1])
    elif mode is Feed.FRAMES:
        for body in whole_bodies(data):
            conn.receive_frame(body)
    else:
        glue = frame(Message(GLUE_CHANNEL, raw_args([])))
        conn.receive_data(data + glue[:3])
        conn.receive_data(glue[3:])
    events = conn.events_received()
    if mode is Feed.GLUED:
        glued = MessageReceived(GLUE_CHANNEL, raw([]))
        if conn.state is State.OPEN:
            assert events and events[-1] == glued, f"glued frame lost: {events}"
            events = events[:-1]
        assert glued not in events, f"frame read after the end: {events}"
    return events


class ConnectionPair:
    """A renderer and a main ``Connection`` wired back to back.

    Args:
        mode: how ``send`` feeds the bytes to the receiving side.
        token: the token main expects; ``renderer_token`` defaults to it.
        max_frame_size: applied to both sides.
    """

    def __init__(
        self,
        mode: Feed = Feed.WHOLE,
        *,
        token: str = TOKEN,
        renderer_token: str | None = None,
        max_frame_size: int | None = None,
    ) -> None:
        limits = {} if max_frame_size is None else {"max_frame_size": max_frame_size}
        self.mode = mode
        self.renderer = Connection(
            Role.RENDERER,
            token=token if renderer_token is None else renderer_token,
            process_id=PROCESS_ID,
            **limits,
        )
        self.main = Connection(Role.MAIN, token=token, renderer_id=RENDERER_ID, **limits)

    def peer(self, conn: Connection) -> Connection:
        """The other end of ``conn``."""
        return self.main if conn is self.renderer else self.renderer

    def ends(self, renderer_sends: bool) -> tuple[Connection, Connection]:
        """``(sender, receiver)`` for one direction."""
        if renderer_sends:
            return self.renderer, self.main
        return self.main, self.renderer

    def send(self, sender: Connection) -> list[Event]:
        """Move every byte ``sender`` queued to its peer; return the peer's events."""
        return feed(self.peer(sender), sender.data_to_send(), self.mode)

    def handshake(self) -> None:
        """Run Hello -> Welcome and check both sides' events and states."""
        assert self.send(self.renderer) == [HandshakeCompleted(RENDERER_ID, PROCESS_ID)]
        assert self.main.state is State.OPEN
        assert self.send(self.main) == [HandshakeCompleted(RENDERER_ID, 0)]
        assert self.renderer.state is State.OPEN
        assert self.renderer.renderer_id == RENDERER_ID
        assert self.renderer.data_to_send() == b""
        assert self.main.data_to_send() == b""


def handshake(mode: Feed = Feed.WHOLE) -> ConnectionPair:
    """A ``ConnectionPair`` that has completed its handshake."""
    pair = ConnectionPair(mode)
    pair.handshake()
    return pair


def assert_terminated_by_us(
    conn: Connection, events: Sequence[Event], code: CloseCode
) -> ConnectionTerminated:
    """``conn`` ended the connection itself: Goodbye(code) queued, CLOSED, one event.

    Returns the ``ConnectionTerminated`` event. Frames queued before the
    Goodbye (a Welcome, a Pong) are allowed; nothing may follow it.
    """
    assert conn.state is State.CLOSED
    terminated = [e for e in events if isinstance(e, ConnectionTerminated)]
    assert len(terminated) == 1, events
    assert events[-1] is terminated[0], events
    event = terminated[0]
    assert event.code is code, event
    assert event.remote is False
    bodies = decode_frames(conn.data_to_send())
    assert bodies, "no Goodbye queued"
    assert bodies[-1] == Goodbye(code, event.reason)
    assert not any(isinstance(b, Goodbye) for b in bodies[:-1])
    return event
