"""What we send: the protocol core's commands, each queueing frames for the peer.

The sending half of ``Connection`` (``_protocol``), a base class so the hot
path stays one object's methods: request ids, stream credit we may spend,
and the peer's ``max_frame_size``, which no frame we queue may exceed.
This module imports only the standard library and msgspec.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from ._errors import FrameTooLargeError
from ._events import ConnectionTerminated, Event
from ._framing import HEADER_SIZE, append_frame, write_size
from ._states import CLOSED, OPEN, LocalProtocolError, State
from ._wire import (
    MAX_PORTS_PER_FRAME,
    Body,
    Cancel,
    CloseCode,
    ErrorInfo,
    Goodbye,
    Message,
    Ping,
    PortClose,
    PortMessage,
    PortRef,
    Reply,
    Request,
    RequestKind,
    StreamCredit,
    StreamItem,
    fit_error,
    raw_args,
)

__all__ = ("ENCODER", "Sending", "prepare_message")

#: Stateless, so one for every connection.
ENCODER = msgspec.msgpack.Encoder()

#: A port reference at its largest on the wire (an array of four 9-byte ints), for
#: ``check_message``.
_LARGEST_REF = PortRef(-(2**63), -(2**63), -(2**63), -(2**63))


_REF_SIZE = len(ENCODER.encode(_LARGEST_REF))
#: More than a Message or PortMessage adds around its payload, its channel's
#: UTF-8 (4 bytes a character at most) and its port references: array headers,
#: tag, port id, flag.
_AROUND = 64

#: Cancelled requests remembered one by one until the peer acknowledges them.
#: Past this, the oldest is forgotten and ``_cancelled_to`` rises to its id: a
#: peer that never acknowledges (stuck, or hostile) costs this many entries, not
#: one per call we ever gave up on.
MAX_CANCELLED = 1024


def _refs(n: int) -> list[PortRef]:
    return [_LARGEST_REF] * n


def prepare_message(channel: str, args: Any) -> bytes:
    """Encode a Message frame once, for ``Connection.send_prepared`` on many connections.

    Raises:
        TypeError, OverflowError, msgspec.EncodeError: ``args`` cannot be encoded.
    """
    out = bytearray()
    append_frame(ENCODER, Message(channel, raw_args(args)), out)
    return bytes(out)


class Sending:
    """Commands in, frames queued: ``Connection``'s outputs."""

    if not TYPE_CHECKING:  # what these methods keep is in Connection's slots, which
        __slots__ = ()  # mypy cannot see from here: it checks a mixin alone

    # Kept by Connection; declared here for the type checker.
    state: State
    pending_output: int
    _outbox: bytearray
    _events: list[Event]
    _next_request_id: int
    peer_max_frame_size: int
    _awaiting: dict[int, None]
    _cancelled: dict[int, None]
    _cancelled_to: int
    _serving: dict[int, None]
    _granted: dict[int, int]
    _credit: dict[int, int]

    if TYPE_CHECKING:

        def _set_state(self, state: State) -> None: ...

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

        ``args`` is the encoded arguments (``msgspec.Raw``), as for
        :meth:`send_message`.

        Raises:
            FrameTooLargeError: it could be over the limit the peer announced.
        """
        limit = self.peer_max_frame_size
        # Encoded to measure only when a bound on its size is over the limit
        if limit and len(args) + 4 * len(channel) + _AROUND + _REF_SIZE * ports > limit:
            self._check_size(len(ENCODER.encode(Message(channel, args, tuple(_refs(ports))))))

    def check_port_message(self, port_id: int, data: Any, ports: int) -> None:
        """:meth:`check_message` for a message on port end ``port_id``."""
        limit = self.peer_max_frame_size
        if limit and len(data) + _AROUND + _REF_SIZE * ports > limit:
            body = PortMessage(port_id, data, _refs(ports), returned=True)
            self._check_size(len(ENCODER.encode(body)))

    def send_prepared(self, frame: bytes) -> None:
        """Queue a frame made by :func:`prepare_message` (one encoding, many peers).

        A driver may instead hand ``frame`` to the transport itself while
        :attr:`pending_output` is 0 (nothing queued to go before it) and it
        is within :attr:`peer_max_frame_size`: a broadcast does, once per
        renderer.

        Raises:
            LocalProtocolError: the connection is not open.
            FrameTooLargeError: over the limit the peer announced; nothing
                was queued.
        """
        if self.state is not OPEN:
            self._require_open("send a message")
        size = len(frame) - HEADER_SIZE
        if self.peer_max_frame_size and size > self.peer_max_frame_size:
            self._check_size(size)  # raises
        self._outbox += frame
        self.pending_output = len(self._outbox)

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
            cancelled = self._cancelled
            cancelled[request_id] = None
            if len(cancelled) > MAX_CANCELLED:
                # dicts keep insertion order: the first is the longest cancelled
                oldest = next(iter(cancelled))
                del cancelled[oldest]
                self._cancelled_to = max(self._cancelled_to, oldest)
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
        size = append_frame(ENCODER, Reply(request_id, False, raw_args(info)), out)
        limit = self.peer_max_frame_size
        if limit and size > limit:
            del out[-(HEADER_SIZE + size) :]
            around = size - len(ENCODER.encode(info))  # the Reply's own fields
            reply = Reply(request_id, False, raw_args(fit_error(info, limit - around)))
            size = append_frame(ENCODER, reply, out)
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
        append_frame(ENCODER, body, self._outbox)
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
            ENCODER.encode_into(body, out, start + HEADER_SIZE)
        except BaseException:
            del out[start:]
            raise
        self.pending_output = queued = len(out)
        size = queued - start - HEADER_SIZE
        write_size(out, start, size)
        if self.peer_max_frame_size and size > self.peer_max_frame_size:
            self._unqueue(size)  # raises

    def _unqueue(self, size: int) -> None:
        """Take back the frame just queued, of ``size`` body bytes, and raise for it."""
        del self._outbox[-(HEADER_SIZE + size) :]
        self.pending_output = len(self._outbox)
        self._check_size(size)  # raises

    def _check_size(self, size: int) -> None:
        limit = self.peer_max_frame_size
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
