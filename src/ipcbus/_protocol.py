"""The ipcbus protocol core: one connection's state, without I/O.

Rules (docs/protocol.md has the long form):

1. ``Connection`` takes bytes (``receive_data``, ``receive_eof``) and commands
   (``start_request``, ``send_message``, ``send_reply``, ``cancel_request``,
   ``send_ping``, ``close``); it gives bytes (``data_to_send``) and events
   (``events_received``). The driver flushes after every call, then dispatches.
2. States go HANDSHAKE -> OPEN -> CLOSED, only through ``_set_state``. The
   renderer speaks first (Hello, carrying the token); main checks the token in
   constant time and answers Welcome, or Goodbye and CLOSED. Nothing but the
   handshake is accepted before OPEN.
3. A peer's bad input never raises out of ``receive_data``: the core queues a
   Goodbye saying why, moves to CLOSED and emits ``ConnectionTerminated``.
   Only our own misuse raises ``LocalProtocolError``.
4. Each side numbers its requests from 1, never reusing one; a peer's request
   ids must therefore strictly increase, which catches duplicates in O(1).
   ``_awaiting`` holds our open requests, ``_cancelled`` those we gave up on,
   ``_serving`` the peer's requests we have not answered. Every request gets
   exactly one Reply: a Cancel that finds its request still served is answered
   by the core with a CANCELLED error Reply, so ``_cancelled`` always empties.
   A Cancel for a request we already answered (our Reply crossed it) is dropped
   quietly; a Reply to an id we never sent is a violation.
5. The core answers Ping with Pong by itself; that is why output is an outbox
   rather than the return value of each command.
6. Time belongs to the driver: the core has no clocks and no timeouts.
7. Streams (docs/ports-and-streams.md) are requests of kind STREAM whose
   server sends StreamItems before the one Reply that ends them. Credit is
   counted here on both sides: the consumer grants items (StreamCredit), the
   server may send only as many as granted (``send_stream_item`` refuses
   more), and an item beyond the grant is a violation. Items for a stream we
   cancelled, and credit for one we finished, are the crossing race again.
8. Port frames (PortMessage, PortClose) name port ends by id. Routing them is
   main's business (``ipcbus._portroute``); the core only checks the shape:
   main hands renderers ends by ids > 0, a renderer names the ends it
   created < 0 (and main then addresses them so), id 0 is never valid, and
   only a renderer gives frames back (``returned``). A frame carries at most
   ``MAX_PORTS_PER_FRAME`` port references: each costs the receiver a port
   object and routing work out of proportion to its few bytes.

This module imports only the standard library and msgspec.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from ._errors import FrameTooLargeError, ProtocolError
from ._events import (
    ConnectionTerminated,
    Event,
    HandshakeCompleted,
    PortClosed,
    PortMessageReceived,
    RequestCancelled,
    StreamCreditReceived,
    StreamItemReceived,
)
from ._framing import (
    HEADER_SIZE,
    SMALL_BODY,
    FrameDecoder,
    append_frame,
    read_size,
    write_size,
)
from ._wire import (
    DEFAULT_MAX_FRAME_SIZE,
    MAX_PORTS_PER_FRAME,
    MIN_MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    STREAM,
    Body,
    Cancel,
    CloseCode,
    ErrorInfo,
    ErrorKind,
    Goodbye,
    Hello,
    Message,
    Ping,
    Pong,
    PortClose,
    PortMessage,
    PortRef,
    Reply,
    Request,
    RequestKind,
    StreamCredit,
    StreamItem,
    Welcome,
    check_max_frame_size,
    fit_error,
    raw_args,
)

__all__ = (
    "HANDSHAKE_MAX_FRAME_SIZE",
    "Connection",
    "HandshakeRefused",
    "LocalProtocolError",
    "Role",
    "State",
    "prepare_message",
)

#: Largest frame accepted before the handshake completes (from an unauthenticated peer).
HANDSHAKE_MAX_FRAME_SIZE = 64 * 1024


class Role(enum.Enum):
    MAIN = "main"
    RENDERER = "renderer"


class State(enum.Enum):
    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSED = "closed"


# The states by plain names, for hot paths: reading ``State.OPEN`` goes through
# ``EnumType.__getattr__`` (75 ns against 12 ns for a global, on the benchmark machine).
HANDSHAKE, OPEN, CLOSED = State.HANDSHAKE, State.OPEN, State.CLOSED


class LocalProtocolError(ProtocolError):
    """We misused the core (a command in a state that does not allow it)."""


class _PeerViolation(ProtocolError):
    """Internal: the peer broke the protocol; ends the connection."""

    def __init__(self, message: str, code: CloseCode = CloseCode.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


class HandshakeRefused(_PeerViolation):
    """Raised by main's ``admit`` to turn away a peer whose token was right.

    The connection ends with ``Goodbye(code, message)``, as for a violation.
    """


#: A port reference at its largest on the wire (an array of four 9-byte ints), for
#: ``Connection.check_message``.
_LARGEST_REF = PortRef(-(2**63), -(2**63), -(2**63), -(2**63))


def _refs(n: int) -> list[PortRef]:
    return [_LARGEST_REF] * n


_CANCEL_ACK = ErrorInfo(ErrorKind.CANCELLED, "CancelledError", "cancelled by the caller")
_body_decoder: msgspec.msgpack.Decoder[Body] = msgspec.msgpack.Decoder(Body)


_prepare_encoder = msgspec.msgpack.Encoder()


def prepare_message(channel: str, args: Any) -> bytes:
    """Encode a Message frame once, for ``Connection.send_prepared`` on many connections.

    Raises:
        TypeError, OverflowError, msgspec.EncodeError: ``args`` cannot be encoded.
    """
    out = bytearray()
    append_frame(_prepare_encoder, Message(channel, raw_args(args)), out)
    return bytes(out)


class Connection:
    """One side of one ipcbus connection.

    Args:
        role: which side this is.
        token: main: the token renderers must present; renderer: the token to present.
        renderer_id: main only: the id to hand this renderer in Welcome.
        admit: main only: called once the peer's token and version are
            accepted; returns the renderer id for Welcome (instead of
            ``renderer_id``), or raises :class:`HandshakeRefused`.
        process_id: renderer only: our process id, sent in Hello.
        max_frame_size: largest body accepted from the peer.
        new_buffer: ``new_buffer(size)`` gives the writable buffer a body
            that arrives in pieces is assembled in (the driver may reuse one).
    """

    def __init__(
        self,
        role: Role,
        *,
        token: str,
        renderer_id: int = 0,
        admit: Callable[[], int] | None = None,
        process_id: int = 0,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        new_buffer: Callable[[int], bytearray | memoryview] = bytearray,
    ) -> None:
        check_max_frame_size(max_frame_size)
        self.role = role
        self.state = HANDSHAKE
        self.renderer_id = renderer_id
        self._admit = admit
        self._token = token
        # Until the handshake is done the peer is unauthenticated: a Hello or
        # Welcome is tiny, so accept no more than HANDSHAKE_MAX_FRAME_SIZE.
        self._max_frame_size = max_frame_size
        self._peer_max_frame_size = 0  # from the peer's handshake; 0: not said
        self._frames = FrameDecoder(min(max_frame_size, HANDSHAKE_MAX_FRAME_SIZE), new_buffer)
        self._holding = False  # not self._frames.idle(), kept by the reads that change it
        self._encoder = _prepare_encoder  # stateless: one for all connections
        self._outbox = bytearray()
        #: Bytes queued for the peer and not yet taken by ``data_to_send``: an
        #: attribute kept by every change to the outbox, not a property, as the
        #: drivers read it several times per call.
        self.pending_output = 0
        self._events: list[Event] = []
        self._next_request_id = 1
        self._peer_last_request_id = 0
        # Sets of request ids, kept as dicts (values None): the cycle collector
        # does not track a dict of ints, while it tracks every set (issue 12).
        self._awaiting: dict[int, None] = {}
        self._cancelled: dict[int, None] = {}
        self._serving: dict[int, None] = {}
        self._granted: dict[int, int] = {}  # our streams: items the peer may still send
        self._credit: dict[int, int] = {}  # streams we serve: items we may still send
        if role is Role.RENDERER:
            self._queue(Hello(PROTOCOL_VERSION, token, process_id, max_frame_size))

    # ---- outputs -------------------------------------------------------

    def data_to_send(self) -> bytearray:
        """Take every byte queued for the peer (possibly none)."""
        # Always hand over a list/buffer the core no longer holds: returning the
        # live (empty) one would let later frames appear in the caller's hands
        # and then be taken a second time.
        out, self._outbox = self._outbox, bytearray()
        self.pending_output = 0
        return out

    def unsend(self, data: bytes | bytearray) -> None:
        """Give back bytes ``data_to_send`` gave that the driver could not send now:
        they are queued again before anything queued since, to be taken first."""
        if data:
            self._outbox[:0] = data
            self.pending_output = len(self._outbox)

    def events_received(self) -> list[Event]:
        """Take every event since the last call, oldest first."""
        events, self._events = self._events, []  # never the live list (see above)
        return events

    @property
    def serving(self) -> int:
        """Number of the peer's requests we have not answered yet."""
        return len(self._serving)

    @property
    def awaiting(self) -> int:
        """Number of our requests the peer has not answered yet."""
        return len(self._awaiting)

    # ---- inputs --------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> bool:
        """Feed bytes from the peer. Never raises for anything the peer sent.

        Returns whether bytes of a frame not yet whole are held: only then
        may the next read go into :meth:`receive_buffer`, so a driver need not
        ask after every read.
        """
        state = self.state
        if state is CLOSED:
            return False
        if state is OPEN and not self._holding and type(data) is bytes:
            # The usual read: nothing held from the last one, so its whole
            # frames are taken straight from ``data``, without the decoder's
            # bookkeeping; only what is left (a frame split across reads, one
            # over the limit) goes through it.
            try:
                pos = self._walk(data, memoryview(data), 0)
            except BaseException as exc:
                self._peer_failed(exc)
                return False
            if pos == len(data) or self.state is CLOSED:
                return False
            data = data[pos:]
        frames = self._frames
        frames.feed(data)
        self._parse()
        self._holding = holding = not frames.idle()
        return holding

    def receive_buffer(self, minimum: int = 64 * 1024) -> memoryview | None:
        """A buffer to read the peer's next bytes into, or ``None``: use ``receive_data``.

        Offered only while a large frame is being assembled (at least
        ``minimum`` bytes of it still to come): reading into it spares
        copying the frame chunk by chunk. Report with ``received_into``.
        """
        if self.state is CLOSED:
            return None
        return self._frames.window(minimum)

    def received_into(self, n: int) -> bool:
        """``n`` bytes of the peer's were read into the last ``receive_buffer``.

        Returns what :meth:`receive_data` returns.
        """
        if self.state is CLOSED:
            return False
        frames = self._frames
        frames.filled(n)
        self._parse()
        self._holding = holding = not frames.idle()
        return holding

    def receive_frame(self, body: bytes | bytearray | memoryview) -> None:
        """Feed one whole frame body, for transports whose messages are frames.

        A WebSocket or NATS message already is one frame (docs/protocol.md,
        "Transports that carry whole frames"): its body comes here without the
        length prefix, and goes through the same size limit, decoder and state
        machine as a frame cut from a byte stream. Never raises for anything
        the peer sent.
        """
        if self.state is CLOSED:
            return
        size = len(body)
        try:
            if size > self._frames.max_frame_size:
                raise FrameTooLargeError(
                    f"frame of {size} bytes exceeds the limit of "
                    f"{self._frames.max_frame_size} bytes"
                )
            decoded = _body_decoder.decode(body)
            if decoded.__class__ is Message and not decoded.ports and self.state is OPEN:
                self._events.append(decoded)  # MessageReceived, as in _parse_open
            else:
                self._handle(decoded)
        except BaseException as exc:
            self._peer_failed(exc)

    def _parse(self) -> None:
        frames = self._frames
        try:
            # _handle may close the connection: re-read the state after every frame.
            while self.state is not CLOSED:
                if self.state is OPEN:
                    self._parse_open()  # the hot path: every whole frame of the input
                    if self.state is CLOSED:
                        break
                # A frame split across reads, one over the limit (raises), or a handshake.
                if (raw := frames.next_body()) is None:
                    break
                self._handle(_body_decoder.decode(raw))
        except BaseException as exc:
            self._peer_failed(exc)

    def _peer_failed(self, exc: BaseException) -> None:
        """End the connection for what the peer sent; re-raise anything else."""
        if isinstance(exc, FrameTooLargeError):
            self._terminate(CloseCode.FRAME_TOO_LARGE, f"protocol error: {exc}")
        elif isinstance(exc, msgspec.DecodeError | UnicodeDecodeError | RecursionError):
            # msgspec raises UnicodeDecodeError for a str that is not UTF-8 and
            # RecursionError for deeply nested arrays (even inside a Raw field):
            # both are the peer's malformed bytes, not our bug.
            self._terminate(CloseCode.PROTOCOL_ERROR, f"protocol error: malformed frame: {exc}")
        elif isinstance(exc, _PeerViolation):
            self._terminate(exc.code, str(exc))
        else:
            raise exc

    def _parse_open(self) -> None:
        """The hot path of an open connection: take every whole frame of the input.

        Splits, decodes and handles them in one loop (one call per read, not
        per frame); a plain Message becomes its event without a call. Stops
        before a frame that is split across reads or over the limit, which
        ``next_body`` then takes (or refuses).
        """
        frames = self._frames
        data, view, pos = frames.unparsed()
        pos = self._walk(data, view, pos)
        if self.state is not CLOSED:  # else the decoder has let go of its input
            frames.parsed_to(pos)

    def _walk(self, data: bytes, view: memoryview, pos: int) -> int:
        """Take the whole frames of ``data`` from ``pos`` on; return where they end.

        Stops before a frame split across reads or over the limit, and after
        a frame that closed the connection. May raise for what the peer sent
        (a malformed frame, a violation): the caller ends the connection.
        """
        limit, end_of_input = self._frames.max_frame_size, len(data)
        last = end_of_input - HEADER_SIZE  # the last offset a header fits at
        # Locals, not globals, for what every frame needs (a read of one frame
        # pays for each alias, so the rarer cases below look theirs up).
        decode, events, unpack, small, message = (
            _body_decoder.decode,
            self._events,
            read_size,
            SMALL_BODY,
            Message,
        )
        while pos <= last:
            (size,) = unpack(data, pos)
            start = pos + HEADER_SIZE
            end = start + size
            if end > end_of_input or size > limit:
                break
            body = decode(data[start:end] if size <= small else view[start:end])
            pos = end
            if body.__class__ is message and not body.ports:
                events.append(body)  # MessageReceived
            elif (
                body.__class__ is Reply and body.request_id in self._awaiting and not self._granted
            ):
                # _handle's usual Reply (to a call we await, no stream of
                # ours open), inline: a caller's every read has one
                del self._awaiting[body.request_id]
                events.append(body)  # ReplyReceived
            elif (
                body.__class__ is Request
                and body.request_id > self._peer_last_request_id
                and body.kind is not STREAM
            ):
                # _handle's usual Request (a call, its id in order), inline: main's
                # every read has one
                self._peer_last_request_id = request_id = body.request_id
                self._serving[request_id] = None
                events.append(body)  # RequestReceived
            else:
                self._handle(body)
                if self.state is CLOSED:  # a Goodbye, or a violation we answered
                    break
        return pos

    def receive_eof(self, why: str | None = None) -> None:
        """The peer's byte stream ended (or the driver gave up on it). Idempotent.

        Args:
            why: the driver's account (write stalled, heartbeat timeout...),
                used instead of the default reason.
        """
        if self.state is CLOSED:
            return
        reason = f"connection lost: {why or 'the peer closed the stream without a Goodbye'}"
        code = None
        if self._frames.buffered:
            # A truncated frame: a protocol error, unless the peer died (the
            # driver knows an exit code and gives that precedence).
            reason += f" (in the middle of a frame, {self._frames.buffered} bytes buffered)"
            code = CloseCode.PROTOCOL_ERROR
        self._set_state(CLOSED)
        self._events.append(ConnectionTerminated(code, reason, remote=True))

    # ---- commands ------------------------------------------------------

    def send_message(self, channel: str, args: Any, ports: list[PortRef] | None = None) -> int:
        """Queue a fire-and-forget message. ``args`` is an argument list or Raw.

        ``ports`` are the port ends travelling with it (``post_message``).
        Returns :attr:`pending_output`, so a caller that applies backpressure
        needs no second call.

        Raises:
            TypeError, OverflowError, msgspec.EncodeError: ``args`` cannot be
                encoded; nothing was queued.
            FrameTooLargeError: over the limit the peer announced; nothing
                was queued.
        """
        if self.state is not OPEN:
            self._require_open("send a message")
        # args as the Raw field (see raw_args; the call is left out on this hot path)
        if ports:
            self._check_port_count(len(ports))
            body = Message(channel, args, tuple(ports))
        else:
            body = Message(channel, args)
        self._queue_payload(body)
        return self.pending_output

    def check_message(self, channel: str, args: Any, ports: int) -> None:
        """Refuse now a Message that could be over the peer's limit once it carries ``ports``.

        For a sender that must know before it claims the ports it sends (they
        are neutered once claimed): each reference is counted at its largest,
        so a message this passes fits whatever references it then carries.

        Raises:
            FrameTooLargeError: it could be over the limit the peer announced.
            TypeError, OverflowError, msgspec.EncodeError: ``args`` cannot be
                encoded.
        """
        if self._peer_max_frame_size:
            self._check_size(len(self._encoder.encode(Message(channel, args, tuple(_refs(ports))))))

    def check_port_message(self, port_id: int, data: Any, ports: int) -> None:
        """:meth:`check_message` for a message on port end ``port_id``."""
        if self._peer_max_frame_size:
            body = PortMessage(port_id, data, _refs(ports), returned=True)
            self._check_size(len(self._encoder.encode(body)))

    def send_prepared(self, frame: bytes, *, direct: bool = False) -> bool:
        """Queue a frame made by :func:`prepare_message` (one encoding, many peers).

        With ``direct``, a frame that nothing queued precedes is checked but
        not queued: ``True`` says so, and the driver hands ``frame`` to the
        transport as it is (a broadcast does this once per renderer, and the
        order of frames is kept). Otherwise returns ``False``: it was queued.

        Raises:
            LocalProtocolError: the connection is not open.
            FrameTooLargeError: over the limit the peer announced; nothing
                was queued.
        """
        if self.state is not OPEN:
            self._require_open("send a message")
        size = len(frame) - HEADER_SIZE
        if self._peer_max_frame_size and size > self._peer_max_frame_size:
            self._check_size(size)  # raises
        if direct and not self._outbox:
            return True
        self._outbox += frame
        self.pending_output = len(self._outbox)
        return False

    def start_request(self, kind: RequestKind, channel: str, args: Any) -> int:
        """Queue a request and return its id; its Reply comes as ``ReplyReceived``.

        Raises:
            TypeError, OverflowError, msgspec.EncodeError: ``args`` cannot be
                encoded; nothing was queued.
        """
        if self.state is not OPEN:
            self._require_open("start a request")
        request_id = self._next_request_id
        self._next_request_id = request_id + 1
        # args as the Raw field (see raw_args; the call is left out on this hot path)
        self._queue_payload(Request(request_id, kind, channel, args))
        self._awaiting[request_id] = None
        return request_id

    def start_stream(self, channel: str, args: Any, credit: int) -> int:
        """Queue a STREAM request and a grant of ``credit`` items; return its id.

        Items come as ``StreamItemReceived``, the end as ``ReplyReceived``.

        Raises:
            TypeError, OverflowError, msgspec.EncodeError: ``args`` cannot be
                encoded; nothing was queued.
        """
        if credit < 1:
            raise LocalProtocolError(f"a stream needs a credit of at least 1, not {credit}")
        request_id = self.start_request(RequestKind.STREAM, channel, args)
        self._granted[request_id] = credit
        self._queue(StreamCredit(request_id, credit))
        return request_id

    def grant_credit(self, request_id: int, n: int) -> None:
        """Let the server of our stream ``request_id`` send ``n`` more items."""
        if n < 1:
            raise LocalProtocolError(f"credit must be at least 1, not {n}")
        if request_id in self._granted and self.state is OPEN:
            self._granted[request_id] += n
            self._queue(StreamCredit(request_id, n))

    def stream_credit(self, request_id: int) -> int:
        """Items we may still send on the stream we serve for ``request_id``."""
        return self._credit.get(request_id, 0)

    def send_stream_item(self, request_id: int, value: Any) -> bool:
        """Queue one item of the stream we serve; ``False`` if it is no longer wanted.

        Raises:
            LocalProtocolError: the consumer has not granted credit for it.
            TypeError, OverflowError, msgspec.EncodeError: ``value`` cannot be
                encoded; nothing was queued.
        """
        if request_id not in self._serving or self.state is not OPEN:
            return False
        credit = self._credit.get(request_id)
        if credit is None:
            raise LocalProtocolError(f"request {request_id} is not a stream")
        if credit < 1:
            raise LocalProtocolError(f"stream {request_id} has no credit: wait for StreamCredit")
        self._queue(StreamItem(request_id, raw_args(value)))
        self._credit[request_id] = credit - 1
        return True

    def send_port_message(
        self, port_id: int, data: Any, ports: list[PortRef] | None = None, returned: bool = False
    ) -> None:
        """Queue a message on port end ``port_id`` (see :class:`PortMessage`).

        Raises:
            TypeError, OverflowError, msgspec.EncodeError: ``data`` cannot be
                encoded; nothing was queued.
            FrameTooLargeError: over the limit the peer announced; nothing
                was queued.
        """
        self._require_open("send a port message")
        if ports:
            self._check_port_count(len(ports))
        self._queue_payload(PortMessage(port_id, raw_args(data), ports or [], returned))

    def send_port_close(self, port_id: int, returned: bool = False) -> None:
        """Queue the close of port end ``port_id`` (see :class:`PortClose`)."""
        self._require_open("close a port")
        self._queue(PortClose(port_id, returned))

    def cancel_request(self, request_id: int) -> None:
        """Give up on our request ``request_id``; tell the peer if still open."""
        if request_id not in self._awaiting:
            return  # already answered, or never ours: nothing to cancel
        del self._awaiting[request_id]
        self._granted.pop(request_id, None)
        if self.state is OPEN:
            self._cancelled[request_id] = None
            self._queue(Cancel(request_id))

    def send_reply(self, request_id: int, ok: bool, value: Any) -> bool:
        """Answer the peer's request; ``False`` if it no longer wants one.

        ``value`` is the result (``ok``) or an ``ErrorInfo``. A request the
        peer cancelled, one already answered, or a closed connection all
        return ``False`` and queue nothing.

        Raises:
            TypeError, OverflowError, msgspec.EncodeError: ``value`` cannot be
                encoded; nothing was queued and the request is still open.
        """
        if request_id not in self._serving or self.state is not OPEN:
            return False
        self._queue_payload(Reply(request_id, ok, value))  # value as the Raw (see raw_args)
        del self._serving[request_id]
        if self._credit:
            self._credit.pop(request_id, None)
        return True

    def send_error(self, request_id: int, info: ErrorInfo) -> bool:
        """Answer the peer's request with an error; ``False`` as for :meth:`send_reply`.

        An error always reaches the caller: one over the limit the peer
        announced is cut to fit it (``fit_error``), which the handshake's
        ``MIN_MAX_FRAME_SIZE`` leaves room for.

        Raises:
            TypeError, OverflowError, msgspec.EncodeError: ``info`` cannot be
                encoded; nothing was queued and the request is still open.
        """
        if request_id not in self._serving or self.state is not OPEN:
            return False
        out = self._outbox
        size = append_frame(self._encoder, Reply(request_id, False, raw_args(info)), out)
        limit = self._peer_max_frame_size
        if limit and size > limit:
            del out[-(HEADER_SIZE + size) :]
            around = size - len(self._encoder.encode(info))  # the Reply's own fields
            reply = Reply(request_id, False, raw_args(fit_error(info, limit - around)))
            size = append_frame(self._encoder, reply, out)
            if size > limit:  # cannot happen with a limit >= MIN_MAX_FRAME_SIZE
                self._unqueue(size)  # raises
        self.pending_output = len(out)
        del self._serving[request_id]
        self._credit.pop(request_id, None)
        return True

    def is_serving(self, request_id: int) -> bool:
        """Whether the peer still waits for our reply to ``request_id``."""
        return request_id in self._serving

    def send_ping(self, nonce: int) -> None:
        """Queue a Ping; the peer's core answers with a Pong."""
        self._require_open("send a ping")
        self._queue(Ping(nonce))

    def close(self, code: CloseCode = CloseCode.NORMAL, reason: str = "closed") -> None:
        """Say Goodbye and stop. Idempotent; emits ``ConnectionTerminated``."""
        if self.state is CLOSED:
            return
        self._queue(Goodbye(code, reason))
        self._set_state(CLOSED)
        self._events.append(ConnectionTerminated(code, reason, remote=False))

    # ---- internals -----------------------------------------------------

    def _queue(self, body: Body) -> None:
        append_frame(self._encoder, body, self._outbox)
        self.pending_output = len(self._outbox)

    def _queue_payload(self, body: Body) -> None:
        """Queue a frame carrying the user's values, refusing one the peer would refuse.

        Raises:
            FrameTooLargeError: the frame is over the limit the peer announced
                in its handshake; nothing was queued and the connection lives on.
        """
        # append_frame, inline (once per send, invoke, reply and stream item)
        out = self._outbox
        start = len(out)
        try:
            self._encoder.encode_into(body, out, start + HEADER_SIZE)
        except BaseException:
            del out[start:]
            raise
        self.pending_output = queued = len(out)
        size = queued - start - HEADER_SIZE
        write_size(out, start, size)
        if self._peer_max_frame_size and size > self._peer_max_frame_size:
            self._unqueue(size)  # raises

    def _unqueue(self, size: int) -> None:
        """Take back the frame just queued, of ``size`` body bytes, and raise for it."""
        del self._outbox[-(HEADER_SIZE + size) :]
        self.pending_output = len(self._outbox)
        self._check_size(size)  # raises

    def _check_size(self, size: int) -> None:
        limit = self._peer_max_frame_size
        if limit and size > limit:
            raise FrameTooLargeError(
                f"a frame of {size} bytes is over the peer's limit of {limit} bytes"
            )

    @staticmethod
    def _check_port_count(n: int) -> None:
        if n > MAX_PORTS_PER_FRAME:
            raise LocalProtocolError(
                f"cannot send {n} ports in one message: at most {MAX_PORTS_PER_FRAME} "
                "may travel together"
            )

    def _require_open(self, action: str) -> None:
        if self.state is not OPEN:
            raise LocalProtocolError(f"cannot {action} while the connection is {self.state.value}")

    def _set_state(self, state: State) -> None:
        # The one place states change: HANDSHAKE -> OPEN -> CLOSED, or straight to CLOSED.
        current = self.state
        if current is CLOSED or (current is OPEN and state is HANDSHAKE):
            raise LocalProtocolError(f"illegal transition {current.value} -> {state.value}")
        self.state = state
        if state is OPEN:
            self._frames.max_frame_size = self._max_frame_size
        if state is CLOSED:
            # Free a partial frame's buffer now: the driver's objects may hold
            # this Connection in a cycle that only a full collection undoes.
            self._frames.discard()
            self._awaiting.clear()
            self._cancelled.clear()
            self._serving.clear()
            self._granted.clear()
            self._credit.clear()

    def _terminate(self, code: CloseCode, reason: str) -> None:
        self._queue(Goodbye(code, reason))
        self._set_state(CLOSED)
        self._events.append(ConnectionTerminated(code, reason, remote=False))

    def _handle(self, body: Body) -> None:
        if self.state is HANDSHAKE:
            self._handle_handshake(body)
            return
        # Ordered by how often each arrives; a decoded body is exactly its class.
        if type(body) is Message:
            if body.ports:
                self._check_refs(body.ports)
            self._events.append(body)  # the frame is the event (MessageReceived)
        elif type(body) is Request:
            request_id = body.request_id
            if request_id <= self._peer_last_request_id:
                raise _PeerViolation(
                    f"protocol error: request id {request_id} reused or out of order "
                    f"(last was {self._peer_last_request_id})"
                )
            self._peer_last_request_id = request_id
            self._serving[request_id] = None
            if body.kind is STREAM:
                self._credit[request_id] = 0
            self._events.append(body)  # RequestReceived
        elif type(body) is Reply:
            request_id = body.request_id
            if request_id in self._awaiting:
                del self._awaiting[request_id]
                if self._granted:
                    self._granted.pop(request_id, None)
                self._events.append(body)  # ReplyReceived
            elif request_id in self._cancelled:
                del self._cancelled[request_id]  # crossed our Cancel
            else:
                raise _PeerViolation(
                    f"protocol error: Reply to request id {request_id}, which was never sent"
                )
        elif isinstance(body, StreamItem):
            self._handle_stream_item(body)
        elif isinstance(body, PortMessage):
            self._check_port(body.port_id, body.returned)
            if body.ports:
                self._check_refs(body.ports)
            self._events.append(
                PortMessageReceived(body.port_id, body.data, body.ports, body.returned)
            )
        elif isinstance(body, StreamCredit):
            self._handle_stream_credit(body)
        elif isinstance(body, PortClose):
            self._check_port(body.port_id, body.returned)
            self._events.append(PortClosed(body.port_id, body.returned))
        elif isinstance(body, Cancel):
            request_id = body.request_id
            if request_id in self._serving:
                # Every request gets exactly one Reply, so the caller can forget
                # the id: a cancelled one gets this acknowledgement.
                del self._serving[request_id]
                self._credit.pop(request_id, None)
                self._queue(Reply(request_id, False, raw_args(_CANCEL_ACK)))
                self._events.append(RequestCancelled(request_id))
            elif request_id > self._peer_last_request_id:
                raise _PeerViolation(
                    f"protocol error: Cancel for request id {request_id}, which was never sent"
                )
            # else: our Reply crossed the Cancel; nothing to do
        elif isinstance(body, Ping):
            self._queue(Pong(body.nonce))
        elif isinstance(body, Pong):
            pass  # any received byte proves liveness; the driver tracks that
        elif isinstance(body, Goodbye):
            self._set_state(CLOSED)
            self._events.append(ConnectionTerminated(body.code, body.reason, remote=True))
        else:
            raise _PeerViolation(
                f"protocol error: unexpected {type(body).__name__} frame while {self.state.value}"
            )

    def _handle_stream_item(self, body: StreamItem) -> None:
        request_id = body.request_id
        granted = self._granted.get(request_id)
        if granted is None:
            if request_id in self._cancelled:
                return  # crossed our Cancel
            raise _PeerViolation(
                f"protocol error: StreamItem for request id {request_id}, which is not a "
                "stream of ours"
            )
        if granted < 1:
            raise _PeerViolation(
                f"protocol error: StreamItem for stream {request_id} beyond the granted credit"
            )
        self._granted[request_id] = granted - 1
        self._events.append(StreamItemReceived(request_id, body.value))

    def _handle_stream_credit(self, body: StreamCredit) -> None:
        request_id = body.request_id
        if body.n < 1:
            raise _PeerViolation(f"protocol error: StreamCredit of {body.n} for {request_id}")
        credit = self._credit.get(request_id)
        if credit is not None:
            self._credit[request_id] = credit + body.n
            self._events.append(StreamCreditReceived(request_id, body.n))
        elif request_id in self._serving or request_id > self._peer_last_request_id:
            raise _PeerViolation(
                f"protocol error: StreamCredit for request id {request_id}, which is not a stream"
            )
        # else: our Reply crossed the credit; nothing to do

    def _check_port(self, port_id: int, returned: bool) -> None:
        # Either side may name an end a renderer created (< 0); only renderers give back.
        if port_id == 0 or (returned and self.role is Role.RENDERER):
            raise _PeerViolation(
                f"protocol error: port id {port_id}{' (returned)' if returned else ''} "
                f"is not valid from {'main' if self.role is Role.RENDERER else 'a renderer'}"
            )

    def _check_refs(self, refs: Sequence[PortRef]) -> None:
        # Each reference makes the receiver build a port and route (or close) it:
        # far more work than its few bytes, so a frame carries a bounded number.
        if len(refs) > MAX_PORTS_PER_FRAME:
            raise _PeerViolation(
                f"protocol error: a frame carries {len(refs)} port references; "
                f"at most {MAX_PORTS_PER_FRAME} may travel in one message"
            )
        # Main hands out ends by its own ids (> 0) only.
        for ref in refs:
            if ref.id == 0 or (self.role is Role.RENDERER and ref.id < 0):
                raise _PeerViolation(
                    f"protocol error: port id {ref.id} is not valid in a port sent by "
                    f"{'main' if self.role is Role.RENDERER else 'a renderer'}"
                )

    @staticmethod
    def _check_peer_limit(limit: int, frame: str) -> int:
        # 0: not said. Below the minimum, not even an error reply would fit.
        if limit and limit < MIN_MAX_FRAME_SIZE:
            raise _PeerViolation(
                f"protocol error: {frame} announces a max_frame_size of {limit} bytes; "
                f"it must be 0 (not said) or at least {MIN_MAX_FRAME_SIZE}"
            )
        return limit

    def _handle_handshake(self, body: Body) -> None:
        if self.role is Role.MAIN:
            if not isinstance(body, Hello):
                raise _PeerViolation(
                    f"protocol error: expected Hello as the first frame, got {type(body).__name__}"
                )
            if not hmac.compare_digest(body.token.encode(), self._token.encode()):
                raise _PeerViolation(
                    "authentication failed: wrong token", CloseCode.AUTHENTICATION_FAILED
                )
            if body.version != PROTOCOL_VERSION:
                raise _PeerViolation(
                    f"protocol version mismatch: the renderer speaks version {body.version}, "
                    f"main speaks version {PROTOCOL_VERSION}",
                    CloseCode.VERSION_MISMATCH,
                )
            self._peer_max_frame_size = self._check_peer_limit(body.max_frame_size, "Hello")
            if self._admit is not None:
                self.renderer_id = self._admit()  # may raise HandshakeRefused
            self._queue(Welcome(PROTOCOL_VERSION, self.renderer_id, self._max_frame_size))
            self._set_state(OPEN)
            self._events.append(HandshakeCompleted(self.renderer_id, body.process_id))
        elif isinstance(body, Welcome):
            if body.version != PROTOCOL_VERSION:
                raise _PeerViolation(
                    f"protocol version mismatch: main speaks version {body.version}, "
                    f"the renderer speaks version {PROTOCOL_VERSION}",
                    CloseCode.VERSION_MISMATCH,
                )
            self._peer_max_frame_size = self._check_peer_limit(body.max_frame_size, "Welcome")
            self.renderer_id = body.renderer_id
            self._set_state(OPEN)
            self._events.append(HandshakeCompleted(body.renderer_id, 0))
        elif isinstance(body, Goodbye):
            self._set_state(CLOSED)
            self._events.append(ConnectionTerminated(body.code, body.reason, remote=True))
        else:
            raise _PeerViolation(
                f"protocol error: expected Welcome as the first frame, got {type(body).__name__}"
            )
