"""The protocol core between two well-behaved peers, without sockets.

Every exchange runs once per ``Feed`` mode (whole, byte by byte, glued to the
next frame) and, where both sides may start it, in both directions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from ipcbus._events import (
    ConnectionTerminated,
    HandshakeCompleted,
    MessageReceived,
    ReplyReceived,
    RequestCancelled,
    RequestReceived,
)
from ipcbus._protocol import Connection, LocalProtocolError, Role, State, prepare_message
from ipcbus._sending import MAX_CANCELLED
from ipcbus._wire import (
    DEFAULT_MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    CloseCode,
    ErrorInfo,
    ErrorKind,
    Goodbye,
    Hello,
    Ping,
    Pong,
    Reply,
    RequestKind,
    Welcome,
)

from .helpers import (
    PROCESS_ID,
    RENDERER_ID,
    TOKEN,
    ConnectionPair,
    Feed,
    decode_frames,
    feed,
    feed_in_pieces,
    frame,
    handshake,
    raw,
)

ARGS = [1, -(2**63), 2**64 - 1, "two", b"\x00three", [4, [5.5, None, True]], {"k": "v"}]

# ---- handshake -------------------------------------------------------------


def test_handshake(mode: Feed) -> None:
    pair = ConnectionPair(mode)
    assert {pair.renderer.state, pair.main.state} == {State.HANDSHAKE}
    assert pair.main.data_to_send() == b""  # main waits for the renderer to speak

    hello = bytes(pair.renderer.data_to_send())
    assert decode_frames(hello) == [
        Hello(PROTOCOL_VERSION, TOKEN, PROCESS_ID, DEFAULT_MAX_FRAME_SIZE)
    ]
    pair.renderer.receive_data(b"")  # nothing happens on empty input
    assert pair.renderer.events_received() == []

    assert feed(pair.main, hello, mode) == [HandshakeCompleted(RENDERER_ID, PROCESS_ID)]
    assert pair.main.state is State.OPEN
    welcome = bytes(pair.main.data_to_send())
    assert decode_frames(welcome) == [
        Welcome(PROTOCOL_VERSION, RENDERER_ID, DEFAULT_MAX_FRAME_SIZE)
    ]

    assert pair.renderer.renderer_id == 0
    assert feed(pair.renderer, welcome, mode) == [HandshakeCompleted(RENDERER_ID, 0)]
    assert pair.renderer.state is State.OPEN
    assert pair.renderer.renderer_id == RENDERER_ID
    assert pair.renderer.events_received() == []
    assert pair.main.events_received() == []


def test_handshake_helper(mode: Feed) -> None:
    pair = handshake(mode)
    assert pair.renderer.state is State.OPEN
    assert pair.main.state is State.OPEN


def test_renderer_process_id_defaults_to_zero() -> None:
    renderer = Connection(Role.RENDERER, token=TOKEN)
    main = Connection(Role.MAIN, token=TOKEN, renderer_id=3)
    main.receive_data(renderer.data_to_send())
    assert main.events_received() == [HandshakeCompleted(3, 0)]


def test_main_may_send_before_the_renderer_has_its_welcome(mode: Feed) -> None:
    pair = ConnectionPair(mode)
    pair.send(pair.renderer)
    pair.main.send_message("early", ["hi"])  # queued right behind the Welcome
    assert pair.send(pair.main) == [
        HandshakeCompleted(RENDERER_ID, 0),
        MessageReceived("early", raw(["hi"])),
    ]


# ---- messages ----------------------------------------------------------------


def test_message(mode: Feed, renderer_sends: bool) -> None:
    pair = handshake(mode)
    sender, receiver = pair.ends(renderer_sends)
    sender.send_message("ch", ARGS)
    assert sender.events_received() == []
    [event] = pair.send(sender)
    assert event == MessageReceived("ch", raw(ARGS))
    assert msgspec.msgpack.decode(event.args) == ARGS
    assert receiver.data_to_send() == b""


def test_a_prepared_frame_is_queued_as_it_is_in_order(mode: Feed) -> None:
    """``send_prepared``: a broadcast's frame, made once, is queued byte for byte,
    behind what was queued before it. While nothing is (``pending_output`` 0) a
    driver may write it itself instead: the peer reads it the same."""
    pair = handshake(mode)
    frame_ = prepare_message("tick", [1])
    assert pair.main.pending_output == 0
    assert feed(pair.renderer, frame_, mode) == [MessageReceived("tick", raw([1]))]
    pair.main.send_message("first", [])
    queued = pair.main.pending_output
    pair.main.send_prepared(frame_)
    assert pair.main.pending_output == queued + len(frame_)
    assert feed(pair.renderer, pair.main.data_to_send(), mode) == [
        MessageReceived("first", raw([])),
        MessageReceived("tick", raw([1])),
    ]


def test_bytes_given_back_go_first(mode: Feed) -> None:
    """``unsend``: what the driver took and could not send is taken again before
    anything queued since, and counts in ``pending_output``."""
    pair = handshake(mode)
    pair.main.send_message("first", [])
    taken = pair.main.data_to_send()
    pair.main.send_message("second", [])
    pair.main.unsend(taken)
    assert pair.main.pending_output == len(taken) + len(prepare_message("second", []))
    assert pair.send(pair.main) == [
        MessageReceived("first", raw([])),
        MessageReceived("second", raw([])),
    ]
    pair.main.unsend(bytearray())  # nothing to give back: nothing changes
    assert pair.main.pending_output == 0


def test_messages_arrive_in_order(mode: Feed, renderer_sends: bool) -> None:
    pair = handshake(mode)
    sender, _ = pair.ends(renderer_sends)
    for i in range(5):
        sender.send_message(f"ch{i}", [i])
    assert pair.send(sender) == [MessageReceived(f"ch{i}", raw([i])) for i in range(5)]


def test_message_with_raw_args_passes_through(mode: Feed, renderer_sends: bool) -> None:
    pair = handshake(mode)
    sender, _ = pair.ends(renderer_sends)
    sender.send_message("ch", msgspec.Raw(msgspec.msgpack.encode(["pre", "encoded"])))
    assert pair.send(sender) == [MessageReceived("ch", raw(["pre", "encoded"]))]


def test_outputs_are_drained_once(renderer_sends: bool) -> None:
    pair = handshake()
    sender, receiver = pair.ends(renderer_sends)
    sender.send_message("ch", [])
    data = sender.data_to_send()
    assert data and sender.data_to_send() == b""
    receiver.receive_data(data)
    assert len(receiver.events_received()) == 1
    assert receiver.events_received() == []


def test_outputs_are_never_the_live_buffers() -> None:
    # An empty result must not be the core's own list/buffer: frames and events
    # queued later would appear in the caller's hands and be taken twice.
    conn = Connection(Role.MAIN, token=TOKEN)
    events, data = conn.events_received(), conn.data_to_send()
    conn.receive_data(frame(Ping(1)))  # a violation: queues a Goodbye, emits an event
    assert events == [] and data == b""
    assert len(conn.events_received()) == 1
    assert len(decode_frames(conn.data_to_send())) == 1


# ---- requests and replies ----------------------------------------------------


@pytest.mark.parametrize("kind", list(RequestKind), ids=[k.name for k in RequestKind])
def test_request(mode: Feed, renderer_sends: bool, kind: RequestKind) -> None:
    pair = handshake(mode)
    sender, receiver = pair.ends(renderer_sends)
    assert sender.start_request(kind, "ch", ARGS) == 1
    assert sender.awaiting == 1
    assert pair.send(sender) == [RequestReceived(1, kind, "ch", raw(ARGS))]
    assert receiver.serving == 1
    assert receiver.is_serving(1)
    assert not receiver.is_serving(2)
    assert sender.start_request(kind, "ch", []) == 2
    assert pair.send(sender) == [RequestReceived(2, kind, "ch", raw([]))]


def test_each_direction_numbers_its_own_requests_from_1(mode: Feed) -> None:
    pair = handshake(mode)
    assert pair.renderer.start_request(RequestKind.INVOKE, "a", []) == 1
    assert pair.main.start_request(RequestKind.INVOKE, "b", []) == 1
    assert pair.send(pair.renderer) == [RequestReceived(1, RequestKind.INVOKE, "a", raw([]))]
    assert pair.send(pair.main) == [RequestReceived(1, RequestKind.INVOKE, "b", raw([]))]
    assert pair.main.send_reply(1, True, "to a")
    assert pair.renderer.send_reply(1, True, "to b")
    assert pair.send(pair.main) == [ReplyReceived(1, True, raw("to a"))]
    assert pair.send(pair.renderer) == [ReplyReceived(1, True, raw("to b"))]


def test_reply_ok(mode: Feed, renderer_sends: bool) -> None:
    pair = handshake(mode)
    sender, receiver = pair.ends(renderer_sends)
    request_id = sender.start_request(RequestKind.INVOKE, "add", [1, 2])
    pair.send(sender)
    assert receiver.send_reply(request_id, True, 3) is True
    assert receiver.serving == 0
    assert not receiver.is_serving(request_id)
    assert pair.send(receiver) == [ReplyReceived(request_id, True, raw(3))]
    assert sender.awaiting == 0
    # A request is answered once: a second reply is refused and queues nothing.
    assert receiver.send_reply(request_id, True, 4) is False
    assert receiver.data_to_send() == b""


@pytest.mark.parametrize("traceback", [None, "Traceback (most recent call last):\n  ..."])
def test_reply_error(mode: Feed, renderer_sends: bool, traceback: str | None) -> None:
    pair = handshake(mode)
    sender, receiver = pair.ends(renderer_sends)
    request_id = sender.start_request(RequestKind.INVOKE, "boom", [])
    pair.send(sender)
    info = ErrorInfo(ErrorKind.REMOTE, "ValueError", "boom", traceback)
    assert receiver.send_reply(request_id, False, info) is True
    [event] = pair.send(receiver)
    assert event == ReplyReceived(request_id, False, raw(info))
    assert msgspec.msgpack.decode(event.value, type=ErrorInfo) == info


def test_replies_may_come_in_any_order(mode: Feed, renderer_sends: bool) -> None:
    pair = handshake(mode)
    sender, receiver = pair.ends(renderer_sends)
    first = sender.start_request(RequestKind.INVOKE, "slow", [])
    second = sender.start_request(RequestKind.SYNC, "fast", [])
    assert len(pair.send(sender)) == 2
    assert receiver.send_reply(second, True, "fast")
    assert receiver.send_reply(first, True, "slow")
    assert pair.send(receiver) == [
        ReplyReceived(second, True, raw("fast")),
        ReplyReceived(first, True, raw("slow")),
    ]


def test_send_reply_to_unknown_request_returns_false(renderer_sends: bool) -> None:
    pair = handshake()
    _, receiver = pair.ends(renderer_sends)
    assert receiver.send_reply(1, True, None) is False
    assert receiver.data_to_send() == b""


# ---- cancellation ------------------------------------------------------------


def test_cancel_before_reply(mode: Feed, renderer_sends: bool) -> None:
    pair = handshake(mode)
    sender, receiver = pair.ends(renderer_sends)
    request_id = sender.start_request(RequestKind.INVOKE, "slow", [])
    pair.send(sender)
    sender.cancel_request(request_id)
    assert sender.awaiting == 0
    assert pair.send(sender) == [RequestCancelled(request_id)]
    assert receiver.serving == 0
    assert not receiver.is_serving(request_id)
    # The handler finishing late is harmless: it adds nothing to the outbox.
    assert receiver.send_reply(request_id, True, "late") is False
    # The core acknowledged the Cancel with the request's one Reply...
    (ack,) = decode_frames(receiver.data_to_send())
    assert isinstance(ack, Reply) and ack.request_id == request_id and not ack.ok
    info = msgspec.msgpack.decode(ack.value, type=ErrorInfo)
    assert info.kind is ErrorKind.CANCELLED
    # ...which the caller drops quietly, forgetting the id.
    feed(sender, frame(ack), mode)
    assert sender.events_received() == []
    assert not sender._cancelled
    assert receiver.state is State.OPEN
    assert sender.state is State.OPEN


def test_cancel_before_the_request_is_delivered(mode: Feed, renderer_sends: bool) -> None:
    pair = handshake(mode)
    sender, receiver = pair.ends(renderer_sends)
    request_id = sender.start_request(RequestKind.INVOKE, "slow", [])
    sender.cancel_request(request_id)
    assert pair.send(sender) == [
        RequestReceived(request_id, RequestKind.INVOKE, "slow", raw([])),
        RequestCancelled(request_id),
    ]
    assert receiver.send_reply(request_id, True, None) is False


def test_cancel_crossing_the_reply_is_dropped_quietly(mode: Feed, renderer_sends: bool) -> None:
    pair = handshake(mode)
    sender, receiver = pair.ends(renderer_sends)
    request_id = sender.start_request(RequestKind.INVOKE, "ch", [])
    pair.send(sender)
    # Both act before seeing the other's frame: the Reply and the Cancel cross.
    assert receiver.send_reply(request_id, True, "done")
    sender.cancel_request(request_id)
    assert pair.send(sender) == []  # the Cancel meets a request already answered
    assert pair.send(receiver) == []  # the Reply meets a request already cancelled
    for conn in (sender, receiver):
        assert conn.state is State.OPEN
        assert conn.data_to_send() == b""
        assert conn.awaiting == conn.serving == 0
    # The connection carries on.
    next_id = sender.start_request(RequestKind.INVOKE, "ch", [])
    assert next_id == request_id + 1
    assert pair.send(sender) == [RequestReceived(next_id, RequestKind.INVOKE, "ch", raw([]))]


def test_cancel_after_the_reply_arrived_is_a_no_op(mode: Feed, renderer_sends: bool) -> None:
    pair = handshake(mode)
    sender, receiver = pair.ends(renderer_sends)
    request_id = sender.start_request(RequestKind.INVOKE, "ch", [])
    pair.send(sender)
    receiver.send_reply(request_id, True, 1)
    pair.send(receiver)
    sender.cancel_request(request_id)
    sender.cancel_request(request_id)
    assert sender.data_to_send() == b""
    assert sender.events_received() == []


def test_cancel_of_an_unknown_id_is_a_no_op(renderer_sends: bool) -> None:
    pair = handshake()
    sender, _ = pair.ends(renderer_sends)
    sender.cancel_request(99)
    assert sender.data_to_send() == b""
    assert sender.state is State.OPEN


def test_cancelled_ids_are_forgotten_once_the_peer_has_dropped_them() -> None:
    pair = handshake()
    for _ in range(3):
        request_id = pair.renderer.start_request(RequestKind.INVOKE, "slow", [])
        pair.renderer.cancel_request(request_id)
        pair.send(pair.renderer)  # main drops the request, acknowledging the Cancel
    pair.send(pair.main)
    assert not pair.renderer._cancelled


def test_a_peer_that_never_acknowledges_cancels_costs_a_bounded_table(
    mode: Feed, renderer_sends: bool
) -> None:
    # A stuck or hostile peer never answers a Cancel: past MAX_CANCELLED the
    # oldest ids are forgotten, so the caller's table stops growing with every
    # call it gives up on, and the late acknowledgements are still dropped.
    pair = handshake(mode)
    sender, receiver = pair.ends(renderer_sends)
    ids = []
    for _ in range(MAX_CANCELLED + 100):
        ids.append(sender.start_request(RequestKind.INVOKE, "slow", []))
        sender.cancel_request(ids[-1])
    assert len(sender._cancelled) == MAX_CANCELLED
    assert sender.awaiting == 0
    awaited = sender.start_request(RequestKind.INVOKE, "ch", [])  # one still awaited
    pair.send(sender)
    acks = receiver.data_to_send()  # every Cancel acknowledged, late
    assert len(decode_frames(acks)) == len(ids)
    assert feed(sender, acks, mode) == []
    assert not sender._cancelled
    assert sender.state is State.OPEN
    # The connection carries on: the call still awaited gets its answer.
    assert receiver.send_reply(awaited, True, "done")
    assert pair.send(receiver) == [ReplyReceived(awaited, True, raw("done"))]


def test_a_reply_to_a_never_sent_id_is_still_refused_past_the_forgotten_cancels(
    mode: Feed,
) -> None:
    pair = handshake(mode)
    for _ in range(MAX_CANCELLED + 1):
        pair.renderer.cancel_request(pair.renderer.start_request(RequestKind.INVOKE, "s", []))
    (terminated,) = feed(pair.renderer, frame(Reply(MAX_CANCELLED + 50, True, raw(None))), mode)
    assert isinstance(terminated, ConnectionTerminated)
    assert "never sent" in terminated.reason


# ---- ping --------------------------------------------------------------------


def test_ping_is_answered_by_pong(mode: Feed, renderer_sends: bool) -> None:
    pair = handshake(mode)
    sender, receiver = pair.ends(renderer_sends)
    sender.send_ping(2**40)
    assert pair.send(sender) == []  # no event: the core answers by itself
    assert decode_frames(bytes(receiver.data_to_send())) == [Pong(2**40)]

    sender.send_ping(1)
    pair.send(sender)
    assert pair.send(receiver) == []  # a Pong is no event either
    assert sender.state is State.OPEN


def test_pong_is_queued_behind_frames_already_queued(mode: Feed, renderer_sends: bool) -> None:
    pair = handshake(mode)
    sender, receiver = pair.ends(renderer_sends)
    receiver.send_message("first", [])
    sender.send_ping(5)
    sender.send_ping(6)
    pair.send(sender)
    assert decode_frames(bytes(receiver.data_to_send()))[1:] == [Pong(5), Pong(6)]


# ---- closing -----------------------------------------------------------------


def test_goodbye_terminates_the_peer(mode: Feed, renderer_sends: bool) -> None:
    pair = handshake(mode)
    sender, receiver = pair.ends(renderer_sends)
    sender.close(CloseCode.SHUTDOWN, "bye now")
    assert sender.state is State.CLOSED
    assert sender.events_received() == [
        ConnectionTerminated(CloseCode.SHUTDOWN, "bye now", remote=False)
    ]
    assert pair.send(sender) == [ConnectionTerminated(CloseCode.SHUTDOWN, "bye now", remote=True)]
    assert receiver.state is State.CLOSED
    assert receiver.data_to_send() == b""  # a Goodbye is not answered
    receiver.close()  # closing after the peer's Goodbye says nothing more
    assert receiver.data_to_send() == b""
    assert receiver.events_received() == []


def test_close_defaults(renderer_sends: bool) -> None:
    pair = handshake()
    sender, _ = pair.ends(renderer_sends)
    sender.close()
    assert decode_frames(bytes(sender.data_to_send())) == [Goodbye(CloseCode.NORMAL, "closed")]
    assert sender.events_received() == [ConnectionTerminated(CloseCode.NORMAL, "closed", False)]


def test_close_is_idempotent(renderer_sends: bool) -> None:
    pair = handshake()
    sender, _ = pair.ends(renderer_sends)
    sender.close()
    assert len(sender.events_received()) == 1
    assert len(decode_frames(bytes(sender.data_to_send()))) == 1
    sender.close(CloseCode.PROTOCOL_ERROR, "again")
    sender.close()
    assert sender.events_received() == []
    assert sender.data_to_send() == b""


def test_close_during_handshake(mode: Feed) -> None:
    pair = ConnectionPair(mode)
    pair.renderer.close(CloseCode.SHUTDOWN, "changed my mind")
    assert pair.send(pair.renderer) == [
        HandshakeCompleted(RENDERER_ID, PROCESS_ID),
        ConnectionTerminated(CloseCode.SHUTDOWN, "changed my mind", remote=True),
    ]
    # main answered the Hello before it read the Goodbye; nothing follows the Welcome.
    assert decode_frames(bytes(pair.main.data_to_send())) == [
        Welcome(PROTOCOL_VERSION, RENDERER_ID, DEFAULT_MAX_FRAME_SIZE)
    ]
    assert pair.main.state is State.CLOSED


def test_main_close_during_handshake_reaches_the_renderer(mode: Feed) -> None:
    pair = ConnectionPair(mode)
    pair.main.close(CloseCode.SHUTDOWN, "going away")
    assert pair.send(pair.main) == [
        ConnectionTerminated(CloseCode.SHUTDOWN, "going away", remote=True)
    ]
    assert pair.renderer.state is State.CLOSED


def test_close_forgets_open_requests(renderer_sends: bool) -> None:
    pair = handshake()
    sender, receiver = pair.ends(renderer_sends)
    request_id = sender.start_request(RequestKind.INVOKE, "ch", [])
    pair.send(sender)
    receiver.close()
    assert receiver.serving == 0
    assert receiver.send_reply(request_id, True, None) is False
    pair.send(receiver)
    assert sender.awaiting == 0
    sender.cancel_request(request_id)  # nothing left to cancel, nothing to say
    assert sender.data_to_send() == b""


# ---- end of stream -----------------------------------------------------------


def test_receive_eof_is_idempotent(renderer_sends: bool) -> None:
    pair = handshake()
    _, receiver = pair.ends(renderer_sends)
    receiver.receive_eof()
    [event] = receiver.events_received()
    assert isinstance(event, ConnectionTerminated)
    assert event == ConnectionTerminated(None, event.reason, remote=True)
    assert "without a Goodbye" in event.reason
    assert "middle of a frame" not in event.reason
    assert receiver.state is State.CLOSED
    assert receiver.data_to_send() == b""
    receiver.receive_eof()
    receiver.close()
    assert receiver.events_received() == []
    assert receiver.data_to_send() == b""


def test_receive_eof_during_handshake() -> None:
    main = Connection(Role.MAIN, token=TOKEN)
    main.receive_eof()
    [event] = main.events_received()
    assert event.remote is True  # type: ignore[union-attr]
    assert main.state is State.CLOSED


@pytest.mark.parametrize("cuts", [[], [1], list(range(10))], ids=["whole", "split", "bytewise"])
def test_receive_eof_mid_frame_says_so(renderer_sends: bool, cuts: list[int]) -> None:
    pair = handshake()
    sender, receiver = pair.ends(renderer_sends)
    sender.send_message("ch", ["payload"])
    partial = bytes(sender.data_to_send())[:-3]
    feed_in_pieces(receiver, partial, cuts)
    assert receiver.events_received() == []
    receiver.receive_eof()
    [event] = receiver.events_received()
    assert isinstance(event, ConnectionTerminated)
    # A truncated frame is a protocol error (issue 3), reported as the peer's doing.
    assert event.code is CloseCode.PROTOCOL_ERROR and event.remote is True
    assert f"in the middle of a frame, {len(partial)} bytes buffered" in event.reason


def test_receive_eof_after_close_emits_nothing(renderer_sends: bool) -> None:
    pair = handshake()
    sender, _ = pair.ends(renderer_sends)
    sender.close()
    sender.events_received()
    sender.receive_eof()
    assert sender.events_received() == []


# ---- our own misuse ----------------------------------------------------------

COMMANDS: dict[str, tuple[str, Callable[[Connection], Any]]] = {
    "send_message": ("send a message", lambda c: c.send_message("ch", [])),
    "start_request": (
        "start a request",
        lambda c: c.start_request(RequestKind.INVOKE, "ch", []),
    ),
    "send_ping": ("send a ping", lambda c: c.send_ping(1)),
}


def _handshaking(role: Role) -> Connection:
    conn = Connection(role, token=TOKEN)
    conn.data_to_send()
    return conn


def _closed(role: Role) -> Connection:
    pair = handshake()
    conn = pair.renderer if role is Role.RENDERER else pair.main
    conn.close()
    conn.data_to_send()
    return conn


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("role", list(Role), ids=[r.value for r in Role])
@pytest.mark.parametrize(
    ("make", "state"),
    [(_handshaking, "handshake"), (_closed, "closed")],
    ids=["handshake", "closed"],
)
def test_command_in_the_wrong_state_raises(
    command: str, role: Role, make: Callable[[Role], Connection], state: str
) -> None:
    conn = make(role)
    action, run = COMMANDS[command]
    with pytest.raises(
        LocalProtocolError, match=f"cannot {action} while the connection is {state}"
    ):
        run(conn)
    assert conn.data_to_send() == b""
    assert conn.awaiting == 0
    assert conn.state is State(state)


def test_local_protocol_error_is_a_protocol_error() -> None:
    from ipcbus import IpcError, ProtocolError

    assert issubclass(LocalProtocolError, ProtocolError)
    assert issubclass(LocalProtocolError, IpcError)


# ---- values that cannot be encoded -------------------------------------------

BAD_VALUES = [
    pytest.param([object()], TypeError, id="object"),
    pytest.param([1, {"nested": [set[int]]}], TypeError, id="nested-type"),
    pytest.param([2**64], OverflowError, id="too-big"),
    pytest.param([-(2**63) - 1], OverflowError, id="too-small"),
]


@pytest.mark.parametrize(("bad", "error"), BAD_VALUES)
def test_unencodable_message_queues_nothing(
    renderer_sends: bool, bad: Any, error: type[Exception]
) -> None:
    pair = handshake()
    sender, receiver = pair.ends(renderer_sends)
    sender.send_message("before", [1])
    queued = bytes(sender._outbox)
    with pytest.raises(error):
        sender.send_message("bad", bad)
    assert sender.data_to_send() == queued
    sender.send_message("after", [2])
    receiver.receive_data(queued + sender.data_to_send())
    assert receiver.events_received() == [
        MessageReceived("before", raw([1])),
        MessageReceived("after", raw([2])),
    ]


@pytest.mark.parametrize(("bad", "error"), BAD_VALUES)
def test_unencodable_request_queues_nothing(
    renderer_sends: bool, bad: Any, error: type[Exception]
) -> None:
    pair = handshake()
    sender, receiver = pair.ends(renderer_sends)
    sender.send_message("before", [1])
    queued = bytes(sender._outbox)
    with pytest.raises(error):
        sender.start_request(RequestKind.INVOKE, "bad", bad)
    assert sender.data_to_send() == queued
    assert sender.awaiting == 0
    request_id = sender.start_request(RequestKind.INVOKE, "good", [])
    receiver.receive_data(queued + sender.data_to_send())
    assert receiver.events_received() == [
        MessageReceived("before", raw([1])),
        RequestReceived(request_id, RequestKind.INVOKE, "good", raw([])),
    ]
    assert receiver.state is State.OPEN


@pytest.mark.parametrize(("bad", "error"), BAD_VALUES)
def test_unencodable_reply_queues_nothing_and_keeps_the_request_open(
    renderer_sends: bool, bad: Any, error: type[Exception]
) -> None:
    pair = handshake()
    sender, receiver = pair.ends(renderer_sends)
    request_id = sender.start_request(RequestKind.INVOKE, "ch", [])
    pair.send(sender)
    receiver.send_message("before", [1])
    queued = bytes(receiver._outbox)
    with pytest.raises(error):
        receiver.send_reply(request_id, True, bad)
    assert receiver.data_to_send() == queued
    assert receiver.is_serving(request_id)
    # The driver then answers with an error instead, which does go out.
    info = ErrorInfo(ErrorKind.REMOTE, "SerializationError", "cannot encode")
    assert receiver.send_reply(request_id, False, info)
    sender.receive_data(queued + receiver.data_to_send())
    assert sender.events_received() == [
        MessageReceived("before", raw([1])),
        ReplyReceived(request_id, False, raw(info)),
    ]


@pytest.mark.parametrize("renderer_id", [0, -5])
def test_a_welcome_without_a_real_renderer_id_is_a_protocol_error(renderer_id: int) -> None:
    renderer = Connection(Role.RENDERER, token=TOKEN)
    renderer.data_to_send()
    renderer.receive_data(frame(Welcome(PROTOCOL_VERSION, renderer_id, DEFAULT_MAX_FRAME_SIZE)))
    (event,) = renderer.events_received()
    assert isinstance(event, ConnectionTerminated)
    assert event.code is CloseCode.PROTOCOL_ERROR
    assert f"renderer id {renderer_id}" in event.reason
    assert renderer.renderer_id == 0


@pytest.mark.parametrize("open_first", [False, True])
def test_a_peers_long_goodbye_reason_is_cut(open_first: bool) -> None:
    """It ends up in every ConnectionClosedError of the connection: 32 MiB would too."""
    if open_first:
        conn = handshake().renderer
    else:
        conn = Connection(Role.RENDERER, token=TOKEN)
        conn.data_to_send()
    conn.receive_data(frame(Goodbye(CloseCode.NORMAL, "why" * 10_000)))  # under 64 KiB
    (event,) = conn.events_received()
    assert isinstance(event, ConnectionTerminated)
    assert event.reason == "why" * 333 + "w [... 29000 more characters cut]"


def test_a_long_goodbye_before_hello_is_cut_in_mains_reason_too() -> None:
    main = Connection(Role.MAIN, token=TOKEN)
    main.receive_data(frame(Goodbye(CloseCode.NORMAL, "why" * 10_000)))
    (event,) = main.events_received()
    assert isinstance(event, ConnectionTerminated)
    assert event.reason.endswith("w [... 29000 more characters cut]")
    assert "expected Hello" in event.reason
