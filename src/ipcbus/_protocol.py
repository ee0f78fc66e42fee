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

This module imports only the standard library and msgspec.
"""

from __future__ import annotations

import enum
import hmac
from typing import Any

import msgspec

from ._errors import FrameTooLargeError, ProtocolError
from ._events import (
    ConnectionTerminated,
    Event,
    HandshakeCompleted,
    MessageReceived,
    ReplyReceived,
    RequestCancelled,
    RequestReceived,
)
from ._framing import FrameDecoder, append_frame
from ._wire import (
    DEFAULT_MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
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
    Reply,
    Request,
    RequestKind,
    Welcome,
    raw_args,
)

__all__ = (
    "HANDSHAKE_MAX_FRAME_SIZE",
    "Connection",
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


class LocalProtocolError(ProtocolError):
    """We misused the core (a command in a state that does not allow it)."""


class _PeerViolation(ProtocolError):
    """Internal: the peer broke the protocol; ends the connection."""

    def __init__(self, message: str, code: CloseCode = CloseCode.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


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
        process_id: renderer only: our process id, sent in Hello.
        max_frame_size: largest body accepted from the peer.
    """

    def __init__(
        self,
        role: Role,
        *,
        token: str,
        renderer_id: int = 0,
        process_id: int = 0,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        self.role = role
        self.state = State.HANDSHAKE
        self.renderer_id = renderer_id
        self._token = token
        # Until the handshake is done the peer is unauthenticated: a Hello or
        # Welcome is tiny, so accept no more than HANDSHAKE_MAX_FRAME_SIZE.
        self._max_frame_size = max_frame_size
        self._frames = FrameDecoder(min(max_frame_size, HANDSHAKE_MAX_FRAME_SIZE))
        self._encoder = msgspec.msgpack.Encoder()
        self._outbox = bytearray()
        self._events: list[Event] = []
        self._next_request_id = 1
        self._peer_last_request_id = 0
        self._awaiting: set[int] = set()
        self._cancelled: set[int] = set()
        self._serving: set[int] = set()
        if role is Role.RENDERER:
            self._queue(Hello(PROTOCOL_VERSION, token, process_id))

    # ---- outputs -------------------------------------------------------

    def data_to_send(self) -> bytearray:
        """Take every byte queued for the peer (possibly none)."""
        # Always hand over a list/buffer the core no longer holds: returning the
        # live (empty) one would let later frames appear in the caller's hands
        # and then be taken a second time.
        out, self._outbox = self._outbox, bytearray()
        return out

    def events_received(self) -> list[Event]:
        """Take every event since the last call, oldest first."""
        events, self._events = self._events, []  # never the live list (see above)
        return events

    @property
    def pending_output(self) -> int:
        """Bytes queued for the peer and not yet taken by ``data_to_send``."""
        return len(self._outbox)

    @property
    def serving(self) -> int:
        """Number of the peer's requests we have not answered yet."""
        return len(self._serving)

    @property
    def awaiting(self) -> int:
        """Number of our requests the peer has not answered yet."""
        return len(self._awaiting)

    # ---- inputs --------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes from the peer. Never raises for anything the peer sent."""
        if self.state is State.CLOSED:
            return
        self._frames.feed(data)
        try:
            # _handle may close the connection: re-read the state for every frame.
            while self._accepting() and (raw := self._frames.next_body()) is not None:
                self._handle(_body_decoder.decode(raw))
        except FrameTooLargeError as exc:
            self._terminate(CloseCode.FRAME_TOO_LARGE, f"protocol error: {exc}")
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            # msgspec raises UnicodeDecodeError for a str that is not UTF-8 and
            # RecursionError for deeply nested arrays (even inside a Raw field):
            # both are the peer's malformed bytes, not our bug.
            self._terminate(CloseCode.PROTOCOL_ERROR, f"protocol error: malformed frame: {exc}")
        except _PeerViolation as exc:
            self._terminate(exc.code, str(exc))

    def receive_eof(self, why: str | None = None) -> None:
        """The peer's byte stream ended (or the driver gave up on it). Idempotent.

        Args:
            why: the driver's account (write stalled, heartbeat timeout...),
                used instead of the default reason.
        """
        if self.state is State.CLOSED:
            return
        reason = f"connection lost: {why or 'the peer closed the stream without a Goodbye'}"
        code = None
        if self._frames.buffered:
            # A truncated frame: a protocol error, unless the peer died (the
            # driver knows an exit code and gives that precedence).
            reason += f" (in the middle of a frame, {self._frames.buffered} bytes buffered)"
            code = CloseCode.PROTOCOL_ERROR
        self._set_state(State.CLOSED)
        self._events.append(ConnectionTerminated(code, reason, remote=True))

    # ---- commands ------------------------------------------------------

    def send_message(self, channel: str, args: Any) -> None:
        """Queue a fire-and-forget message. ``args`` is an argument list or Raw.

        Raises:
            TypeError, OverflowError, msgspec.EncodeError: ``args`` cannot be
                encoded; nothing was queued.
        """
        self._require_open("send a message")
        self._queue(Message(channel, raw_args(args)))

    def send_prepared(self, frame: bytes) -> None:
        """Queue a frame made by :func:`prepare_message` (one encoding, many peers)."""
        self._require_open("send a message")
        self._outbox += frame

    def start_request(self, kind: RequestKind, channel: str, args: Any) -> int:
        """Queue a request and return its id; its Reply comes as ``ReplyReceived``.

        Raises:
            TypeError, OverflowError, msgspec.EncodeError: ``args`` cannot be
                encoded; nothing was queued.
        """
        self._require_open("start a request")
        request_id = self._next_request_id
        self._next_request_id += 1
        self._queue(Request(request_id, kind, channel, raw_args(args)))
        self._awaiting.add(request_id)
        return request_id

    def cancel_request(self, request_id: int) -> None:
        """Give up on our request ``request_id``; tell the peer if still open."""
        if request_id not in self._awaiting:
            return  # already answered, or never ours: nothing to cancel
        self._awaiting.remove(request_id)
        if self.state is State.OPEN:
            self._cancelled.add(request_id)
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
        if request_id not in self._serving or self.state is not State.OPEN:
            return False
        self._queue(Reply(request_id, ok, raw_args(value)))
        self._serving.remove(request_id)
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
        if self.state is State.CLOSED:
            return
        self._queue(Goodbye(code, reason))
        self._set_state(State.CLOSED)
        self._events.append(ConnectionTerminated(code, reason, remote=False))

    # ---- internals -----------------------------------------------------

    def _accepting(self) -> bool:
        return self.state is not State.CLOSED

    def _queue(self, body: Body) -> None:
        append_frame(self._encoder, body, self._outbox)

    def _require_open(self, action: str) -> None:
        if self.state is not State.OPEN:
            raise LocalProtocolError(f"cannot {action} while the connection is {self.state.value}")

    def _set_state(self, state: State) -> None:
        # The one place states change: HANDSHAKE -> OPEN -> CLOSED, or straight to CLOSED.
        current = self.state
        if current is State.CLOSED or (current is State.OPEN and state is State.HANDSHAKE):
            raise LocalProtocolError(f"illegal transition {current.value} -> {state.value}")
        self.state = state
        if state is State.OPEN:
            self._frames.max_frame_size = self._max_frame_size
        if state is State.CLOSED:
            self._awaiting.clear()
            self._cancelled.clear()
            self._serving.clear()

    def _terminate(self, code: CloseCode, reason: str) -> None:
        self._queue(Goodbye(code, reason))
        self._set_state(State.CLOSED)
        self._events.append(ConnectionTerminated(code, reason, remote=False))

    def _handle(self, body: Body) -> None:
        if self.state is State.HANDSHAKE:
            self._handle_handshake(body)
            return
        # Ordered by how often each arrives.
        if isinstance(body, Request):
            request_id = body.request_id
            if request_id <= self._peer_last_request_id:
                raise _PeerViolation(
                    f"protocol error: request id {request_id} reused or out of order "
                    f"(last was {self._peer_last_request_id})"
                )
            self._peer_last_request_id = request_id
            self._serving.add(request_id)
            self._events.append(RequestReceived(request_id, body.kind, body.channel, body.args))
        elif isinstance(body, Reply):
            request_id = body.request_id
            if request_id in self._awaiting:
                self._awaiting.remove(request_id)
                self._events.append(ReplyReceived(request_id, body.ok, body.value))
            elif request_id in self._cancelled:
                self._cancelled.remove(request_id)  # crossed our Cancel
            else:
                raise _PeerViolation(
                    f"protocol error: Reply to request id {request_id}, which was never sent"
                )
        elif isinstance(body, Message):
            self._events.append(MessageReceived(body.channel, body.args))
        elif isinstance(body, Cancel):
            request_id = body.request_id
            if request_id in self._serving:
                # Every request gets exactly one Reply, so the caller can forget
                # the id: a cancelled one gets this acknowledgement.
                self._serving.remove(request_id)
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
            self._set_state(State.CLOSED)
            self._events.append(ConnectionTerminated(body.code, body.reason, remote=True))
        else:
            raise _PeerViolation(
                f"protocol error: unexpected {type(body).__name__} frame while {self.state.value}"
            )

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
            self._queue(Welcome(PROTOCOL_VERSION, self.renderer_id))
            self._set_state(State.OPEN)
            self._events.append(HandshakeCompleted(self.renderer_id, body.process_id))
        elif isinstance(body, Welcome):
            if body.version != PROTOCOL_VERSION:
                raise _PeerViolation(
                    f"protocol version mismatch: main speaks version {body.version}, "
                    f"the renderer speaks version {PROTOCOL_VERSION}",
                    CloseCode.VERSION_MISMATCH,
                )
            self.renderer_id = body.renderer_id
            self._set_state(State.OPEN)
            self._events.append(HandshakeCompleted(body.renderer_id, 0))
        elif isinstance(body, Goodbye):
            self._set_state(State.CLOSED)
            self._events.append(ConnectionTerminated(body.code, body.reason, remote=True))
        else:
            raise _PeerViolation(
                f"protocol error: expected Welcome as the first frame, got {type(body).__name__}"
            )
