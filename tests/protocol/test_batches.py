"""A long read taken a batch at a time (``Connection.batch``, ``more``, ``receive_more``).

A driver that sets ``batch`` gets the events of one read in several helpings,
so it can handle each before the next is decoded (main keeps few messages
alive at once). The helpings together must be exactly what one pass gives:
the same events in the same order, a frame split across reads still
assembled, nothing taken after the end of the connection.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipcbus._events import ConnectionTerminated, Event, MessageReceived
from ipcbus._protocol import Connection, State
from ipcbus._receiving import ALL
from ipcbus._wire import CloseCode, Goodbye, Message, Request, RequestKind, raw_args

from .helpers import assert_terminated_by_us, feed_in_pieces, frame, handshake, raw

# The size of each frame ``messages`` makes (its values, under 128, take one byte).
FRAME_SIZE = len(frame(Message("ch", raw_args([0]))))


def messages(values: range) -> bytes:
    return b"".join(frame(Message("ch", raw_args([v]))) for v in values)


def helpings(conn: Connection, data: bytes) -> list[list[Event]]:
    """Feed ``data`` in one read as an endpoint does; the events of each batch."""
    conn.receive_data(data)
    got = [conn.events_received()]
    while conn.more:
        conn.receive_more()
        got.append(conn.events_received())
    return got


def values(events: list[Event]) -> list[object]:
    return [e.args for e in events if isinstance(e, MessageReceived)]


def test_every_frame_of_messages_has_the_same_size() -> None:
    assert len(messages(range(100))) == 100 * FRAME_SIZE  # the counts below rely on it


def test_by_default_a_read_is_taken_in_one_pass() -> None:
    conn = handshake().main
    assert conn.batch == ALL
    assert helpings(conn, messages(range(100))) == [[Message("ch", raw([v])) for v in range(100)]]
    assert not conn.more


def test_a_small_batch_gives_a_long_read_in_helpings_in_order() -> None:
    conn = handshake().main
    conn.batch = 10 * FRAME_SIZE
    got = helpings(conn, messages(range(100)))
    # A batch takes every frame that starts within its bytes: eleven frames, then
    # the rest (the last helping is what remains).
    assert [len(h) for h in got] == [11, 11, 11, 11, 11, 11, 11, 11, 11, 1]
    assert [e for h in got for e in h] == [Message("ch", raw([v])) for v in range(100)]
    assert not conn.more
    assert conn.state is State.OPEN


def test_a_frame_split_after_the_last_batch_is_still_assembled() -> None:
    conn = handshake().main
    conn.batch = 4 * FRAME_SIZE
    data = messages(range(20))
    got = helpings(conn, data + data[:7])  # 20 whole frames and the start of one more
    assert values([e for h in got for e in h]) == [raw([v]) for v in range(20)]
    conn.receive_data(data[7:FRAME_SIZE])
    assert conn.events_received() == [Message("ch", raw([0]))]
    assert not conn.more


def test_a_read_that_arrives_while_a_frame_is_held_is_batched_too() -> None:
    conn = handshake().main
    conn.batch = 4 * FRAME_SIZE
    data = messages(range(30))
    conn.receive_data(data[:5])  # part of the first frame: held
    assert conn.events_received() == []
    got = helpings(conn, data[5:])
    assert len(got) > 1
    assert values([e for h in got for e in h]) == [raw([v]) for v in range(30)]


def test_a_batch_never_takes_frames_after_a_goodbye() -> None:
    conn = handshake().main
    conn.batch = 4 * FRAME_SIZE
    data = messages(range(10)) + frame(Goodbye(CloseCode.NORMAL, "bye")) + messages(range(10))
    got = [e for h in helpings(conn, data) for e in h]
    assert values(got) == [raw([v]) for v in range(10)]
    assert isinstance(got[-1], ConnectionTerminated)
    assert conn.state is State.CLOSED
    assert not conn.more
    assert conn.receive_more() is False  # harmless once closed


def test_a_violation_in_a_later_batch_ends_the_connection_there() -> None:
    conn = handshake().main
    conn.batch = 4 * FRAME_SIZE
    call = Request(1, RequestKind.INVOKE, "ch", raw_args([]))
    # A request id that goes backwards is a violation, 20 frames into the read.
    data = messages(range(10)) + frame(call) + messages(range(10)) + frame(call)
    got = [e for h in helpings(conn, data + messages(range(5))) for e in h]
    assert values(got) == [raw([v]) for v in [*range(10), *range(10)]]
    assert_terminated_by_us(conn, got, CloseCode.PROTOCOL_ERROR)
    assert not conn.more


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 300), min_size=1, max_size=40),
    batch=st.integers(0, 400),
    cuts=st.lists(st.integers(0, 6000), max_size=6),
)
def test_batches_give_the_events_one_pass_gives_however_the_bytes_are_split(
    sizes: list[int], batch: int, cuts: list[int]
) -> None:
    data = b"".join(frame(Message("ch", raw_args([b"x" * n]))) for n in sizes)
    whole = handshake().main
    whole.receive_data(data)
    expected = whole.events_received()

    batched = handshake().main
    batched.batch = batch
    got: list[Event] = []
    start = 0
    for cut in [*sorted({min(c, len(data)) for c in cuts}), len(data)]:
        got.extend(e for h in helpings(batched, data[start:cut]) for e in h)
        start = cut
    assert got == expected
    assert not batched.more


@pytest.mark.parametrize("batch", [0, 1, FRAME_SIZE])
def test_the_smallest_batches_take_one_frame_at_a_time(batch: int) -> None:
    conn = handshake().main
    conn.batch = batch
    got = helpings(conn, messages(range(5)))
    expected = [1, 1, 1, 1, 1] if batch < FRAME_SIZE else [2, 2, 1]
    assert [len(h) for h in got] == expected


def test_feed_in_pieces_drivers_that_ignore_batches_are_unchanged() -> None:
    # The default batch (ALL) never sets ``more``: drivers that never call
    # receive_more (the blocking facade, whole-frame transports) are unaffected.
    conn = handshake().main
    feed_in_pieces(conn, messages(range(50)), [3, 100, 101, 700])
    assert values(conn.events_received()) == [raw([v]) for v in range(50)]
    assert not conn.more
