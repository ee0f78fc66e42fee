"""Frame bodies: what one frame carries (docs/protocol.md, "Frame bodies").

Every body is a msgpack array whose first element is an integer tag naming the
frame type; the rest are that type's fields in declaration order. msgspec
decodes a frame against the tagged union :data:`Body`, so an unknown tag or a
field of the wrong type is a ``msgspec.ValidationError`` and never an object.

Arguments travel as one msgpack array (``args``) and stay :class:`msgspec.Raw`
on arrival until the receiver knows which callback, and so which annotations,
will take them. Encoding needs no Raw: a Struct field is encoded from whatever
it holds, so senders put the argument list there directly and encode the whole
frame in one pass.

This module imports only the standard library and msgspec.
"""

from __future__ import annotations

import enum
from typing import Any, Final

import msgspec

__all__ = (
    "DEFAULT_MAX_FRAME_SIZE",
    "MAX_PORTS_PER_FRAME",
    "MIN_MAX_FRAME_SIZE",
    "PROTOCOL_VERSION",
    "Body",
    "Cancel",
    "CloseCode",
    "ErrorInfo",
    "ErrorKind",
    "Goodbye",
    "Hello",
    "Message",
    "Ping",
    "Pong",
    "PortClose",
    "PortMessage",
    "PortRef",
    "Reply",
    "Request",
    "RequestKind",
    "StreamCredit",
    "StreamItem",
    "Welcome",
    "peer_reason",
)

#: Bumped on any change a peer of the previous version would misread.
PROTOCOL_VERSION: Final = 1

#: Largest frame body accepted by default (64 MiB); see ``max_frame_size``.
DEFAULT_MAX_FRAME_SIZE: Final = 64 * 1024 * 1024

#: Smallest ``max_frame_size`` a side may have and announce (1 KiB): an error
#: reply is cut to fit the peer's limit, and this leaves room for a useful one
#: (docs/protocol.md, "Handshake"). 0 in a Hello or Welcome means "not said".
MIN_MAX_FRAME_SIZE: Final = 1024

#: Most port references one ``Message`` or ``PortMessage`` may carry. Each one
#: costs the receiver far more work than its 3-13 bytes (a port object, routing
#: entries, a close to send back), so a frame over the limit ends the connection;
#: Electron apps transfer a handful at a time (docs/protocol.md, "Frame bodies").
MAX_PORTS_PER_FRAME: Final = 64


class RequestKind(enum.IntEnum):
    """What a :class:`Request` asks for."""

    INVOKE = 1  # answered by the one handle(ch) handler
    SYNC = 2  # send_sync: delivered to on(ch) listeners, answered via return_value
    STREAM = 3  # stream: served by an async generator; StreamItems, then one Reply


# The kinds by plain names, for hot paths (``RequestKind.INVOKE`` is looked up
# through ``EnumType.__getattr__``, six times slower than a global).
INVOKE, SYNC, STREAM = RequestKind.INVOKE, RequestKind.SYNC, RequestKind.STREAM


class ErrorKind(enum.IntEnum):
    """Why a :class:`Reply` failed; decides the exception the caller sees."""

    REMOTE = 1  # the handler or listener raised -> RemoteError
    NO_HANDLER = 2  # nobody serves the channel -> NoHandlerError
    VALIDATION = 3  # arguments did not fit the annotations -> ValidationError
    CANCELLED = 4  # the handler was cancelled before replying -> RemoteError


class CloseCode(enum.IntEnum):
    """Why a :class:`Goodbye` ends the connection."""

    NORMAL = 0
    PROTOCOL_ERROR = 1
    AUTHENTICATION_FAILED = 2
    VERSION_MISMATCH = 3
    FRAME_TOO_LARGE = 4
    SHUTDOWN = 5
    TOO_MANY_CONNECTIONS = 6


class _Body(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Base of every frame body.

    ``gc=False``: a body refers to decoded values only, never back to itself
    or to anything that could, so the cycle collector need not track it. A
    long read holds thousands of them at once; tracked, they would set off a
    collection every few hundred frames.
    """


class Hello(_Body, frozen=True, tag=1):
    """Renderer -> main, first frame: who I am and what I know."""

    version: int
    token: str
    process_id: int
    max_frame_size: int = 0  # the largest frame I accept; 0: not said


class Welcome(_Body, frozen=True, tag=2):
    """Main -> renderer, first frame: accepted, and the id main gave you."""

    version: int
    renderer_id: int
    max_frame_size: int = 0  # the largest frame I accept; 0: not said


class PortRef(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One message port end travelling in a frame (docs/ports-and-streams.md).

    Main -> renderer: only ``id``, the end's id (always > 0, allocated by main).
    Renderer -> main: ``id`` is the end's id on this connection (> 0 if main
    gave it, < 0 if the renderer created it); for an id main has not seen yet,
    ``peer`` names the other end (< 0, still in that renderer) or is 0 when
    the end is already closed. ``received`` counts the frames main sent for
    this end that the renderer has read; ``returning`` counts the frames the
    renderer sends back for it (``returned=True``) right after this frame.
    """

    id: int
    peer: int = 0
    received: int = 0
    returning: int = 0


class Message(_Body, frozen=True, tag=3):
    """Fire and forget: ``send`` (and ``webContents.send``); ``post_message`` adds ports."""

    channel: str
    args: msgspec.Raw
    ports: tuple[PortRef, ...] = ()  # a tuple: none decodes to the shared (), not a new list


class Request(_Body, frozen=True, tag=4):
    """A call that expects exactly one :class:`Reply` with the same id."""

    request_id: int
    kind: RequestKind
    channel: str
    args: msgspec.Raw


class Reply(_Body, frozen=True, tag=5):
    """The answer to a :class:`Request`: a value if ``ok``, else an :class:`ErrorInfo`."""

    request_id: int
    ok: bool
    value: msgspec.Raw


class Cancel(_Body, frozen=True, tag=6):
    """The caller gave up on a request; the serving side cancels its handler."""

    request_id: int


class Goodbye(_Body, frozen=True, tag=7):
    """Last frame a side sends before it closes the connection."""

    code: CloseCode
    reason: str


class Ping(_Body, frozen=True, tag=8):
    """Liveness probe; the core answers with a :class:`Pong` of the same nonce."""

    nonce: int


class Pong(_Body, frozen=True, tag=9):
    """Answer to a :class:`Ping`."""

    nonce: int


class PortMessage(_Body, frozen=True, tag=10):
    """A message on a port end.

    Renderer -> main: the holder of end ``port_id`` posted it (to the peer).
    Main -> renderer: deliver it to end ``port_id``, which the renderer holds.
    ``returned`` (renderer -> main only): the renderer no longer holds
    ``port_id`` and gives back a message meant for it, to be delivered to
    wherever the end went.
    """

    port_id: int
    data: msgspec.Raw
    ports: list[PortRef] = []
    returned: bool = False


class PortClose(_Body, frozen=True, tag=11):
    """An end closed. Renderer -> main: I closed (or acknowledge the close of)
    ``port_id``. Main -> renderer: the peer of your end ``port_id`` is gone.
    ``returned`` as for :class:`PortMessage`."""

    port_id: int
    returned: bool = False


class StreamItem(_Body, frozen=True, tag=12):
    """One value yielded by the generator serving stream request ``request_id``."""

    request_id: int
    value: msgspec.Raw


class StreamCredit(_Body, frozen=True, tag=13):
    """The consumer of stream ``request_id`` accepts ``n`` more items."""

    request_id: int
    n: int


Body = (
    Hello
    | Welcome
    | Message
    | Request
    | Reply
    | Cancel
    | Goodbye
    | Ping
    | Pong
    | PortMessage
    | PortClose
    | StreamItem
    | StreamCredit
)


class ErrorInfo(msgspec.Struct, frozen=True, array_like=True):
    """The value of a failed :class:`Reply`."""

    kind: ErrorKind
    type_name: str
    message: str
    traceback: str | None = None


#: Characters of a peer's Goodbye reason kept: it ends up in log lines and in
#: every ``ConnectionClosedError`` of that connection.
REASON_MAX: Final = 1000


def peer_reason(reason: str) -> str:
    """A peer's Goodbye reason, cut to ``REASON_MAX`` characters, saying so."""
    if len(reason) <= REASON_MAX:
        return reason
    return f"{reason[:REASON_MAX]} [... {len(reason) - REASON_MAX} more characters cut]"


#: What an error reply cut to fit the caller's ``max_frame_size`` says it lost.
MESSAGE_CUT: Final = " [... cut to fit the caller's max_frame_size]"
TRACEBACK_CUT: Final = "[... traceback cut to fit the caller's max_frame_size ...]\n"
_TYPE_NAME_MAX = 128  # bytes of an exception's type name kept when cutting
_STR_HEADER_MAX = 5  # a msgpack str header is 1 to 5 bytes


def fit_error(info: ErrorInfo, budget: int) -> ErrorInfo:
    """``info`` cut to encode in at most ``budget`` bytes (if ``budget`` is above ~300).

    The message keeps its start and the traceback its end (the frames nearest
    the error, and the exception line), each followed or preceded by a marker
    saying it was cut. The type name is kept whole unless absurdly long.
    """
    type_name = _head(info.type_name.encode(), _TYPE_NAME_MAX)
    message, traceback = info.message.encode(), (info.traceback or "").encode()
    bare = ErrorInfo(info.kind, type_name, "", "" if info.traceback is not None else None)
    room = budget - len(_error_encoder.encode(bare)) - 2 * _STR_HEADER_MAX
    room -= len(MESSAGE_CUT.encode()) + (len(TRACEBACK_CUT.encode()) if traceback else 0)
    room = max(room, 0)
    # The message first (up to half, or more if the traceback is short), then the traceback.
    keep_message = min(len(message), max(room // 2, room - len(traceback)))
    keep_traceback = max(0, room - keep_message)
    if keep_message < len(message):
        new_message = _head(message, keep_message) + MESSAGE_CUT
    else:
        new_message = info.message
    new_traceback = info.traceback
    if info.traceback is not None and keep_traceback < len(traceback):
        tail = traceback[len(traceback) - keep_traceback :] if keep_traceback else b""
        new_traceback = TRACEBACK_CUT + tail.decode("utf-8", "ignore")
    return ErrorInfo(info.kind, type_name, new_message, new_traceback)


def _head(data: bytes, n: int) -> str:
    """The first ``n`` bytes of UTF-8 ``data`` as text (a character cut in two is dropped)."""
    return data[:n].decode("utf-8", "ignore")


_error_encoder = msgspec.msgpack.Encoder()


def check_max_frame_size(max_frame_size: int) -> None:
    """Refuse a ``max_frame_size`` below :data:`MIN_MAX_FRAME_SIZE`.

    Raises:
        ValueError: naming the value and the minimum.
    """
    if max_frame_size < MIN_MAX_FRAME_SIZE:
        raise ValueError(
            f"max_frame_size must be at least {MIN_MAX_FRAME_SIZE} bytes "
            f"(ipcbus.MIN_MAX_FRAME_SIZE), not {max_frame_size}"
        )


def raw_args(args: Any) -> msgspec.Raw:
    """Type an argument list as the ``Raw`` the Structs declare, for encoding.

    msgspec encodes a field from the object it holds, so a list placed where a
    Raw is declared is written as that list; only the decoder reads the type.
    """
    return args  # type: ignore[no-any-return]
