"""Socket-free tests of the core's port and stream frames (docs/ports-and-streams.md)."""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipcbus._events import (
    ConnectionTerminated,
    Event,
    MessageReceived,
    PortClosed,
    PortMessageReceived,
    ReplyReceived,
    RequestCancelled,
    RequestReceived,
    StreamCreditReceived,
    StreamItemReceived,
)
from ipcbus._framing import append_frame
from ipcbus._protocol import Connection, LocalProtocolError, Role, State
from ipcbus._wire import (
    CloseCode,
    Message,
    Ping,
    PortClose,
    PortMessage,
    PortRef,
    Request,
    RequestKind,
    StreamCredit,
    StreamItem,
)

TOKEN = "t0ken"
ENC = msgspec.msgpack.Encoder()


class Feed(enum.Enum):
    WHOLE = "whole"
    BYTEWISE = "bytewise"
    GLUED = "glued"  # followed by the head of a Ping frame, then its tail


def raw(value: Any) -> msgspec.Raw:
    return msgspec.Raw(ENC.encode(value))


def frame(body: Any) -> bytes:
    out = bytearray()
    append_frame(ENC, body, out)
    return bytes(out)


def deliver(conn: Connection, data: bytes | bytearray, feed: Feed = Feed.WHOLE) -> list[Event]:
    data = bytes(data)
    if feed is Feed.WHOLE:
        conn.receive_data(data)
    elif feed is Feed.BYTEWISE:
        for i in range(len(data)):
            conn.receive_data(data[i : i + 1])
    else:
        ping = frame(Ping(99))
        conn.receive_data(data + ping[:3])
        conn.receive_data(ping[3:])
        conn.data_to_send()  # the Pong
    return conn.events_received()


def open_pair() -> tuple[Connection, Connection]:
    renderer = Connection(Role.RENDERER, token=TOKEN, process_id=1)
    main = Connection(Role.MAIN, token=TOKEN, renderer_id=3)
    main.receive_data(renderer.data_to_send())
    renderer.receive_data(main.data_to_send())
    renderer.events_received()
    main.events_received()
    assert renderer.state is State.OPEN and main.state is State.OPEN
    return renderer, main


def terminated_by(conn: Connection, data: bytes) -> ConnectionTerminated:
    events = deliver(conn, data)
    assert conn.state is State.CLOSED
    assert isinstance(events[-1], ConnectionTerminated)
    assert events[-1].code is CloseCode.PROTOCOL_ERROR
    return events[-1]


FEEDS = pytest.mark.parametrize("feed", list(Feed))


# ---- messages with ports ----------------------------------------------------


@FEEDS
def test_post_message_carries_port_refs_to_main(feed: Feed) -> None:
    renderer, main = open_pair()
    refs = [PortRef(-1, -2, 0, 2), PortRef(5, 0, 3, 0)]
    renderer.send_message("ch", ["hello"], refs)
    assert deliver(main, renderer.data_to_send(), feed) == [
        MessageReceived("ch", raw(["hello"]), tuple(refs))  # ports arrive as a tuple
    ]


@FEEDS
def test_post_message_carries_port_refs_to_a_renderer(feed: Feed) -> None:
    renderer, main = open_pair()
    main.send_message("ch", [None], [PortRef(4)])
    assert deliver(renderer, main.data_to_send(), feed) == [
        MessageReceived("ch", raw([None]), (PortRef(4),))
    ]


def test_a_message_frame_without_ports_still_decodes() -> None:
    # The three-field form (before ports existed) is what send() still looks like.
    _renderer, main = open_pair()
    old = ENC.encode([3, "ch", [1]])
    assert deliver(main, len(old).to_bytes(4, "big") + old) == [MessageReceived("ch", raw([1]))]


@FEEDS
def test_port_frames_both_ways(feed: Feed) -> None:
    renderer, main = open_pair()
    renderer.send_port_message(-3, "x", [PortRef(-5, -6, 0, 0)])
    renderer.send_port_message(7, 1, returned=True)
    renderer.send_port_close(7, returned=True)
    renderer.send_port_close(-3)
    assert deliver(main, renderer.data_to_send(), feed) == [
        PortMessageReceived(-3, raw("x"), [PortRef(-5, -6, 0, 0)], False),
        PortMessageReceived(7, raw(1), [], True),
        PortClosed(7, True),
        PortClosed(-3, False),
    ]
    main.send_port_message(9, {"a": 1}, [PortRef(10)])
    main.send_port_close(9)
    assert deliver(renderer, main.data_to_send(), feed) == [
        PortMessageReceived(9, raw({"a": 1}), [PortRef(10)], False),
        PortClosed(9, False),
    ]


@pytest.mark.parametrize(
    "body",
    [
        PortMessage(0, raw(0)),
        PortMessage(1, raw(0), returned=True),  # only renderers give frames back
        PortMessage(1, raw(0), [PortRef(-2)]),
        PortClose(0),
        PortClose(2, returned=True),
        Message("ch", raw([]), [PortRef(0)]),
    ],
)
def test_a_renderer_refuses_bad_port_ids_from_main(body: Any) -> None:
    renderer, _ = open_pair()
    assert "port id" in terminated_by(renderer, frame(body)).reason


@pytest.mark.parametrize(
    "body", [PortMessage(0, raw(0)), PortClose(0), Message("ch", raw([]), [PortRef(0)])]
)
def test_main_refuses_port_id_zero(body: Any) -> None:
    _, main = open_pair()
    assert "port id 0" in terminated_by(main, frame(body)).reason


def test_port_commands_need_an_open_connection() -> None:
    renderer = Connection(Role.RENDERER, token=TOKEN)
    with pytest.raises(LocalProtocolError, match="port message while the connection"):
        renderer.send_port_message(1, None)
    with pytest.raises(LocalProtocolError, match="close a port while the connection"):
        renderer.send_port_close(1)


# ---- streams ----------------------------------------------------------------


def open_stream(credit: int = 2) -> tuple[Connection, Connection, int]:
    renderer, main = open_pair()
    request_id = renderer.start_stream("count", [3], credit)
    assert deliver(main, renderer.data_to_send()) == [
        RequestReceived(request_id, RequestKind.STREAM, "count", raw([3])),
        StreamCreditReceived(request_id, credit),
    ]
    return renderer, main, request_id


@FEEDS
def test_a_stream_sends_only_what_was_granted(feed: Feed) -> None:
    renderer, main, rid = open_stream(credit=2)
    assert main.stream_credit(rid) == 2
    assert main.send_stream_item(rid, "a") and main.send_stream_item(rid, "b")
    assert main.stream_credit(rid) == 0
    with pytest.raises(LocalProtocolError, match="no credit"):
        main.send_stream_item(rid, "c")
    assert deliver(renderer, main.data_to_send(), feed) == [
        StreamItemReceived(rid, raw("a")),
        StreamItemReceived(rid, raw("b")),
    ]
    renderer.grant_credit(rid, 1)
    assert deliver(main, renderer.data_to_send(), feed) == [StreamCreditReceived(rid, 1)]
    assert main.send_stream_item(rid, "c")
    assert main.send_reply(rid, True, None)
    assert main.stream_credit(rid) == 0
    assert deliver(renderer, main.data_to_send(), feed) == [
        StreamItemReceived(rid, raw("c")),
        ReplyReceived(rid, True, raw(None)),
    ]
    assert renderer.awaiting == 0 and main.serving == 0


def test_an_item_beyond_the_credit_ends_the_connection() -> None:
    renderer, _main, rid = open_stream(credit=1)
    data = frame(StreamItem(rid, raw(1))) + frame(StreamItem(rid, raw(2)))
    assert "beyond the granted credit" in terminated_by(renderer, data).reason


def test_an_item_for_an_invoke_ends_the_connection() -> None:
    renderer, _main = open_pair()
    rid = renderer.start_request(RequestKind.INVOKE, "ch", [])
    assert "not a stream" in terminated_by(renderer, frame(StreamItem(rid, raw(1)))).reason


def test_credit_for_an_invoke_ends_the_connection() -> None:
    renderer, main = open_pair()
    rid = renderer.start_request(RequestKind.INVOKE, "ch", [])
    deliver(main, renderer.data_to_send())
    assert "not a stream" in terminated_by(main, frame(StreamCredit(rid, 1))).reason


@pytest.mark.parametrize("n", [0, -1])
def test_credit_must_be_positive(n: int) -> None:
    renderer, main, rid = open_stream()
    assert "StreamCredit of" in terminated_by(main, frame(StreamCredit(rid, n))).reason
    with pytest.raises(LocalProtocolError):
        renderer.grant_credit(rid, n)
    with pytest.raises(LocalProtocolError):
        renderer.start_stream("count", [], n)


def test_items_and_reply_crossing_a_cancel_are_dropped_quietly() -> None:
    renderer, main, rid = open_stream(credit=2)
    renderer.cancel_request(rid)
    main.send_stream_item(rid, "late")
    main.send_reply(rid, True, None)
    assert deliver(renderer, main.data_to_send()) == []
    assert renderer.state is State.OPEN
    assert deliver(main, renderer.data_to_send()) == []  # our Reply crossed the Cancel


def test_cancel_stops_a_served_stream() -> None:
    renderer, main, rid = open_stream()
    renderer.cancel_request(rid)
    assert deliver(main, renderer.data_to_send()) == [RequestCancelled(rid)]
    assert main.stream_credit(rid) == 0
    acknowledgement = main.data_to_send()  # the core answers a Cancel with CANCELLED
    assert not main.send_stream_item(rid, "x")  # no longer wanted; nothing queued
    assert main.data_to_send() == b""
    assert deliver(renderer, acknowledgement) == []  # the stream was forgotten: quietly
    assert renderer.awaiting == 0 and renderer.state is State.OPEN


def test_credit_crossing_our_reply_is_dropped_quietly() -> None:
    renderer, main, rid = open_stream()
    main.send_reply(rid, True, None)
    renderer.grant_credit(rid, 5)
    deliver(main, renderer.data_to_send())
    assert main.state is State.OPEN
    deliver(renderer, main.data_to_send())
    renderer.grant_credit(rid, 5)  # after the Reply: nothing to grant
    assert renderer.data_to_send() == b""


def test_closing_forgets_streams() -> None:
    _renderer, main, rid = open_stream()
    main.close()
    assert main.stream_credit(rid) == 0
    assert not main.send_stream_item(rid, 1)


# ---- properties -------------------------------------------------------------

ids = st.integers(min_value=1, max_value=2**31)
values = (
    st.none() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20) | st.binary(max_size=20)
)


nonzero = st.integers(-(2**31), 2**31).filter(bool)


def _renderer_commands() -> st.SearchStrategy[Callable[[Connection], None]]:
    # Everything a renderer may send about ports, as commands on its Connection.
    ref = st.builds(PortRef, nonzero, st.integers(-(2**31), 0), ids, ids)
    message = st.builds(
        lambda port_id, data, ports, returned: (
            lambda c: c.send_port_message(port_id, data, ports, returned)
        ),
        nonzero,
        values,
        st.lists(ref, max_size=3),
        st.booleans(),
    )
    close = st.builds(
        lambda port_id, returned: lambda c: c.send_port_close(port_id, returned),
        nonzero,
        st.booleans(),
    )
    post = st.builds(
        lambda data, ports: lambda c: c.send_message("ch", [data], ports),
        values,
        st.lists(ref, max_size=3),
    )
    return message | close | post


@given(commands=st.lists(_renderer_commands(), max_size=8), cuts=st.lists(st.integers(0, 400)))
def test_port_frames_arrive_whole_however_the_bytes_are_split(
    commands: list[Callable[[Connection], None]], cuts: list[int]
) -> None:
    renderer, main = open_pair()
    for command in commands:
        command(renderer)
    data = bytes(renderer.data_to_send())
    _, reference = open_pair()
    reference.receive_data(data)  # everything at once
    expected = reference.events_received()
    offsets = sorted({min(cut, len(data)) for cut in cuts} | {0, len(data)})
    for start, end in itertools.pairwise(offsets):
        main.receive_data(data[start:end])
    assert main.events_received() == expected
    assert main.state is State.OPEN
    assert len(expected) == len(commands)


@given(
    rid=ids,
    credit=st.integers(1, 5),
    items=st.lists(values, max_size=8),
    garbage=st.binary(max_size=30),
)
def test_garbage_after_stream_frames_only_ends_the_connection(
    rid: int, credit: int, items: list[Any], garbage: bytes
) -> None:
    renderer, main = open_pair()
    request_id = renderer.start_stream("s", [], credit)
    deliver(main, renderer.data_to_send())
    for item in items[:credit]:
        main.send_stream_item(request_id, item)
    data = bytes(main.data_to_send()) + len(garbage).to_bytes(4, "big") + garbage
    renderer.receive_data(data)  # never raises
    events = renderer.events_received()
    assert [e for e in events if isinstance(e, StreamItemReceived)] == [
        StreamItemReceived(request_id, raw(item)) for item in items[:credit]
    ]
    assert renderer.state in (State.OPEN, State.CLOSED)
    if renderer.state is State.CLOSED:
        assert isinstance(events[-1], ConnectionTerminated)


def test_request_kind_stream_is_on_the_wire_as_3() -> None:
    assert ENC.encode(Request(1, RequestKind.STREAM, "c", raw([]))) == ENC.encode(
        [4, 1, 3, "c", []]
    )
