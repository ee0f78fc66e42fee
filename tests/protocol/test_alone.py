"""``Connection.receive_alone``: a read of one usual frame, taken without the general walk.

It must do exactly what ``receive_data`` does for the reads it takes (the
same event, the same bookkeeping after), and take nothing at all from any
other read, so that ``receive_data`` then handles it as before, errors
included. Each case is run on two identical connections, one fed each way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ipcbus._framing import SMALL_BODY
from ipcbus._protocol import Connection, State
from ipcbus._wire import (
    MIN_MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    CloseCode,
    Hello,
    Message,
    PortRef,
    Reply,
    Request,
    RequestKind,
    raw_args,
)

from .helpers import PROCESS_ID, TOKEN, ConnectionPair, frame, handshake, raw_frame

#: (the connection that reads, the bytes of its read), made fresh for each use.
Case = Callable[[], tuple[Connection, bytes]]


def _bookkeeping(conn: Connection) -> tuple[Any, ...]:
    return (
        conn.state,
        dict(conn._awaiting),
        dict(conn._cancelled),
        dict(conn._serving),
        conn._peer_last_request_id,
        dict(conn._granted),
        dict(conn._credit),
        conn._holding,
        conn._frames.buffered,
        conn.more,
        bytes(conn.data_to_send()),
    )


def _invoke_to_main() -> tuple[Connection, bytes]:
    pair = handshake()
    pair.renderer.start_request(RequestKind.INVOKE, "inc", (1,))
    return pair.main, bytes(pair.renderer.data_to_send())


def _reply_to_renderer(stream_open: bool = False) -> tuple[Connection, bytes]:
    pair = handshake()
    if stream_open:
        pair.renderer.start_stream("ticks", (), 4)
    request_id = pair.renderer.start_request(RequestKind.INVOKE, "inc", (1,))
    pair.send(pair.renderer)
    pair.main.send_reply(request_id, True, 2)
    return pair.renderer, bytes(pair.main.data_to_send())


def _send_sync_to_main() -> tuple[Connection, bytes]:
    pair = handshake()
    pair.renderer.start_request(RequestKind.SYNC, "sync", ("x",))
    return pair.main, bytes(pair.renderer.data_to_send())


def _message_to(side: str) -> Case:
    def case() -> tuple[Connection, bytes]:
        pair = handshake()
        sender = pair.renderer if side == "main" else pair.main
        sender.send_message("ch", ("hello", 1))
        return pair.peer(sender), bytes(sender.data_to_send())

    return case


USUAL: dict[str, Case] = {
    "an invoke, read by main": _invoke_to_main,
    "a send_sync, read by main": _send_sync_to_main,
    "its reply, read by the renderer": _reply_to_renderer,
    "a message, read by main": _message_to("main"),
    "a push, read by the renderer": _message_to("renderer"),
}


@pytest.mark.parametrize("case", USUAL.values(), ids=USUAL.keys())
def test_a_usual_frame_alone_is_taken_as_receive_data_takes_it(case: Case) -> None:
    alone, read = case()
    general, same_read = case()
    assert read == same_read

    event = alone.receive_alone(read)
    assert general.receive_data(read) is False
    expected = general.events_received()

    assert event is not None
    assert [event] == expected
    assert alone.events_received() == []
    assert _bookkeeping(alone) == _bookkeeping(general)


def _two_messages() -> tuple[Connection, bytes]:
    pair = handshake()
    pair.main.send_message("ch", (1,))
    pair.main.send_message("ch", (2,))
    return pair.renderer, bytes(pair.main.data_to_send())


def _half(case: Case) -> Case:
    def half() -> tuple[Connection, bytes]:
        conn, read = case()
        return conn, read[:-1]

    return half


def _ping() -> tuple[Connection, bytes]:
    pair = handshake()
    pair.main.send_ping(7)
    return pair.renderer, bytes(pair.main.data_to_send())


def _stream_request() -> tuple[Connection, bytes]:
    pair = handshake()
    return pair.main, frame(Request(1, RequestKind.STREAM, "ticks", raw_args(())))


def _reply_nobody_awaits() -> tuple[Connection, bytes]:
    pair = handshake()
    return pair.renderer, frame(Reply(99, True, raw_args(1)))


def _reply_that_crossed_our_cancel() -> tuple[Connection, bytes]:
    pair = handshake()
    request_id = pair.renderer.start_request(RequestKind.INVOKE, "inc", (1,))
    pair.send(pair.renderer)
    pair.renderer.cancel_request(request_id)
    pair.renderer.data_to_send()  # the Cancel, still on its way when the reply comes
    pair.main.send_reply(request_id, True, 2)
    return pair.renderer, bytes(pair.main.data_to_send())


def _bytes(read: bytes) -> Case:
    def case() -> tuple[Connection, bytes]:
        return handshake().renderer, read

    return case


def _request_out_of_order() -> tuple[Connection, bytes]:
    pair = handshake()
    pair.renderer.start_request(RequestKind.INVOKE, "inc", (1,))
    read = bytes(pair.renderer.data_to_send())
    assert pair.main.receive_data(read) is False
    pair.main.events_received()
    return pair.main, read  # the same id again: a violation


def _message_with_ports() -> tuple[Connection, bytes]:
    pair = handshake()
    body = Message("ch", raw_args(1), (PortRef(-1, -2),))
    return pair.main, frame(body)


def _larger_than_small() -> tuple[Connection, bytes]:
    pair = handshake()
    pair.main.send_message("ch", ("x" * SMALL_BODY,))
    return pair.renderer, bytes(pair.main.data_to_send())


def _malformed_reply() -> tuple[Connection, bytes]:
    pair = handshake()
    return pair.renderer, raw_frame(b"\x93\x05\xc1\xc1")  # a Reply's tag, then bytes never valid


def _before_the_handshake() -> tuple[Connection, bytes]:
    pair = ConnectionPair()
    return pair.main, frame(Hello(PROTOCOL_VERSION, TOKEN, PROCESS_ID, MIN_MAX_FRAME_SIZE))


def _after_a_split_frame() -> tuple[Connection, bytes]:
    """A read that is one whole frame by itself, after a read that left a byte held:
    it continues the held frame, whatever it looks like alone."""
    pair = handshake()
    pair.main.send_message("ch", (1,))
    assert pair.renderer.receive_data(bytes(pair.main.data_to_send())[:1]) is True
    pair.main.send_message("ch", (2,))
    return pair.renderer, bytes(pair.main.data_to_send())


def _a_header_that_promises_more() -> tuple[Connection, bytes]:
    """A whole body, under a header that says more is to come: the frame is not whole."""
    pair = handshake()
    body = frame(Message("ch", raw_args(1)))[4:]
    return pair.main, (len(body) + 5).to_bytes(4, "big") + body


def _after_the_end() -> tuple[Connection, bytes]:
    pair = handshake()
    pair.main.send_message("ch", (1,))
    pair.renderer.receive_eof()
    pair.renderer.events_received()
    return pair.renderer, bytes(pair.main.data_to_send())


def _after_events_not_taken_yet() -> tuple[Connection, bytes]:
    """A driver may read twice before it takes the events: they stay in order."""
    pair = handshake()
    pair.main.send_message("ch", (1,))
    assert pair.renderer.receive_data(bytes(pair.main.data_to_send())) is False
    pair.main.send_message("ch", (2,))
    return pair.renderer, bytes(pair.main.data_to_send())


UNUSUAL: dict[str, Case] = {
    "two frames": _two_messages,
    "part of a frame": _half(_message_to("renderer")),
    "a ping": _ping,
    "a stream's request": _stream_request,
    "a reply nobody awaits": _reply_nobody_awaits,
    "a reply while a stream is open": lambda: _reply_to_renderer(stream_open=True),
    "a reply that crossed our Cancel": _reply_that_crossed_our_cancel,
    "no bytes (the end)": _bytes(b""),
    "part of a header": _bytes(b"\x00\x00"),
    "a header alone": _bytes(b"\x00\x00\x00\x01"),
    "a frame of one byte": _bytes(b"\x00\x00\x00\x01\x90"),
    "an empty frame": _bytes(b"\x00\x00\x00\x00\x05"),
    "a request out of order": _request_out_of_order,
    "a message with ports": _message_with_ports,
    "a frame over SMALL_BODY": _larger_than_small,
    "a malformed reply": _malformed_reply,
    "the handshake": _before_the_handshake,
    "after a split frame": _after_a_split_frame,
    "a header that promises more": _a_header_that_promises_more,
    "after the end": _after_the_end,
    "after events not taken yet": _after_events_not_taken_yet,
}


@pytest.mark.parametrize("case", UNUSUAL.values(), ids=UNUSUAL.keys())
def test_any_other_read_is_left_whole_for_receive_data(case: Case) -> None:
    conn, read = case()
    general, same_read = case()
    assert read == same_read
    before = _bookkeeping(general)
    pending = conn._events[:]

    assert conn.receive_alone(read) is None
    assert conn._events == pending  # nothing taken...
    assert _bookkeeping(conn) == before  # ...nor changed

    # ...so receive_data handles it exactly as it would have
    assert conn.receive_data(read) == general.receive_data(read)
    assert conn.events_received() == general.events_received()
    assert _bookkeeping(conn) == _bookkeeping(general)


def test_a_malformed_reply_still_ends_the_connection_through_receive_data() -> None:
    conn, read = _malformed_reply()
    assert conn.receive_alone(read) is None
    conn.receive_data(read)
    (ended,) = conn.events_received()
    assert conn.state is State.CLOSED
    assert ended.code is CloseCode.PROTOCOL_ERROR  # type: ignore[union-attr]


def test_no_frame_alone_needs_a_size_check() -> None:
    """receive_alone takes bodies up to SMALL_BODY and checks no limit: every open
    connection's limit is at least MIN_MAX_FRAME_SIZE, which must stay above it."""
    assert SMALL_BODY < MIN_MAX_FRAME_SIZE


def test_a_request_taken_alone_is_answered_as_any_other() -> None:
    """The bookkeeping a request taken alone leaves lets main answer it (and only once)."""
    pair = handshake()
    request_id = pair.renderer.start_request(RequestKind.INVOKE, "inc", (1,))
    event = pair.main.receive_alone(bytes(pair.renderer.data_to_send()))
    assert isinstance(event, Request)
    assert pair.main.send_reply(request_id, True, 2) is True
    assert pair.main.send_reply(request_id, True, 3) is False  # answered already
    reply = pair.renderer.receive_alone(bytes(pair.main.data_to_send()))
    assert isinstance(reply, Reply) and reply.request_id == request_id
    assert pair.renderer._awaiting == {}
