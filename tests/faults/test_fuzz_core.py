"""Fuzzing the protocol core (issue 3, "what it must show" 2, sans-I/O half).

10,000 random or mutated byte streams per side are fed to a ``Connection``
whole and in random pieces. The only outcomes allowed are well-formed events
ending in exactly one ``ConnectionTerminated``, and output that is a valid
frame sequence; how the bytes are split never changes either. A hypothesis
test adds arbitrary bytes on top.
"""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipcbus._events import (
    ConnectionTerminated,
    Event,
    HandshakeCompleted,
    MessageReceived,
    PortClosed,
    PortMessageReceived,
    ReplyReceived,
    RequestCancelled,
    RequestReceived,
    StreamCreditReceived,
    StreamItemReceived,
)
from ipcbus._framing import FrameDecoder
from ipcbus._protocol import Connection, Role, State
from ipcbus._wire import Body, Goodbye, Hello, Pong, Reply, Welcome

from ._streams import make_stream

TOKEN = "fuzz-token-0123456789"
STREAMS = 10_000
MAX_FRAME = 64 * 1024
_BODY: msgspec.msgpack.Decoder[Body] = msgspec.msgpack.Decoder(Body)
_EVENT_TYPES = (
    HandshakeCompleted,
    MessageReceived,
    RequestReceived,
    ReplyReceived,
    RequestCancelled,
    PortMessageReceived,
    PortClosed,
    StreamItemReceived,
    StreamCreditReceived,
    ConnectionTerminated,
)


def _new(role: Role) -> Connection:
    if role is Role.MAIN:
        return Connection(Role.MAIN, token=TOKEN, renderer_id=1, max_frame_size=MAX_FRAME)
    conn = Connection(Role.RENDERER, token=TOKEN, process_id=1, max_frame_size=MAX_FRAME)
    conn.data_to_send()  # our Hello
    return conn


def _feed(role: Role, stream: bytes, cuts: list[int]) -> tuple[list[Event], bytes]:
    conn = _new(role)
    events: list[Event] = []
    out = bytearray()
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        conn.receive_data(stream[start:cut])
        start = cut
        events += conn.events_received()
        out += conn.data_to_send()
    conn.receive_eof()
    conn.receive_eof()  # idempotent
    events += conn.events_received()
    out += conn.data_to_send()
    assert conn.state is State.CLOSED
    conn.receive_data(b"\x00\x00\x00\x01\x90")  # after CLOSED: ignored
    assert conn.events_received() == []
    return events, bytes(out)


def _check(role: Role, events: list[Event], out: bytes) -> None:
    assert all(isinstance(event, _EVENT_TYPES) for event in events), events
    assert isinstance(events[-1], ConnectionTerminated)
    assert sum(isinstance(event, ConnectionTerminated) for event in events) == 1
    shook = [i for i, event in enumerate(events) if isinstance(event, HandshakeCompleted)]
    assert shook in ([], [0]), events
    if not shook:  # nothing but the end before a handshake
        assert len(events) == 1, events
    decoder = FrameDecoder(2**32)
    decoder.feed(out)
    bodies = []
    while (raw := decoder.next_body()) is not None:
        bodies.append(_BODY.decode(raw))
    assert decoder.buffered == 0, "our own output ends in half a frame"
    allowed = (
        (Welcome, Pong, Goodbye, Reply) if role is Role.MAIN else (Hello, Pong, Goodbye, Reply)
    )
    assert all(isinstance(body, allowed) for body in bodies), bodies
    # The core answers on its own only a Cancel, acknowledging that request.
    cancelled = {e.request_id for e in events if isinstance(e, RequestCancelled)}
    acks = [body for body in bodies if isinstance(body, Reply)]
    assert all(not body.ok and body.request_id in cancelled for body in acks), acks
    assert len(acks) == len(cancelled)
    assert sum(isinstance(body, Goodbye) for body in bodies) <= 1
    if any(isinstance(body, Goodbye) for body in bodies):
        assert isinstance(bodies[-1], Goodbye)
        terminated = events[-1]
        assert isinstance(terminated, ConnectionTerminated) and not terminated.remote
    if role is Role.MAIN:
        welcomed = bool(bodies) and isinstance(bodies[0], Welcome)
        assert welcomed == bool(shook)


@pytest.mark.parametrize("role", [Role.MAIN, Role.RENDERER], ids=["main", "renderer"])
def test_ten_thousand_mutated_streams(role: Role) -> None:
    rng = random.Random(20260131 + (role is Role.RENDERER))
    outcomes: dict[str, int] = {}
    for index in range(STREAMS):
        stream = make_stream(rng, TOKEN, role)
        whole = _feed(role, stream, [])
        cuts = [rng.randrange(len(stream) + 1) for _ in range(rng.randrange(6))]
        split = _feed(role, stream, cuts)
        byte_by_byte = _feed(role, stream, list(range(len(stream)))) if index % 50 == 0 else split
        assert whole == split == byte_by_byte, (index, stream)
        _check(role, *whole)
        end = whole[0][-1]
        assert isinstance(end, ConnectionTerminated)
        key = "peer ended it" if end.remote else (end.code.name if end.code else "?")
        outcomes[key] = outcomes.get(key, 0) + 1
    # The generator reaches every kind of ending, not just one.
    assert len(outcomes) >= 4, outcomes


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=512), cuts=st.lists(st.integers(0, 512), max_size=6))
def test_arbitrary_bytes_only_ever_end_the_connection(data: bytes, cuts: list[int]) -> None:
    for role in (Role.MAIN, Role.RENDERER):
        whole = _feed(role, data, [])
        assert _feed(role, data, [c for c in cuts if c <= len(data)]) == whole
        _check(role, *whole)
