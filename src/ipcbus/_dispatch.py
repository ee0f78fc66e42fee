"""The peer's calls on one connection: admission, lookup, decoding, calling, replying.

Admission and dispatch are one object because the reader's hot loop reads
both per frame (``dispatch_batch``); admission's half is a base class in
``_admission``, and the listeners' half (messages and ``send_sync``, and the
lookups by channel) is another, ``_messagedispatch``. This module keeps the
reader's loop, the way every call goes (``admit``, ``dispatch``) and the
handlers' half (invoke and stream: ``_dispatch_call``). Rules:

* Callbacks are *called* in the order their messages arrived. Sync callbacks
  run inline in the reader; async ones in a task of the connection's task
  group (``_calling``). While any such task has been scheduled but not yet
  started (``pending_starts``), sync callbacks are scheduled behind it instead
  of run inline, so they cannot overtake it.
* At most ``max_in_flight`` async callbacks run at once; the rest wait in
  order, and reading pauses while full (``_admission`` has the rules).
* An optional ``gate`` (main sets it: allowlists, guards) sees every message
  and request before anything decodes its arguments; it dispatches it now,
  later (``dispatch``), or never. Every call goes through ``admit`` (ports
  landed, gate asked, then ``dispatch``) except the one measured fast path in
  ``dispatch_batch``: a message with no gate and no ports.
* Replies: an invoke gets its handler's result or error; a ``send_sync`` gets
  the first ``event.return_value`` (``ReplySlot``), else ``None``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from . import _calling
from ._admission import MAX_OPEN_STREAMS
from ._calling import PLAIN as _PLAIN
from ._calls import Calls
from ._errors import NoHandlerError, ValidationError
from ._events import Event, MessageReceived, ReplyReceived, RequestReceived
from ._messagedispatch import EARLY_WRITE as _EARLY_WRITE
from ._messagedispatch import Lookup, MessageDispatch
from ._outbox import Outbox
from ._protocol import Connection
from ._registry import Callback, Registry
from ._values import DECODE_ERRORS
from ._wire import STREAM, ErrorKind, RequestKind

if TYPE_CHECKING:
    from ._endpoint import Endpoint
    from ._owner import Gate, Owner

__all__ = ("Dispatcher",)

INVOKE = RequestKind.INVOKE  # a module global: an Enum member lookup costs more

Arguments = list[Any] | tuple[Any, ...]


class Dispatcher(MessageDispatch):
    """Admits the peer's calls, finds what serves them, calls it, queues the answer."""

    __slots__ = ("_invoke_event", "gate")

    def __init__(
        self,
        endpoint: Endpoint,
        conn: Connection,
        owner: Owner,
        outbox: Outbox,
        calls: Calls,
        *,
        new_event: Callable[[], anyio.Event],
        max_in_flight: int,
    ) -> None:
        super().__init__(
            endpoint, conn, owner, outbox, calls, new_event=new_event, max_in_flight=max_in_flight
        )
        self._message_event = owner._message_event
        self._invoke_event = owner._invoke_event
        self._event_sender = owner._event_sender
        self.gate: Gate | None = None
        # Lookups by channel, valid while Registry.changes is _lookups_seen.
        self._listeners_cache: dict[str, Lookup] = {}
        self._handlers_cache: dict[str, Callback] = {}
        self._lookups_seen = -1

    # ---- the reader's hot loop -------------------------------------------

    def dispatch_batch(self, events: list[Event]) -> None:
        """Dispatch one read's events in order, holding calls back while full."""
        backlog = self._backlog
        if not events:
            return
        first = events[0]
        if type(first) is ReplyReceived and len(events) == 1:
            # A read of one reply (a caller's every read while it waits for it):
            # Calls.replied, inline
            waiter = self.calls.waiters.get(first.request_id)
            if waiter is not None and not waiter.done():  # a future: not cancelled
                waiter.set_result(first)
            return
        if type(first) is RequestReceived and len(events) == 1:
            # A read of one call (main's every read while each renderer waits
            # for its reply): the general loop's work for it, without its setup.
            if (
                first.kind is INVOKE
                and self.gate is None
                and not backlog
                and self.active < self._max_in_flight
                and self.conn.pending_output <= self.output_bound
            ):
                self._dispatch_call(first)
                return
        elif type(first) is ReplyReceived:
            # A read that starts with replies to our calls (a caller's every read):
            # each wakes its caller, with none of the general loop's bookkeeping.
            waiters = self.calls.waiters
            taken = 0
            for event in events:
                if type(event) is not ReplyReceived:
                    break
                # Calls.replied, inline (once per reply)
                waiter = waiters.get(event.request_id)
                if waiter is not None and not waiter.done():  # a future: not cancelled
                    waiter.set_result(event)
                taken += 1
            if taken == len(events):
                return
            events = events[taken:]
        elif type(first) is MessageReceived and self.gate is None and not backlog:
            # A read that starts with messages (a stream of sends: all of it)
            taken = self._message_run(events)
            if taken == len(events):
                return
            if taken:
                events = events[taken:]
        conn = self.conn
        early = self.outbox.direct is not None and len(events) > _EARLY_WRITE
        bound = self.output_bound
        congested = conn.pending_output > bound  # checked every few calls
        countdown = _EARLY_WRITE
        for event in events:
            if type(event) is MessageReceived:
                # not (backlog or self._full()), inline: this runs once per frame
                if backlog or congested or self.active >= self._max_in_flight:
                    self._hold(event)
                    continue
                if self.gate is None and not event.ports:
                    # No gate to ask, no ports to land: a run of one (0 if it must
                    # queue behind a task, which the general way does).
                    if not self._message_run((event,)):
                        self._dispatch_message(event.channel, event.args, None)
                else:
                    self.admit(event)
            elif type(event) is RequestReceived:
                if backlog or congested or self.active >= self._max_in_flight:
                    self._hold(event)
                    continue
                if self.gate is None and event.kind is INVOKE:
                    self._dispatch_call(event)  # admit() and dispatch(), inline
                else:
                    self.admit(event)
            elif type(event) is ReplyReceived:
                self.calls.replied(event)  # Endpoint.handle's first case, inline
                continue
            else:
                self.endpoint.handle(event)
                continue
            countdown -= 1
            if not countdown:
                countdown = _EARLY_WRITE
                if early and conn.pending_output:
                    # A long read: send the replies made so far, so the peer works
                    # on them while we make the rest (both sides busy at once).
                    self.outbox.write_at_once()
                congested = conn.pending_output > bound

    # ---- dispatch ------------------------------------------------------

    def admit(self, event: MessageReceived | RequestReceived) -> None:
        """Land a message's ports, ask the gate, and dispatch if it lets the call through."""
        ports = None
        if type(event) is MessageReceived and event.ports:
            # Ports are landed on arrival (or were, if the call was held back):
            # frames that follow may name them.
            ports = self._landed.pop(id(event), None)
            if ports is None:
                ports = self._owner.receive_ports(event.ports)
        if self.gate is None or self.gate(event, ports):
            self.dispatch(event, ports)

    def dispatch(self, event: RequestReceived | MessageReceived, ports: list[Any] | None) -> None:
        """Call what serves ``event`` (the gate, if any, has let it through)."""
        if isinstance(event, MessageReceived):
            # A plain message let through by a guard: a run of one, as in dispatch_batch.
            if ports or not self._message_run((event,)):
                self._dispatch_message(event.channel, event.args, None, ports)
        elif event.kind is not RequestKind.SYNC:
            self._dispatch_call(event)  # invoke or stream
        else:
            self._dispatch_message(event.channel, event.args, event.request_id)

    # -- invoke and stream: the one handler

    def _dispatch_call(self, event: RequestReceived) -> None:
        """Serve an invoke or a stream: find its handler, decode its arguments, call it.

        A sync handler of an invoke runs here and its reply is queued; the
        rest (async handlers, awaitables, streams) run in a task. No handler,
        or arguments that do not fit its annotations: an error reply.
        """
        channel, request_id = event.channel, event.request_id
        # The handler, cached like listeners (valid while Registry.changes stays)
        changes = Registry.changes
        if changes != self._lookups_seen:
            self._forget_lookups(changes)
        callback = self._handlers_cache.get(channel)
        if callback is None:
            callback = self._owner.find_handler(channel)
            if callback is None:
                self.calls.reply_error_soon(
                    request_id,
                    ErrorKind.NO_HANDLER,
                    NoHandlerError(f"No handler registered for {channel!r}"),
                )
                return
            if Registry.changes == changes:  # not a handle_once
                self._handlers_cache[channel] = callback
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
            self.calls.reply_error_soon(request_id, ErrorKind.VALIDATION, exc)
            return
        call_event = self._invoke_event(channel, self._event_sender)
        if event.kind is STREAM:
            if self.streams >= MAX_OPEN_STREAMS:
                self.calls.reply_error_soon(
                    request_id,
                    ErrorKind.REMOTE,
                    RuntimeError(
                        f"too many streams open on this connection: at most {MAX_OPEN_STREAMS} "
                        f"are served at once; this one ({channel!r}) was refused"
                    ),
                )
                return
            self.streams += 1  # until serve_stream ends
            self.schedule(
                _calling.serve_stream, self, request_id, channel, callback, call_event, args
            )
            return
        if callback.is_async or self.pending_starts:
            self.schedule(_calling.serve, self, request_id, channel, callback, call_event, args)
            return
        try:
            if callback.one and type(args) is tuple:  # see Callback.one
                result = callback.fn(call_event, args[0])
            else:
                result = callback.fn(call_event, *args)
        except BaseException as exc:
            if not _calling.own_failure(exc):
                raise
            self.calls.reply_error_soon(request_id, ErrorKind.REMOTE, exc)
            return
        # is_awaitable, inline (plain values are ruled out without a call)
        if result is not None and type(result) not in _PLAIN and inspect.isawaitable(result):
            self.schedule(_calling.serve_awaitable, self, request_id, channel, result)
        elif self.calls.queue_reply(request_id, channel, result):  # Calls.reply_soon, inline
            self.outbox.kick()
