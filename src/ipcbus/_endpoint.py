"""Drives one protocol ``Connection`` over one anyio byte stream.

Shared by main (one per renderer) and renderers (one in all). Rules:

* The reader task owns receiving: bytes in, events out, dispatch, then flush.
  Dispatch happens before the flush, so main has registered a renderer's
  WebContents before the Welcome that completes the renderer's handshake
  leaves.
* Sending goes through :meth:`Endpoint.flush` under one lock: whoever holds it
  sends everything queued so far, so frames queued by many tasks coalesce into
  one write. A write interrupted by cancellation may leave half a frame on the
  wire, so it ends the connection.
* Callbacks are *called* in the order their messages arrived. Sync callbacks
  run inline in the reader; async ones in a task of the endpoint's task group.
  While any such task has been scheduled but not yet started, sync callbacks
  are scheduled behind it instead of run inline, so they cannot overtake it.
* Each handler of an ``invoke`` runs in its own cancel scope: a Cancel from
  the caller, or the connection ending, cancels it.
* When the connection ends, every waiting caller is woken and fails with
  ``ConnectionClosedError``; nothing waits forever.
* Streams (docs/ports-and-streams.md): a STREAM request runs its handler's
  async iterator in its own cancel scope, like an invoke, and pulls the next
  item only while the consumer has granted credit, so a slow consumer pauses
  the generator. Items are flushed by ``flush_later``: a generator that
  yields without awaiting fills the window, then one write sends it.
* An optional ``gate`` (main sets it: allowlists, guards) sees every message
  and request before anything decodes its arguments; it dispatches it now,
  later, or never. Port frames go to the owner (``port_event``).
"""

from __future__ import annotations

import inspect
import logging
import math
import traceback
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import suppress
from typing import Any, Protocol

import anyio
import anyio.abc
import msgspec

from ._errors import (
    ConnectionClosedError,
    IpcError,
    IpcTimeoutError,
    NoHandlerError,
    RemoteError,
    ValidationError,
)
from ._events import (
    ConnectionTerminated,
    Event,
    HandshakeCompleted,
    MessageReceived,
    PortClosed,
    PortMessageReceived,
    ReplyReceived,
    RequestCancelled,
    RequestReceived,
    StreamCreditReceived,
    StreamItemReceived,
)
from ._protocol import Connection, State
from ._registry import Callback
from ._values import decode_value, encode_error
from ._wire import CloseCode, ErrorInfo, ErrorKind, PortRef, RequestKind

__all__ = ("Endpoint", "Gate", "Owner", "ReplySlot", "StreamWaiter", "logger")

logger = logging.getLogger("ipcbus")

_ENCODE_ERRORS = (TypeError, OverflowError, msgspec.EncodeError)
_STREAM_ERRORS = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
)
_READ_SIZE = 256 * 1024


class Owner(Protocol):
    """What an Endpoint asks of the side that owns it (main or renderer)."""

    def find_listeners(self, channel: str) -> tuple[Callback, ...]: ...
    def find_handler(self, channel: str) -> Callback | None: ...
    def make_event(self, channel: str, slot: ReplySlot | None) -> Any: ...
    def make_invoke_event(self, channel: str) -> Any: ...
    def handshake_completed(self, event: HandshakeCompleted) -> None: ...
    def terminated(self, event: ConnectionTerminated) -> None: ...
    def receive_ports(self, refs: list[PortRef]) -> list[Any]: ...
    def port_event(self, event: PortMessageReceived | PortClosed) -> None: ...


#: ``gate(event, ports)``: ``True`` to dispatch now; ``False`` if it rejected
#: the event or will dispatch it later (``Endpoint.dispatch``).
Gate = Callable[[RequestReceived | MessageReceived, list[Any] | None], bool]


class ReplySlot:
    """The one reply of a ``send_sync``, shared by the events of all its listeners."""

    __slots__ = ("_endpoint", "_request_id", "channel", "replied")

    def __init__(self, endpoint: Endpoint, request_id: int, channel: str) -> None:
        self._endpoint = endpoint
        self._request_id = request_id
        self.channel = channel
        self.replied = False

    def set(self, value: Any) -> None:
        """Reply with ``value`` now, unless a reply already went out."""
        if not self.replied:
            self.replied = True
            self._endpoint.reply_soon(self._request_id, self.channel, value)

    def fail(self, kind: ErrorKind, exc: BaseException) -> None:
        """Reply with an error now, unless a reply already went out."""
        if not self.replied:
            self.replied = True
            self._endpoint.reply_error_soon(self._request_id, kind, exc)


class _Waiter:
    __slots__ = ("done", "reply")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.reply: ReplyReceived | None = None


class StreamWaiter(_Waiter):
    """A stream's items as they arrive, then its Reply (``done`` is renewed per wait)."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        super().__init__()
        self.items: deque[msgspec.Raw] = deque()


def error_info(kind: ErrorKind, exc: BaseException, *, with_traceback: bool = True) -> ErrorInfo:
    """Describe ``exc`` for the wire."""
    text = None
    if with_traceback and kind is ErrorKind.REMOTE:
        text = "".join(traceback.format_exception(exc))
    return ErrorInfo(kind, type(exc).__name__, str(exc), text)


def error_from_reply(channel: str, value: msgspec.Raw) -> IpcError:
    """The exception a caller raises for a failed Reply."""
    try:
        info = msgspec.msgpack.decode(value, type=ErrorInfo)
    except msgspec.DecodeError:
        return RemoteError(channel, "ProtocolError", "the error reply could not be decoded")
    if info.kind is ErrorKind.NO_HANDLER:
        return NoHandlerError(info.message)
    if info.kind is ErrorKind.VALIDATION:
        return ValidationError(info.message)
    return RemoteError(channel, info.type_name, info.message, info.traceback)


class Endpoint:
    """One connection's I/O: reader loop, flushes, waiters, dispatch."""

    def __init__(
        self,
        conn: Connection,
        stream: anyio.abc.ByteStream,
        task_group: anyio.abc.TaskGroup,
        owner: Owner,
        *,
        name: str,
        send_tracebacks: bool = True,
    ) -> None:
        self.conn = conn
        self.name = name
        self.termination: ConnectionTerminated | None = None
        self.closed = anyio.Event()
        self._stream = stream
        self._tg = task_group
        self._owner = owner
        self._send_tracebacks = send_tracebacks
        self._send_lock = anyio.Lock(fast_acquire=True)
        self._waiters: dict[int, _Waiter] = {}
        self._scopes: dict[int, anyio.CancelScope] = {}
        self._pending_starts = 0  # async dispatch tasks scheduled, not yet started
        self._inline = False  # True while the reader dispatches; it flushes afterwards
        self._reader_scope = anyio.CancelScope()
        self._idle: anyio.Event | None = None
        self._credit_events: dict[int, anyio.Event] = {}  # streams we serve, out of credit
        self._flush_pending = False
        self.gate: Gate | None = None
        self.stream_close_grace = 5.0  # seconds a closing generator gets to clean up

    @property
    def task_group(self) -> anyio.abc.TaskGroup:
        """The task group this connection's tasks run in."""
        return self._tg

    # ---- lifecycle -----------------------------------------------------

    async def run(self) -> None:
        """Read until the connection ends; then wake every waiter and close."""
        conn = self.conn
        try:
            with self._reader_scope:
                await self.flush_quietly()  # a renderer's Hello is queued at birth
                while conn.state is not State.CLOSED:
                    try:
                        data = await self._stream.receive(_READ_SIZE)
                    except _STREAM_ERRORS:
                        conn.receive_eof()
                    else:
                        conn.receive_data(data)
                    self._inline = True
                    try:
                        self.handle_events()
                    finally:
                        self._inline = False
                    await self.flush_quietly()
        finally:
            if self.termination is None:  # cancelled from outside
                conn.close(CloseCode.SHUTDOWN, "closed")
                self.handle_events()
                with anyio.move_on_after(1, shield=True):
                    await self.flush_quietly()
            with anyio.CancelScope(shield=True):
                await self._stream.aclose()
            self.closed.set()

    async def close(self, code: CloseCode = CloseCode.NORMAL, reason: str = "closed") -> None:
        """Say Goodbye, stop reading and wait until the stream is closed."""
        if self.conn.state is not State.CLOSED:
            self.conn.close(code, reason)
            self.handle_events()
            with anyio.move_on_after(1, shield=True):
                await self.flush_quietly()
        self._reader_scope.cancel()
        await self.closed.wait()

    def cancel_handlers(self) -> None:
        """Cancel every running handler; each replies that it was cancelled."""
        for scope in list(self._scopes.values()):
            scope.cancel()

    async def wait_idle(self) -> None:
        """Return once no handler is running for this connection."""
        while self._scopes:
            self._idle = anyio.Event()
            await self._idle.wait()

    # ---- sending -------------------------------------------------------

    async def flush(self) -> None:
        """Send everything queued. Raises ``ConnectionClosedError`` if the link is gone."""
        async with self._send_lock:
            data = self.conn.data_to_send()
            if not data:
                return
            try:
                await self._stream.send(bytes(data) if len(data) < 4096 else memoryview(data))  # type: ignore[arg-type]
            except _STREAM_ERRORS as exc:
                self._link_lost(f"sending failed: {exc!r}")
                raise ConnectionClosedError(
                    f"connection to {self.name} is closed ({self.reason})"
                ) from exc
            except BaseException:
                # Cancelled mid-write: the peer may hold half a frame.
                self._link_lost("a write was interrupted")
                raise

    async def flush_quietly(self) -> None:
        with suppress(ConnectionClosedError):
            await self.flush()

    def _flush_soon(self) -> None:
        if not self._inline:
            self._tg.start_soon(self.flush_quietly)

    def flush_later(self) -> None:
        """Flush from a task soon; many calls before it runs cost one write."""
        if self._inline or self._flush_pending or self.conn.state is not State.OPEN:
            return  # the reader flushes after dispatch; or one is on its way
        self._flush_pending = True
        try:
            self._tg.start_soon(self._flush_later)
        except RuntimeError:  # the task group is closing
            self._flush_pending = False

    async def _flush_later(self) -> None:
        self._flush_pending = False
        await self.flush_quietly()

    def _link_lost(self, reason: str) -> None:
        if self.conn.state is not State.CLOSED:
            logger.debug("connection to %s lost: %s", self.name, reason)
            self.conn.receive_eof()
            self.handle_events()
        self._reader_scope.cancel()

    @property
    def reason(self) -> str:
        return self.termination.reason if self.termination else "not connected"

    def require_open(self) -> None:
        if self.conn.state is not State.OPEN:
            raise ConnectionClosedError(
                f"connection to {self.name} is closed ({self.reason}); connect again to send more"
            )

    async def send_message(self, channel: str, args: tuple[Any, ...]) -> None:
        """Fire and forget; returns once the frame is handed to the transport."""
        self.require_open()
        try:
            self.conn.send_message(channel, args)
        except _ENCODE_ERRORS as exc:
            raise encode_error("send", channel, args, exc) from None
        await self.flush()

    async def request(
        self, kind: RequestKind, channel: str, args: tuple[Any, ...], timeout: float | None
    ) -> Any:
        """Make a request and return the decoded reply, or raise what it says."""
        self.require_open()
        what = "invoke" if kind is RequestKind.INVOKE else "send_sync"
        try:
            request_id = self.conn.start_request(kind, channel, args)
        except _ENCODE_ERRORS as exc:
            raise encode_error(what, channel, args, exc) from None
        waiter = self._waiters[request_id] = _Waiter()
        try:
            await self.flush()
            with anyio.fail_after(math.inf if timeout is None else timeout):
                await waiter.done.wait()
        except BaseException as exc:
            if waiter.reply is None:
                self.conn.cancel_request(request_id)
                with anyio.move_on_after(1, shield=True):
                    await self.flush_quietly()  # best effort: stop the remote handler
                if isinstance(exc, TimeoutError):
                    raise IpcTimeoutError(
                        f"{what} {channel!r} got no reply within {timeout} s; "
                        "the remote handler was told to stop"
                    ) from None
                raise
        finally:
            del self._waiters[request_id]
        reply = waiter.reply
        if reply is None:
            raise ConnectionClosedError(
                f"connection to {self.name} closed before {channel!r} replied ({self.reason})"
            )
        if reply.ok:
            return decode_value(reply.value)
        raise error_from_reply(channel, reply.value)

    def reply_soon(self, request_id: int, channel: str, value: Any) -> None:
        """Queue the reply to ``request_id`` and make sure it is flushed."""
        if self._queue_reply(request_id, channel, value):
            self._flush_soon()

    def reply_error_soon(self, request_id: int, kind: ErrorKind, exc: BaseException) -> None:
        """Queue an error reply to ``request_id`` and make sure it is flushed."""
        if self._queue_error(request_id, kind, exc):
            self._flush_soon()

    def _queue_reply(self, request_id: int, channel: str, value: Any) -> bool:
        try:
            return self.conn.send_reply(request_id, True, value)
        except _ENCODE_ERRORS as exc:
            err = encode_error("return a value", channel, value, exc)
            logger.error("the result for %r cannot be sent: %s", channel, err)
            return self._queue_error(request_id, ErrorKind.REMOTE, err)

    def _queue_error(self, request_id: int, kind: ErrorKind, exc: BaseException) -> bool:
        info = error_info(kind, exc, with_traceback=self._send_tracebacks)
        return self.conn.send_reply(request_id, False, info)

    # ---- receiving -----------------------------------------------------

    def handle_events(self) -> None:
        for event in self.conn.events_received():
            self._handle(event)

    def _handle(self, event: Event) -> None:
        if isinstance(event, (RequestReceived, MessageReceived)):
            # Ports are landed on arrival: frames that follow may name them.
            ports = None
            if isinstance(event, MessageReceived) and event.ports:
                ports = self._owner.receive_ports(event.ports)
            if self.gate is None or self.gate(event, ports):
                self.dispatch(event, ports)
        elif isinstance(event, ReplyReceived):
            waiter = self._waiters.get(event.request_id)
            if waiter is not None:
                waiter.reply = event
                waiter.done.set()
        elif isinstance(event, StreamItemReceived):
            waiter = self._waiters.get(event.request_id)
            if isinstance(waiter, StreamWaiter):
                waiter.items.append(event.value)
                waiter.done.set()
        elif isinstance(event, (PortMessageReceived, PortClosed)):
            self._owner.port_event(event)
        elif isinstance(event, StreamCreditReceived):
            credit = self._credit_events.pop(event.request_id, None)
            if credit is not None:
                credit.set()
        elif isinstance(event, RequestCancelled):
            scope = self._scopes.get(event.request_id)
            if scope is not None:
                scope.cancel()
        elif isinstance(event, HandshakeCompleted):
            self._owner.handshake_completed(event)
        elif isinstance(event, ConnectionTerminated):
            self._terminated(event)

    def dispatch(self, event: RequestReceived | MessageReceived, ports: list[Any] | None) -> None:
        """Call what serves ``event`` (the gate, if any, has let it through)."""
        if isinstance(event, MessageReceived):
            self._dispatch_message(event.channel, event.args, None, ports)
        elif event.kind is RequestKind.INVOKE:
            self._dispatch_invoke(event)
        elif event.kind is RequestKind.STREAM:
            self._dispatch_stream(event)
        else:
            self._dispatch_message(event.channel, event.args, event.request_id)

    def _terminated(self, event: ConnectionTerminated) -> None:
        self.termination = event
        if event.code not in (None, CloseCode.NORMAL, CloseCode.SHUTDOWN):
            logger.warning("connection to %s ended: %s", self.name, event.reason)
        else:
            logger.debug("connection to %s ended: %s", self.name, event.reason)
        for waiter in self._waiters.values():
            waiter.done.set()
        for scope in self._scopes.values():
            scope.cancel()  # nobody can receive their replies any more
        self._owner.terminated(event)

    def _schedule(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        self._pending_starts += 1
        self._tg.start_soon(fn, *args)

    # -- messages and send_sync: every listener, in registration order

    def _dispatch_message(
        self,
        channel: str,
        raw: msgspec.Raw,
        request_id: int | None,
        ports: list[Any] | None = None,
    ) -> None:
        listeners = self._owner.find_listeners(channel)
        if not listeners:
            if request_id is None:
                logger.debug("dropped a message on %r from %s: no listener", channel, self.name)
                for port in ports or ():
                    port.close()  # its peer learns that nobody took it
            else:
                self.reply_error_soon(
                    request_id,
                    ErrorKind.NO_HANDLER,
                    NoHandlerError(f"No listeners registered for {channel!r}"),
                )
            return
        slot = None if request_id is None else ReplySlot(self, request_id, channel)
        event = self._owner.make_event(channel, slot)
        if ports:
            event.ports = ports
        if self._pending_starts or any(cb.is_async for cb in listeners):
            self._schedule(self._run_listeners, listeners, event, slot, channel, raw)
            return
        untyped: list[Any] | None = None
        for callback in listeners:
            args = self._listener_args(callback, channel, raw, slot, untyped)
            if args is None:
                continue
            if not callback.signature.typed:
                untyped = args  # type: ignore[assignment]
            try:
                result = callback.fn(event, *args)
                if inspect.isawaitable(result):
                    self._schedule(self._await_listener, result, channel, slot)
            except Exception as exc:
                self._listener_failed(channel, exc, slot)
        if slot is not None:
            slot.set(None)

    async def _run_listeners(
        self,
        listeners: tuple[Callback, ...],
        event: Any,
        slot: ReplySlot | None,
        channel: str,
        raw: msgspec.Raw,
    ) -> None:
        self._pending_starts -= 1
        untyped: list[Any] | None = None
        for callback in listeners:
            args = self._listener_args(callback, channel, raw, slot, untyped)
            if args is None:
                continue
            if not callback.signature.typed:
                untyped = args  # type: ignore[assignment]
            try:
                result = callback.fn(event, *args)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                self._listener_failed(channel, exc, slot)
        if slot is not None:
            slot.set(None)

    async def _await_listener(
        self, awaitable: Awaitable[Any], channel: str, slot: ReplySlot | None
    ) -> None:
        self._pending_starts -= 1
        try:
            await awaitable
        except Exception as exc:
            self._listener_failed(channel, exc, slot)

    def _listener_args(
        self,
        callback: Callback,
        channel: str,
        raw: msgspec.Raw,
        slot: ReplySlot | None,
        untyped: list[Any] | None,
    ) -> list[Any] | tuple[Any, ...] | None:
        if untyped is not None and not callback.signature.typed:
            return untyped
        try:
            return callback.signature.decode(channel, raw)
        except ValidationError as exc:
            logger.warning("listener %r on %r not called: %s", callback.fn, channel, exc)
            if slot is not None:
                slot.fail(ErrorKind.VALIDATION, exc)
            return None

    def _listener_failed(self, channel: str, exc: Exception, slot: ReplySlot | None) -> None:
        logger.error("listener for %r from %s raised", channel, self.name, exc_info=exc)
        if slot is not None:
            slot.fail(ErrorKind.REMOTE, exc)

    # -- invoke: the one handler

    def _dispatch_invoke(self, event: RequestReceived) -> None:
        channel, request_id = event.channel, event.request_id
        callback = self._owner.find_handler(channel)
        if callback is None:
            self.reply_error_soon(
                request_id,
                ErrorKind.NO_HANDLER,
                NoHandlerError(f"No handler registered for {channel!r}"),
            )
            return
        try:
            args = callback.signature.decode(channel, event.args)
        except ValidationError as exc:
            self.reply_error_soon(request_id, ErrorKind.VALIDATION, exc)
            return
        call_event = self._owner.make_invoke_event(channel)
        if callback.is_async or self._pending_starts:
            self._schedule(self._serve, request_id, channel, callback, call_event, args)
            return
        try:
            result = callback.fn(call_event, *args)
        except Exception as exc:
            self.reply_error_soon(request_id, ErrorKind.REMOTE, exc)
            return
        if inspect.isawaitable(result):
            self._schedule(self._serve_awaitable, request_id, channel, result)
        else:
            self.reply_soon(request_id, channel, result)

    async def _serve(
        self,
        request_id: int,
        channel: str,
        callback: Callback,
        event: Any,
        args: list[Any] | tuple[Any, ...],
    ) -> None:
        self._pending_starts -= 1
        await self._serve_call(request_id, channel, lambda: callback.fn(event, *args))

    async def _serve_awaitable(
        self, request_id: int, channel: str, awaitable: Awaitable[Any]
    ) -> None:
        self._pending_starts -= 1
        await self._serve_call(request_id, channel, lambda: awaitable)

    async def _serve_call(self, request_id: int, channel: str, call: Callable[[], Any]) -> None:
        if not self.conn.is_serving(request_id):
            return  # cancelled (or the connection ended) before we started
        with anyio.CancelScope() as scope:
            self._scopes[request_id] = scope
            try:
                result = call()
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:
                self._queue_error(request_id, ErrorKind.REMOTE, exc)
            else:
                self._queue_reply(request_id, channel, result)
            finally:
                del self._scopes[request_id]
                if not self._scopes and self._idle is not None:
                    self._idle.set()
        if scope.cancelled_caught and self.conn.is_serving(request_id):
            # Cancelled by our side (shutdown), not by the caller: say so.
            cancelled = anyio.get_cancelled_exc_class()(
                f"the handler for {channel!r} was cancelled before it replied; "
                "the reply was never sent"
            )
            self._queue_error(request_id, ErrorKind.CANCELLED, cancelled)
        await self.flush_quietly()

    # -- streams: the consumer's side

    def start_stream(
        self, channel: str, args: tuple[Any, ...], window: int
    ) -> tuple[int, StreamWaiter]:
        """Queue a STREAM request granting ``window`` items; the caller flushes."""
        self.require_open()
        try:
            request_id = self.conn.start_stream(channel, args, window)
        except _ENCODE_ERRORS as exc:
            raise encode_error("stream", channel, args, exc) from None
        waiter = self._waiters[request_id] = StreamWaiter()
        return request_id, waiter

    def end_stream(self, request_id: int, cancel: bool) -> None:
        """Forget a stream; if ``cancel``, tell the server to close its generator."""
        self._waiters.pop(request_id, None)
        if cancel and self.conn.state is State.OPEN:
            self.conn.cancel_request(request_id)
            self.flush_later()

    # -- streams: the server's side

    def _dispatch_stream(self, event: RequestReceived) -> None:
        channel, request_id = event.channel, event.request_id
        callback = self._owner.find_handler(channel)
        if callback is None:
            self.reply_error_soon(
                request_id,
                ErrorKind.NO_HANDLER,
                NoHandlerError(f"No handler registered for {channel!r}"),
            )
            return
        try:
            args = callback.signature.decode(channel, event.args)
        except ValidationError as exc:
            self.reply_error_soon(request_id, ErrorKind.VALIDATION, exc)
            return
        call_event = self._owner.make_invoke_event(channel)
        self._schedule(self._serve_stream, request_id, channel, callback, call_event, args)

    async def _serve_stream(
        self,
        request_id: int,
        channel: str,
        callback: Callback,
        event: Any,
        args: list[Any] | tuple[Any, ...],
    ) -> None:
        self._pending_starts -= 1
        if not self.conn.is_serving(request_id):
            return  # cancelled (or the connection ended) before we started
        iterator: AsyncIterator[Any] | None = None
        with anyio.CancelScope() as scope:
            self._scopes[request_id] = scope
            try:
                iterator = await _open_iterator(callback.fn(event, *args), channel)
                await self._pump_stream(request_id, channel, iterator)
            except Exception as exc:
                self._queue_error(request_id, ErrorKind.REMOTE, exc)
            else:
                self._queue_reply(request_id, channel, None)
            finally:
                self._credit_events.pop(request_id, None)
                if iterator is not None:
                    await self._close_iterator(iterator, channel)
                del self._scopes[request_id]
                if not self._scopes and self._idle is not None:
                    self._idle.set()
        if scope.cancelled_caught and self.conn.is_serving(request_id):
            cancelled = anyio.get_cancelled_exc_class()(
                f"the generator for {channel!r} was cancelled before it finished"
            )
            self._queue_error(request_id, ErrorKind.CANCELLED, cancelled)
        await self.flush_quietly()

    async def _pump_stream(
        self, request_id: int, channel: str, iterator: AsyncIterator[Any]
    ) -> None:
        conn = self.conn
        while True:
            while conn.stream_credit(request_id) < 1:
                if not conn.is_serving(request_id):
                    return
                credit = self._credit_events[request_id] = anyio.Event()
                await credit.wait()  # the consumer is slow: the generator stays paused
            try:
                item = await iterator.__anext__()
            except StopAsyncIteration:
                return
            try:
                if not conn.send_stream_item(request_id, item):
                    return
            except _ENCODE_ERRORS as exc:
                raise encode_error("yield a value", channel, item, exc) from None
            self.flush_later()

    async def _close_iterator(self, iterator: AsyncIterator[Any], channel: str) -> None:
        aclose = getattr(iterator, "aclose", None)
        if aclose is None:
            return
        with anyio.move_on_after(self.stream_close_grace, shield=True):
            try:
                await aclose()
            except Exception:
                logger.exception("closing the generator for %r raised", channel)


async def _open_iterator(result: Any, channel: str) -> AsyncIterator[Any]:
    """The async iterator a stream handler gave: an async generator, or awaited to one."""
    if not hasattr(result, "__aiter__") and inspect.isawaitable(result):
        result = await result
    if not hasattr(result, "__aiter__"):
        raise TypeError(
            f"the handler for {channel!r} returned {type(result).__name__}, not an async "
            "iterator; a stream is served by an async generator (async def with yield)"
        )
    iterator: AsyncIterator[Any] = result.__aiter__()
    return iterator
