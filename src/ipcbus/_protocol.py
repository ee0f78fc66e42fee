"""The ipcbus protocol core: one connection's state, without I/O.

Rules (docs/protocol.md has the long form):

1. ``Connection`` takes bytes (``receive_data``, ``receive_eof``) and commands
   (``start_request``, ``send_message``, ``send_reply``, ``cancel_request``,
   ``send_ping``, ``close``); it gives bytes (``data_to_send``) and events
   (``events_received``). The driver flushes after every call, then dispatches.
   A read of one usual frame may be offered to ``receive_alone`` first, which
   returns its event, or takes nothing and leaves the read to ``receive_data``.
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
   by the core with a CANCELLED error Reply, so ``_cancelled`` always empties
   (and holds at most ``MAX_CANCELLED`` ids: past that, the oldest are
   forgotten and a late Reply at or below ``_cancelled_to`` is dropped).
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

``Connection`` is one object cut in three by direction, so each part reads
on its own: this module has the states and their changes, the handshake and
what the driver takes out (``data_to_send``, ``events_received``);
``_receiving`` the peer's bytes in (rule 3), ``_meaning`` what each frame
means (rules 4, 7, 8); ``_sending`` our commands (rules 4, 5, 7).
``_states`` holds the roles, states and errors.

This module imports only the standard library and msgspec.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from ._events import ConnectionTerminated, Event, HandshakeCompleted
from ._framing import FrameDecoder
from ._receiving import ALL as _ALL
from ._receiving import Receiving
from ._sending import Sending, prepare_message
from ._states import (
    CLOSED,
    HANDSHAKE,
    HANDSHAKE_MAX_FRAME_SIZE,
    OPEN,
    HandshakeRefused,
    LocalProtocolError,
    PeerViolation,
    Role,
    State,
)
from ._wire import (
    DEFAULT_MAX_FRAME_SIZE,
    MIN_MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    Body,
    CloseCode,
    Goodbye,
    Hello,
    Welcome,
    check_max_frame_size,
    peer_reason,
)

__all__ = (
    "CLOSED",
    "HANDSHAKE",
    "HANDSHAKE_MAX_FRAME_SIZE",
    "OPEN",
    "Connection",
    "HandshakeRefused",
    "LocalProtocolError",
    "Role",
    "State",
    "prepare_message",
)


class Connection(Receiving, Sending):
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

    __slots__ = (
        "_admit",
        "_awaiting",
        "_cancelled",
        "_cancelled_to",
        "_credit",
        "_events",
        "_frames",
        "_granted",
        "_holding",
        "_max_frame_size",
        "_next_request_id",
        "_outbox",
        "_peer_last_request_id",
        "_serving",
        "_token",
        "batch",
        "more",
        "peer_max_frame_size",
        "pending_output",
        "renderer_id",
        "role",
        "state",
    )

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
        #: The largest frame body the peer accepts, from its handshake (0: not said).
        self.peer_max_frame_size = 0
        self._frames = FrameDecoder(min(max_frame_size, HANDSHAKE_MAX_FRAME_SIZE), new_buffer)
        self._holding = False  # not self._frames.idle(), kept by the reads that change it
        #: Input bytes one read takes frames from before it stops to let the
        #: driver handle their events (``more``, ``receive_more``); the default
        #: takes them all. A driver that sets it keeps each batch's objects few
        #: enough to stay in the CPU's cache (a 256 KiB read of small frames is
        #: some 20,000 events at once otherwise).
        self.batch = _ALL
        #: A read stopped after ``batch`` bytes and whole frames remain:
        #: call ``receive_more`` (after handling the events) until it is False.
        self.more = False
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
        #: Cancelled ids up to this one were forgotten unacknowledged (MAX_CANCELLED).
        self._cancelled_to = 0
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

    # ---- the state machine and the handshake ---------------------------

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

    @staticmethod
    def _check_peer_limit(limit: int, frame: str) -> int:
        # 0: not said. Below the minimum, not even an error reply would fit.
        if limit and limit < MIN_MAX_FRAME_SIZE:
            raise PeerViolation(
                f"protocol error: {frame} announces a max_frame_size of {limit} bytes; "
                f"it must be 0 (not said) or at least {MIN_MAX_FRAME_SIZE}"
            )
        return limit

    def _handle_handshake(self, body: Body) -> None:
        if self.role is Role.MAIN:
            if not isinstance(body, Hello):
                # A Goodbye says why (a page's broken WebSocket framing is heard as one).
                reason = isinstance(body, Goodbye) and peer_reason(body.reason)
                why = f": {reason}" if reason else ""
                raise PeerViolation(
                    "protocol error: expected Hello as the first frame, "
                    f"got {type(body).__name__}{why}"
                )
            if not hmac.compare_digest(body.token.encode(), self._token.encode()):
                raise PeerViolation(
                    "authentication failed: wrong token", CloseCode.AUTHENTICATION_FAILED
                )
            if body.version != PROTOCOL_VERSION:
                raise PeerViolation(
                    f"protocol version mismatch: the renderer speaks version {body.version}, "
                    f"main speaks version {PROTOCOL_VERSION}",
                    CloseCode.VERSION_MISMATCH,
                )
            self.peer_max_frame_size = self._check_peer_limit(body.max_frame_size, "Hello")
            if self._admit is not None:
                self.renderer_id = self._admit()  # may raise HandshakeRefused
            self._queue(Welcome(PROTOCOL_VERSION, self.renderer_id, self._max_frame_size))
            self._set_state(OPEN)
            self._events.append(HandshakeCompleted(self.renderer_id, body.process_id))
        elif isinstance(body, Welcome):
            if body.version != PROTOCOL_VERSION:
                raise PeerViolation(
                    f"protocol version mismatch: main speaks version {body.version}, "
                    f"the renderer speaks version {PROTOCOL_VERSION}",
                    CloseCode.VERSION_MISMATCH,
                )
            self.peer_max_frame_size = self._check_peer_limit(body.max_frame_size, "Welcome")
            if body.renderer_id < 1:
                raise PeerViolation(
                    f"protocol error: a Welcome with renderer id {body.renderer_id} "
                    "(ids start at 1)"
                )
            self.renderer_id = body.renderer_id
            self._set_state(OPEN)
            self._events.append(HandshakeCompleted(body.renderer_id, 0))
        elif isinstance(body, Goodbye):
            self._set_state(CLOSED)
            self._events.append(
                ConnectionTerminated(body.code, peer_reason(body.reason), remote=True)
            )
        else:
            raise PeerViolation(
                f"protocol error: expected Welcome as the first frame, got {type(body).__name__}"
            )
