"""Events the protocol core emits (docs/protocol.md, "Events").

Events are past-tense nouns: each records something the peer did, or that the
connection ended. The driver reads them from ``Connection.events_received()``.

This module imports only the standard library and msgspec.
"""

from __future__ import annotations

import msgspec

from ._wire import CloseCode, Message, PortRef, Reply, Request

__all__ = (
    "ConnectionTerminated",
    "Event",
    "HandshakeCompleted",
    "MessageReceived",
    "PortClosed",
    "PortMessageReceived",
    "ReplyReceived",
    "RequestCancelled",
    "RequestReceived",
    "StreamCreditReceived",
    "StreamItemReceived",
)


class HandshakeCompleted(msgspec.Struct, frozen=True):
    """Both handshake frames have crossed; messages may flow.

    ``process_id`` is the renderer's own claim (main side) or main's view of
    nothing (0, renderer side); ``renderer_id`` is the id main assigned.
    """

    renderer_id: int
    process_id: int


#: The peer sent a fire-and-forget message (with ports, if ``post_message``):
#: the decoded :class:`~ipcbus._wire.Message` frame itself. The three busiest
#: events are their frames, handed over as decoded, rather than copies of their
#: fields into twin objects (one allocation less per frame, on every message).
MessageReceived = Message

#: The peer made a request (a :class:`~ipcbus._wire.Request` frame); answer
#: it with ``Connection.send_reply``.
RequestReceived = Request

#: The peer answered one of our requests (a :class:`~ipcbus._wire.Reply` frame).
ReplyReceived = Reply


class RequestCancelled(msgspec.Struct, frozen=True):
    """The peer gave up on a request it made; stop serving it."""

    request_id: int


class PortMessageReceived(msgspec.Struct, frozen=True):
    """A :class:`~ipcbus._wire.PortMessage` arrived (see its docstring)."""

    port_id: int
    data: msgspec.Raw
    ports: list[PortRef]
    returned: bool


class PortClosed(msgspec.Struct, frozen=True):
    """A :class:`~ipcbus._wire.PortClose` arrived (see its docstring)."""

    port_id: int
    returned: bool


class StreamItemReceived(msgspec.Struct, frozen=True):
    """The generator serving our stream request ``request_id`` yielded ``value``."""

    request_id: int
    value: msgspec.Raw


class StreamCreditReceived(msgspec.Struct, frozen=True):
    """The consumer of the stream we serve for ``request_id`` accepts more items."""

    request_id: int
    n: int


class ConnectionTerminated(msgspec.Struct, frozen=True):
    """The connection is over; no further events follow.

    Attributes:
        code: the Goodbye's code, or ``None`` if the stream ended without one.
        reason: human-readable, for logs and error messages.
        remote: ``True`` if the peer ended it (Goodbye or EOF), ``False`` if we did.
    """

    code: CloseCode | None
    reason: str
    remote: bool


Event = (
    HandshakeCompleted
    | MessageReceived
    | RequestReceived
    | ReplyReceived
    | RequestCancelled
    | ConnectionTerminated
    | PortMessageReceived
    | PortClosed
    | StreamItemReceived
    | StreamCreditReceived
)
