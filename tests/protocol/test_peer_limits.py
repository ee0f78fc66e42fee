"""Socket-free tests of the limits a peer cannot talk its way past (issue 10, sections 4-5).

* A frame carries at most ``MAX_PORTS_PER_FRAME`` port references: one more
  ends the connection, whichever side receives it; our own core refuses to
  queue one.
* A handshake's ``max_frame_size`` is 0 (not said) or at least
  ``MIN_MAX_FRAME_SIZE``; anything else ends the handshake.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipcbus._events import HandshakeCompleted, MessageReceived, PortMessageReceived, ReplyReceived
from ipcbus._protocol import Connection, LocalProtocolError, Role, State
from ipcbus._wire import (
    MAX_PORTS_PER_FRAME,
    MESSAGE_CUT,
    MIN_MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    TRACEBACK_CUT,
    CloseCode,
    ErrorInfo,
    ErrorKind,
    Hello,
    Message,
    PortMessage,
    PortRef,
    Reply,
    RequestKind,
    Welcome,
    fit_error,
    raw_args,
)

from .helpers import (
    ENC,
    PROCESS_ID,
    RENDERER_ID,
    TOKEN,
    ConnectionPair,
    Feed,
    assert_terminated_by_us,
    feed,
    frame,
    handshake,
    raw,
)

# ---- port references per frame -------------------------------------------------


def _refs(n: int, renderer_sends: bool) -> tuple[PortRef, ...]:
    # A renderer names ends it created < 0 (with a peer); main names its own > 0.
    if renderer_sends:
        return tuple(PortRef(-(2 * i + 1), -(2 * i + 2)) for i in range(n))
    return tuple(PortRef(i + 1) for i in range(n))


@pytest.mark.parametrize("port_frame", ["message", "port-message"])
def test_a_frame_with_the_most_port_refs_is_accepted(
    mode: Feed, renderer_sends: bool, port_frame: str
) -> None:
    pair = handshake(mode)
    receiver = pair.main if renderer_sends else pair.renderer
    refs = _refs(MAX_PORTS_PER_FRAME, renderer_sends)
    if port_frame == "message":
        body: Message | PortMessage = Message("ch", raw_args([]), refs)
        expected: object = MessageReceived("ch", raw([]), refs)
    else:
        body = PortMessage(5, raw_args(1), list(refs))
        expected = PortMessageReceived(5, raw(1), list(refs), False)
    assert feed(receiver, frame(body), mode) == [expected]
    assert receiver.state is State.OPEN


@pytest.mark.parametrize("port_frame", ["message", "port-message"])
def test_one_port_ref_too_many_ends_the_connection(
    mode: Feed, renderer_sends: bool, port_frame: str
) -> None:
    pair = handshake(mode)
    receiver = pair.main if renderer_sends else pair.renderer
    refs = _refs(MAX_PORTS_PER_FRAME + 1, renderer_sends)
    if port_frame == "message":
        body: Message | PortMessage = Message("ch", raw_args([]), refs)
    else:
        body = PortMessage(5, raw_args(1), list(refs))
    events = feed(receiver, frame(body), mode)
    event = assert_terminated_by_us(receiver, events, CloseCode.PROTOCOL_ERROR)
    assert events == [event]  # nothing of the frame was handed on
    assert f"{MAX_PORTS_PER_FRAME + 1} port references" in event.reason
    assert f"at most {MAX_PORTS_PER_FRAME}" in event.reason


def test_the_core_refuses_to_send_too_many_ports(renderer_sends: bool) -> None:
    pair = handshake()
    sender = pair.renderer if renderer_sends else pair.main
    refs = list(_refs(MAX_PORTS_PER_FRAME + 1, renderer_sends))
    with pytest.raises(LocalProtocolError, match=f"at most {MAX_PORTS_PER_FRAME}"):
        sender.send_message("ch", raw_args([]), refs)
    with pytest.raises(LocalProtocolError, match=f"at most {MAX_PORTS_PER_FRAME}"):
        sender.send_port_message(5, 1, refs)
    assert sender.data_to_send() == b""
    assert sender.state is State.OPEN


# ---- max_frame_size in the handshake -------------------------------------------

BAD_LIMITS = [1, -1, MIN_MAX_FRAME_SIZE - 1, -(2**31)]


@pytest.mark.parametrize("limit", BAD_LIMITS)
def test_main_refuses_a_hello_with_a_tiny_or_negative_limit(mode: Feed, limit: int) -> None:
    main = Connection(Role.MAIN, token=TOKEN, renderer_id=RENDERER_ID)
    events = feed(main, frame(Hello(PROTOCOL_VERSION, TOKEN, PROCESS_ID, limit)), mode)
    event = assert_terminated_by_us(main, events, CloseCode.PROTOCOL_ERROR)
    assert events == [event]  # no HandshakeCompleted, no Welcome
    assert f"max_frame_size of {limit}" in event.reason
    assert str(MIN_MAX_FRAME_SIZE) in event.reason


@pytest.mark.parametrize("limit", BAD_LIMITS)
def test_a_renderer_refuses_a_welcome_with_a_tiny_or_negative_limit(mode: Feed, limit: int) -> None:
    renderer = Connection(Role.RENDERER, token=TOKEN, process_id=PROCESS_ID)
    renderer.data_to_send()  # the Hello
    events = feed(renderer, frame(Welcome(PROTOCOL_VERSION, RENDERER_ID, limit)), mode)
    event = assert_terminated_by_us(renderer, events, CloseCode.PROTOCOL_ERROR)
    assert events == [event]
    assert f"max_frame_size of {limit}" in event.reason


@pytest.mark.parametrize("limit", [0, MIN_MAX_FRAME_SIZE, 2**32 - 1])
def test_a_limit_that_is_unsaid_or_large_enough_is_accepted(mode: Feed, limit: int) -> None:
    main = Connection(Role.MAIN, token=TOKEN, renderer_id=RENDERER_ID)
    events = feed(main, frame(Hello(PROTOCOL_VERSION, TOKEN, PROCESS_ID, limit)), mode)
    assert events == [HandshakeCompleted(RENDERER_ID, PROCESS_ID)]
    renderer = Connection(Role.RENDERER, token=TOKEN, process_id=PROCESS_ID)
    renderer.data_to_send()
    events = feed(renderer, frame(Welcome(PROTOCOL_VERSION, RENDERER_ID, limit)), mode)
    assert events == [HandshakeCompleted(RENDERER_ID, 0)]


def test_our_own_limit_must_be_at_least_the_minimum() -> None:
    for role in Role:
        with pytest.raises(ValueError, match=str(MIN_MAX_FRAME_SIZE)):
            Connection(role, token=TOKEN, max_frame_size=MIN_MAX_FRAME_SIZE - 1)


# ---- error replies cut to fit the caller's limit ------------------------------------


def _pair_with_small_limit_on(caller_is_renderer: bool, mode: Feed = Feed.WHOLE) -> ConnectionPair:
    """An open pair whose caller side announced ``MIN_MAX_FRAME_SIZE``."""
    pair = ConnectionPair(mode)
    small = MIN_MAX_FRAME_SIZE
    if caller_is_renderer:
        pair.renderer = Connection(
            Role.RENDERER, token=TOKEN, process_id=PROCESS_ID, max_frame_size=small
        )
    else:
        pair.main = Connection(
            Role.MAIN, token=TOKEN, renderer_id=RENDERER_ID, max_frame_size=small
        )
    pair.handshake()
    return pair


def _reply_info(events: list[Any]) -> ErrorInfo:
    [event] = events
    assert isinstance(event, ReplyReceived) and not event.ok
    return msgspec.msgpack.decode(event.value, type=ErrorInfo)


def test_an_error_over_the_callers_limit_is_cut_to_fit(mode: Feed, renderer_sends: bool) -> None:
    """``renderer_sends``: the renderer calls (its limit is small) and main serves."""
    pair = _pair_with_small_limit_on(renderer_sends, mode)
    caller, server = pair.ends(renderer_sends)
    request_id = caller.start_request(RequestKind.INVOKE, "ch", raw_args([]))
    assert len(pair.send(caller)) == 1
    message = "m" * 5000 + "END-OF-MESSAGE"
    traceback = "START-OF-TRACEBACK" + "t" * 9000 + "ValueError: the last line\n"
    info = ErrorInfo(ErrorKind.REMOTE, "ValueError", message, traceback)
    assert server.send_error(request_id, info) is True
    assert not server.is_serving(request_id)
    data = server.data_to_send()
    assert len(data) - 4 <= MIN_MAX_FRAME_SIZE
    got = _reply_info(feed(caller, data, mode))
    assert caller.state is State.OPEN and server.state is State.OPEN
    assert got.kind is ErrorKind.REMOTE and got.type_name == "ValueError"
    assert got.message.startswith("m" * 100) and got.message.endswith(MESSAGE_CUT)
    assert got.traceback is not None
    assert got.traceback.startswith(TRACEBACK_CUT)
    assert got.traceback.endswith("ValueError: the last line\n")


def test_an_error_that_fits_is_sent_as_it_is(renderer_sends: bool) -> None:
    pair = _pair_with_small_limit_on(renderer_sends)
    caller, server = pair.ends(renderer_sends)
    request_id = caller.start_request(RequestKind.INVOKE, "ch", raw_args([]))
    pair.send(caller)
    info = ErrorInfo(ErrorKind.REMOTE, "ValueError", "short", "Traceback: short\n")
    assert server.send_error(request_id, info) is True
    assert _reply_info(pair.send(server)) == info


def test_an_error_to_a_request_no_longer_served_is_not_sent() -> None:
    pair = handshake()
    info = ErrorInfo(ErrorKind.REMOTE, "ValueError", "x")
    assert pair.main.send_error(1, info) is False
    assert pair.main.data_to_send() == b""


@settings(max_examples=200, deadline=None)
@given(
    type_name=st.text(min_size=1, max_size=400),
    message=st.text(max_size=3000),
    traceback=st.none() | st.text(max_size=6000),
    limit=st.integers(MIN_MAX_FRAME_SIZE, 4 * MIN_MAX_FRAME_SIZE),
)
def test_any_error_is_cut_to_fit_any_allowed_limit(
    type_name: str, message: str, traceback: str | None, limit: int
) -> None:
    info = ErrorInfo(ErrorKind.REMOTE, type_name, message, traceback)
    overhead = len(frame(Reply(2**63, False, raw_args(None)))) - 4 - 1  # the Reply, less info
    cut = fit_error(info, limit - overhead)
    assert len(ENC.encode(Reply(2**63, False, raw_args(cut)))) <= limit
    assert cut.message == message or cut.message.endswith(MESSAGE_CUT)
    assert (cut.traceback is None) == (traceback is None)
