"""Socket-free tests of the limits a peer cannot talk its way past (issue 10, sections 4-5).

* A frame carries at most ``MAX_PORTS_PER_FRAME`` port references: one more
  ends the connection, whichever side receives it; our own core refuses to
  queue one.
* A handshake's ``max_frame_size`` is 0 (not said) or at least
  ``MIN_MAX_FRAME_SIZE``; anything else ends the handshake.
"""

from __future__ import annotations

import pytest

from ipcbus._events import HandshakeCompleted, MessageReceived, PortMessageReceived
from ipcbus._protocol import Connection, LocalProtocolError, Role, State
from ipcbus._wire import (
    MAX_PORTS_PER_FRAME,
    MIN_MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    CloseCode,
    Hello,
    Message,
    PortMessage,
    PortRef,
    Welcome,
    raw_args,
)

from .helpers import (
    PROCESS_ID,
    RENDERER_ID,
    TOKEN,
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
