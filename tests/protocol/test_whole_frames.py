"""Whole frame bodies (a WebSocket or NATS message each) go through the same core.

Every parametrized protocol test also runs in ``Feed.FRAMES`` mode; these are
the cases only a message transport has: a body judged by its own length, an
empty message, and the way out (``split_frames``).
"""

from __future__ import annotations

from ipcbus._events import ConnectionTerminated, MessageReceived
from ipcbus._framing import split_frames
from ipcbus._protocol import State
from ipcbus._wire import CloseCode, Message, Ping, Pong, raw_args

from .helpers import (
    ConnectionPair,
    Feed,
    assert_terminated_by_us,
    decode_frames,
    frame,
    handshake,
    raw,
)


def test_a_body_over_the_limit_ends_the_connection() -> None:
    pair = ConnectionPair(Feed.FRAMES, max_frame_size=1100)
    pair.handshake()
    pair.main.receive_frame(b"\x93\x03\xa1x" + b"\x90" * 1097)  # 1101 bytes
    event = assert_terminated_by_us(
        pair.main, pair.main.events_received(), CloseCode.FRAME_TOO_LARGE
    )
    assert "1101" in event.reason and "1100" in event.reason


def test_a_body_over_the_handshake_limit_is_refused_before_the_token() -> None:
    pair = ConnectionPair(Feed.FRAMES)
    pair.main.receive_frame(b"\x00" * (64 * 1024 + 1))
    assert_terminated_by_us(pair.main, pair.main.events_received(), CloseCode.FRAME_TOO_LARGE)


def test_an_empty_message_is_a_malformed_frame() -> None:
    pair = handshake(Feed.FRAMES)
    pair.main.receive_frame(b"")
    event = assert_terminated_by_us(
        pair.main, pair.main.events_received(), CloseCode.PROTOCOL_ERROR
    )
    assert "malformed frame" in event.reason


def test_bodies_after_the_end_are_ignored() -> None:
    pair = handshake(Feed.FRAMES)
    pair.main.receive_frame(b"\xc1")  # never valid msgpack
    assert pair.main.state is State.CLOSED
    pair.main.data_to_send()
    pair.main.events_received()
    pair.main.receive_frame(frame(Ping(1))[4:])
    assert pair.main.events_received() == []
    assert pair.main.data_to_send() == b""


def test_a_message_and_a_ping_in_two_bodies() -> None:
    pair = handshake(Feed.FRAMES)
    pair.main.receive_frame(frame(Message("ch", raw_args([1])))[4:])
    pair.main.receive_frame(frame(Ping(9))[4:])
    assert pair.main.events_received() == [MessageReceived("ch", raw([1]))]
    assert decode_frames(pair.main.data_to_send()) == [Pong(9)]


def test_split_frames_gives_each_body_of_what_the_core_wrote() -> None:
    pair = handshake(Feed.FRAMES)
    pair.renderer.send_message("a", [1])
    pair.renderer.send_ping(5)
    pair.renderer.send_message("b", [b"x" * 70_000])
    out = pair.renderer.data_to_send()
    bodies = split_frames(out)
    assert [bytes(b) for b in bodies] == [
        frame(Message("a", raw_args([1])))[4:],
        frame(Ping(5))[4:],
        frame(Message("b", raw_args([b"x" * 70_000])))[4:],
    ]
    for body in bodies:
        body.release()
    assert split_frames(b"") == []


def test_a_violation_in_a_body_is_reported_not_raised() -> None:
    pair = handshake(Feed.FRAMES)
    pair.main.receive_frame(frame(Pong(1))[4:] + b"\x00")  # trailing byte in the body
    events = pair.main.events_received()
    assert isinstance(events[-1], ConnectionTerminated)
    assert pair.main.state is State.CLOSED
