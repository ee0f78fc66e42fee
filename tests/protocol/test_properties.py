"""Properties of the protocol core, checked with hypothesis (STYLE section 3.13).

1. A request arrives whole, with its arguments intact, however its bytes are split.
2. Splitting never changes the events: a random conversation gives the same
   events, return values and replies whether each batch of bytes is fed whole
   or cut at random places, and so does one side's whole byte stream.
3. Garbage only ends the connection: random or mutated byte streams never raise
   out of ``receive_data``; they give valid events, or valid events followed by
   exactly one ``ConnectionTerminated``.

Example counts are kept small enough for the whole file to run in a few
seconds; ``test_fuzz_10k`` is the large run (10,000 byte streams).
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipcbus._events import (
    ConnectionTerminated,
    Event,
    HandshakeCompleted,
    MessageReceived,
    RequestReceived,
)
from ipcbus._protocol import Connection, LocalProtocolError, Role, State
from ipcbus._wire import (
    PROTOCOL_VERSION,
    Cancel,
    ErrorInfo,
    ErrorKind,
    Goodbye,
    Hello,
    Message,
    Request,
    RequestKind,
    raw_args,
)

from .helpers import (
    RENDERER_ID,
    TOKEN,
    ConnectionPair,
    decode_frames,
    feed_in_pieces,
    frame,
    handshake,
    raw,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- strategies ----------------------------------------------------------------

msgpack_ints = st.integers(-(2**63), 2**64 - 1)
leaves = (
    msgpack_ints
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.none()
    | st.booleans()
    | st.floats(allow_nan=False)
)
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)
arg_lists = st.lists(values, max_size=4)
channels = st.text(min_size=1, max_size=24)
cut_lists = st.lists(st.integers(0, 300), max_size=12)

# A command is (name, renderer_acts, *parameters); see Conversation.step.
commands = st.one_of(
    st.tuples(st.just("message"), st.booleans(), channels, arg_lists),
    st.tuples(st.just("request"), st.booleans(), st.sampled_from(RequestKind), channels, arg_lists),
    st.tuples(st.just("reply"), st.booleans(), st.integers(0, 20), st.booleans(), values),
    st.tuples(st.just("cancel"), st.booleans(), st.integers(0, 20)),
    st.tuples(st.just("ping"), st.booleans(), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("flush"), st.booleans()),
    st.tuples(st.just("flush"), st.booleans()),
)

Feeder = Callable[[Connection, bytes], None]


def _whole(conn: Connection, data: bytes) -> None:
    conn.receive_data(data)


# ---- 1. a request arrives whole ------------------------------------------------


@FAST
@given(
    channel=channels,
    args=arg_lists,
    kind=st.sampled_from(RequestKind),
    cuts=cut_lists,
    renderer_sends=st.booleans(),
)
def test_request_arrives_whole_however_the_bytes_are_split(
    channel: str, args: list[Any], kind: RequestKind, cuts: list[int], renderer_sends: bool
) -> None:
    pair = handshake()
    sender, receiver = pair.ends(renderer_sends)
    request_id = sender.start_request(kind, channel, args)
    feed_in_pieces(receiver, sender.data_to_send(), cuts)
    [event] = receiver.events_received()
    assert event == RequestReceived(request_id, kind, channel, raw(args))
    assert msgspec.msgpack.decode(event.args) == args


@FAST
@given(messages=st.lists(st.tuples(channels, arg_lists), min_size=1, max_size=6), cuts=cut_lists)
def test_messages_arrive_in_order_however_the_bytes_are_split(
    messages: list[tuple[str, list[Any]]], cuts: list[int]
) -> None:
    pair = handshake()
    for channel, args in messages:
        pair.renderer.send_message(channel, args)
    feed_in_pieces(pair.main, pair.renderer.data_to_send(), cuts)
    expected = [MessageReceived(channel, raw(args)) for channel, args in messages]
    assert pair.main.events_received() == expected


# ---- 2. splitting never changes the events ---------------------------------------


class Conversation:
    """Runs commands on a handshaken pair and logs everything observable."""

    def __init__(self, feeder: Feeder) -> None:
        self.pair = handshake()
        self.feeder = feeder
        self.started: dict[bool, list[int]] = {True: [], False: []}
        self.received: dict[bool, list[int]] = {True: [], False: []}
        self.log: list[Any] = []

    def conn(self, renderer: bool) -> Connection:
        return self.pair.renderer if renderer else self.pair.main

    def flush(self, renderer: bool) -> None:
        """Deliver everything ``renderer``'s side queued to the other side."""
        data = bytes(self.conn(renderer).data_to_send())
        receiver = self.conn(not renderer)
        self.feeder(receiver, data)
        events = receiver.events_received()
        for event in events:
            if isinstance(event, RequestReceived):
                self.received[not renderer].append(event.request_id)
        self.log.append(("delivered", renderer, data, events))

    def step(self, command: tuple[Any, ...]) -> None:
        name, renderer, *params = command
        conn = self.conn(renderer)
        result: Any = None
        if name == "message":
            conn.send_message(params[0], params[1])
        elif name == "request":
            result = conn.start_request(params[0], params[1], params[2])
            self.started[renderer].append(result)
        elif name == "reply" and self.received[renderer]:
            ids = self.received[renderer]
            request_id = ids[params[0] % len(ids)]
            ok, value = params[1], params[2]
            if not ok:
                value = ErrorInfo(ErrorKind.REMOTE, "ValueError", repr(value)[:50])
            result = conn.send_reply(request_id, ok, value)
        elif name == "cancel" and self.started[renderer]:
            ids = self.started[renderer]
            conn.cancel_request(ids[params[0] % len(ids)])
        elif name == "ping":
            conn.send_ping(params[0])
        elif name == "flush":
            self.flush(renderer)
        self.log.append((name, renderer, result))

    def finish(self) -> None:
        """Deliver until both outboxes stay empty (a Ping needs two rounds)."""
        for _ in range(3):
            self.flush(True)
            self.flush(False)


def _splitter(cut_batches: list[list[int]]) -> Feeder:
    batches = iter(cut_batches)

    def feed(conn: Connection, data: bytes) -> None:
        feed_in_pieces(conn, data, next(batches, [1, 5, 9]))

    return feed


@settings(FAST, max_examples=100)
@given(script=st.lists(commands, max_size=25), cut_batches=st.lists(cut_lists, max_size=40))
def test_conversation_is_the_same_however_the_bytes_are_split(
    script: list[tuple[Any, ...]], cut_batches: list[list[int]]
) -> None:
    whole, split = Conversation(_whole), Conversation(_splitter(cut_batches))
    for conversation in (whole, split):
        for command in script:
            conversation.step(command)
        conversation.finish()
    assert split.log == whole.log
    # Well-behaved peers never trip a violation, even when a Cancel crosses a Reply.
    for entry in whole.log:
        if entry[0] == "delivered":
            assert not any(isinstance(e, ConnectionTerminated) for e in entry[3]), entry
    for conn in (whole.pair.renderer, whole.pair.main):
        assert conn.state is State.OPEN
        assert conn.data_to_send() == b""


@settings(FAST, max_examples=100)
@given(
    script=st.lists(commands, max_size=20),
    renderer_speaks=st.booleans(),
    close=st.booleans(),
    cuts=st.lists(st.integers(0, 2000), max_size=30),
)
def test_one_sides_stream_gives_the_same_events_whole_or_cut(
    script: list[tuple[Any, ...]], renderer_speaks: bool, close: bool, cuts: list[int]
) -> None:
    # Record everything one side ever sends, handshake frame included.
    pair = ConnectionPair()
    hello = bytes(pair.renderer.data_to_send())
    pair.main.receive_data(hello)
    welcome = bytes(pair.main.data_to_send())
    pair.renderer.receive_data(welcome)
    speaker = pair.renderer if renderer_speaks else pair.main
    started: list[int] = []
    for name, _, *params in script:
        if name == "message":
            speaker.send_message(params[0], params[1])
        elif name == "request":
            started.append(speaker.start_request(params[0], params[1], params[2]))
        elif name == "cancel" and started:
            speaker.cancel_request(started[params[0] % len(started)])
        elif name == "ping":
            speaker.send_ping(params[0])
    if close:
        speaker.close()
    stream = (hello if renderer_speaks else welcome) + bytes(speaker.data_to_send())

    def listener() -> Connection:
        if renderer_speaks:
            return Connection(Role.MAIN, token=TOKEN, renderer_id=RENDERER_ID)
        return Connection(Role.RENDERER, token=TOKEN)

    a, b = listener(), listener()
    a.receive_data(stream)
    feed_in_pieces(b, stream, cuts)
    events = a.events_received()
    assert b.events_received() == events
    assert b.data_to_send() == a.data_to_send()
    assert b.state is a.state
    assert isinstance(events[0], HandshakeCompleted)
    assert not any(isinstance(e, ConnectionTerminated) and not e.remote for e in events)


# ---- 3. garbage only ends the connection -----------------------------------------


def _valid_stream(script: list[tuple[Any, ...]]) -> bytes:
    """A renderer's stream after its Hello: only what the renderer could send."""
    pair = handshake()
    started: list[int] = []
    for name, _, *params in script:
        if name == "message":
            pair.renderer.send_message(params[0], params[1])
        elif name == "request":
            started.append(pair.renderer.start_request(params[0], params[1], params[2]))
        elif name == "cancel" and started:
            pair.renderer.cancel_request(started[params[0] % len(started)])
        elif name == "ping":
            pair.renderer.send_ping(params[0])
    return bytes(pair.renderer.data_to_send())


HELLO = frame(Hello(PROTOCOL_VERSION, TOKEN, 1))
SAMPLE = (
    frame(Message("ch", raw_args([1, "two"])))
    + frame(Request(1, RequestKind.INVOKE, "ch", raw_args([b"3"])))
    + frame(Cancel(1))
)

mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
        st.integers(0, 10_000),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=4,
)


def _mutate(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for op, position, byte in edits:
        i = position % (len(out) + 1)
        if op == "insert":
            out[i:i] = bytes([byte])
        elif not out or i == len(out):
            continue
        elif op == "flip":
            out[i] ^= 1 << (byte % 8)
        elif op == "set":
            out[i] = byte
        elif op == "delete":
            del out[i]
        else:
            del out[i:]
    return bytes(out)


def _main(after_handshake: bool) -> Connection:
    main = Connection(Role.MAIN, token=TOKEN)
    if after_handshake:
        main.receive_data(HELLO)
        main.events_received()
        main.data_to_send()
    return main


def _check_outcome(conn: Connection, events: list[Event]) -> None:
    """Valid events, or valid events then exactly one ConnectionTerminated."""
    # Every kind of event: a mutated frame may well be another valid frame
    # (a Cancel whose tag became PortClose's is a PortClose main must accept).
    valid = typing.get_args(Event)
    assert all(isinstance(e, valid) for e in events), events
    ends = [i for i, e in enumerate(events) if isinstance(e, ConnectionTerminated)]
    assert len([e for e in events if isinstance(e, HandshakeCompleted)]) <= 1
    if not ends:
        assert conn.state is not State.CLOSED
        return
    assert ends == [len(events) - 1], events
    assert conn.state is State.CLOSED
    end = events[-1]
    assert isinstance(end, ConnectionTerminated)
    bodies = decode_frames(conn.data_to_send())  # whatever went out is well framed
    if end.remote:
        assert not any(isinstance(b, Goodbye) for b in bodies)
    else:
        assert bodies[-1] == Goodbye(end.code, end.reason)  # type: ignore[arg-type]


def _fuzz_once(data: bytes, after_handshake: bool, cuts: list[int]) -> None:
    whole, split = _main(after_handshake), _main(after_handshake)
    whole.receive_data(data)  # must not raise
    feed_in_pieces(split, data, cuts)
    events = whole.events_received()
    _check_outcome(whole, events)
    assert split.events_received() == events
    assert split.state is whole.state
    # A clean end of stream never adds a second ConnectionTerminated.
    whole.receive_eof()
    after = whole.events_received()
    if events and isinstance(events[-1], ConnectionTerminated):
        assert after == []
    else:
        assert len(after) == 1 and isinstance(after[0], ConnectionTerminated)


byte_streams = st.one_of(
    st.binary(max_size=64),
    st.binary(max_size=60).map(lambda body: len(body).to_bytes(4, "big") + body),
    st.tuples(st.lists(commands, max_size=4), mutations).map(
        lambda t: _mutate(_valid_stream(t[0]), t[1])
    ),
)


@settings(FAST, max_examples=300)
@given(data=byte_streams, after_handshake=st.booleans(), cuts=cut_lists)
def test_garbage_only_ends_the_connection(
    data: bytes, after_handshake: bool, cuts: list[int]
) -> None:
    _fuzz_once(data, after_handshake, cuts)


@settings(FAST, max_examples=100)
@given(script=st.lists(commands, max_size=6), edits=mutations, cuts=cut_lists)
def test_mutated_handshake_stream_only_ends_the_connection(
    script: list[tuple[Any, ...]], edits: list[tuple[str, int, int]], cuts: list[int]
) -> None:
    # The Hello itself is in reach of the mutations here.
    _fuzz_once(_mutate(HELLO + _valid_stream(script), edits), False, cuts)


def _stream_from(data: bytes, shape: int) -> bytes:
    """Turn one random byte string into one of three kinds of stream, cheaply.

    0, 1: the bytes as they are; 2, 3: the bytes as one frame body; 4, 5: valid
    frames (4: with the Hello) edited at the (op, position, value) triples read
    from the first six bytes. Odd shapes are fed after the handshake. Drawing
    one ``binary`` and one small int keeps hypothesis's own cost per example
    low enough for 10,000 examples.
    """
    if shape < 2:
        return data
    if shape < 4:
        return len(data).to_bytes(4, "big") + data
    ops = ("flip", "set", "insert", "delete", "truncate")
    edits = [
        (ops[data[i] % 5], data[i + 1] * 7, data[i + 2])
        for i in range(0, min(len(data), 6) - 2, 3)  # one or two edits
    ]
    valid = SAMPLE if shape == 5 else HELLO + SAMPLE  # 5 is fed after the handshake
    return _mutate(valid, edits or [("flip", len(data), 0)])


@pytest.mark.slow
@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=48), shape=st.integers(0, 5))
def test_fuzz_10k(data: bytes, shape: int) -> None:
    """10,000 random or mutated byte streams: receive_data never raises."""
    cuts = [b % 41 for b in data[:3]]
    _fuzz_once(_stream_from(data, shape), shape % 2 == 1, cuts)


def test_local_misuse_is_the_only_thing_that_raises() -> None:
    # The counterpart of the properties above: our own misuse does raise.
    conn = Connection(Role.MAIN, token=TOKEN)
    with pytest.raises(LocalProtocolError):
        conn.send_message("ch", [])
