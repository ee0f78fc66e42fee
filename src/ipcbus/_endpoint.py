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
  the generator. Items are queued for the writer (``flush_later``): a
  generator that yields without awaiting fills the window, then one write
  sends it. A stream waiting for credit does not count against
  ``max_in_flight``.
* An optional ``gate`` (main sets it: allowlists, guards) sees every message
  and request before anything decodes its arguments; it dispatches it now,
  later, or never. Port frames go to the owner (``port_event``).
"""

from __future__ import annotations

import inspect
import itertools
import logging
import math
import traceback
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import suppress
from typing import Any, Protocol

import anyio
import anyio.abc
import msgspec

from ._aio import LARGE_WRITE
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
from ._framestream import FrameStream
from ._protocol import CLOSED, OPEN, Connection, Role
from ._registry import Callback, Registry
from ._values import (
    DECODE_ERRORS,
    ENCODE_ERRORS,
    decode_argument_list,
    decode_value,
    encode_error,
)
from ._wire import INVOKE, CloseCode, ErrorInfo, ErrorKind, PortRef, RequestKind
from .ports import discard_ports

__all__ = ("Endpoint", "Gate", "Owner", "ReplySlot", "StreamWaiter", "logger")

logger = logging.getLogger("ipcbus")

_ENCODE_ERRORS = ENCODE_ERRORS
_STREAM_ERRORS = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
)
_READ_SIZE = 256 * 1024
_MAX_PENDING_OUTPUT = 4 * 1024 * 1024  # unsent bytes beyond which reading pauses
_SEND_HIGH_WATER = 256 * 1024  # queued bytes beyond which send() waits for the writer
_BACKLOG_LIMIT = 1024  # calls read ahead while full, only while awaiting the peer's replies
_EARLY_WRITE = 16  # in a read of more frames than this, replies leave every this many
_WHAT = {RequestKind.INVOKE: "invoke", RequestKind.SYNC: "send_sync"}  # for messages


class Owner(Protocol):
    """What an Endpoint asks of the side that owns it (main or renderer)."""

    def find_listeners(self, channel: str) -> tuple[Callback, ...]: ...
    def find_handler(self, channel: str) -> Callback | None: ...
    def make_event(self, channel: str, slot: ReplySlot | None) -> Any: ...
    def handshake_completed(self, event: HandshakeCompleted) -> None: ...
    def terminated(self, event: ConnectionTerminated) -> None: ...
    def receive_ports(self, refs: Sequence[PortRef]) -> list[Any]: ...
    def port_event(self, event: PortMessageReceived | PortClosed) -> None: ...

    # Made per message or call, so built here without a call through the owner:
    # ``_message_event(channel, _event_sender)`` (``make_event`` when a send_sync
    # reply slot comes with it) and ``_invoke_event(channel, _event_sender)``.
    @property
    def _message_event(self) -> Callable[[str, Any], Any]: ...
    @property
    def _invoke_event(self) -> Callable[[str, Any], Any]: ...
    @property
    def _event_sender(self) -> Any: ...


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


def event_factory() -> Callable[[], anyio.Event]:
    """The running backend's Event class, called directly.

    ``anyio.Event()`` looks the backend up on every call (about 1 us); an
    endpoint makes several Events per call, always on the same backend.
    """
    return type(anyio.Event())


class _Batch:
    """Frames that leave in one write; ``done`` is set once they have (or failed).

    The Event is made only when someone waits for it (most frames are sent
    without anyone waiting).
    """

    __slots__ = ("_done", "_finished", "_new_event", "failed")

    def __init__(self, new_event: Callable[[], anyio.Event]) -> None:
        self._new_event = new_event
        self._done: anyio.Event | None = None
        self._finished = False
        self.failed = False

    @property
    def done(self) -> anyio.Event:
        if self._done is None:
            self._done = self._new_event()
            if self._finished:
                self._done.set()
        return self._done

    def finish(self) -> None:
        """The frames have been handed to the transport (or failed)."""
        self._finished = True
        if self._done is not None:
            self._done.set()

    def fail(self) -> None:
        self.failed = True
        self.finish()


class OneShot(Protocol):
    """What a waiter needs of an event: ``anyio.Event``, or the fast path's future."""

    def set(self) -> None: ...
    def is_set(self) -> bool: ...
    def wait(self) -> Awaitable[Any]: ...


class _Waiter:
    """One caller waiting for one Reply (a single waiter, so ``done`` may be a future)."""

    __slots__ = ("done", "reply")

    def __init__(self, new_event: Callable[[], OneShot]) -> None:
        self.done = new_event()
        self.reply: ReplyReceived | None = None


class StreamWaiter(_Waiter):
    """A stream's items as they arrive, then its Reply (``done`` is renewed per wait)."""

    __slots__ = ("items",)

    def __init__(self, new_event: Callable[[], OneShot]) -> None:
        super().__init__(new_event)
        self.items: deque[msgspec.Raw] = deque()


def error_info(kind: ErrorKind, exc: BaseException, *, with_traceback: bool = True) -> ErrorInfo:
    """Describe ``exc`` for the wire."""
    text = None
    if with_traceback and kind is ErrorKind.REMOTE:
        text = "".join(traceback.format_exception(exc))
    return ErrorInfo(kind, type(exc).__name__, str(exc), text)


_RAISE_THE_LIMIT = (
    "Raise max_frame_size on the receiving side (IpcMain(max_frame_size=...) "
    "or IpcRenderer(max_frame_size=...)) to allow it"
)


def too_large(
    what: str, channel: str, exc: FrameTooLargeError, advice: str = _RAISE_THE_LIMIT
) -> FrameTooLargeError:
    """The caller's error for a frame over the peer's announced ``max_frame_size``."""
    return FrameTooLargeError(
        f"Cannot {what} on channel {channel!r}: {exc}; nothing was sent and the connection "
        f"is fine. {advice}"
    )


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
        max_in_flight: int = 256,
        send_timeout: float | None = 30.0,
        heartbeat_interval: float | None = None,
        heartbeat_timeout: float | None = None,
    ) -> None:
        self.conn = conn
        self.name = name
        self.termination: ConnectionTerminated | None = None
        self._warned = False  # the end was already logged at WARNING (``_link_lost``)
        self.closed = anyio.Event()
        self._stream = stream
        self._tg = task_group
        self._owner = owner
        self._message_event = owner._message_event
        self._invoke_event = owner._invoke_event
        self._event_sender = owner._event_sender
        self._send_tracebacks = send_tracebacks
        # A transport with a size limit of its own says what to do about it.
        self._limit_advice = getattr(stream, "limit_advice", None) or _RAISE_THE_LIMIT
        self._new_event = event_factory()
        # A stream that can write without waiting (the asyncio fast path).
        self._direct: Any = stream if hasattr(stream, "write_nowait") else None
        # A single-waiter event; the fast path offers a cheaper one (a future).
        self._new_waiter_event: Callable[[], OneShot] = getattr(
            stream, "new_event", self._new_event
        )
        self._write_soon = False  # a _write_now callback is scheduled
        self._welcomed = False  # this read completed the handshake (see run)
        self._wake = self._new_event()  # set: the writer has something to send
        # What the next write will carry, made only when someone waits for it.
        self._batch: _Batch | None = None
        self._torn = False  # a write was interrupted: the stream is out of step
        self._waiters: dict[int, _Waiter] = {}
        self._scopes: dict[int, anyio.CancelScope] = {}
        self._pending_starts = 0  # async dispatch tasks scheduled, not yet started
        self._active = 0  # async dispatch tasks not yet finished
        self._max_in_flight = max_in_flight
        self._room: anyio.Event | None = None  # set when _active drops below the limit
        self._send_timeout = send_timeout
        self._heartbeat_interval = heartbeat_interval
        self._heartbeat_timeout = heartbeat_timeout or (
            3 * heartbeat_interval if heartbeat_interval else None
        )
        self._reads = 0  # reads so far: the watchdog's proof of life
        self._writes = 0  # writes started so far
        self._writing = False
        self._watchdog_scope = anyio.CancelScope()
        self._paused = False  # reading is paused by backpressure
        self._backlog: deque[Event] = deque()  # calls held back while full
        self._reader_scope = anyio.CancelScope()
        self._idle: anyio.Event | None = None
        self._credit_events: dict[int, anyio.Event] = {}  # streams we serve, out of credit
        self._landed: dict[int, list[Any]] = {}  # ports of held-back messages, by id(event)
        self.gate: Gate | None = None
        # Lookups by channel, valid while Registry.changes is _lookups_seen.
        self._listeners_cache: dict[
            str, tuple[tuple[Callback, ...], Callable[[msgspec.Raw], Any] | None, bool]
        ] = {}
        self._handlers_cache: dict[str, Callback] = {}
        self._lookups_seen = -1
        self.stream_close_grace = 5.0  # seconds a closing generator gets to clean up

    @property
    def task_group(self) -> anyio.abc.TaskGroup:
        """The task group this connection's tasks run in."""
        return self._tg

    # ---- lifecycle -----------------------------------------------------

    async def run(self) -> None:
        """Read until the connection ends; then wake every waiter and close."""
        conn = self.conn
        # A stream that can read into a buffer (the asyncio fast path).
        receive_into: Callable[[memoryview], Awaitable[int]] | None = getattr(
            self._stream, "receive_into", None
        )
        # A transport whose every message is one frame body (a WebSocket, NATS).
        frames = self._stream if isinstance(self._stream, FrameStream) else None
        receive: Callable[[bytes], None] = (
            conn.receive_frame if frames is not None else conn.receive_data
        )
        try:
            async with anyio.create_task_group() as helpers:
                helpers.start_soon(self._writer)
                if self._heartbeat_interval or self._send_timeout:
                    helpers.start_soon(self._watchdog)
                self._kick()  # a renderer's Hello is queued at birth
                with self._reader_scope:
                    while conn.state is not CLOSED:
                        window = conn.receive_buffer() if receive_into is not None else None
                        try:
                            if window is not None and receive_into is not None:
                                conn.received_into(await receive_into(window))  # a large frame
                            else:
                                receive(await self._stream.receive(_READ_SIZE))
                        except _STREAM_ERRORS:
                            # A transport that knows why its link broke says so.
                            conn.receive_eof(frames.lost_reason if frames is not None else None)
                        else:
                            self._reads += 1  # the watchdog's proof of life; no clock here
                        window = None
                        self._dispatch_batch(conn.events_received())
                        if self._must_pause():
                            await self._pause()
                        if conn.pending_output:
                            if self._welcomed:
                                # The Welcome waits for the loop's next turn, so what
                                # on_connect hooks send first leaves with it: a
                                # renderer has it before its connect() returns.
                                self._welcomed = False
                                self._kick()
                            else:
                                # Replies made inline, a Pong, a Goodbye: one write for
                                # the whole read, now rather than on the loop's next turn.
                                self._write_at_once()
                # Graceful end: let the writer send what is left (a Goodbye).
                with anyio.move_on_after(1, shield=True):
                    self._kick()
                    await self._next_batch().done.wait()
                helpers.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._teardown()

    async def _teardown(self) -> None:
        if self.termination is None:  # cancelled from outside
            self.conn.close(CloseCode.SHUTDOWN, "closed")
            self.handle_events()
        self._next_batch().fail()
        if not self._torn and (data := self.conn.data_to_send()):
            with anyio.move_on_after(1), suppress(*_STREAM_ERRORS):
                await self._stream.send(bytes(data))  # last words, e.g. our Goodbye
        await self._stream.aclose()
        self.closed.set()

    # ---- backpressure ------------------------------------------------
    #
    # The peer's calls (requests and messages) start handlers; at most
    # max_in_flight run at once. While full, calls wait in order in the
    # backlog and start as handlers finish. Reading pauses while full, so a
    # flooding peer fills its own socket buffer rather than our memory --
    # except while we await the peer's replies: the running handlers may be
    # the very ones waiting for them, so we read on (replies are handled at
    # once) until the backlog holds _BACKLOG_LIMIT calls, and only then pause.

    def _full(self) -> bool:
        # Full too while much output is unsent, so replies made inline cannot
        # pile up behind a peer that reads slowly.
        return self._active >= self._max_in_flight or self.conn.pending_output > _MAX_PENDING_OUTPUT

    def _must_pause(self) -> bool:
        return self._full() and (not self._waiters or len(self._backlog) >= _BACKLOG_LIMIT)

    def _dispatch_batch(self, events: list[Event]) -> None:
        """Dispatch one read's events in order, holding calls back while full."""
        backlog = self._backlog
        conn = self.conn
        early = self._direct is not None and len(events) > _EARLY_WRITE
        congested = conn.pending_output > _MAX_PENDING_OUTPUT  # checked every few calls
        countdown = _EARLY_WRITE
        for event in events:
            if type(event) is MessageReceived:
                # not (backlog or self._full()), inline: this runs once per frame
                if backlog or congested or self._active >= self._max_in_flight:
                    self._hold(event)
                    continue
                if self.gate is None and not event.ports:
                    self._dispatch_message(event.channel, event.args, None)  # the commonest
                else:
                    self._handle(event)
            elif type(event) is RequestReceived:
                if backlog or congested or self._active >= self._max_in_flight:
                    self._hold(event)
                    continue
                self._handle(event)
            else:
                self._handle(event)
                continue
            countdown -= 1
            if not countdown:
                countdown = _EARLY_WRITE
                if early and conn.pending_output:
                    # A long read: send the replies made so far, so the peer works
                    # on them while we make the rest (both sides busy at once).
                    self._write_at_once()
                congested = conn.pending_output > _MAX_PENDING_OUTPUT

    def _hold(self, event: MessageReceived | RequestReceived) -> None:
        """Keep a call for later, in order, while too many are in flight."""
        if type(event) is MessageReceived and event.ports:
            # Land its ports now: the frames that follow may name them.
            self._landed[id(event)] = self._owner.receive_ports(event.ports)
        self._backlog.append(event)

    async def _pause(self) -> None:
        """Stop reading until the calls in flight and the unsent output allow more."""
        while self._must_pause():
            self._kick()  # replies already made go out first
            self._room = self._new_event()
            self._paused = True
            try:
                await self._room.wait()
            finally:
                self._paused = False

    def _make_room(self) -> None:
        """Start held-back calls while there is room; wake a paused reader."""
        backlog = self._backlog
        while backlog and not self._full():
            self._handle(backlog.popleft())
        if self._room is not None and not self._must_pause():
            self._room.set()

    async def close(self, code: CloseCode = CloseCode.NORMAL, reason: str = "closed") -> None:
        """Say Goodbye, stop reading and wait until the stream is closed."""
        if self.conn.state is not CLOSED:
            self.conn.close(code, reason)
            self.handle_events()
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
    #
    # One writer task per connection does every write. Others queue frames in
    # the Connection's outbox and _kick() it; whatever is queued by the time it
    # runs goes out in one write (one "batch"). Callers that must know their
    # frame left (send: backpressure) wait for that batch; invoke waits only
    # for its reply. The reader never waits for a write: if both peers waited
    # to write while neither read, both would wait forever.

    def _next_batch(self) -> _Batch:
        """The batch the next write will carry (made now if nobody asked before)."""
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch(self._new_event)
        return batch

    def _kick(self) -> None:
        """Have what is queued sent (``_next_batch()`` is what will carry it).

        A stream that offers ``write_nowait`` (the asyncio fast path) is
        written from a loop callback scheduled once per loop turn: every frame
        queued in that turn leaves in one write, without a task switch. The
        writer task is left for congestion, and for other streams.
        """
        direct = self._direct
        if direct is not None and not self._writing:
            if not self._write_soon:
                self._write_soon = True
                direct.call_soon(self._write_now)
            return
        if not self._wake.is_set():
            self._wake.set()

    def _write_now(self) -> None:
        """Loop callback (fast path): one write for every frame queued this turn."""
        self._write_soon = False
        direct = self._direct
        if self._writing or not direct.can_write_nowait() or self.conn.pending_output > LARGE_WRITE:
            if not self._wake.is_set():
                # congested, closing, or a large write: the writer task sees it through
                self._wake.set()
            return
        batch, self._batch = self._batch, None
        if data := self.conn.data_to_send():
            self._writes += 1
            direct.write_nowait(data)
        if batch is not None:
            batch.finish()
        self._make_room()  # a reader paused on unsent output may read on

    def _write_at_once(self) -> None:
        """Write what is queued now if the stream can (fast path), else as ``_kick`` does.

        Everything queued so far leaves in this write, in order; a write
        callback already scheduled then finds nothing left to send.
        """
        if self._direct is not None and not self._writing:
            self._write_now()
        else:
            self._kick()

    async def flush(self) -> None:
        """Return once everything queued so far has been handed to the transport.

        Raises:
            ConnectionClosedError: the link is gone, or the peer stopped reading
                for ``send_timeout`` seconds.
        """
        self._kick()
        batch = self._next_batch()
        await batch.done.wait()
        if batch.failed:
            raise ConnectionClosedError(f"connection to {self.name} is closed ({self.reason})")

    async def flush_quietly(self) -> None:
        with suppress(ConnectionClosedError):
            await self.flush()

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = self._new_event()
            batch, self._batch = self._next_batch(), None
            data = self.conn.data_to_send()
            try:
                if data:
                    await self._write(data)
            except ConnectionClosedError:
                batch.fail()
                self._next_batch().fail()
                return  # the link is gone; _write has ended the connection
            except BaseException:
                # Cancelled mid-write: whoever waits for these frames, or queued
                # more behind them, must hear so; nothing waits forever.
                batch.fail()
                self._next_batch().fail()
                raise
            del data  # a large frame's buffer must not live on while we wait for the next
            batch.finish()
            self._make_room()

    async def _write(self, data: bytearray) -> None:
        self._writes += 1
        self._writing = True
        try:
            await self._stream.send(data)  # type: ignore[arg-type]
        except _STREAM_ERRORS as exc:
            self._link_lost(f"sending failed: {exc!r}")
            raise ConnectionClosedError(
                f"connection to {self.name} is closed ({self.reason})"
            ) from exc
        except BaseException:
            # Cancelled mid-write: the peer may hold half a frame.
            self._torn = True
            self._link_lost("a write was interrupted")
            raise
        finally:
            self._writing = False

    async def _watchdog(self) -> None:
        """One timer per connection: heartbeats, and writes that never finish.

        Runs only if a heartbeat or a send timeout is configured; cancelled
        when the reader stops. Timing writes here, rather than wrapping each
        write in a scope with a deadline, keeps timers off the hot path.
        """
        interval = self._heartbeat_interval
        silence_limit = self._heartbeat_timeout or (3 * interval if interval else math.inf)
        stall_limit = self._send_timeout or math.inf
        tick = min(interval or math.inf, stall_limit / 4)
        # Progress is read from counters the hot path bumps, not from clocks.
        seen_reads, seen_writes, seen_unsent = self._reads, self._writes, 0
        silent = stalled = since_ping = 0.0
        with self._watchdog_scope:
            for nonce in itertools.count(1):
                await anyio.sleep(tick)
                # Stalled: the writer's write has not finished, or (fast path)
                # the transport holds unsent bytes and that did not shrink.
                unsent = self._direct.unsent() if self._direct is not None else 0
                if (self._writing and self._writes == seen_writes) or (
                    unsent and unsent >= seen_unsent
                ):
                    stalled += tick
                else:
                    stalled = 0.0
                seen_unsent = unsent
                silent = 0.0 if self._reads != seen_reads or self._paused else silent + tick
                seen_reads, seen_writes = self._reads, self._writes
                if stalled > stall_limit:
                    self._link_lost(
                        f"{self.name} stopped reading: a write made no progress "
                        f"for {self._send_timeout} s"
                    )
                    await self._stream.aclose()  # wakes the stuck writer
                    return
                if self.conn.state is not OPEN or not interval:
                    continue
                if silent > silence_limit:
                    self._link_lost(f"no data from {self.name} for {silent:.1f} s (heartbeat)")
                    return
                since_ping += tick
                if since_ping >= interval:
                    since_ping = 0.0
                    self.conn.send_ping(nonce)
                    self._kick()

    def flush_later(self) -> None:
        """Have the writer send what is queued, without waiting for it (plain callers)."""
        if self.conn.state is OPEN:
            self._kick()

    def _link_lost(self, reason: str) -> None:
        if self.conn.state is not CLOSED:
            logger.warning("connection to %s lost: %s", self.name, reason)
            self._warned = True
            self.conn.receive_eof(reason)
            self.handle_events()
        self._reader_scope.cancel()

    @property
    def reason(self) -> str:
        return self.termination.reason if self.termination else "not connected"

    def require_open(self) -> None:
        if self.conn.state is not OPEN:
            raise ConnectionClosedError(
                f"connection to {self.name} is closed ({self.reason}); connect again to send more"
            )

    def queue_message(self, channel: str, args: tuple[Any, ...]) -> bool:
        """Queue a fire-and-forget message and have it sent.

        Returns ``True`` if the caller must then ``await flush()``: more than
        ``_SEND_HIGH_WATER`` bytes wait to be written (backpressure). Not a
        coroutine itself, so ``send`` costs one coroutine, not two.
        """
        conn = self.conn
        if conn.state is not OPEN:
            self.require_open()
        try:
            pending = conn.send_message(channel, args)
        except _ENCODE_ERRORS as exc:
            raise encode_error("send", channel, args, exc) from None
        except FrameTooLargeError as exc:
            raise too_large("send", channel, exc, self._limit_advice) from None
        if pending > _SEND_HIGH_WATER:  # self.congested, inline
            return True
        if not self._write_soon:  # else a write already comes on the loop's next turn
            self._kick()
        return False

    async def post_message(
        self,
        channel: str,
        message: Any,
        send_out: Callable[[], tuple[list[PortRef], Callable[[], None]]],
    ) -> None:
        """Send ``message`` with ports: encode it first, so a value that cannot
        be sent fails before any port is claimed; then ``send_out()`` gives the
        port refs and what to run once the frame is queued."""
        self.require_open()
        args = (message,)
        try:
            raw = msgspec.Raw(msgspec.msgpack.encode(args))
        except _ENCODE_ERRORS as exc:
            raise encode_error("post_message", channel, args, exc) from None
        refs, after = send_out()
        self.conn.send_message(channel, raw, refs)
        after()
        await self.queued()

    async def queued(self) -> None:
        """After queueing a fire-and-forget frame: send it, and apply backpressure.

        Returns at once unless more than ``_SEND_HIGH_WATER`` bytes wait to be
        written; then it waits until the writer has handed them over.
        """
        if self.conn.pending_output > _SEND_HIGH_WATER:  # self.congested, inline
            await self.flush()
        else:
            self._kick()

    async def request(
        self, kind: RequestKind, channel: str, args: tuple[Any, ...], timeout: float | None
    ) -> Any:
        """Make a request and return the decoded reply, or raise what it says."""
        self.require_open()
        try:
            request_id = self.conn.start_request(kind, channel, args)
        except _ENCODE_ERRORS as exc:
            raise encode_error(_WHAT[kind], channel, args, exc) from None
        except FrameTooLargeError as exc:
            raise too_large(_WHAT[kind], channel, exc, self._limit_advice) from None
        waiter = self._waiters[request_id] = _Waiter(self._new_waiter_event)
        if self._paused:
            self._make_room()  # a paused reader must read on: our reply will come
        self._kick()  # a lost link wakes us through _terminated; no need to wait here
        try:
            if timeout is None:
                await waiter.done.wait()
            else:
                with anyio.fail_after(timeout):
                    await waiter.done.wait()
        except BaseException as exc:
            if waiter.reply is None:
                self.conn.cancel_request(request_id)
                self._kick()  # best effort: stop the remote handler
                if isinstance(exc, TimeoutError):
                    raise IpcTimeoutError(
                        f"{_WHAT[kind]} {channel!r} got no reply within {timeout} s"
                        + (
                            "; the remote handler was told to stop"
                            if kind is INVOKE
                            else "; a late reply will be discarded"
                        )
                    ) from None
                raise
        finally:
            del self._waiters[request_id]
        reply = waiter.reply
        if reply is None:
            raise ConnectionClosedError(
                f"connection to {self.name} closed before {channel!r} replied ({self.reason})"
            )
        if not reply.ok:
            raise error_from_reply(channel, reply.value)
        try:
            return decode_value(reply.value)
        except DECODE_ERRORS as exc:
            raise ProtocolError(
                f"the reply to {_WHAT[kind]} {channel!r} from {self.name} "
                f"could not be decoded: {exc}"
            ) from None

    def queue_prepared(self, frame: bytes) -> bool:
        """Queue a prepared frame and have it sent; ``False`` if the link is closed."""
        if self.conn.state is not OPEN:
            return False
        try:
            self.conn.send_prepared(frame)
        except FrameTooLargeError as exc:
            logger.warning("broadcast skipped %s: %s", self.name, exc)
            return False
        # Write now rather than schedule a callback per connection (a broadcast
        # reaches every renderer at once).
        self._write_at_once()
        return True

    @property
    def congested(self) -> bool:
        """Whether a sender should wait for the writer (``queued``'s rule)."""
        return self.conn.pending_output > _SEND_HIGH_WATER

    def reply_soon(self, request_id: int, channel: str, value: Any) -> None:
        """Queue the reply to ``request_id`` and make sure it is flushed."""
        if self._queue_reply(request_id, channel, value):
            self._kick()

    def reply_error_soon(self, request_id: int, kind: ErrorKind, exc: BaseException) -> None:
        """Queue an error reply to ``request_id`` and make sure it is flushed."""
        if self._queue_error(request_id, kind, exc):
            self._kick()

    def _queue_reply(self, request_id: int, channel: str, value: Any) -> bool:
        try:
            return self.conn.send_reply(request_id, True, value)
        except FrameTooLargeError as exc:
            logger.error("the result for %r is too large to send: %s", channel, exc)
            return self._queue_error(
                request_id, ErrorKind.REMOTE, too_large("return", channel, exc, self._limit_advice)
            )
        except _ENCODE_ERRORS as exc:
            err = encode_error("return a value", channel, value, exc)
            # The value itself stays out of the log (payloads only at DEBUG).
            logger.error(
                "the result for %r (of type %s) cannot be sent; the caller gets a RemoteError",
                channel,
                type(value).__qualname__,
            )
            logger.debug("the result for %r cannot be sent: %s", channel, err)
            return self._queue_error(request_id, ErrorKind.REMOTE, err)

    def _queue_error(self, request_id: int, kind: ErrorKind, exc: BaseException) -> bool:
        info = error_info(kind, exc, with_traceback=self._send_tracebacks)
        return self.conn.send_error(request_id, info)  # cut to fit the caller's limit

    # ---- receiving -----------------------------------------------------

    def handle_events(self) -> None:
        for event in self.conn.events_received():
            self._handle(event)

    def _handle(self, event: Event) -> None:
        if type(event) is MessageReceived:
            # Ports are landed on arrival (or were, if the call was held back):
            # frames that follow may name them.
            ports = None
            if event.ports:
                ports = self._landed.pop(id(event), None)
                if ports is None:
                    ports = self._owner.receive_ports(event.ports)
            if self.gate is None or self.gate(event, ports):
                self._dispatch_message(event.channel, event.args, None, ports)
        elif type(event) is RequestReceived:
            if self.gate is None or self.gate(event, None):
                if event.kind is RequestKind.INVOKE:
                    self._dispatch_invoke(event)  # the common case, without dispatch()
                else:
                    self.dispatch(event, None)
        elif type(event) is ReplyReceived:
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
            self._welcomed = True
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
        self._backlog.clear()  # nobody could receive their replies
        # Log each end once, at WARNING only if nobody else reports it: a
        # renderer refused during the handshake raises from connect(), and
        # that error (printed with its traceback) says the same.
        refused = self.conn.role is Role.RENDERER and not self.conn.renderer_id
        if event.code not in (None, CloseCode.NORMAL, CloseCode.SHUTDOWN) and not (
            refused or self._warned
        ):
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
        self._active += 1
        self._tg.start_soon(self._tracked, fn, args)

    async def _tracked(self, fn: Callable[..., Coroutine[Any, Any, None]], args: Any) -> None:
        self._pending_starts -= 1
        try:
            await fn(*args)
        finally:
            self._active -= 1
            self._make_room()

    # -- messages and send_sync: every listener, in registration order

    def _dispatch_message(
        self,
        channel: str,
        raw: msgspec.Raw,
        request_id: int | None,
        ports: list[Any] | None = None,
    ) -> None:
        found = self._listeners_cache.get(channel)  # _listeners_of, inline for a hit
        if found is None or Registry.changes != self._lookups_seen:
            found = self._listeners_of(channel)
        listeners, decode, any_async = found
        if decode is not None and request_id is None and not self._pending_starts:
            # The common case: a message for sync listeners that take the same
            # arguments, decoded in one C call, and called here, in order.
            event = self._message_event(channel, self._event_sender)
            if ports:
                event.ports = ports
            try:
                args = decode(raw)
            except DECODE_ERRORS:
                for callback in listeners:  # each says why, as Signature.decode does
                    self._decode_for(callback, channel, raw, None)
                return
            # The same loop as below, over one decoding: sharing the loop
            # (zip with repeat(args)) costs 13 bytecodes a message, 7 % of the
            # receive path (benchmarks/dispatch_path.py --opcodes).
            pending: list[Awaitable[Any]] | None = None
            for callback in listeners:
                try:
                    result = callback.fn(event, *args)
                    if (
                        result is not None
                        and type(result) not in _PLAIN
                        and inspect.isawaitable(result)
                    ):
                        # a plain callable that returned a coroutine
                        (pending := pending or []).append(result)
                except Exception as exc:
                    self._listener_failed(channel, exc, None)
            if pending:
                self._schedule(self._await_listeners, pending, channel, None)
            return
        if not listeners:
            if request_id is None:
                logger.debug("dropped a message on %r from %s: no listener", channel, self.name)
                if ports:
                    discard_ports(ports)  # their peers learn that nobody took them
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
        if self._pending_starts or any_async:
            self._schedule(self._run_listeners, listeners, event, slot, channel, raw)
            return
        pending = []  # coroutines that plain callables returned
        for callback, arguments in self._listener_calls(listeners, channel, raw, slot):
            try:
                result = callback.fn(event, *arguments)
                if (
                    result is not None
                    and type(result) not in _PLAIN
                    and inspect.isawaitable(result)
                ):
                    pending.append(result)
            except Exception as exc:
                self._listener_failed(channel, exc, slot)
        if pending:
            self._schedule(self._await_listeners, pending, channel, slot)
        elif slot is not None:
            slot.set(None)

    def _listeners_of(
        self, channel: str
    ) -> tuple[tuple[Callback, ...], Callable[[msgspec.Raw], Any] | None, bool]:
        """The listeners to call for one message on ``channel``, their shared decoder,
        and whether any is async.

        The shared decoder (a C call: ``Signature.fast_decode``) is there when the
        listeners are all sync and one decoding serves them all: every one is
        unannotated, or there is one, with a fixed number of arguments.

        Looked up once per channel while no registry changes (one dict lookup
        per message instead of two registries' and a scan for async ones).
        """
        changes = Registry.changes
        if changes != self._lookups_seen:
            self._forget_lookups(changes)
        found = self._listeners_cache.get(channel)
        if found is None:
            listeners = self._owner.find_listeners(channel)
            found = (listeners, _shared_decoder(listeners), _any_async(listeners))
            # Only channels with listeners (a peer's made-up channels must not
            # fill it), and only if taking them removed no `once` listener.
            if listeners and Registry.changes == changes:
                self._listeners_cache[channel] = found
        return found

    def _handler_of(self, channel: str) -> Callback | None:
        """The handler for one invoke or stream on ``channel`` (cached like listeners)."""
        changes = Registry.changes
        if changes != self._lookups_seen:
            self._forget_lookups(changes)
        callback = self._handlers_cache.get(channel)
        if callback is None:
            callback = self._owner.find_handler(channel)
            if callback is not None and Registry.changes == changes:  # not a handle_once
                self._handlers_cache[channel] = callback
        return callback

    def _forget_lookups(self, changes: int) -> None:
        self._listeners_cache.clear()
        self._handlers_cache.clear()
        self._lookups_seen = changes

    async def _run_listeners(
        self,
        listeners: tuple[Callback, ...],
        event: Any,
        slot: ReplySlot | None,
        channel: str,
        raw: msgspec.Raw,
    ) -> None:
        for callback, args in self._listener_calls(listeners, channel, raw, slot):
            try:
                result = callback.fn(event, *args)
                if (
                    result is not None
                    and type(result) not in _PLAIN
                    and inspect.isawaitable(result)
                ):
                    await result
            except Exception as exc:
                self._listener_failed(channel, exc, slot)
        if slot is not None:
            slot.set(None)

    async def _await_listeners(
        self, awaitables: list[Awaitable[Any]], channel: str, slot: ReplySlot | None
    ) -> None:
        for awaitable in awaitables:
            try:
                await awaitable
            except Exception as exc:
                self._listener_failed(channel, exc, slot)
        if slot is not None:
            slot.set(None)

    def _listener_calls(
        self,
        listeners: tuple[Callback, ...],
        channel: str,
        raw: msgspec.Raw,
        slot: ReplySlot | None,
    ) -> Iterator[tuple[Callback, list[Any] | tuple[Any, ...]]]:
        """Each listener with its decoded arguments; one that cannot take them is skipped.

        Arguments are decoded once for all untyped listeners, and once per
        typed listener against its own annotations.
        """
        shared: list[Any] | tuple[Any, ...] | None = None
        for callback in listeners:
            typed = callback.signature.typed
            if shared is None or typed:
                args = self._decode_for(callback, channel, raw, slot)
                if args is None:
                    continue
                if not typed:
                    shared = args
            else:
                args = shared
            yield callback, args

    def _decode_for(
        self, callback: Callback, channel: str, raw: msgspec.Raw, slot: ReplySlot | None
    ) -> list[Any] | tuple[Any, ...] | None:
        """``callback``'s arguments; ``None`` (logged, failed on ``slot``) if they do not fit."""
        try:
            return callback.signature.decode(channel, raw)
        except ValidationError as exc:
            self._arguments_failed(callback, channel, exc, slot)
            return None

    def _arguments_failed(
        self, callback: Callback, channel: str, exc: ValidationError, slot: ReplySlot | None
    ) -> None:
        logger.warning(
            "listener %r on %r not called: its arguments do not fit its annotations",
            callback.fn,
            channel,
        )
        logger.debug("listener %r on %r not called: %s", callback.fn, channel, exc)
        if slot is not None:
            slot.fail(ErrorKind.VALIDATION, exc)

    def _listener_failed(self, channel: str, exc: Exception, slot: ReplySlot | None) -> None:
        logger.error("listener for %r from %s raised", channel, self.name, exc_info=exc)
        if slot is not None:
            slot.fail(ErrorKind.REMOTE, exc)

    # -- invoke: the one handler

    def _prepare_call(
        self, event: RequestReceived
    ) -> tuple[Callback, list[Any] | tuple[Any, ...], Any] | None:
        """The handler for an invoke or stream request, its arguments and its event.

        ``None`` (and the caller has its error reply) if there is no handler or
        the arguments do not fit its annotations.
        """
        channel, request_id = event.channel, event.request_id
        callback = self._handler_of(channel)
        if callback is None:
            self.reply_error_soon(
                request_id,
                ErrorKind.NO_HANDLER,
                NoHandlerError(f"No handler registered for {channel!r}"),
            )
            return None
        signature = callback.signature
        try:
            if (fast := signature.fast_decode) is not None:
                try:
                    args = fast(event.args)  # one C call when the arguments fit
                except DECODE_ERRORS:
                    args = signature.decode(channel, event.args)  # raises, saying why
            else:
                args = signature.decode(channel, event.args)
        except ValidationError as exc:
            self.reply_error_soon(request_id, ErrorKind.VALIDATION, exc)
            return None
        return callback, args, self._invoke_event(channel, self._event_sender)

    def _dispatch_invoke(self, event: RequestReceived) -> None:
        prepared = self._prepare_call(event)
        if prepared is None:
            return
        callback, args, call_event = prepared
        channel, request_id = event.channel, event.request_id
        if callback.is_async or self._pending_starts:
            self._schedule(self._serve, request_id, channel, callback, call_event, args)
            return
        try:
            result = callback.fn(call_event, *args)
        except Exception as exc:
            self.reply_error_soon(request_id, ErrorKind.REMOTE, exc)
            return
        if result is not None and type(result) not in _PLAIN and inspect.isawaitable(result):
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
        await self._serve_call(request_id, channel, lambda: callback.fn(event, *args))

    async def _serve_awaitable(
        self, request_id: int, channel: str, awaitable: Awaitable[Any]
    ) -> None:
        await self._serve_call(request_id, channel, lambda: awaitable)

    async def _serve_call(self, request_id: int, channel: str, call: Callable[[], Any]) -> None:
        if not self.conn.is_serving(request_id):
            return  # cancelled (or the connection ended) before we started
        with anyio.CancelScope() as scope:
            self._scopes[request_id] = scope
            try:
                result = call()
                if (
                    result is not None
                    and type(result) not in _PLAIN
                    and inspect.isawaitable(result)
                ):
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
        waiter = self._waiters[request_id] = StreamWaiter(self._new_event)
        return request_id, waiter

    def end_stream(self, request_id: int, cancel: bool) -> None:
        """Forget a stream; if ``cancel``, tell the server to close its generator."""
        self._waiters.pop(request_id, None)
        if cancel and self.conn.state is OPEN:
            self.conn.cancel_request(request_id)
            self.flush_later()

    # -- streams: the server's side

    def _dispatch_stream(self, event: RequestReceived) -> None:
        prepared = self._prepare_call(event)
        if prepared is not None:
            callback, args, call_event = prepared
            self._schedule(
                self._serve_stream, event.request_id, event.channel, callback, call_event, args
            )

    async def _serve_stream(
        self,
        request_id: int,
        channel: str,
        callback: Callback,
        event: Any,
        args: list[Any] | tuple[Any, ...],
    ) -> None:
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
                credit = self._credit_events[request_id] = self._new_event()
                # Waiting for the consumer is not work: give back the in-flight
                # slot, or streams waiting for credit could stop the reader that
                # would bring it (max_in_flight).
                self._active -= 1
                self._make_room()
                try:
                    await credit.wait()  # the consumer is slow: the generator stays paused
                finally:
                    self._active += 1
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


#: Results that are never awaitable: checked first (inline, on the hot path), as
#: ``inspect.isawaitable`` costs an ABC check for every plain value returned.
_PLAIN = frozenset({type(None), bool, int, float, str, bytes, list, dict, tuple})


def _any_async(callbacks: tuple[Callback, ...]) -> bool:
    for callback in callbacks:
        if callback.is_async:
            return True
    return False


def _shared_decoder(callbacks: tuple[Callback, ...]) -> Callable[[msgspec.Raw], Any] | None:
    """One C call that decodes the arguments for all of ``callbacks`` (see _listeners_of)."""
    if not callbacks or any(callback.is_async for callback in callbacks):
        return None
    if len(callbacks) == 1:
        return callbacks[0].signature.fast_decode
    if any(callback.signature.typed for callback in callbacks):
        return None
    return decode_argument_list


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
