"""A peer that breaks the protocol ends the connection cleanly (rule 3 in _protocol).

Every case checks the same outcome: nothing raises out of ``receive_data``, a
Goodbye with the right ``CloseCode`` is queued and is the last frame, the state
is CLOSED, and exactly one ``ConnectionTerminated(remote=False)`` is the last
event. Each runs in every ``Feed`` mode; in ``GLUED`` mode a valid frame follows
the violation in the same chunk and must be ignored.
"""

from __future__ import annotations

from typing import Any

import pytest

from ipcbus._events import ConnectionTerminated, HandshakeCompleted, RequestReceived
from ipcbus._protocol import Connection, Role, State
from ipcbus._wire import (
    DEFAULT_MAX_FRAME_SIZE,
    MIN_MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    Body,
    Cancel,
    CloseCode,
    Goodbye,
    Hello,
    Message,
    Ping,
    Pong,
    Reply,
    Request,
    RequestKind,
    Welcome,
    raw_args,
)

from .helpers import (
    BYTE_FEEDS,
    ENC,
    PROCESS_ID,
    RENDERER_ID,
    TOKEN,
    ConnectionPair,
    Feed,
    assert_terminated_by_us,
    decode_frames,
    feed,
    frame,
    handshake,
    raw,
    raw_frame,
)

NONE = raw_args(None)
EMPTY = raw_args([])


def _open_end(renderer_receives: bool, mode: Feed = Feed.WHOLE) -> Connection:
    pair = handshake(mode)
    return pair.renderer if renderer_receives else pair.main


@pytest.fixture(params=[False, True], ids=["main-receives", "renderer-receives"])
def renderer_receives(request: pytest.FixtureRequest) -> bool:
    return request.param  # type: ignore[no-any-return]


# ---- bytes that are not a valid frame ------------------------------------------

MALFORMED = {
    "garbage-body": raw_frame(b"\xc1\xc1\xc1"),  # 0xc1 is never valid msgpack
    "empty-body": raw_frame(b""),
    "truncated-body": raw_frame(ENC.encode([3, "channel", [1, 2]])[:-1]),
    "trailing-bytes-in-body": raw_frame(ENC.encode([8, 1]) + b"\xc0"),
    "not-utf8": raw_frame(b"\x93\x03\xa2\xff\xfe\x90"),
    "map-not-array": raw_frame(ENC.encode({"tag": 3, "channel": "x"})),
    "empty-array": raw_frame(ENC.encode([])),
    "bare-int": raw_frame(ENC.encode(5)),
    "bare-str": raw_frame(ENC.encode("hello")),
    "channel-not-str": raw_frame(ENC.encode([3, 1, []])),
    "field-missing": raw_frame(ENC.encode([3, "ch"])),
    "request-id-not-int": raw_frame(ENC.encode([4, "1", 1, "ch", []])),
    "unknown-request-kind": raw_frame(ENC.encode([4, 1, 9, "ch", []])),
    "unknown-close-code": raw_frame(ENC.encode([7, 99, "bye"])),
    "ok-not-bool": raw_frame(ENC.encode([5, 1, 1, None])),
    "unknown-tag-99": raw_frame(ENC.encode([99, 1])),
    "unknown-tag-0": raw_frame(ENC.encode([0])),
    "negative-tag": raw_frame(ENC.encode([-1, 1])),
    "string-tag": raw_frame(ENC.encode(["Message", "ch", []])),
    "deeply-nested-args": raw_frame(b"\x93\x03\xa2ch" + b"\x91" * 50_000 + b"\xc0"),
    "ascii-garbage": b"\x00\x00\x00\x0bhello world",
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_frame_when_open(mode: Feed, renderer_receives: bool, data: bytes) -> None:
    conn = _open_end(renderer_receives)
    events = feed(conn, data, mode)
    event = assert_terminated_by_us(conn, events, CloseCode.PROTOCOL_ERROR)
    assert events == [event]
    assert event.reason.startswith("protocol error")


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_frame_before_hello(mode: Feed, data: bytes) -> None:
    main = Connection(Role.MAIN, token=TOKEN)
    events = feed(main, data, mode)
    assert events == [assert_terminated_by_us(main, events, CloseCode.PROTOCOL_ERROR)]


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_frame_before_welcome(mode: Feed, data: bytes) -> None:
    renderer = Connection(Role.RENDERER, token=TOKEN)
    renderer.data_to_send()  # the Hello
    events = feed(renderer, data, mode)
    assert events == [assert_terminated_by_us(renderer, events, CloseCode.PROTOCOL_ERROR)]


def test_violation_after_valid_frames_keeps_their_events(mode: Feed) -> None:
    main = _open_end(False)
    data = frame(Request(1, RequestKind.INVOKE, "ch", EMPTY)) + MALFORMED["garbage-body"]
    events = feed(main, data, mode)
    assert_terminated_by_us(main, events, CloseCode.PROTOCOL_ERROR)
    assert events[0] == RequestReceived(1, RequestKind.INVOKE, "ch", raw([]))
    assert len(events) == 2


# ---- frame size ----------------------------------------------------------------


@pytest.mark.parametrize("renderer_side", [False, True], ids=["main", "renderer"])
@pytest.mark.parametrize("cuts", [[], [1, 2, 3]], ids=["header-whole", "header-bytewise"])
@pytest.mark.parametrize("open_first", [False, True], ids=["handshake", "open"])
def test_oversized_frame_is_refused_from_its_header_alone(
    renderer_side: bool, cuts: list[int], open_first: bool
) -> None:
    pair = ConnectionPair(max_frame_size=MIN_MAX_FRAME_SIZE)
    if open_first:
        pair.handshake()
    conn = pair.renderer if renderer_side else pair.main
    conn.data_to_send()
    over = MIN_MAX_FRAME_SIZE + 1
    header = over.to_bytes(4, "big")  # no body byte follows: the header is enough
    start = 0
    for cut in [*cuts, 4]:
        conn.receive_data(header[start:cut])
        start = cut
    event = assert_terminated_by_us(conn, conn.events_received(), CloseCode.FRAME_TOO_LARGE)
    assert str(over) in event.reason and str(MIN_MAX_FRAME_SIZE) in event.reason


@pytest.mark.parametrize("mode", BYTE_FEEDS, ids=[m.value for m in BYTE_FEEDS])
def test_oversized_frame_by_default_limit(mode: Feed, renderer_receives: bool) -> None:
    conn = _open_end(renderer_receives)
    data = (DEFAULT_MAX_FRAME_SIZE + 1).to_bytes(4, "big") + b"\x00" * 16
    events = feed(conn, data, mode)
    assert events == [assert_terminated_by_us(conn, events, CloseCode.FRAME_TOO_LARGE)]
    conn = _open_end(renderer_receives)
    events = feed(conn, b"\xff\xff\xff\xff", mode)
    assert_terminated_by_us(conn, events, CloseCode.FRAME_TOO_LARGE)


def test_frame_exactly_at_the_limit_is_accepted(mode: Feed) -> None:
    data = frame(Message("x" * 2000, EMPTY))
    size = len(data) - 4
    pair = ConnectionPair(mode, max_frame_size=size)
    pair.handshake()
    assert len(feed(pair.main, data, mode)) == 1
    assert pair.main.state is State.OPEN

    pair = ConnectionPair(mode, max_frame_size=size - 1)
    pair.handshake()
    events = feed(pair.main, data, mode)
    assert_terminated_by_us(pair.main, events, CloseCode.FRAME_TOO_LARGE)


# ---- well-formed frames at the wrong time ------------------------------------


@pytest.mark.parametrize("request_id", [1, 2, 2**64 - 1])
def test_reply_to_an_id_never_sent(mode: Feed, renderer_receives: bool, request_id: int) -> None:
    conn = _open_end(renderer_receives)
    events = feed(conn, frame(Reply(request_id, True, NONE)), mode)
    event = assert_terminated_by_us(conn, events, CloseCode.PROTOCOL_ERROR)
    assert f"request id {request_id}" in event.reason


def test_reply_to_an_id_already_answered(mode: Feed, renderer_sends: bool) -> None:
    pair = handshake(mode)
    sender, receiver = pair.ends(renderer_sends)
    request_id = sender.start_request(RequestKind.INVOKE, "ch", [])
    pair.send(sender)
    receiver.send_reply(request_id, True, 1)
    pair.send(receiver)
    events = feed(sender, frame(Reply(request_id, True, NONE)), mode)
    assert_terminated_by_us(sender, events, CloseCode.PROTOCOL_ERROR)


def test_second_reply_after_the_cancel_race_is_a_violation(mode: Feed) -> None:
    pair = handshake(mode)
    request_id = pair.renderer.start_request(RequestKind.INVOKE, "ch", [])
    pair.send(pair.renderer)
    pair.main.send_reply(request_id, True, 1)
    pair.renderer.cancel_request(request_id)
    pair.send(pair.renderer)
    assert pair.send(pair.main) == []  # the crossing reply is dropped quietly, once
    events = feed(pair.renderer, frame(Reply(request_id, True, NONE)), mode)
    assert_terminated_by_us(pair.renderer, events, CloseCode.PROTOCOL_ERROR)


@pytest.mark.parametrize("peer_requests", [0, 1, 3])
def test_cancel_for_an_id_never_sent(
    mode: Feed, renderer_receives: bool, peer_requests: int
) -> None:
    conn = _open_end(renderer_receives)
    setup = b"".join(
        frame(Request(i, RequestKind.INVOKE, "ch", EMPTY)) for i in range(1, peer_requests + 1)
    )
    conn.receive_data(setup)
    conn.events_received()
    events = feed(conn, frame(Cancel(peer_requests + 1)), mode)
    event = assert_terminated_by_us(conn, events, CloseCode.PROTOCOL_ERROR)
    assert f"Cancel for request id {peer_requests + 1}" in event.reason


@pytest.mark.parametrize(
    "ids",
    [[1, 1], [2, 1], [1, 2, 3, 2], [0], [-1], [5, 5]],
    ids=["duplicate", "backwards", "reused-later", "zero", "negative", "duplicate-after-gap"],
)
def test_request_ids_must_strictly_increase(
    mode: Feed, renderer_receives: bool, ids: list[int]
) -> None:
    conn = _open_end(renderer_receives)
    data = b"".join(frame(Request(i, RequestKind.INVOKE, "ch", EMPTY)) for i in ids)
    events = feed(conn, data, mode)
    event = assert_terminated_by_us(conn, events, CloseCode.PROTOCOL_ERROR)
    assert "reused or out of order" in event.reason
    assert all(isinstance(e, RequestReceived) for e in events[:-1])
    assert len(events) == len(ids)  # every request before the bad one got through


@pytest.mark.parametrize(
    "body",
    [Hello(PROTOCOL_VERSION, TOKEN, 1), Welcome(PROTOCOL_VERSION, 1)],
    ids=["Hello", "Welcome"],
)
def test_handshake_frame_once_open(mode: Feed, renderer_receives: bool, body: Body) -> None:
    conn = _open_end(renderer_receives)
    events = feed(conn, frame(body), mode)
    assert events == [assert_terminated_by_us(conn, events, CloseCode.PROTOCOL_ERROR)]


BODIES: dict[str, Body] = {
    "Hello": Hello(PROTOCOL_VERSION, TOKEN, 1),
    "Welcome": Welcome(PROTOCOL_VERSION, 1),
    "Message": Message("ch", EMPTY),
    "Request": Request(1, RequestKind.INVOKE, "ch", EMPTY),
    "Reply": Reply(1, True, NONE),
    "Cancel": Cancel(1),
    "Goodbye": Goodbye(CloseCode.NORMAL, "bye"),
    "Ping": Ping(1),
    "Pong": Pong(1),
}


@pytest.mark.parametrize("name", [n for n in BODIES if n != "Hello"])
def test_main_accepts_nothing_before_hello(mode: Feed, name: str) -> None:
    main = Connection(Role.MAIN, token=TOKEN)
    hello = frame(Hello(PROTOCOL_VERSION, TOKEN, 1))
    events = feed(main, frame(BODIES[name]) + hello, mode)
    event = assert_terminated_by_us(main, events, CloseCode.PROTOCOL_ERROR)
    assert events == [event]  # the Hello after it is never read
    assert f"expected Hello as the first frame, got {name}" in event.reason
    assert decode_frames(bytes(main.data_to_send())) == []  # no Welcome went out


def test_a_goodbye_before_hello_says_why_in_mains_reason(mode: Feed) -> None:
    """A page whose WebSocket framing breaks before its Hello is heard as a
    Goodbye with the reason: main's own reason keeps it."""
    main = Connection(Role.MAIN, token=TOKEN)
    events = feed(main, frame(Goodbye(CloseCode.PROTOCOL_ERROR, "a text message")), mode)
    event = assert_terminated_by_us(main, events, CloseCode.PROTOCOL_ERROR)
    assert event.reason.endswith("expected Hello as the first frame, got Goodbye: a text message")


@pytest.mark.parametrize("name", [n for n in BODIES if n not in ("Welcome", "Goodbye")])
def test_renderer_accepts_nothing_before_welcome(mode: Feed, name: str) -> None:
    renderer = Connection(Role.RENDERER, token=TOKEN)
    renderer.data_to_send()
    events = feed(renderer, frame(BODIES[name]) + frame(Welcome(PROTOCOL_VERSION, 1)), mode)
    event = assert_terminated_by_us(renderer, events, CloseCode.PROTOCOL_ERROR)
    assert events == [event]
    assert f"expected Welcome as the first frame, got {name}" in event.reason


# ---- authentication and versions ----------------------------------------------


@pytest.mark.parametrize(
    "token",
    ["", "wrong", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "é" * len(TOKEN)],
    ids=["empty", "wrong", "prefix", "longer", "case", "non-ascii"],
)
def test_wrong_token(mode: Feed, token: str) -> None:
    pair = ConnectionPair(mode, renderer_token=token)
    events = pair.send(pair.renderer)
    event = assert_terminated_by_us(pair.main, events, CloseCode.AUTHENTICATION_FAILED)
    assert events == [event]  # no HandshakeCompleted, nothing else
    assert "authentication failed" in event.reason
    assert TOKEN not in event.reason  # the secret is never echoed
    # The renderer learns why.
    pair.main.close()  # no-op: already closed
    refused = frame(Goodbye(CloseCode.AUTHENTICATION_FAILED, event.reason))
    assert feed(pair.renderer, refused, mode) == [
        ConnectionTerminated(CloseCode.AUTHENTICATION_FAILED, event.reason, remote=True)
    ]


def test_wrong_token_end_to_end(mode: Feed) -> None:
    pair = ConnectionPair(mode, renderer_token="nope")
    [refused] = pair.send(pair.renderer)
    assert isinstance(refused, ConnectionTerminated)
    assert pair.send(pair.main) == [
        ConnectionTerminated(CloseCode.AUTHENTICATION_FAILED, refused.reason, remote=True)
    ]
    assert pair.renderer.state is State.CLOSED


@pytest.mark.parametrize("version", [0, PROTOCOL_VERSION + 1, 2**32])
def test_wrong_version_in_hello(mode: Feed, version: int) -> None:
    main = Connection(Role.MAIN, token=TOKEN)
    events = feed(main, frame(Hello(version, TOKEN, PROCESS_ID)), mode)
    event = assert_terminated_by_us(main, events, CloseCode.VERSION_MISMATCH)
    assert events == [event]
    assert f"version {version}" in event.reason
    assert f"version {PROTOCOL_VERSION}" in event.reason


@pytest.mark.parametrize("version", [0, PROTOCOL_VERSION + 1])
def test_wrong_version_in_welcome(mode: Feed, version: int) -> None:
    renderer = Connection(Role.RENDERER, token=TOKEN)
    renderer.data_to_send()
    events = feed(renderer, frame(Welcome(version, RENDERER_ID)), mode)
    event = assert_terminated_by_us(renderer, events, CloseCode.VERSION_MISMATCH)
    assert events == [event]
    assert f"version {version}" in event.reason
    assert f"version {PROTOCOL_VERSION}" in event.reason
    assert renderer.renderer_id == 0


def test_hello_fields_of_the_wrong_type_fail_before_the_token_is_read(mode: Feed) -> None:
    main = Connection(Role.MAIN, token=TOKEN)
    events = feed(main, raw_frame(ENC.encode([1, PROTOCOL_VERSION, 12345, 1])), mode)
    assert events == [assert_terminated_by_us(main, events, CloseCode.PROTOCOL_ERROR)]


# ---- after the end -------------------------------------------------------------

VALID_AFTERWARDS: list[Any] = [
    frame(Message("ch", EMPTY)),
    frame(Ping(1)),
    frame(Request(1, RequestKind.INVOKE, "ch", EMPTY)),
    MALFORMED["garbage-body"],
    b"\xff\xff\xff\xff",
]


def _closed_by(how: str, renderer_side: bool) -> Connection:
    pair = handshake()
    conn = pair.renderer if renderer_side else pair.main
    if how == "violation":
        conn.receive_data(MALFORMED["garbage-body"])
    elif how == "close":
        conn.close()
    elif how == "eof":
        conn.receive_eof()
    elif how == "goodbye":
        conn.receive_data(frame(Goodbye(CloseCode.NORMAL, "bye")))
    assert conn.state is State.CLOSED
    conn.events_received()
    conn.data_to_send()
    return conn


@pytest.mark.parametrize("how", ["violation", "close", "eof", "goodbye"])
@pytest.mark.parametrize("renderer_side", [False, True], ids=["main", "renderer"])
def test_data_after_closed_is_ignored(mode: Feed, how: str, renderer_side: bool) -> None:
    conn = _closed_by(how, renderer_side)
    for data in VALID_AFTERWARDS:
        assert feed(conn, data, mode) == []
    conn.receive_eof()
    assert conn.events_received() == []
    assert conn.data_to_send() == b""
    assert conn.state is State.CLOSED


def test_frames_after_goodbye_in_the_same_chunk_are_ignored(mode: Feed) -> None:
    main = _open_end(False)
    data = frame(Goodbye(CloseCode.NORMAL, "bye")) + frame(Ping(1)) + MALFORMED["garbage-body"]
    assert feed(main, data, mode) == [ConnectionTerminated(CloseCode.NORMAL, "bye", remote=True)]
    assert main.data_to_send() == b""  # no Pong, no second Goodbye


def test_handshake_completed_is_not_emitted_for_a_refused_renderer(mode: Feed) -> None:
    pair = ConnectionPair(mode, renderer_token="bad")
    events = pair.send(pair.renderer)
    assert not any(isinstance(e, HandshakeCompleted) for e in events)
