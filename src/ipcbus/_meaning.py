"""What each frame from the peer means: its checks and bookkeeping, and the event it makes.

A base class of ``_receiving.Receiving`` (so of ``Connection``), for the
frames ``_walk`` does not take inline: rules 3, 4, 7 and 8 of ``_protocol``'s
docstring (request ids, exactly one Reply per request, stream credit, port
ids) are enforced here, by raising ``PeerViolation``, which the receiving
side turns into a Goodbye. This module imports only the standard library and
msgspec.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._events import (
    ConnectionTerminated,
    Event,
    PortClosed,
    PortMessageReceived,
    RequestCancelled,
    StreamCreditReceived,
    StreamItemReceived,
)
from ._states import CLOSED, HANDSHAKE, PeerViolation, Role, State
from ._wire import (
    MAX_PORTS_PER_FRAME,
    STREAM,
    Body,
    Cancel,
    ErrorInfo,
    ErrorKind,
    Goodbye,
    Message,
    Ping,
    Pong,
    PortClose,
    PortMessage,
    PortRef,
    Reply,
    Request,
    StreamCredit,
    StreamItem,
    peer_reason,
    raw_args,
)

__all__ = ("CANCEL_ACK", "Meaning")

#: The Reply the core sends by itself for a request the peer cancelled.
CANCEL_ACK = ErrorInfo(ErrorKind.CANCELLED, "CancelledError", "cancelled by the caller")


class Meaning:
    """Each frame's checks, bookkeeping and event: ``Connection``'s rules for input."""

    if not TYPE_CHECKING:  # what these methods keep is in Connection's slots, which
        __slots__ = ()  # mypy cannot see from here: it checks a mixin alone

    # Kept by Connection; declared here for the type checker.
    role: Role
    state: State
    _events: list[Event]
    _awaiting: dict[int, None]
    _cancelled: dict[int, None]
    _cancelled_to: int
    _serving: dict[int, None]
    _granted: dict[int, int]
    _credit: dict[int, int]
    _peer_last_request_id: int

    if TYPE_CHECKING:

        def _queue(self, body: Body) -> None: ...
        def _set_state(self, state: State) -> None: ...
        def _handle_handshake(self, body: Body) -> None: ...

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
                raise PeerViolation(
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
            elif request_id <= self._cancelled_to:
                pass  # crossed a Cancel too old to be remembered (MAX_CANCELLED)
            else:
                raise PeerViolation(
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
                self._queue(Reply(request_id, False, raw_args(CANCEL_ACK)))
                self._events.append(RequestCancelled(request_id))
            elif request_id > self._peer_last_request_id:
                raise PeerViolation(
                    f"protocol error: Cancel for request id {request_id}, which was never sent"
                )
            # else: our Reply crossed the Cancel; nothing to do
        elif isinstance(body, Ping):
            self._queue(Pong(body.nonce))
        elif isinstance(body, Pong):
            pass  # any received byte proves liveness; the driver tracks that
        elif isinstance(body, Goodbye):
            self._set_state(CLOSED)
            self._events.append(
                ConnectionTerminated(body.code, peer_reason(body.reason), remote=True)
            )
        else:
            raise PeerViolation(
                f"protocol error: unexpected {type(body).__name__} frame while {self.state.value}"
            )

    def _handle_stream_item(self, body: StreamItem) -> None:
        request_id = body.request_id
        granted = self._granted.get(request_id)
        if granted is None:
            if request_id in self._cancelled or (
                request_id <= self._cancelled_to and request_id not in self._awaiting
            ):
                return  # crossed our Cancel
            raise PeerViolation(
                f"protocol error: StreamItem for request id {request_id}, which is not a "
                "stream of ours"
            )
        if granted < 1:
            raise PeerViolation(
                f"protocol error: StreamItem for stream {request_id} beyond the granted credit"
            )
        self._granted[request_id] = granted - 1
        self._events.append(StreamItemReceived(request_id, body.value))

    def _handle_stream_credit(self, body: StreamCredit) -> None:
        request_id = body.request_id
        if body.n < 1:
            raise PeerViolation(f"protocol error: StreamCredit of {body.n} for {request_id}")
        credit = self._credit.get(request_id)
        if credit is not None:
            self._credit[request_id] = credit + body.n
            self._events.append(StreamCreditReceived(request_id, body.n))
        elif request_id in self._serving or request_id > self._peer_last_request_id:
            raise PeerViolation(
                f"protocol error: StreamCredit for request id {request_id}, which is not a stream"
            )
        # else: our Reply crossed the credit; nothing to do

    def _check_port(self, port_id: int, returned: bool) -> None:
        # Either side may name an end a renderer created (< 0); only renderers give back.
        if port_id == 0 or (returned and self.role is Role.RENDERER):
            raise PeerViolation(
                f"protocol error: port id {port_id}{' (returned)' if returned else ''} "
                f"is not valid from {'main' if self.role is Role.RENDERER else 'a renderer'}"
            )

    def _check_refs(self, refs: Sequence[PortRef]) -> None:
        # Each reference makes the receiver build a port and route (or close) it:
        # far more work than its few bytes, so a frame carries a bounded number.
        if len(refs) > MAX_PORTS_PER_FRAME:
            raise PeerViolation(
                f"protocol error: a frame carries {len(refs)} port references; "
                f"at most {MAX_PORTS_PER_FRAME} may travel in one message"
            )
        # Main hands out ends by its own ids (> 0) only.
        for ref in refs:
            if ref.id == 0 or (self.role is Role.RENDERER and ref.id < 0):
                raise PeerViolation(
                    f"protocol error: port id {ref.id} is not valid in a port sent by "
                    f"{'main' if self.role is Role.RENDERER else 'a renderer'}"
                )
