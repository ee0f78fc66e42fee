"""One connection: a protocol ``Connection`` driven over one transport by its parts.

Shared by main (one per renderer) and renderers (one in all). The parts
(docs/architecture.md draws how a frame travels through them):

* ``_outbox.Outbox``: the write side (batching, flushes, backpressure).
* ``_calls.Calls``: what is owed (our pending calls, credit we wait for).
* ``_dispatch.Dispatcher``: the peer's calls (admission, listeners, handlers,
  replies), with ``_calling`` calling the user's listeners and handlers.
* ``_liveness.Liveness``: heartbeats and stalled writes.

The endpoint owns the reader, which does all receiving: bytes in, events out,
dispatch, then flush: ``run`` in a task, or, on the fast path, the stream's
callback through ``_delivered.DeliveredReads``, a base class. Dispatch
happens before the flush, so main has registered a renderer's WebContents
before the Welcome that completes the renderer's handshake leaves. How the
connection ends is ``_ending.Ending``, the other base class: every waiting
caller is woken and fails with ``ConnectionClosedError``; nothing waits forever.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

import anyio
import anyio.abc

from ._calls import Calls
from ._capabilities import MakesWaiters, ReceivesInto
from ._delivered import DeliveredReads
from ._dispatch import Dispatcher
from ._ending import Ending
from ._errors import ConnectionClosedError
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
from ._liveness import Liveness, Sweeper, own_watcher
from ._outbox import STREAM_ERRORS, Outbox, event_factory
from ._owner import Gate, Owner
from ._protocol import CLOSED, OPEN, Connection
from ._values import RAISE_THE_LIMIT

__all__ = ("Endpoint", "logger")

logger = logging.getLogger("ipcbus")

_READ_SIZE = 256 * 1024
#: Input bytes whose frames one batch of a long read takes (``Connection.batch``):
#: a 256 KiB read of small frames handled at once is some 20,000 live messages,
#: whose allocation churn and cache misses cost more than the extra passes
#: (benchmarks C: main's CPU per message 1.6 -> 1.0 us with 16 KiB batches).
_READ_BATCH = 16 * 1024


class Endpoint(DeliveredReads, Ending):
    """One connection: the reader, and the parts it hands frames to."""

    __slots__ = (
        "__weakref__",
        "_closed",
        "_done",
        "_ending",
        "_liveness",
        "_on_end",
        "_on_end_now",
        "_owner",
        "_reader_scope",
        "_sweeper",
        "_tg",
        "_warned",
        "_welcomed",
        "calls",
        "conn",
        "dispatcher",
        "limit_advice",
        "name",
        "outbox",
        "reads",
        "stream",
        "termination",
    )

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
        sweeper: Sweeper | None = None,
    ) -> None:
        self.conn = conn
        conn.batch = _READ_BATCH  # a long read is handled a batch at a time
        self.name = name
        self.termination: ConnectionTerminated | None = None
        self._warned = False  # the end was already logged at WARNING (``link_lost``)
        self._closed: anyio.Event | None = None  # made when someone waits for it
        self._done = False  # the stream is closed
        self.stream = stream
        # A transport with a size limit of its own says what to do about it.
        self.limit_advice: str = getattr(stream, "limit_advice", None) or RAISE_THE_LIMIT
        self._welcomed = False  # this read completed the handshake (see run)
        self._tg = task_group
        self._owner = owner
        self.reads = 0  # reads so far: the watchdog's proof of life
        new_event = event_factory()
        self.outbox = outbox = Outbox(self, conn, stream, new_event)
        # A call's reply waiter: the fast path offers a cheaper one (a future).
        new_waiter = (
            cast(MakesWaiters, stream).new_waiter if hasattr(stream, "new_waiter") else None
        )
        self.calls = calls = Calls(
            self, conn, new_event, new_waiter, send_tracebacks=send_tracebacks
        )
        self.dispatcher = outbox.admission = Dispatcher(
            self,
            conn,
            owner,
            outbox,
            calls,
            new_event=new_event,
            max_in_flight=max_in_flight,
        )
        self._liveness = (
            Liveness(
                self,
                send_timeout=send_timeout,
                heartbeat_interval=heartbeat_interval,
                heartbeat_timeout=heartbeat_timeout,
            )
            if heartbeat_interval or send_timeout
            else None
        )
        # One per IpcMain for all its connections; else the endpoint's own.
        self._sweeper = sweeper
        self._reader_scope: anyio.CancelScope | None = None  # ``run``'s reading
        # Set by ``attach``: the stream calls us as data arrives, and this runs
        # (in a task) once the connection has ended and its stream is closed.
        self._on_end: Callable[[], Coroutine[Any, Any, None]] | None = None
        #: ``on_end`` without a task, where it has nothing to wait for: whether it ran.
        self._on_end_now: Callable[[], bool] | None = None
        self._ending = False  # ``_end`` was started

    @property
    def task_group(self) -> anyio.abc.TaskGroup:
        """The task group this connection's tasks run in."""
        return self._tg

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` in a task of this connection's task group.

        An error escaping ``fn`` (a bug in ipcbus) ends this connection, not
        the task group, which may be the whole ``IpcMain``'s (``attach``).
        """
        self._tg.start_soon(self._contained, fn, args)

    async def _contained(self, fn: Callable[..., Awaitable[Any]], args: Any) -> None:
        try:
            await fn(*args)
        except Exception:
            logger.exception("internal error serving %s", self.name)
            self.link_lost("internal error (logged)")

    @property
    def gate(self) -> Gate | None:
        """Sees every call before it is dispatched (main: allowlists, guards)."""
        return self.dispatcher.gate

    @gate.setter
    def gate(self, gate: Gate | None) -> None:
        self.dispatcher.gate = gate

    @property
    def congested(self) -> bool:
        """Whether a sender should wait for the writer."""
        return self.outbox.congested

    # ---- lifecycle -----------------------------------------------------

    async def run(self) -> None:
        """Read until the connection ends; then wake every waiter and close."""
        conn = self.conn
        dispatcher = self.dispatcher
        outbox = self.outbox
        # A stream that can read into a buffer (the asyncio fast path).
        receive_into: Callable[[memoryview], Awaitable[int]] | None = (
            cast(ReceivesInto, self.stream).receive_into
            if hasattr(self.stream, "receive_into")
            else None
        )
        # A transport whose every message is one frame body (a WebSocket, NATS).
        frames = self.stream if isinstance(self.stream, FrameStream) else None
        receive: Callable[[bytes], object] = (
            conn.receive_frame if frames is not None else conn.receive_data
        )
        # No task group of its own: the writer task runs in the endpoint's
        # task group, and one sweeper watches liveness (``_liveness``).
        liveness = self._liveness
        if liveness is not None and self._sweeper is None:
            self._sweeper = own_watcher(self._tg, self.stream)
        if frames is not None:
            frames.on_lost = self.link_lost
        try:
            if liveness is not None and self._sweeper is not None:
                self._sweeper.watch(liveness)
            outbox.start()
            outbox.kick()  # a renderer's Hello is queued at birth
            with anyio.CancelScope() as self._reader_scope:
                while conn.state is not CLOSED:
                    if conn.more:  # the rest of a long read, a batch at a time
                        conn.receive_more()
                    else:
                        window = conn.receive_buffer() if receive_into is not None else None
                        try:
                            if window is not None and receive_into is not None:
                                conn.received_into(await receive_into(window))  # a large frame
                            else:
                                receive(await self.stream.receive(_READ_SIZE))
                        except STREAM_ERRORS:
                            # A transport that knows why its link broke says so.
                            conn.receive_eof(frames.lost_reason if frames is not None else None)
                        else:
                            self.reads += 1  # the watchdog's proof of life; no clock here
                        window = None
                    outbox.reading = True
                    try:
                        dispatcher.dispatch_batch(conn.events_received())
                    finally:
                        outbox.reading = False
                    if dispatcher.must_pause():
                        await dispatcher.pause()
                    if conn.pending_output:
                        if self._welcomed:
                            # The Welcome waits for the loop's next turn, so what
                            # on_connect hooks send first leaves with it: a
                            # renderer has it before its connect() returns.
                            self._welcomed = False
                            outbox.kick()
                        else:
                            # Replies made inline, a Pong, a Goodbye: one write for
                            # the whole read, now rather than on the loop's next turn.
                            outbox.write_at_once()
            if not outbox.settled():
                await outbox.drain()  # graceful end: a Goodbye
        finally:
            if frames is not None:
                frames.on_lost = None  # the endpoint is done: no cycle through the stream
            self._stop_parts()
            with anyio.CancelScope(shield=True):
                await self._teardown()

    def cancel_handlers(self) -> None:
        """Cancel every running handler, and any that starts from now on.

        Each replies that it was cancelled. For shutdown: a call held back by
        ``max_in_flight`` starts as the cancelled ones end, and must not hold
        the exit.
        """
        self.dispatcher.stopping = True
        for scope in list(self.dispatcher.scopes.values()):
            scope.cancel()

    async def wait_idle(self, *, listeners: bool = True) -> None:
        """Return once no handler (nor, with ``listeners``, async listener) runs here.

        Handlers are in ``scopes``. Async listeners are counted only in
        ``active``; a stream that lent its slot back is still in ``scopes``,
        so no handler and nothing active means nothing runs.
        """
        dispatcher = self.dispatcher
        while dispatcher.scopes or (listeners and dispatcher.active):
            dispatcher.idle = anyio.Event()
            await dispatcher.idle.wait()

    @property
    def reason(self) -> str:
        return self.termination.reason if self.termination else "not connected"

    def require_open(self) -> None:
        if self.conn.state is not OPEN:
            raise ConnectionClosedError(
                f"connection to {self.name} is closed ({self.reason}); connect again to send more"
            )

    # ---- receiving -----------------------------------------------------

    def handle_events(self) -> None:
        for event in self.conn.events_received():
            self.handle(event)

    def handle(self, event: Event) -> None:
        """Hand one event to the part it concerns."""
        if type(event) is MessageReceived or type(event) is RequestReceived:
            self.dispatcher.admit(event)
        elif type(event) is ReplyReceived:
            self.calls.replied(event)
        elif isinstance(event, StreamItemReceived):
            self.calls.item(event)
        elif isinstance(event, (PortMessageReceived, PortClosed)):
            self._owner.port_event(event)
        elif isinstance(event, StreamCreditReceived):
            self.calls.credited(event.request_id)
        elif isinstance(event, RequestCancelled):
            scope = self.dispatcher.scopes.get(event.request_id)
            if scope is not None:
                scope.cancel()
            else:
                self.dispatcher.drop_held(event.request_id)
        elif isinstance(event, HandshakeCompleted):
            self._welcomed = True
            self._owner.handshake_completed(event)
        elif isinstance(event, ConnectionTerminated):
            self._terminated(event)
