"""A read of many whole frames is handled in one pass (``Connection._parse_open``).

The pass must behave exactly as frame-by-frame parsing did: frames are taken
in order, a frame split across reads or over the limit is left to
``next_body``, the handshake's small limit ends with the handshake (even
inside one read), and nothing after the end of the connection is delivered.
"""

from __future__ import annotations

import gc

import pytest

from ipcbus import FrameTooLargeError
from ipcbus._events import ConnectionTerminated, MessageReceived, RequestReceived
from ipcbus._framing import FrameDecoder
from ipcbus._protocol import HANDSHAKE_MAX_FRAME_SIZE, Connection, Role, State
from ipcbus._wire import (
    MIN_MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    CloseCode,
    Goodbye,
    Hello,
    Message,
    PortRef,
    Request,
    RequestKind,
    raw_args,
)

from .helpers import PROCESS_ID, TOKEN, assert_terminated_by_us, frame, handshake, raw


def messages(*values: object, channel: str = "ch") -> bytes:
    return b"".join(frame(Message(channel, raw_args([v]))) for v in values)


def delivered(*values: object, channel: str = "ch") -> list[MessageReceived]:
    return [MessageReceived(channel, raw([v])) for v in values]


def walk(frames: FrameDecoder) -> list[bytes]:
    """Take the whole frames as Connection._parse_open does; return their bodies."""
    data, _view, pos = frames.unparsed()
    bodies = []
    while pos + 4 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        if pos + 4 + size > len(data) or size > frames.max_frame_size:
            break
        bodies.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    frames.parsed_to(pos)
    return bodies


def test_unparsed_and_parsed_to_hand_over_the_whole_frames_and_keep_a_split_one() -> None:
    frames = FrameDecoder(1024)
    data = messages(1, 2, 3)
    frames.feed(data + data[:5])  # three whole frames and the start of a fourth
    assert walk(frames) == [frame(Message("ch", raw_args([v])))[4:] for v in (1, 2, 3)]
    assert walk(frames) == []
    assert frames.next_body() is None  # the split frame waits for the rest
    frames.feed(data[5 : len(data) // 3])
    assert bytes(frames.next_body() or b"") == frame(Message("ch", raw_args([1])))[4:]
    assert frames.buffered == 0


def test_next_body_refuses_the_oversize_frame_a_walk_stops_at() -> None:
    frames = FrameDecoder(64)
    frames.feed(messages(1) + frame(Message("ch", raw_args(["x" * 100]))) + messages(2))
    assert len(walk(frames)) == 1
    with pytest.raises(FrameTooLargeError, match="exceeds the limit of 64 bytes"):
        frames.next_body()


def test_nothing_to_walk_while_a_body_is_being_assembled() -> None:
    frames = FrameDecoder(1024)
    data = messages("a" * 50, 2)
    frames.feed(data[:20])
    assert walk(frames) == []
    assert frames.next_body() is None
    frames.feed(data[20:])
    assert walk(frames) == []  # the assembled frame comes from next_body first
    assert frames.next_body() is not None
    assert len(walk(frames)) == 1


def test_one_read_delivers_every_message_in_order() -> None:
    pair = handshake()
    pair.main.receive_data(messages(*range(100)))
    assert pair.main.events_received() == delivered(*range(100))


def test_hello_and_large_frames_in_one_read_get_the_full_limit() -> None:
    # The handshake's small limit must not apply to frames that follow the Hello
    # in the same read.
    main = Connection(Role.MAIN, token=TOKEN, renderer_id=1)
    big = "x" * (HANDSHAKE_MAX_FRAME_SIZE * 2)
    main.receive_data(frame(Hello(PROTOCOL_VERSION, TOKEN, PROCESS_ID)) + messages(big, 2))
    events = main.events_received()
    assert main.state is State.OPEN
    assert events[1:] == delivered(big, 2)


def test_nothing_after_a_goodbye_in_the_same_read_is_delivered() -> None:
    pair = handshake()
    data = messages(1, 2) + frame(Goodbye(CloseCode.NORMAL, "bye")) + messages(3, 4)
    pair.main.receive_data(data)
    events = pair.main.events_received()
    assert events[:2] == delivered(1, 2)
    assert events[2:] == [ConnectionTerminated(CloseCode.NORMAL, "bye", remote=True)]
    assert pair.main.state is State.CLOSED


def test_a_violation_mid_read_keeps_what_came_before_and_drops_the_rest() -> None:
    pair = handshake()
    request = frame(Request(1, RequestKind.INVOKE, "inc", raw_args([1])))
    pair.main.receive_data(messages(1) + request + request + messages(2))  # id 1 reused
    events = pair.main.events_received()
    assert events[:2] == [*delivered(1), RequestReceived(1, RequestKind.INVOKE, "inc", raw([1]))]
    event = assert_terminated_by_us(pair.main, events[2:], CloseCode.PROTOCOL_ERROR)
    assert "request id 1 reused" in event.reason


def test_an_oversize_frame_mid_read_keeps_what_came_before() -> None:
    main = Connection(Role.MAIN, token=TOKEN, renderer_id=1, max_frame_size=MIN_MAX_FRAME_SIZE)
    main.receive_data(frame(Hello(PROTOCOL_VERSION, TOKEN, PROCESS_ID)))
    main.events_received()
    main.data_to_send()
    too_large = frame(Message("ch", raw_args(["x" * MIN_MAX_FRAME_SIZE])))
    main.receive_data(messages(1) + too_large + messages(2))
    events = main.events_received()
    assert events[:1] == delivered(1)
    assert_terminated_by_us(main, events[1:], CloseCode.FRAME_TOO_LARGE)


def test_a_malformed_frame_mid_read_keeps_what_came_before() -> None:
    pair = handshake()
    garbage = b"\xc1"  # never valid msgpack
    pair.main.receive_data(messages(1) + len(garbage).to_bytes(4, "big") + garbage + messages(2))
    events = pair.main.events_received()
    assert events[:1] == delivered(1)
    event = assert_terminated_by_us(pair.main, events[1:], CloseCode.PROTOCOL_ERROR)
    assert "malformed frame" in event.reason


def test_a_message_with_ports_in_a_long_read_is_still_checked() -> None:
    pair = handshake()
    bad_ref = frame(Message("ch", raw_args([None]), [PortRef(0)]))  # id 0 is never valid
    pair.main.receive_data(messages(1) + bad_ref + messages(2))
    events = pair.main.events_received()
    assert events[:1] == delivered(1)
    assert_terminated_by_us(pair.main, events[1:], CloseCode.PROTOCOL_ERROR)


def test_a_long_read_of_small_messages_leaves_nothing_for_the_cycle_collector() -> None:
    # Thousands of events live until the read is dispatched: if the collector
    # tracked them, a collection would start every few hundred frames.
    pair = handshake()
    pair.main.receive_data(messages(*range(2000)))
    events = pair.main.events_received()
    assert len(events) == 2000
    assert not any(gc.is_tracked(event) for event in events)
    assert all(event.ports == () for event in events)  # the shared empty tuple, not a list each
