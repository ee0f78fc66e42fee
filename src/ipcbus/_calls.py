"""The table of what one connection owes and is owed: pending calls, reply slots, credit.

* Owed to us: each ``invoke``/``send_sync`` we made waits for its Reply in a
  ``ReplyWaiter`` (a bare future on the fast path, else an :class:`EventWaiter`);
  each stream we consume collects its items in a :class:`StreamWaiter`. When
  the connection ends every waiter is woken and its caller fails with
  ``ConnectionClosedError``: nothing waits forever.
* Owed by us: the one reply of a peer's ``send_sync`` (:class:`ReplySlot`,
  shared by the events of all its listeners), and the items of a stream we
  serve, which wait for the consumer's credit (``wait_credit``).
"""

from __future__ import annotations

import logging
import traceback
from collections import deque
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import msgspec

from ._capabilities import ReplyWaiter
from ._errors import (
    ConnectionClosedError,
    FrameTooLargeError,
    IpcError,
    IpcTimeoutError,
    NoHandlerError,
    ProtocolError,
    RemoteError,
    ValidationError,
)
from ._events import ReplyReceived, StreamItemReceived
from ._protocol import OPEN, Connection
from ._values import DECODE_ERRORS, ENCODE_ERRORS, encode_error, too_large, untyped_decoder
from ._wire import INVOKE, ErrorInfo, ErrorKind, RequestKind

if TYPE_CHECKING:
    from ._endpoint import Endpoint

__all__ = (
    "CALL_NAMES",
    "Calls",
    "EventWaiter",
    "ReplySlot",
    "StreamWaiter",
    "error_from_reply",
    "error_info",
    "reply_value",
    "timed_out",
)

logger = logging.getLogger("ipcbus")

#: What a call is called in error messages, by its kind (both renderers use it).
CALL_NAMES = {RequestKind.INVOKE: "invoke", RequestKind.SYNC: "send_sync"}
_decode = untyped_decoder.decode  # decode_value's decoder


class ReplySlot:
    """The one reply of a ``send_sync``, shared by the events of all its listeners."""

    __slots__ = ("_calls", "_request_id", "channel", "replied")

    def __init__(self, calls: Calls, request_id: int, channel: str) -> None:
        self._calls = calls
        self._request_id = request_id
        self.channel = channel
        self.replied = False

    def set(self, value: Any) -> None:
        """Reply with ``value`` now, unless a reply already went out."""
        if not self.replied:
            self.replied = True
            self._calls.reply_soon(self._request_id, self.channel, value)

    def fail(self, kind: ErrorKind, exc: BaseException) -> None:
        """Reply with an error now, unless a reply already went out."""
        if not self.replied:
            self.replied = True
            self._calls.reply_error_soon(self._request_id, kind, exc)


class EventWaiter:
    """One caller waiting for one Reply, over an ``anyio.Event``: any transport, any backend.

    A ``ReplyWaiter`` with a future's methods; the fast path uses a bare
    ``asyncio.Future`` instead (no Python call to make, set or await it).
    Unlike a future it is not cancelled with its caller: a reply that comes
    after the caller was cancelled is still kept.
    """

    __slots__ = ("_event", "_result")

    def __init__(self, new_event: Callable[[], anyio.Event]) -> None:
        self._event = new_event()
        self._result: ReplyReceived | None = None

    def done(self) -> bool:
        return self._event.is_set()

    def cancelled(self) -> bool:
        return False

    def set_result(self, result: ReplyReceived | None, /) -> None:
        self._result = result
        self._event.set()

    def result(self) -> ReplyReceived | None:
        return self._result

    def __await__(self) -> Generator[Any, None, ReplyReceived | None]:
        yield from self._event.wait().__await__()
        return self._result


class StreamWaiter:
    """A stream's items as they arrive, then its Reply (``arrived`` is renewed per wait).

    Shares ``done``/``set_result`` with the call waiters, for the Reply that
    ends the stream (``None``: the connection ended first).
    """

    __slots__ = ("arrived", "items", "reply")

    def __init__(self, new_event: Callable[[], anyio.Event]) -> None:
        self.arrived = new_event()
        self.items: deque[msgspec.Raw] = deque()
        self.reply: ReplyReceived | None = None

    def done(self) -> bool:
        return self.reply is not None

    def set_result(self, reply: ReplyReceived | None, /) -> None:
        self.reply = reply
        self.arrived.set()


class _Peer(Protocol):
    """Whom a call went to, for the error of a call that got no reply."""

    name: str

    @property
    def reason(self) -> str: ...


def timed_out(kind: RequestKind, channel: str, peer: str, timeout: float | None) -> IpcTimeoutError:
    """The error of a call to ``peer`` ("main", "renderer 4") that got no reply in time.

    Shared by the async endpoint (``Calls.request``) and the blocking renderer.
    """
    return IpcTimeoutError(
        f"{CALL_NAMES[kind]} {channel!r} to {peer} got no reply within {timeout} s"
        + (
            "; the remote handler was told to stop"
            if kind is INVOKE
            else "; a late reply will be discarded"
        )
    )


def reply_value(reply: ReplyReceived | None, kind: RequestKind, channel: str, peer: _Peer) -> Any:
    """What a call returns for ``reply`` (``None``: the connection ended first), or raises.

    Shared by the async endpoint (``Calls.request``) and the blocking renderer.
    """
    if reply is None:
        raise ConnectionClosedError(
            f"connection to {peer.name} closed before {channel!r} replied ({peer.reason})"
        )
    if not reply.ok:
        raise error_from_reply(channel, reply.value)
    try:
        return _decode(reply.value)  # decode_value, without the call
    except DECODE_ERRORS as exc:
        raise ProtocolError(
            f"the reply to {CALL_NAMES[kind]} {channel!r} from {peer.name} "
            f"could not be decoded: {exc}"
        ) from None


def error_from_reply(channel: str, value: msgspec.Raw) -> IpcError:
    """The exception a caller raises for a failed Reply."""
    try:
        info = msgspec.msgpack.decode(value, type=ErrorInfo)
    except DECODE_ERRORS:
        return RemoteError(channel, "ProtocolError", "the error reply could not be decoded")
    if info.kind is ErrorKind.NO_HANDLER:
        return NoHandlerError(info.message)
    if info.kind is ErrorKind.VALIDATION:
        return ValidationError(info.message)
    return RemoteError(channel, info.type_name, info.message, info.traceback)


def error_info(kind: ErrorKind, exc: BaseException, *, with_traceback: bool = True) -> ErrorInfo:
    """Describe ``exc`` for the wire."""
    text = None
    if with_traceback and kind is ErrorKind.REMOTE:
        text = "".join(traceback.format_exception(exc))
    return ErrorInfo(kind, type(exc).__name__, str(exc), text)


class Calls:
    """Our calls waiting for the peer's replies and items; the peer's credit we wait for."""

    __slots__ = (
        "_credit",
        "_endpoint",
        "_new_event",
        "_new_waiter",
        "_send_tracebacks",
        "conn",
        "waiters",
    )

    def __init__(
        self,
        endpoint: Endpoint,
        conn: Connection,
        new_event: Callable[[], anyio.Event],
        new_waiter: Callable[[], ReplyWaiter] | None,
        *,
        send_tracebacks: bool,
    ) -> None:
        self._endpoint = endpoint
        self.conn = conn
        self._new_event = new_event
        # The fast path's reply waiter (a future); None: an EventWaiter.
        self._new_waiter = new_waiter
        self._send_tracebacks = send_tracebacks
        self.waiters: dict[int, ReplyWaiter | StreamWaiter] = {}
        self._credit: dict[int, anyio.Event] = {}  # streams we serve, out of credit

    # ---- owed to us ----------------------------------------------------

    async def request(
        self, kind: RequestKind, channel: str, args: tuple[Any, ...], timeout: float | None
    ) -> Any:
        """Make a request and return the decoded reply, or raise what it says."""
        endpoint, conn = self._endpoint, self.conn
        if conn.state is not OPEN:
            endpoint.require_open()  # raises
        try:
            request_id = conn.start_request(kind, channel, args)
        except ENCODE_ERRORS as exc:
            raise encode_error(CALL_NAMES[kind], channel, args, exc) from None
        except FrameTooLargeError as exc:
            raise too_large(CALL_NAMES[kind], channel, exc, endpoint.limit_advice) from None
        new_waiter = self._new_waiter
        waiter: ReplyWaiter = (
            new_waiter() if new_waiter is not None else EventWaiter(self._new_event)
        )
        self.waiters[request_id] = waiter
        dispatcher = endpoint.dispatcher
        if dispatcher.paused:
            dispatcher.make_room()  # a paused reader must read on: our reply will come
        outbox = endpoint.outbox
        outbox.kick()  # a lost link wakes us through wake_all; no need to wait here
        try:
            if timeout is None:
                reply = await waiter
            else:
                with anyio.fail_after(timeout):
                    reply = await waiter
        except BaseException as exc:
            # No reply came: not set, cancelled with us (a future), or set to
            # None by wake_all when the link ended (that is no reply either).
            if not waiter.done() or waiter.cancelled() or waiter.result() is None:
                conn.cancel_request(request_id)
                outbox.kick()  # best effort: stop the remote handler
                if isinstance(exc, TimeoutError):
                    raise timed_out(kind, channel, endpoint.name, timeout) from None
                raise
            reply = waiter.result()  # it came all the same: the caller gets it
        finally:
            del self.waiters[request_id]
        if reply is not None and reply.ok:  # reply_value's usual case, without the call
            try:
                return _decode(reply.value)
            except DECODE_ERRORS:
                pass  # reply_value says why
        return reply_value(reply, kind, channel, endpoint)

    def start_stream(
        self, channel: str, args: tuple[Any, ...], window: int
    ) -> tuple[int, StreamWaiter]:
        """Queue a STREAM request granting ``window`` items; the caller flushes."""
        self._endpoint.require_open()
        try:
            request_id = self.conn.start_stream(channel, args, window)
        except ENCODE_ERRORS as exc:
            raise encode_error("stream", channel, args, exc) from None
        waiter = self.waiters[request_id] = StreamWaiter(self._new_event)
        return request_id, waiter

    def end_stream(self, request_id: int, cancel: bool) -> None:
        """Forget a stream; if ``cancel``, tell the server to close its generator."""
        self.waiters.pop(request_id, None)
        if cancel and self.conn.state is OPEN:
            self.conn.cancel_request(request_id)
            self._endpoint.outbox.flush_later()

    def replied(self, event: ReplyReceived) -> None:
        waiter = self.waiters.get(event.request_id)
        if waiter is not None and not waiter.done():  # a future: not cancelled
            waiter.set_result(event)

    def item(self, event: StreamItemReceived) -> None:
        waiter = self.waiters.get(event.request_id)
        if isinstance(waiter, StreamWaiter):
            waiter.items.append(event.value)
            waiter.arrived.set()

    def wake_all(self) -> None:
        """The connection ended: every waiting caller wakes (and finds no reply)."""
        for waiter in self.waiters.values():
            if not waiter.done():
                waiter.set_result(None)

    # ---- owed by us: replies -------------------------------------------------------

    def reply_soon(self, request_id: int, channel: str, value: Any) -> None:
        """Queue the reply to ``request_id`` and make sure it is flushed."""
        if self.queue_reply(request_id, channel, value):
            self._endpoint.outbox.kick()

    def reply_error_soon(self, request_id: int, kind: ErrorKind, exc: BaseException) -> None:
        """Queue an error reply to ``request_id`` and make sure it is flushed."""
        if self.queue_error(request_id, kind, exc):
            self._endpoint.outbox.kick()

    def queue_reply(self, request_id: int, channel: str, value: Any) -> bool:
        """Queue the reply; ``True`` if it was queued (the caller has it sent)."""
        try:
            return self.conn.send_reply(request_id, True, value)
        except FrameTooLargeError as exc:
            logger.error("the result for %r is too large to send: %s", channel, exc)
            return self.queue_error(
                request_id,
                ErrorKind.REMOTE,
                too_large("return", channel, exc, self._endpoint.limit_advice),
            )
        except ENCODE_ERRORS as exc:
            err = encode_error("return a value", channel, value, exc, named="the value")
            # The value itself stays out of the log (payloads only at DEBUG).
            logger.error(
                "the result for %r (of type %s) cannot be sent; the caller gets a RemoteError",
                channel,
                type(value).__qualname__,
            )
            logger.debug("the result for %r cannot be sent: %s", channel, err)
            return self.queue_error(request_id, ErrorKind.REMOTE, err)

    def queue_cancelled(self, request_id: int, why: str) -> bool:
        """Queue the reply of a call our side cancelled (shutdown): a ``CancelledError``
        on every backend (trio's ``Cancelled`` cannot be made, and would name trio)."""
        return self.conn.send_error(
            request_id, ErrorInfo(ErrorKind.CANCELLED, "CancelledError", why)
        )

    def queue_error(self, request_id: int, kind: ErrorKind, exc: BaseException) -> bool:
        info = error_info(kind, exc, with_traceback=self._send_tracebacks)
        return self.conn.send_error(request_id, info)  # cut to fit the caller's limit

    # ---- owed by us: a stream's items, paced by the consumer's credit ----

    async def wait_credit(self, request_id: int) -> None:
        """Wait until the consumer grants credit for stream ``request_id`` (or it ends)."""
        credit = self._credit[request_id] = self._new_event()
        try:
            await credit.wait()
        finally:
            self._credit.pop(request_id, None)

    def credited(self, request_id: int) -> None:
        credit = self._credit.pop(request_id, None)
        if credit is not None:
            credit.set()
